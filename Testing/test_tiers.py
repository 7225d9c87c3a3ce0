"""The import graph against the tier order of README's "Layout": each tier imports only the tiers listed before it
(and itself), the top tier the standard library only, and nothing imports the Slicer tier; read from the source
(every ``import`` statement, function-local ones too), so a late import cannot hide an edge."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "FateSAMLib"
TIERS = ("top", "slicer", "io", "models", "method", "cohort", "server", "cli")
"""The tiers in README order; the top tier is the package's own modules (and ``models.registry``)."""
STANDARD_LIBRARY_ONLY = ("FateSAMLib.models.registry",)
"""Modules of a later folder that belong to the top tier: standard library only, imported by it."""
LATER_TOP_LEVEL = {"FateSAMLib.metrics": "io"}
"""Top-level modules that belong to a later tier (``metrics`` scores label images read by ``io``)."""


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def tier_of(module: str) -> str:
    if module in STANDARD_LIBRARY_ONLY:
        return "top"
    if module in LATER_TOP_LEVEL:
        return LATER_TOP_LEVEL[module]
    parts = module.split(".")
    if len(parts) > 1 and (PACKAGE / parts[1]).is_dir():
        return parts[1]
    return "top"


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports (relative imports resolved), also inside functions."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
                # "from . import errors" names a module; "from .x import y" names x (y may be a module too)
                found |= {f"{target}.{alias.name}" for alias in node.names if not node.module} or {target}
            else:
                found.add(node.module)
    return found


def project_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def forbidden_edges() -> list[str]:
    wrong = []
    for path in project_modules():
        source = module_name(path)
        tier = tier_of(source)
        for target in sorted(imports_of(path)):
            top_name = target.split(".")[0]
            if top_name != "FateSAMLib":
                if tier == "top" and top_name not in sys.stdlib_module_names and top_name != "__future__":
                    wrong.append(f"{source} (top tier: standard library only) imports {target}")
                continue
            target_tier = tier_of(target) if target != "FateSAMLib" else "top"
            if target_tier == "slicer" and tier != "slicer":
                wrong.append(f"{source} ({tier}) imports the Slicer tier: {target}")
            elif tier == "slicer" and target_tier not in ("top", "slicer"):
                wrong.append(f"{source} (slicer) imports {target} ({target_tier})")
            elif TIERS.index(target_tier) > TIERS.index(tier):
                wrong.append(f"{source} ({tier}) imports a later tier: {target} ({target_tier})")
    return wrong


def test_every_import_follows_the_tier_order():
    assert forbidden_edges() == []


@pytest.mark.parametrize(
    "source, statement, expected",
    [
        ("server/jobs.py", "from ..cli.main import _run", "(server) imports a later tier: FateSAMLib.cli.main (cli)"),
        ("method/engine.py", "from ..cohort import runner", "(method) imports a later tier: FateSAMLib.cohort"),
        ("io/labels.py", "from ..slicer.scene import x", "imports the Slicer tier"),
        ("slicer/scene.py", "import FateSAMLib.io.images", "(slicer) imports FateSAMLib.io.images (io)"),
        ("atomic.py", "import numpy", "(top tier: standard library only) imports numpy"),
    ],
)
def test_the_check_finds_an_import_against_the_order(source, statement, expected, monkeypatch):
    """The test above can fail: one added import of each kind is reported."""
    path = PACKAGE / source
    text = path.read_text(encoding="utf-8")
    original = Path.read_text
    monkeypatch.setattr(
        Path, "read_text", lambda self, *a, **k: text + f"\n{statement}\n" if self == path else original(self, *a, **k)
    )
    assert any(expected in edge for edge in forbidden_edges())


def test_the_readme_lists_the_tiers_in_this_order():
    layout = ROOT.joinpath("README.md").read_text(encoding="utf-8").split("## Layout", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^- (?:top level|`(\w+)/`)", layout, flags=re.MULTILINE)
    assert tuple(name or "top" for name in listed) == TIERS
