"""The Slicer module's files, checked without Slicer: the widget script, its .ui file, the CMake lists and the icon."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODULE = REPO / "FateSAM"
ENGINE = REPO / "FateSAMLib"
SCRIPT = MODULE / "FateSAM.py"
UI_FILE = MODULE / "Resources" / "UI" / "FateSAM.ui"
NOT_BUILT = {"CMakeLists.txt"}  # the build description, not an installed file


@pytest.fixture(scope="module")
def script() -> ast.Module:
    return ast.parse(SCRIPT.read_text(encoding="utf-8"), filename=str(SCRIPT))


@pytest.fixture(scope="module")
def ui_widgets() -> dict[str, str]:
    """objectName -> class of every widget in the .ui file."""
    root = ElementTree.parse(UI_FILE).getroot()
    return {widget.get("name"): widget.get("class") for widget in root.iter("widget")}


def classes(tree: ast.Module) -> dict[str, ast.ClassDef]:
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}


def test_script_has_the_template_structure(script):
    found = classes(script)
    bases = {name: [ast.unparse(base) for base in node.bases] for name, node in found.items()}
    assert bases["FateSAM"] == ["ScriptedLoadableModule"]
    assert bases["FateSAMWidget"] == ["ScriptedLoadableModuleWidget", "VTKObservationMixin"]
    assert bases["FateSAMLogic"] == ["ScriptedLoadableModuleLogic"]
    assert bases["FateSAMTest"] == ["ScriptedLoadableModuleTest"]
    assert [ast.unparse(d) for d in found["FateSAMParameterNode"].decorator_list] == ["parameterNodeWrapper"]
    assert [ast.unparse(d) for d in found["FateSAMSupport"].decorator_list] == ["parameterPack"]
    logic = {node.name: node for node in found["FateSAMLogic"].body if isinstance(node, ast.FunctionDef)}
    arguments = [argument.arg for argument in logic["process"].args.args]
    assert arguments == ["self", "targetVolume", "supports", "segmentNames", "outputSegmentation"]
    assert logic["process"].args.kwarg.arg == "options"
    # scripts call ensureDependencies() with no argument; confirm(plan) -> bool replaces the dialog when given
    ensure = logic["ensureDependencies"].args
    assert [a.arg for a in ensure.args] == ["self", "confirm"] and [ast.unparse(d) for d in ensure.defaults] == ["None"]
    tests = [node.name for node in found["FateSAMTest"].body if isinstance(node, ast.FunctionDef)]
    assert {"setUp", "runTest"} <= set(tests) and sum(name.startswith("test_") for name in tests) >= 3


def test_every_ui_attribute_the_script_uses_exists_in_the_ui_file(script, ui_widgets):
    used = {
        node.attr
        for node in ast.walk(script)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "ui"
        and isinstance(node.value.value, ast.Name)
        and node.value.value.id == "self"
    }
    assert {"applyButton", "supportsTable", "segmentsList", "progressBar", "doubtfulSlicesList"} <= used
    assert sorted(used - set(ui_widgets)) == []


def fields(node: ast.ClassDef) -> dict[str, ast.AnnAssign]:
    """A parameter node's or pack's declared parameters by name."""
    return {item.target.id: item for item in node.body if isinstance(item, ast.AnnAssign)}


def test_supports_are_one_list_of_volume_and_segmentation_packs(script):
    found = classes(script)
    node = fields(found["FateSAMParameterNode"])
    assert ast.unparse(node["supports"].annotation) == "list[FateSAMSupport]"
    assert not [name for name in node if name.startswith("support") and name != "supports"]  # no parallel lists
    support = {name: ast.unparse(item.annotation) for name, item in fields(found["FateSAMSupport"]).items()}
    assert support == {"volume": "vtkMRMLScalarVolumeNode", "segmentation": "vtkMRMLSegmentationNode"}


def test_parameter_node_declares_the_model_choices_and_takes_the_run_settings_defaults(script):
    """The model is one of the registry's names; each run setting's default is RunSettings' (FateSAMLib.options), read
    from the field that FateSAMLib.slicer.parameters maps it to; the window's is the module's own."""
    from FateSAMLib.slicer.parameters import SETTINGS_OF_PARAMETERS, ModuleSettings

    node = fields(classes(script)["FateSAMParameterNode"])
    assert ast.unparse(node["model"].annotation) == "Annotated[str, Choice(model_names())]"
    defaults = {name: ast.unparse(item.value) for name, item in node.items() if item.value is not None}
    assert defaults == {
        **{parameter: f"RunSettings.{name}" for parameter, name in SETTINGS_OF_PARAMETERS.items()},
        "windowLevel": "DEFAULT_WINDOW[0]",
        "windowWidth": "DEFAULT_WINDOW[1]",
    }
    assert set(ModuleSettings.__annotations__) <= set(node)  # what the Qt-free helpers read, the node has


GUI_DIALOGS = {
    "confirmOkCancelDisplay",
    "confirmYesNoDisplay",
    "errorDisplay",
    "warningDisplay",
    "infoDisplay",
    "messageBox",
    "createProgressDialog",
    "tryWithErrorDisplay",
    "QMessageBox",
    "QProgressDialog",
    "QFileDialog",
    "QInputDialog",
}


def test_the_logic_opens_no_dialog(script):
    """The logic returns or raises; the widget (or confirmInstallation, the scripts' default) asks the user."""
    logic = classes(script)["FateSAMLogic"]
    used = {node.attr for node in ast.walk(logic) if isinstance(node, ast.Attribute)}
    used |= {node.id for node in ast.walk(logic) if isinstance(node, ast.Name)}
    assert sorted(used & GUI_DIALOGS) == []
    assert "confirmOkCancelDisplay" in ast.unparse(script)  # the dialog is there, outside the logic


def test_reopening_the_module_connects_the_widgets_once(script):
    """connectGui's tag is kept, and every way to a new connection (setParameterNode; exit before a later enter)
    first undoes the last one with that tag, so that reopening the module never stacks connections."""
    widget = {n.name: n for n in classes(script)["FateSAMWidget"].body if isinstance(n, ast.FunctionDef)}
    connects = [n for n in ast.walk(classes(script)["FateSAMWidget"]) if isinstance(n, ast.Call) and
                ast.unparse(n.func).endswith(".connectGui")]  # fmt: skip
    assert len(connects) == 1
    assign = [n for n in ast.walk(widget["setParameterNode"]) if isinstance(n, ast.Assign) and n.value is connects[0]]
    assert [ast.unparse(target) for target in assign[0].targets] == ["self._parameterNodeGuiTag"]
    for name in ("setParameterNode", "exit"):
        first = widget[name].body[0]
        assert ast.unparse(first) == "self._disconnectParameterNode()", name
    undo = ast.unparse(widget["_disconnectParameterNode"])
    assert "disconnectGui(self._parameterNodeGuiTag)" in undo and "self._parameterNodeGuiTag = None" in undo


def test_a_start_after_an_installation_shows_only_its_own_error(script):
    """tryWithErrorDisplay shows its dialog and re-raises: the start that follows an installation runs outside the
    'dependencies are incomplete' block, so that a failing start shows its own dialog only, not a second wrong one."""
    widget = {n.name: n for n in classes(script)["FateSAMWidget"].body if isinstance(n, ast.FunctionDef)}
    finished = widget["onInstallFinished"]
    calls = [n for n in ast.walk(finished) if isinstance(n, ast.Call) and ast.unparse(n.func) == "then"]
    assert len(calls) == 1
    blocks = [n for n in ast.walk(finished) if isinstance(n, ast.With)]
    assert blocks and not [w for w in blocks if calls[0] in list(ast.walk(w))]


def test_the_help_links_to_the_readme_and_states_the_minimum(script):
    module = ast.unparse(classes(script)["FateSAM"])
    assert "getDefaultModuleDocumentationLink" not in module and "README_URL" in module and "MINIMUM_SLICER" in module
    assert re.search(r'README_URL = "https://github\.com/[^"]+#3d-slicer-module"', SCRIPT.read_text(encoding="utf-8"))
    assert "## 3D Slicer module" in (REPO / "README.md").read_text(encoding="utf-8")


def test_bound_widgets_name_parameters_of_the_parameter_node(script):
    root = ElementTree.parse(UI_FILE).getroot()
    bound = {}
    for widget in root.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.find("string").text] = widget.get("class")
    annotations = {
        name: ast.unparse(item.annotation) for name, item in fields(classes(script)["FateSAMParameterNode"]).items()
    }
    assert set(bound) <= set(annotations), set(bound) - set(annotations)
    assert {"model", "device", "sliceAxis", "normalization"} <= set(bound)
    for name, widget_class in bound.items():
        if widget_class == "QComboBox":  # the parameter node fills a combo box from a Choice annotation
            assert "Choice(" in annotations[name], name
        if widget_class == "qMRMLNodeComboBox":
            assert annotations[name].startswith("vtkMRML"), name


def test_ui_file_declares_every_custom_widget_class(ui_widgets):
    root = ElementTree.parse(UI_FILE).getroot()
    declared = {custom.findtext("class") for custom in root.iter("customwidget")}
    custom = {cls for cls in ui_widgets.values() if not cls.startswith("Q")}
    assert custom <= declared, custom - declared


def cmake_listed_files() -> set[Path]:
    """Every file in the CMake lists' *_SCRIPTS and *_RESOURCES variables, resolved against their folder."""
    listed = set()
    for cmake in (REPO / "CMakeLists.txt", MODULE / "CMakeLists.txt"):
        text = re.sub(r"#.*", "", cmake.read_text(encoding="utf-8")).replace("${MODULE_NAME}", "FateSAM")
        for block in re.findall(r"set\(\w+_(?:SCRIPTS|RESOURCES)\s([^)]*)\)", text):
            listed |= {(cmake.parent / token).resolve() for token in block.split()}
    return listed


def installed_files() -> set[Path]:
    """The files that must reach the extension: the module's and the engine's, as they are in the folders now."""
    module_files = {
        path.resolve()
        for path in MODULE.rglob("*")
        if path.is_file() and path.name not in NOT_BUILT and "__pycache__" not in path.parts
    }
    engine_files = {path.resolve() for path in ENGINE.rglob("*.py") if "__pycache__" not in path.parts}
    return module_files | engine_files | {(REPO / "requirements.txt").resolve()}


def test_cmake_lists_name_every_module_and_engine_file_and_nothing_else():
    listed, present = cmake_listed_files(), installed_files()
    assert sorted(str(p.relative_to(REPO)) for p in present - listed) == [], "files missing from the CMake lists"
    assert sorted(str(p.relative_to(REPO)) for p in listed - present) == [], "CMake lists name files that are gone"


def cmake_value(text: str, variable: str) -> str:
    """The quoted value of ``set(VARIABLE "...")`` in a CMake list, as the Extensions Index validator reads it."""
    found = re.search(rf'set\s*\({variable}\s*"([^"]*)"\s*\)', text)
    assert found, variable
    return found.group(1)


def test_top_level_cmake_has_the_extension_metadata():
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    for variable in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION"):
        assert cmake_value(text, variable), variable
    assert 'set(EXTENSION_CATEGORY "Segmentation")' in text and 'set(EXTENSION_DEPENDS "NA")' in text
    assert "find_package(Slicer REQUIRED)" in text and "add_subdirectory(FateSAM)" in text
    assert 'if(Slicer_VERSION VERSION_LESS "5.10")' in text  # the minimum, as the module and the README state it


def test_the_extension_is_ready_for_the_extensions_index():
    """What the Index's validator (scripts/check_description_files.py) reads: literal https URLs (it does not expand
    CMake variables), the icon where the URL points, a LICENSE at the root (Apache-2.0, as pyproject says), and a
    catalog entry FateSAM.json named after project() with the fields of the catalog schema. The screenshot needs the
    real application: none is made up (README: Publishing the extension)."""
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    icon = cmake_value(text, "EXTENSION_ICONURL")
    assert (
        icon.startswith("https://raw.githubusercontent.com/") and "${" not in text.split("# Extension dependencies")[0]
    )
    assert (REPO / icon.split("/main/", 1)[1]).is_file()
    assert cmake_value(text, "EXTENSION_HOMEPAGE").startswith("https://")
    assert cmake_value(text, "EXTENSION_SCREENSHOTURLS") == ""
    license_text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert 'license = { text = "Apache-2.0" }' in (REPO / "pyproject.toml").read_text(encoding="utf-8")
    entry = json.loads((REPO / "FateSAM.json").read_text(encoding="utf-8"))
    assert re.search(r"^project\(FateSAM\)$", text, re.MULTILINE)
    allowed = {"$schema", "category", "scm_url", "scm_revision", "build_dependencies", "build_subdirectory", "tier"}
    assert set(entry) <= allowed and {"$schema", "category", "scm_url"} <= set(entry)
    assert entry["$schema"].endswith("/Schemas/slicer-extension-catalog-entry-schema-v1.0.2.json#")
    assert entry["category"] == cmake_value(text, "EXTENSION_CATEGORY")
    assert entry["scm_url"].startswith("https://") and entry["scm_revision"] == "main"
    assert entry["build_dependencies"] == [] and entry["tier"] in (1, 3, 5)  # as EXTENSION_DEPENDS "NA"


def test_the_python_versions_agree_with_the_code():
    """requires-python and ruff's target name the same minimum, the Slicer tier and FateSAM.py parse under it, and
    FateSAM.py parses under Slicer 5.8's Python 3.9 (so that it can say that Slicer is too old)."""
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    minimum = re.search(r'requires-python = ">=3\.(\d+)"', pyproject).group(1)
    assert f'target-version = "py3{minimum}"' in pyproject
    for path in [*ENGINE.rglob("*.py"), SCRIPT]:
        ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, int(minimum)))
    ast.parse(SCRIPT.read_text(encoding="utf-8"), filename=str(SCRIPT), feature_version=(3, 9))
    module_cmake = (MODULE / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "slicerMacroBuildScriptedModule(" in module_cmake and "slicer_add_python_unittest(" in module_cmake


def test_icon_is_a_128_pixel_png_in_both_places():
    image = pytest.importorskip("PIL.Image")
    root_icon, module_icon = REPO / "FateSAM.png", MODULE / "Resources" / "Icons" / "FateSAM.png"
    assert root_icon.read_bytes() == module_icon.read_bytes()
    with image.open(module_icon) as icon:
        assert icon.format == "PNG" and icon.size == (128, 128)
        colours = icon.convert("RGB").getcolors(maxcolors=128 * 128)
        assert len(colours) > 50  # a drawing, not a flat placeholder


# What the Slicer module imports when it loads, before torch, SimpleITK, slicerio or sam2 may be installed in Slicer:
# the subpackage FateSAMLib.slicer, the standard-library-only top level and the model registry.
SLICER_TIER = ("FateSAMLib", "FateSAMLib.slicer", "FateSAMLib.models.registry")
NOT_FOR_SLICER_TIER = {"torch", "SimpleITK", "sam2", "slicerio", "qt", "ctk"}


def slicer_tier_files() -> list[Path]:
    """Every module of the Slicer tier: the top level's own modules (but ``metrics``, which scores label images with
    SimpleITK), FateSAMLib/slicer/ and the model registry."""
    top_level = [path for path in ENGINE.glob("*.py") if path.name != "metrics.py"]
    return [*top_level, *(ENGINE / "slicer").glob("*.py"), ENGINE / "models" / "registry.py"]


def test_slicer_tier_imports_no_gui_and_no_model_dependencies():
    """Importing the Slicer tier loads neither torch nor sam2 (nor SimpleITK, slicerio, Qt): checked structurally."""
    for path in slicer_tier_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        top_level = {module.split(".")[0] for module in imported}
        assert not top_level & NOT_FOR_SLICER_TIER, path
        relative = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level >= 2}
        assert not {m for m in relative if m and m.split(".")[0] in {"io", "method", "cli"}}, (path, relative)
        application = {
            node.attr
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "slicer"
        } & {"app", "util", "mrmlScene", "modules"}
        assert not application, (path, application)
    code = textwrap.dedent(
        f"""
        import importlib, importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {sorted(NOT_FOR_SLICER_TIER)!r}:
                    raise ImportError(f"blocked: {{name}}")
        sys.meta_path.insert(0, Block())
        for name in {SLICER_TIER!r}:
            importlib.import_module(name)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {sorted(NOT_FOR_SLICER_TIER)!r})
        print("loaded:", loaded)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip().endswith("loaded: []"), result.stderr


def test_readme_gives_the_slicer_self_test_and_console_commands():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert "slicer.testing.runUnitTest(['/path/to/checkout/FateSAM'], 'FateSAM')" in text
    assert "--additional-module-path /path/to/checkout/FateSAM" in text
    assert ".process(" in text and "PyTorch" in text


SERVER_WIDGETS = ("runOnComboBox", "serverURLLineEdit", "serverTokenLineEdit", "testConnectionButton")


def test_the_server_widgets_are_unbound_and_the_token_is_typed_as_a_password(ui_widgets):
    """Where runs go is this computer's (Slicer's settings): no server widget is bound to the parameter node."""
    root = ElementTree.parse(UI_FILE).getroot()
    widgets = {widget.get("name"): widget for widget in root.iter("widget")}
    assert {name: ui_widgets[name] for name in SERVER_WIDGETS} == {
        "runOnComboBox": "QComboBox",
        "serverURLLineEdit": "QLineEdit",
        "serverTokenLineEdit": "QLineEdit",
        "testConnectionButton": "QPushButton",
    }
    for name in SERVER_WIDGETS:
        assert not [p for p in widgets[name].iter("property") if p.get("name") == "SlicerParameterName"], name
    echo = [p.findtext("enum") for p in widgets["serverTokenLineEdit"].iter("property") if p.get("name") == "echoMode"]
    assert echo == ["QLineEdit::Password"]


def test_the_server_and_token_never_reach_the_parameter_node(script):
    """No parameter of the node (saved with the scene) is about the server; the script keeps the choice only through
    ServerChoice.load/save with qt.QSettings(), whose keys are FateSAMLib.slicer.parameters' (one place)."""
    from FateSAMLib.slicer.parameters import RUN_ON_KEY, SERVER_TOKEN_KEY, SERVER_URL_KEY

    node = fields(classes(script)["FateSAMParameterNode"])
    assert not [name for name in node if re.search("server|token|url|runon", name, re.IGNORECASE)]
    for node_ast in ast.walk(script):
        if isinstance(node_ast, ast.Attribute) and isinstance(node_ast.ctx, ast.Store):
            owner = ast.unparse(node_ast.value)
            if "parameterNode" in owner or "ParameterNode" in owner:
                assert not re.search("server|token|url", node_ast.attr, re.IGNORECASE), ast.unparse(node_ast)
    text = ast.unparse(script)
    assert not [key for key in (RUN_ON_KEY, SERVER_URL_KEY, SERVER_TOKEN_KEY) if key in text]
    settings_calls = {
        ast.unparse(n.func)
        for n in ast.walk(script)
        if isinstance(n, ast.Call) and "qt.QSettings()" in [ast.unparse(a) for a in n.args]
    }
    assert settings_calls == {"ServerChoice.load", "choice.save"}


def test_the_logic_sends_runs_to_a_server_that_needs_no_local_dependencies(script):
    """createRun/process/createRunFromParameterNode/createRefineRun take server and token keywords (a
    RemoteSegmentationRun, a RemoteRefineRun), and the dependency plan of a server run is empty: no torch, no sam2
    asked for."""
    logic = {n.name: n for n in classes(script)["FateSAMLogic"].body if isinstance(n, ast.FunctionDef)}
    for name in ("createRun", "createRunFromParameterNode", "process", "createRefineRun"):
        arguments = logic[name].args
        defaults = [ast.unparse(default) for default in arguments.kw_defaults]
        keywords = dict(zip([a.arg for a in arguments.kwonlyargs], defaults, strict=True))
        assert {key: keywords.get(key) for key in ("server", "token")} == {"server": "None", "token": "None"}, name
    assert "RemoteSegmentationRun(" in ast.unparse(logic["createRun"])
    assert "RemoteRefineRun(" in ast.unparse(logic["createRefineRun"])
    for name in ("startDependencyInstall", "ensureDependencies"):
        assert [a.arg for a in logic[name].args.kwonlyargs] == ["server"], name
    first = logic["dependencyPlan"].body[1]  # after the docstring
    assert ast.unparse(first) == "return DependencyPlan() if server else dependency_plan()"
