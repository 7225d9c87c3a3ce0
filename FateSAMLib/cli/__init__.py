"""The ``fatesam`` command line (``python -m FateSAMLib.cli``): segment, evaluate, crossval, models; its shared
model options (``arguments``) and its progress and JSON reporting (``reporting``).

May import everything else in the package.
"""

from ..errors import INTERRUPTED
from ..threads import prepare_environment

prepare_environment()  # before torch loads OpenMP: idle threads sleep instead of spinning on shared cores
try:  # torch loads here, for seconds: Ctrl+C meanwhile ends the program quietly (exit 130), as a cancelled run does
    from .main import build_parser, main
except KeyboardInterrupt:
    raise SystemExit(INTERRUPTED) from None

__all__ = ["build_parser", "main"]
