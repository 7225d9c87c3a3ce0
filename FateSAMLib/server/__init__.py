"""``fatesam serve``: the engine behind an HTTP API (FastAPI + uvicorn, the ``fatesam[server]`` extra).

Jobs are typed requests (``method.jobs.SegmentJob``) that worker threads run on warm predictors (one loaded model
per served model, ``predictors``), on files the server names in its private folder, refines (corrections)
included; support sets are stored once by content hash for the users who uploaded them, and the encoded features of
supports and queries cached by content (a refine of a query the server has seen encodes nothing), private and
expiring with the results. Named users (``users``) each see only their own jobs and support sets. Modules: ``app``
(the application), ``service`` (its state), ``middleware`` (token and size), ``routes``, ``users``, ``tokens``,
``predictors``, ``store``, ``jobs``. May import the top level, ``io``, ``models`` and ``method``; never ``cli``.
FastAPI and uvicorn are imported only here.
"""
