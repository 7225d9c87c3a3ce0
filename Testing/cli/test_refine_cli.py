"""``fatesam segment --corrections``: a refine run from the command line, and its bad inputs refused before work."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import HIPPOCAMPUS, case_paths
from test_cli import segment_args

from FateSAMLib.cli import main
from FateSAMLib.io.geometry import from_slices, to_slices


def test_refine_from_the_command_line_keeps_the_edited_slice(tmp_path, capsys):
    first, refined = tmp_path / "first.nii.gz", tmp_path / "refined.nii.gz"
    assert main(segment_args(first, extra=["--feature-cache", str(tmp_path / "cache")])) == 0
    result = sitk.ReadImage(str(first))
    stack = to_slices(sitk.GetArrayFromImage(result), result, "axial")
    stack[9] = 0
    stack[9, 5:15, 5:15] = 1
    edited = sitk.GetImageFromArray(from_slices(stack, result, "axial").astype(np.uint8))
    edited.CopyInformation(result)
    sitk.WriteImage(edited, str(tmp_path / "edited.nii.gz"))
    extra = ["--feature-cache", str(tmp_path / "cache"), "--corrections", str(tmp_path / "edited.nii.gz")]
    extra += ["--corrected-slices", "auto", "--previous", str(first), "--stats-json", str(tmp_path / "stats.json")]
    assert main(segment_args(refined, extra=extra)) == 0
    out = sitk.ReadImage(str(refined))
    np.testing.assert_array_equal(to_slices(sitk.GetArrayFromImage(out), out, "axial")[9], stack[9])
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["corrected_slices"] == [9] and stats["encoder_passes"] == 0


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--corrections", "OTHER", "--corrected-slices", "3"], "does not match the query"),
        (["--corrections", "SAME", "--corrected-slices", "3", "99"], "[99] are outside the query's"),
        (["--corrections", "SAME", "--corrected-slices", "auto"], "needs the result the corrections were made on"),
        (["--corrections", "SAME", "--corrected-slices", "three"], "takes 'auto' or slice numbers"),
        (["--corrections", "SAME"], "--corrections needs --corrected-slices"),
        (["--corrected-slices", "3"], "pass the edited labels with --corrections"),
    ],
)
def test_bad_corrections_are_refused_before_the_model_is_built(tmp_path, capsys, extra, message):
    same = case_paths(HIPPOCAMPUS, "hippocampus_004")[1]  # a label map on the query's grid
    other = case_paths(HIPPOCAMPUS, "hippocampus_001")[1]
    extra = [str(same) if e == "SAME" else str(other) if e == "OTHER" else e for e in extra]
    output = tmp_path / "out.nii.gz"
    assert main(segment_args(output, extra=extra)) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and "RANDOM WEIGHTS" not in err
    assert not output.exists()
