"""The ``fatesam`` command line (``python -m FateSAMLib.cli``): segment, batch, crossval, evaluate, serve, users,
models; argument parsing (the shared options: ``arguments``) and reporting (``reporting``) only: every command runs
the ``FateSamPredictor`` (``method.predictor``) or the server.

May import everything else in the package.
"""

from ..errors import INTERRUPTED

try:  # torch loads here, for seconds: Ctrl+C meanwhile ends the program quietly (exit 130), as a cancelled run does
    from .main import build_parser, main
except KeyboardInterrupt:
    raise SystemExit(INTERRUPTED) from None

__all__ = ["build_parser", "main"]
