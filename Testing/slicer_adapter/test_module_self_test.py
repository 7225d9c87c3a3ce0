"""FateSAM/FateSAM.py outside Slicer: with the smallest stand-ins for the application's modules (slicer_stand_ins) it
imports, refuses a Slicer older than 5.10 with a clear message (also under Python 3.9, Slicer 5.8's), and its own
self-test, FateSAMTest, passes through the module's Logic on slicer-core's real MRML scene."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from scene_helpers import slicer
from slicer_stand_ins import SCRIPT, load_module_script, stand_ins

from FateSAMLib.slicer.deps import dependency_plan

HERE = Path(__file__).resolve().parent


def install_stand_ins(monkeypatch, version: tuple[int, int] = (5, 10)) -> None:
    """Put the stand-ins in place for this test only (sys.modules and slicer's attributes are restored after)."""
    parts = stand_ins(version=version, testing=True)
    for name, module in parts["modules"].items():
        monkeypatch.setitem(sys.modules, name, module)
    for name, value in parts["slicer"].items():
        monkeypatch.setattr(slicer, name, value, raising=False)


@pytest.fixture
def module(monkeypatch):
    """FateSAM.py imported as Slicer 5.10 would import it."""
    install_stand_ins(monkeypatch)
    monkeypatch.delitem(sys.modules, "FateSAM", raising=False)
    loaded = load_module_script()
    yield loaded
    loaded.REVIEW_SESSION.close()
    sys.modules.pop("FateSAM", None)


def test_the_module_imports_with_the_stand_ins_and_names_its_minimum(module):
    assert module.MINIMUM_SLICER == (5, 10) and module.slicerTooOld((5, 10)) == "" and module.slicerTooOld((6, 0)) == ""
    message = module.slicerTooOld((5, 8))
    assert message.startswith("FateSAM needs 3D Slicer 5.10 or later (with Python 3.12); this is Slicer 5.8 (Python")
    assert issubclass(module.FateSAMLogic, sys.modules["slicer.ScriptedLoadableModule"].ScriptedLoadableModuleLogic)


def test_an_older_slicer_is_refused_when_the_module_loads(monkeypatch):
    install_stand_ins(monkeypatch, version=(5, 8))
    with pytest.raises(RuntimeError, match=r"needs 3D Slicer 5\.10 or later .* this is Slicer 5\.8 .*download\.slicer"):
        load_module_script("FateSAM_on_5_8")
    assert "FateSAM_on_5_8" not in sys.modules


def python_39() -> str:
    """Slicer 5.8's Python (3.9), or skip."""
    for candidate in (shutil.which("python3.9"), *map(str, Path("/root/.pyenv/versions").glob("3.9*/bin/python"))):
        if candidate and subprocess.run([candidate, "-c", ""], capture_output=True).returncode == 0:
            return candidate
    pytest.skip("no Python 3.9 here (Slicer 5.8's): the refusal under 3.9 is not checked")


def test_under_slicer_58s_python_the_module_gives_the_reason_not_a_type_error():
    """Python 3.9 evaluates ``X | None`` annotations at definition time: the version check must come first."""
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(HERE)!r})
        from slicer_stand_ins import load_module_script, stand_ins
        parts = stand_ins(version=(5, 8), bare=True)
        sys.modules.update(parts["modules"])
        for name, value in parts["slicer"].items():
            setattr(sys.modules["slicer"], name, value)
        try:
            load_module_script()
        except RuntimeError as error:
            print("refused:", error)
        """
    )
    result = subprocess.run([python_39(), "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("refused: FateSAM needs 3D Slicer 5.10 or later (with Python 3.12); this is Slicer")
    assert "(Python 3.9)" in result.stdout and SCRIPT.is_file()


def test_the_modules_self_test_passes(module, caplog):
    """FateSAMTest.runTest() as Slicer runs it, in testing mode: every step, the engine's with SAM2 at random weights
    where PyTorch and sam2 are installed; where not (as on the extension build machines), those two are skipped and
    say so."""
    engine = dependency_plan().complete
    with caplog.at_level(logging.WARNING):
        module.FateSAMTest().runTest()
    skipped = [record.getMessage() for record in caplog.records if "FateSAM self-test" in record.getMessage()]
    if engine:
        assert skipped == []
    else:
        assert len(skipped) == 2 and all("testing mode downloads nothing" in message for message in skipped)
