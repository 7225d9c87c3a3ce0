"""A mark for the slicer tier's tests that run the engine process, or check against its reading of files."""

from __future__ import annotations

import importlib.util

import pytest

# What the engine process needs beyond the Slicer tier. The Python 3.12 run (Testing/test_slicer_tier_python312.py)
# has only what the module needs before installing them, as Slicer has: tests that run the engine skip there.
ENGINE_MISSING = [name for name in ("torch", "sam2", "SimpleITK", "slicerio") if importlib.util.find_spec(name) is None]
needs_engine = pytest.mark.skipif(
    bool(ENGINE_MISSING),
    reason=f"runs the engine, whose dependencies ({', '.join(ENGINE_MISSING)}) are not installed here (as in Slicer "
    "before the module installs them)",
)
