"""File formats by suffix: one list, one rule, the same for every reader and writer."""

from __future__ import annotations

from pathlib import Path

import pytest

from FateSAMLib.formats import (
    IMAGE_SUFFIXES,
    LABEL_SUFFIXES,
    OUTPUT_SUFFIXES,
    SEGMENTATION_SUFFIX,
    file_stem,
    is_segmentation_file,
    output_suffix,
    suffix_of,
)


def test_the_longest_suffix_wins_whatever_its_case():
    assert suffix_of("a/case.SEG.NRRD") == SEGMENTATION_SUFFIX and is_segmentation_file("case.Seg.Nrrd")
    assert suffix_of("case.seg.nrrd", IMAGE_SUFFIXES) == ".nrrd" and not is_segmentation_file("case.nrrd")
    assert suffix_of("case.NII.GZ") == ".nii.gz" and suffix_of("case.png") == ""
    assert output_suffix("case.nhdr") == "" and output_suffix("case.mha") == ".mha"


def test_file_stem_drops_the_format_suffix_only():
    assert [file_stem(name) for name in ("a.seg.nrrd", "b.nii.gz", "c.v2.mha", "d.vtk")] == ["a", "b", "c.v2", "d"]


def test_the_lists_agree():
    assert set(OUTPUT_SUFFIXES) <= set(LABEL_SUFFIXES) == {SEGMENTATION_SUFFIX, *IMAGE_SUFFIXES}


def test_crossval_and_the_image_reader_take_the_same_files(tmp_path: Path):
    from FateSAMLib.cli.crossval import find_cases
    from FateSAMLib.errors import InputError
    from FateSAMLib.io.images import read_image

    for folder in ("images", "labels"):
        (tmp_path / folder).mkdir()
        for name in ("A.NII.GZ", "b.nhdr", "c.mha", "d.png"):
            (tmp_path / folder / name).write_bytes(b"")
    assert [name for name, _, _ in find_cases(tmp_path)] == ["A", "b", "c"]
    with pytest.raises(InputError, match="unsupported file type. Use " + ", ".join(IMAGE_SUFFIXES)):
        read_image(tmp_path / "images" / "d.png")
