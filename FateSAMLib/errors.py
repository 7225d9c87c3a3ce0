"""Exceptions raised by the FateSAM engine.

Every error a user can cause derives from :class:`FateSAMError`; its message names the
problem and the fix, so that the command line and the Slicer module can show it as is.
"""

INTERRUPTED = 130  # the exit code of a run stopped by Ctrl+C or SIGTERM (128 + SIGINT, as shells report it)


class FateSAMError(Exception):
    """Base class of every error the engine reports to a user."""


class InputError(FateSAMError):
    """An input file or array is unusable (unreadable, wrong geometry, empty labels...)."""


class ModelError(FateSAMError):
    """An unknown model name, or a model that cannot be built on the chosen device."""


class CheckpointError(FateSAMError):
    """A checkpoint that cannot be downloaded, is truncated, or does not match its model."""


class ResourceError(FateSAMError):
    """Not enough memory (or another resource) to run; the message says how much is needed."""


class Cancelled(FateSAMError):
    """The run was cancelled by the user; nothing partial was returned or written."""
