"""A refine run on ``fatesam serve`` (127.0.0.1): the same result as the local refine, the corrected slices kept
exactly, nothing encoded for a query the server has seen, bad corrections refused with the command line's messages
before any job, and the cached query features private and expiring with the results."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from server_helpers import ENGINE, TOKEN, running_server, small_inputs, wait_for, written

from FateSAMLib.cli.arguments import settings_from_args
from FateSAMLib.cli.corrections import corrections_from_args
from FateSAMLib.cli.main import build_parser, main
from FateSAMLib.errors import InputError
from FateSAMLib.io.geometry import from_slices, to_slices
from FateSAMLib.method.pipeline import prepare_query
from FateSAMLib.progress import FINISHED_STATES
from FateSAMLib.remote import CorrectionFiles

EDITED_SLICE = 1


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return small_inputs(tmp_path_factory.mktemp("inputs"))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with running_server(work_dir=tmp_path_factory.mktemp("server")) as server:
        yield server


@pytest.fixture(scope="module")
def first(served, inputs, tmp_path_factory):
    """A first run on the server, and that result with one axial slice redrawn (a reviewer's correction)."""
    folder = tmp_path_factory.mktemp("first")
    result, edited = folder / "first.nii.gz", folder / "edited.nii.gz"
    assert main([*inputs.segment_args(result), "--server", served.url, "--token-file", token_file(folder)]) == 0
    image = sitk.ReadImage(str(result))
    stack = to_slices(sitk.GetArrayFromImage(image), image, "axial")
    stack[EDITED_SLICE] = 0
    stack[EDITED_SLICE, 10:20, 8:16] = 1
    corrected = sitk.GetImageFromArray(from_slices(stack, image, "axial").astype(np.uint8))
    corrected.CopyInformation(image)
    sitk.WriteImage(corrected, str(edited))
    return result, edited


def token_file(folder: Path) -> str:
    path = folder / "token"
    path.write_text(TOKEN)
    return str(path)


def axial(path: Path) -> np.ndarray:
    image = sitk.ReadImage(str(path))
    return to_slices(sitk.GetArrayFromImage(image), image, "axial")


def test_a_remote_refine_is_the_local_refine_keeps_the_slice_and_encodes_nothing(served, inputs, first, tmp_path):
    result, edited = first
    refine = ["--corrections", str(edited), "--corrected-slices", "auto", "--previous", str(result)]
    remote, local = tmp_path / "remote.seg.nrrd", tmp_path / "local.seg.nrrd"
    server = ["--server", served.url, "--token-file", token_file(tmp_path)]
    assert main([*inputs.segment_args(remote), *server, *refine, "--stats-json", str(tmp_path / "r.json")]) == 0
    assert main([*inputs.segment_args(local), *ENGINE, *refine, "--stats-json", str(tmp_path / "l.json")]) == 0
    assert written(remote) == written(local)  # bitwise, but the writer's timestamp
    np.testing.assert_array_equal(axial(remote)[EDITED_SLICE], axial(edited)[EDITED_SLICE])
    assert not np.array_equal(axial(result)[EDITED_SLICE], axial(edited)[EDITED_SLICE])  # the edit is a change
    remote_stats, local_stats = (json.loads((tmp_path / name).read_text()) for name in ("r.json", "l.json"))
    assert remote_stats["corrected_slices"] == local_stats["corrected_slices"] == [EDITED_SLICE]
    assert remote_stats["encoder_passes"] == 0 and local_stats["encoder_passes"] > 0  # the server's cache has them

    client = served.client()  # the corrected slices as numbers: the same refine
    set_id = client.upload_support_set(inputs.supports)
    job_id = client.submit(inputs.query, set_id, corrections=CorrectionFiles(edited, [EDITED_SLICE]))
    wait_for(lambda: client.job(job_id)["state"] in FINISHED_STATES, 120, "the refine")
    assert client.job(job_id)["state"] == "succeeded"
    client.download(job_id, tmp_path / "numbers.seg.nrrd", tmp_path / "numbers.json")
    assert written(tmp_path / "numbers.seg.nrrd") == written(local)
    assert json.loads((tmp_path / "numbers.json").read_text())["encoder_passes"] == 0
    client.cancel(job_id)

    features = list(served.service.features.iterdir())
    assert features  # the query's features are kept, as private as every other file of the server
    for path in [served.service.folder, *served.service.folder.rglob("*")]:
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600), path


def local_message(inputs, corrections: CorrectionFiles) -> str:
    """What ``fatesam segment`` says about these corrections (paths as the server names the uploads: their names)."""
    arguments = [*inputs.segment_args(Path("unused.seg.nrrd")), *ENGINE]
    if corrections.labels:
        arguments += ["--corrections", str(corrections.labels)]
    if corrections.slices:
        arguments += ["--corrected-slices", *(str(value) for value in corrections.slices)]
    if corrections.previous:
        arguments += ["--previous", str(corrections.previous)]
    args = build_parser().parse_args(arguments)
    with pytest.raises(InputError) as refused:
        prepare_query(inputs.query, settings_from_args(args).slice_axis, corrections_from_args(args))
    message = str(refused.value)
    for path in (inputs.query, corrections.labels, corrections.previous):
        message = message.replace(str(path), path.name) if path else message
    return message


@pytest.mark.parametrize(
    "case, expected",
    [
        ("another grid", "does not match the query"),
        ("slice out of range", "[99] are outside the query's 3 axial slices"),
        ("auto without previous", "needs the result the corrections were made on"),
        ("not a number", "takes 'auto' or slice numbers"),
        ("no slices", "--corrections needs --corrected-slices"),
        ("no corrections", "pass the edited labels with --corrections"),
    ],
)
def test_bad_corrections_are_refused_with_the_command_lines_message_and_no_job(served, inputs, first, case, expected):
    result, edited = first
    corrections = {
        "another grid": CorrectionFiles(inputs.labels, [1]),
        "slice out of range": CorrectionFiles(edited, [1, 99]),
        "auto without previous": CorrectionFiles(edited, ["auto"]),
        "not a number": CorrectionFiles(edited, ["three"]),
        "no slices": CorrectionFiles(edited, None, result),
        "no corrections": CorrectionFiles(None, [1]),
    }[case]
    client = served.client()
    set_id = client.upload_support_set(inputs.supports)
    jobs = served.service.queue.counts()
    with pytest.raises(InputError) as refused:
        client.submit(inputs.query, set_id, corrections=corrections)
    assert refused.value.status == 422 and expected in str(refused.value)
    assert str(refused.value) == local_message(inputs, corrections)
    assert served.service.queue.counts() == jobs and list(served.service.jobs_folder.iterdir()) == []


def test_the_command_line_reports_the_servers_refusal_and_writes_nothing(served, inputs, first, tmp_path, capsys):
    _, edited = first
    output = tmp_path / "out.seg.nrrd"
    server = ["--server", served.url, "--token-file", token_file(tmp_path)]
    refine = ["--corrections", str(edited), "--corrected-slices", "auto"]
    assert main([*inputs.segment_args(output), *server, *refine]) == 1
    assert "--corrected-slices auto needs the result" in capsys.readouterr().err and not output.exists()
    assert main([*inputs.segment_args(output), *server, "--corrections", str(tmp_path / "missing.nii.gz"),
                 "--corrected-slices", "1"]) == 1  # fmt: skip
    assert "missing.nii.gz is not a file" in capsys.readouterr().err and not output.exists()


def test_a_refine_still_needs_the_token_and_its_values_are_checked_as_slice_numbers(
    served, inputs, first, tmp_path, capsys, monkeypatch
):
    result, edited = first
    monkeypatch.delenv("FATESAM_TOKEN", raising=False)
    output = tmp_path / "out.seg.nrrd"
    refine = ["--corrections", str(edited), "--corrected-slices", "auto", "--previous", str(result)]
    assert main([*inputs.segment_args(output), "--server", served.url, *refine]) == 1
    assert "Check the token" in capsys.readouterr().err and not output.exists()
    set_id = served.client().upload_support_set(inputs.supports)
    for slices in (["1", "--overwrite"], ["--stats-json", "/tmp/fatesam-evil.json"]):
        with pytest.raises(InputError, match="--corrected-slices takes 'auto' or slice numbers"):
            served.client().submit(inputs.query, set_id, corrections=CorrectionFiles(edited, slices))
    assert list(served.service.jobs_folder.iterdir()) == [] and not Path("/tmp/fatesam-evil.json").exists()


def test_cached_features_are_removed_once_as_old_as_expired_results(inputs, tmp_path):
    with running_server(work_dir=tmp_path, keep_results_s=3600, sweep_interval_s=0.05) as served:
        client = served.client()
        job_id = client.submit(inputs.query, client.upload_support_set(inputs.supports))
        wait_for(lambda: client.job(job_id)["state"] in FINISHED_STATES, 120, "the job")
        features = sorted(served.service.features.iterdir())
        assert len(features) > sitk.ReadImage(str(inputs.query)).GetSize()[2]  # the support's and each query slice's
        for path in features[1:]:
            os.utime(path, (time.time() - 3601, time.time() - 3601))
        wait_for(lambda: sorted(served.service.features.iterdir()) == features[:1], 10, "the sweep")
        time.sleep(0.2)  # more sweeps: a feature written within keep_results_s stays, as the job does
        assert sorted(served.service.features.iterdir()) == features[:1] and client.job(job_id)["state"] == "succeeded"
