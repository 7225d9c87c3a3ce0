"""The smallest stand-ins for what only the Slicer application provides, so that FateSAM/FateSAM.py imports outside
Slicer and its Logic and self-test scenario run on the slicer-core wheel's real MRML. The widget is not exercised.

Stood in for: the modules ``qt`` and ``ctk`` (empty: only the widget uses them), ``slicer.i18n`` (no translation),
``slicer.parameterNodeWrapper`` (a plain object per parameter node, with the declared defaults, over the real MRML
node), ``slicer.ScriptedLoadableModule`` (bases; the Logic's parameter node is a real vtkMRMLScriptedModuleNode) and
``slicer.app`` (its version, testing mode and event loop) with ``slicer.mrmlScene`` (a real scene).

Written for Python 3.9 as well: Testing/test_module_files.py imports FateSAM.py with it under Python 3.9 (Slicer 5.8's),
with ``bare=True`` (nothing of slicer-core there), to see the module refuse that Slicer with a clear message.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
import types
import typing
import unittest
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "FateSAM" / "FateSAM.py"


class App:
    """``slicer.app``: the version, testing mode and event loop the module's logic and self-test ask for."""

    def __init__(self, version: tuple[int, int], testing: bool) -> None:
        self.majorVersion, self.minorVersion = version
        self._testing = testing

    def testingEnabled(self) -> bool:
        return self._testing

    def processEvents(self) -> None:
        pass


def _with_defaults(cls: type) -> list[tuple[str, object]]:
    """Each declared field of a parameter node or pack with its default: the class value, [] for lists, else None."""
    fields = []
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():
        if name in cls.__dict__:
            fields.append((name, cls.__dict__[name]))
        else:
            fields.append((name, [] if typing.get_origin(annotation) is list else None))
    return fields


def _node_or_none(self, name: str) -> object:
    """A pack's field, where a node removed from its scene reads as None (the wrapper keeps node IDs)."""
    value = object.__getattribute__(self, name)
    return None if hasattr(value, "GetScene") and value.GetScene() is None else value


def parameter_pack(cls: type) -> type:
    """``@parameterPack``: positional or keyword fields, None by default, compared by value."""
    for name, default in _with_defaults(cls):
        setattr(cls, name, dataclasses.field(default_factory=lambda value=default: value))
    cls.__getattribute__ = _node_or_none
    return dataclasses.dataclass(cls)


def parameter_node_wrapper(cls: type) -> type:
    """``@parameterNodeWrapper``: built on the MRML node (``.parameterNode``), fields with their defaults."""
    fields = _with_defaults(cls)

    def __init__(self, parameterNode) -> None:
        self.parameterNode = parameterNode
        for name, default in fields:
            setattr(self, name, list(default) if isinstance(default, list) else default)

    cls.__init__ = __init__
    return cls


class Logic:
    """``ScriptedLoadableModuleLogic``: its parameter node is a real scripted module node in ``slicer.mrmlScene``."""

    def getParameterNode(self):
        import slicer

        node = slicer.mrmlScene.GetSingletonNode("FateSAM", "vtkMRMLScriptedModuleNode")
        if node is None:
            node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")
            node.SetSingletonTag("FateSAM")
        return node


class Test(unittest.TestCase):
    """``ScriptedLoadableModuleTest``: a TestCase whose ``delayDisplay`` only prints."""

    def delayDisplay(self, message: str, msec: int = 0) -> None:
        print(message)


def _module(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


def stand_ins(version: tuple[int, int] = (5, 10), testing: bool = True, bare: bool = False) -> dict:
    """``sys.modules`` entries and ``slicer`` attributes that stand in for the application (see the module docstring).

    ``bare``: no slicer-core either (Python 3.9): ``slicer``, ``slicer.util``, ``vtk`` and ``numpy`` stood in too.
    Returns ``{"modules": {name: module}, "slicer": {attribute: value}}``.
    """
    modules = {
        "qt": _module("qt"),
        "ctk": _module("ctk"),
        "slicer.i18n": _module("slicer.i18n", tr=lambda text: text, translate=lambda context, text: text),
        "slicer.parameterNodeWrapper": _module(
            "slicer.parameterNodeWrapper",
            Choice=lambda choices: choices,
            WithinRange=lambda low, high: (low, high),
            parameterNodeWrapper=parameter_node_wrapper,
            parameterPack=parameter_pack,
        ),
        "slicer.ScriptedLoadableModule": _module(
            "slicer.ScriptedLoadableModule",
            ScriptedLoadableModule=type("ScriptedLoadableModule", (), {}),
            ScriptedLoadableModuleWidget=type("ScriptedLoadableModuleWidget", (), {}),
            ScriptedLoadableModuleLogic=Logic,
            ScriptedLoadableModuleTest=Test,
        ),
    }
    attributes: dict = {"app": App(version, testing)}
    if bare:
        node_classes = {name: type(name, (), {}) for name in ("vtkMRMLScalarVolumeNode", "vtkMRMLSegmentationNode")}
        modules["slicer"] = _module("slicer", **node_classes)
        modules["slicer.util"] = _module("slicer.util", VTKObservationMixin=type("VTKObservationMixin", (), {}))
        modules["vtk"] = _module("vtk")
        modules["numpy"] = _module("numpy")
    else:
        import slicer

        attributes["mrmlScene"] = slicer.vtkMRMLScene()
    return {"modules": modules, "slicer": attributes}


def load_module_script(name: str = "FateSAM") -> types.ModuleType:
    """FateSAM/FateSAM.py imported as module ``name`` (the stand-ins must be in place)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and parameter packs look their module up
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
