"""Options out of range refused at parse time (exit 1, also for the Slicer module), warnings for settings that cannot
take full effect, process memory limits, and Ctrl+C at start-up: all before the model is built."""

from __future__ import annotations

import io
import json
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_cli import REPO, segment_args

from FateSAMLib.cli.main import main
from FateSAMLib.cli.reporting import Reporter
from FateSAMLib.errors import InputError
from FateSAMLib.method.encoder import FeatureCache, StackFeatures
from FateSAMLib.method.predictor import FateSamPredictor
from FateSAMLib.models.devices import available_memory_bytes
from FateSAMLib.options import RunSettings

# option words -> (the same setting of RunSettings, as the Slicer module gives it, expected message)
BAD_OPTIONS = {
    "image size 0": (["--image-size", "0"], {"image_size": 0}, "--image-size must be a positive multiple of 32"),
    "image size not /32": (["--image-size", "100"], {"image_size": 100}, "coarsest feature stride (got 100)"),
    "negative batch": (["--encoder-batch-size", "-3"], {"encoder_batch_size": -3}, "--encoder-batch-size must be"),
    "negative threads": (["--threads", "-1"], {"threads": -1}, "--threads must be a whole number of at least 1"),
    "zero top-k": (["--top-k", "0"], {"top_k": 0}, "--top-k must be a whole number of at least 1 (got 0)"),
    "window without window normalisation": (["--window", "40", "400"], {"window": (40.0, 400.0)}, "only with"),
    "window normalisation without window": (["--normalization", "window"], {"normalization": "window"}, "needs"),
    "zero window width": (
        ["--normalization", "window", "--window", "40", "0"],
        {"normalization": "window", "window": (40.0, 0.0)},
        "--window WIDTH must be above 0",
    ),
    "percentiles reversed": (["--percentiles", "99", "1"], {"percentiles": (99.0, 1.0)}, "0 <= LOW < HIGH <= 100"),
    "percentile below 0": (["--percentiles", "-1", "99"], {"percentiles": (-1.0, 99.0)}, "must lie in 0..100"),
    "percentile above 100": (["--percentiles", "1", "101"], {"percentiles": (1.0, 101.0)}, "must lie in 0..100"),
    "NaN percentile": (["--percentiles", "nan", "99"], {"percentiles": (float("nan"), 99.0)}, "finite number"),
    "window level over float32": (
        ["--normalization", "window", "--window", "1e39", "10"],
        {"normalization": "window", "window": (1e39, 10.0)},
        "--window must lie within ±3.4e38, the range of 32-bit floats (got 1e+39).",
    ),
    "window bound over float32": (
        ["--normalization", "window", "--window", "3e38", "3e38"],
        {"normalization": "window", "window": (3e38, 3e38)},
        "--window LEVEL + WIDTH/2 must lie within ±3.4e38",
    ),
    "window narrower than float32 resolves": (
        ["--normalization", "window", "--window", "1e30", "1"],
        {"normalization": "window", "window": (1e30, 1.0)},
        "--window 1e+30 1 is too narrow for its level",
    ),
    "percentiles one value in float32": (
        ["--percentiles", "0", "1e-46"],
        {"percentiles": (0.0, 1e-46)},
        "0 <= LOW < HIGH <= 100, as 32-bit floats (got 0 1e-46)",
    ),
    "threads over a C int": (
        ["--threads", str(2**31)],
        {"threads": 2**31},
        "--threads must be a whole number from 1 to 2147483647",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_OPTIONS))
def test_out_of_range_options_exit_1_with_the_slicer_modules_message(case, tmp_path, capsys):
    words, settings, expected = BAD_OPTIONS[case]
    output = tmp_path / "out.nii.gz"
    assert main(segment_args(output, extra=words)) == 1
    err = capsys.readouterr().err
    assert "fatesam: error:" in err and expected in err and "Traceback" not in err
    assert not output.exists()
    with pytest.raises(InputError) as raised:
        RunSettings(**settings)
    assert expected in str(raised.value) and str(raised.value) in err


def test_option_errors_are_json_events_under_json_progress(tmp_path, capsys):
    assert main(segment_args(tmp_path / "out.nii.gz", extra=["--threads", "x", "--json-progress"])) == 1
    (event,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert event["event"] == "error" and "'x' is not a whole number" in event["message"]


def test_help_still_exits_0(capsys):
    with pytest.raises(SystemExit) as raised:
        main(["segment", "--help"])
    assert raised.value.code == 0 and "--image-size" in capsys.readouterr().out


def test_valid_settings_pass():
    RunSettings(image_size=512, normalization="window", window=(40.0, 400.0))


def test_top_k_above_the_candidate_slices_is_a_warning():
    """Clamped, not refused: the number of candidates depends on the data, and each query slice uses them all."""
    stdout = io.StringIO()
    reporter = Reporter(json_lines=True, stdout=stdout)
    with reporter.library_warnings():
        FateSamPredictor(RunSettings(top_k=3)).warn_if_top_k_exceeds_candidates(12)
        assert stdout.getvalue() == ""
        predictor = FateSamPredictor(RunSettings(top_k=50))
        predictor.warn_if_top_k_exceeds_candidates(12)
        predictor.warn_if_top_k_exceeds_candidates(12)  # once per predictor (a cohort's cases share one)
    (event,) = [json.loads(line) for line in stdout.getvalue().splitlines()]
    assert event["event"] == "warning" and "--top-k 50 is more than the 12 support slices" in event["message"]


def test_an_unwritable_feature_cache_is_warned_about_once_and_the_run_goes_on(tmp_path, caplog):
    (tmp_path / "a-file").write_text("not a folder")
    cache = FeatureCache(tmp_path / "a-file" / "cache", "model")
    slices = np.zeros((2, 8, 8), np.float32)
    features = StackFeatures(levels=[torch.zeros(2, 4, 3)])
    cache.save(slices, features)
    cache.save(slices + 1, features)
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == 1 and "cannot be written" in warnings[0] and "goes on without it" in warnings[0]
    assert cache.load(slices, torch.device("cpu")) is None


def virtual_size() -> int:
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmSize:")[1].split()[0]) * 1024


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads VmSize from /proc (Linux)")
def test_available_memory_respects_ulimit_v():
    before = available_memory_bytes(torch.device("cpu"))
    previous = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (virtual_size() + 2**30, previous[1]))
    try:
        limited = available_memory_bytes(torch.device("cpu"))
    finally:
        resource.setrlimit(resource.RLIMIT_AS, previous)
    assert limited <= 2**30 < before


# Imports torch and the CLI first, then limits the address space to what is in use plus argv[1] MB, then runs the CLI.
UNDER_ULIMIT_V = """
import resource, sys
from FateSAMLib.cli import main
used = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (used + int(sys.argv[1]) * 1024**2, resource.RLIM_INFINITY))
sys.exit(main(sys.argv[2:]))
"""


def run_under_ulimit_v(headroom_mb: int, output: Path, extra: list[str]) -> list[dict]:
    """The CLI's JSON events in a process limited to ``headroom_mb`` of address space more than it uses at start."""
    arguments = segment_args(output, extra=["--json-progress", *extra])
    completed = subprocess.run(
        [sys.executable, "-c", UNDER_ULIMIT_V, str(headroom_mb), *arguments],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert completed.returncode == 1, completed.stderr
    assert "Traceback" not in completed.stderr
    assert not output.exists()
    return [json.loads(line) for line in completed.stdout.splitlines()]


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads VmSize from /proc (Linux)")
def test_a_run_under_ulimit_v_is_refused_before_the_model_runs(tmp_path):
    events = run_under_ulimit_v(1536, tmp_path / "out.nii.gz", [])
    assert events[-1]["event"] == "error" and events[-1]["message"].startswith("Not enough memory on cpu: 39 slices")
    assert not any(e.get("message", "").startswith("Segmenting slice") for e in events)


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads VmSize from /proc (Linux)")
def test_an_allocator_failure_during_the_run_is_the_same_clear_error(tmp_path):
    """The memory check passes (4.5 GB free), then 40-slice encoder batches at 1024 exhaust the address space."""
    events = run_under_ulimit_v(4608, tmp_path / "out.nii.gz", ["--image-size", "1024", "--encoder-batch-size", "40"])
    assert events[-1]["event"] == "error" and events[-1]["kind"] == "ResourceError"
    assert events[-1]["message"].startswith("Not enough memory on cpu: an allocation failed during the run")


@pytest.mark.parametrize(
    "launcher",
    [["-m", "FateSAMLib.cli"], ["-c", "import sys; from FateSAMLib.cli import main; sys.exit(main())"]],
    ids=["python -m FateSAMLib.cli", "fatesam console script"],
)
def test_ctrl_c_during_start_up_exits_130_quietly(launcher, tmp_path):
    """SIGINT arrives while torch is half imported: ``-X importtime`` reports each finished import on stderr, so the
    signal is sent once a submodule of torch is done (torch itself is not), however slow this machine starts."""
    process = subprocess.Popen(
        [sys.executable, "-X", "importtime", *launcher, *segment_args(tmp_path / "out.nii.gz")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    for line in process.stderr:
        if re.search(r"\|\s*torch\.\w", line):
            break
    process.send_signal(signal.SIGINT)
    _out, err = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert list(tmp_path.iterdir()) == []
