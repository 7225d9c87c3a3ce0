"""The ``fatesam`` command line (``python -m FateSAMLib.cli``): segment, evaluate, crossval, models; its shared
model options (``arguments``) and its progress and JSON reporting (``reporting``).

May import everything else in the package.
"""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
