"""Support set manifests without a scene: written and read back, and every broken manifest refused clearly."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import HIPPOCAMPUS, case_paths, write_support_set

from FateSAMLib.errors import InputError
from FateSAMLib.support_sets import MANIFEST_NAME, read_support_set

REPO = Path(__file__).resolve().parents[1]
HINTS = {"model": "sam2.1-small", "top_k": 4}


PAIRS = ("hippocampus_001", "hippocampus_003")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A support set of two real hippocampus cases, made by hand."""
    return write_support_set(tmp_path / "hippocampus", [case_paths(HIPPOCAMPUS, name) for name in PAIRS], HINTS)


def test_a_written_set_reads_back_with_its_cases_in_order_and_its_hints(folder):
    support_set = read_support_set(folder)
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    assert (manifest["format"], manifest["version"]) == ("fatesam-support-set", 1)
    assert [case["volume"] for case in manifest["cases"]] == ["case01.nii.gz", "case02.nii.gz"]  # plain names only
    assert support_set.name == "Hippocampus" and support_set.model_hints == HINTS
    assert [case.name for case in support_set.cases] == ["hippocampus_001.nii.gz", "hippocampus_003.nii.gz"]
    assert support_set.cases[1].segments == ("Label 1", "Label 2")
    assert support_set.pairs() == [
        (folder / "case01.nii.gz", folder / "case01_labels.nii.gz"),
        (folder / "case02.nii.gz", folder / "case02_labels.nii.gz"),
    ]
    for copies, originals in zip(support_set.pairs(), [case_paths(HIPPOCAMPUS, name) for name in PAIRS], strict=True):
        assert [path.read_bytes() for path in copies] == [path.read_bytes() for path in originals]


def rewrite_manifest(folder: Path, change) -> None:
    path = folder / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.update(format="other"), "is not a fatesam-support-set manifest; save the support set again"),
        (lambda m: m.update(version=99), "format version 99; this FateSAM reads version 1. Update FateSAM"),
        (lambda m: m.update(cases=[]), "lists no cases; save the support set again"),
        (lambda m: m.update(name=""), "has no name; save the support set again"),
        (lambda m: m.update(model_hints=["sam2.1-small"]), "has model hints that are not a JSON object; save"),
        (lambda m: m["cases"].append("case03.nii.gz"), "has case 3 that is not a JSON object; save"),
        (lambda m: m["cases"][0].update(volume=".."), "names the volume file '..', which is not a plain file name"),
        (lambda m: m["cases"][1].pop("segmentation"), "names the segmentation file None, which is not a plain"),
        (lambda m: m["cases"][0].update(segments="Label 1"), "has case 1 whose segments are not a list of names"),
        (lambda m: m["cases"][1].update(segmentation="gone.nii.gz"), "gone.nii.gz, which is missing; copy the whole"),
    ],
)
def test_a_broken_manifest_gives_a_clear_error(folder, change, message):
    rewrite_manifest(folder, change)
    with pytest.raises(InputError, match=re.escape(message)):
        read_support_set(folder)


def test_a_case_file_outside_the_folder_is_refused_even_when_it_exists(folder, tmp_path):
    outside = tmp_path / "elsewhere.nii.gz"
    outside.write_bytes((folder / "case01.nii.gz").read_bytes())
    for name in ("../elsewhere.nii.gz", str(outside)):
        rewrite_manifest(folder, lambda m, name=name: m["cases"][0].update(volume=name))
        with pytest.raises(InputError, match="not a plain file name in the set's folder"):
            read_support_set(folder)


def test_an_unreadable_or_missing_manifest_and_a_missing_folder(folder, tmp_path):
    with pytest.raises(InputError, match="does not exist or is not a folder"):
        read_support_set(tmp_path / "nowhere")
    with pytest.raises(InputError, match="does not exist or is not a folder"):
        read_support_set(folder / "case01.nii.gz")
    with pytest.raises(InputError, match=f"not a FateSAM support set \\(no {MANIFEST_NAME}\\)"):
        read_support_set(tmp_path)
    (folder / MANIFEST_NAME).write_text("{ not json")
    with pytest.raises(InputError, match="is not valid JSON.*; save the support set again"):
        read_support_set(folder)
    (folder / MANIFEST_NAME).write_bytes(b"\xff\xfe\x00")
    with pytest.raises(InputError, match="is not UTF-8 text; save the support set again"):
        read_support_set(folder)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"format": "fatesam-support-set", "model_hints": ' + "[" * 100_000, "more than 32 levels deep; save"),
        ('{"format": "fatesam-support-set", "name": "' + "x" * 2 * 1024**2 + '"}', "is too large (over 1048576 bytes"),
    ],
    ids=["nested", "huge"],
)
def test_a_deeply_nested_or_huge_manifest_is_one_message_before_it_is_parsed(folder, text, message):
    (folder / MANIFEST_NAME).write_text(text)
    with pytest.raises(InputError, match=re.escape(message)) as refused:
        read_support_set(folder)
    assert str(refused.value).startswith(f"The support set manifest {folder / MANIFEST_NAME} ")
    assert str(refused.value).count("\n") == 0 and len(str(refused.value)) < 400


def test_reading_a_set_imports_no_third_party_module(folder):
    """The manifest reader is standard library only: the command line and Slicer both use it."""
    code = textwrap.dedent(
        f"""
        import sys
        before = set(sys.modules)
        from FateSAMLib.support_sets import read_support_set
        read_support_set({str(folder)!r})
        loaded = {{name.split(".")[0] for name in set(sys.modules) - before}}
        print(sorted(loaded - set(sys.stdlib_module_names) - {{"FateSAMLib"}}))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr
