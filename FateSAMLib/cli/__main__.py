"""``python -m FateSAMLib.cli``: the command line, as the Slicer module's engine process runs it."""

import sys

from .main import main

sys.exit(main())
