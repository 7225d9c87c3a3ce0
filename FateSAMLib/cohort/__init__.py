"""Cohorts: one support set, many query volumes, the model and the supports loaded once per worker (``fatesam batch``
and ``fatesam crossval``).

``cases`` finds the queries (a folder or a CSV) and their references, named by the one id rule
(:mod:`FateSAMLib.names`); ``worker`` checks a cohort before any model work, then segments one case after another
with one predictor (its model loaded once); ``runner`` skips finished cases (only those the same supports and
settings made), records failures and writes the summary, with what made the outputs, atomically; ``ray_pool`` runs
the workers as Ray actors and shows their running cases' stages on the driver (Ray is imported only there, only when
a Ray run is asked for).

May import the top level, ``io``, ``models``, ``method`` and ``metrics``; never ``cli`` or ``slicer``.
"""
