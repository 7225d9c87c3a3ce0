"""The engine process handle and background jobs: command lines, option checks, JSON-line events, non-blocking
reads, cancel and stop of real processes."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import pytest
from engine_needed import needs_engine

from FateSAMLib.errors import Cancelled, InputError, ModelError
from FateSAMLib.options import RunSettings
from FateSAMLib.slicer.process import (
    PACKAGE_PARENT,
    BackgroundJob,
    EngineEvent,
    EngineProcess,
    JobSequence,
    JobStep,
    download_arguments,
    engine_command,
    engine_environment,
    parse_event,
    segment_arguments,
    settings_arguments,
    start_download,
)

REPO = Path(__file__).resolve().parents[2]


def python_script(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def running(pid: int) -> bool:
    """Whether a process runs (a zombie, killed but not yet reaped by its new parent, does not)."""
    stat = Path(f"/proc/{pid}/stat")
    if stat.parent.parent.is_dir() and Path("/proc/self").exists():
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def collect(process: EngineProcess, timeout_s: float = 30.0) -> list[EngineEvent]:
    """Poll like the Slicer timer does until the process has ended; returns every event."""
    events, deadline = [], time.monotonic() + timeout_s
    while not process.finished:
        assert time.monotonic() < deadline, "the process did not end in time"
        events += process.poll()
        time.sleep(0.02)
    return events + process.poll()


def test_parse_event_reads_every_kind_and_keeps_other_lines_as_log():
    assert parse_event('{"event": "progress", "fraction": 0.42, "message": "Segmenting slice 12/40"}\n') == (
        EngineEvent("progress", "Segmenting slice 12/40", fraction=0.42)
    )
    assert parse_event('{"event": "warning", "message": "RANDOM WEIGHTS"}') == EngineEvent("warning", "RANDOM WEIGHTS")
    assert parse_event('{"event": "done", "output": "/tmp/out.seg.nrrd"}').output == "/tmp/out.seg.nrrd"
    error = parse_event('{"event": "error", "message": "bad", "kind": "InputError"}')
    assert (error.kind, error.message, error.error_kind) == ("error", "bad", "InputError")
    assert parse_event("Traceback (most recent call last):\n") == EngineEvent(
        "log", "Traceback (most recent call last):"
    )
    assert parse_event("[1, 2]") == EngineEvent("log", "[1, 2]")
    assert parse_event('{"event": "unknown"}').kind == "log"


def test_segment_arguments_carry_every_option():
    options = RunSettings(
        model="sam2.0-small",
        checkpoint="/models/s.pt",
        random_weights=True,
        image_size=256,
        device="cpu",
        top_k=5,
        slice_axis="coronal",
        normalization="window",
        window=(40, 400),
    )
    arguments = segment_arguments(
        [(Path("a.nrrd"), Path("a.seg.nrrd")), (Path("b.nrrd"), Path("b.seg.nrrd"))],
        Path("q.nrrd"),
        Path("out.seg.nrrd"),
        options,
        stats_json=Path("stats.json"),
        segments=["Liver"],
    )
    text = " ".join(arguments)
    assert arguments[0] == "segment" and arguments[-1] == "--json-progress"
    assert "--support a.nrrd a.seg.nrrd --support b.nrrd b.seg.nrrd --query q.nrrd --output out.seg.nrrd" in text
    for expected in (
        "--segments Liver",
        "--stats-json stats.json",
        "--model sam2.0-small",
        "--checkpoint /models/s.pt",
        "--random-weights",
        "--image-size 256",
        "--device cpu",
        "--top-k 5",
        "--slice-axis coronal",
        "--normalization window",
        "--window 40.0 400.0",
    ):
        assert expected in text
    default = " ".join(settings_arguments(RunSettings()))
    assert "--window" not in default and "--random-weights" not in default and "--checkpoint" not in default


@needs_engine
def test_segment_arguments_are_accepted_by_the_engine_parser():
    from FateSAMLib import cli

    options = RunSettings(random_weights=True, image_size=128, device="cpu", normalization="window", window=(40, 400))
    arguments = segment_arguments([(Path("a.nrrd"), Path("a.seg.nrrd"))], Path("q.nrrd"), Path("o.seg.nrrd"), options)
    parsed = cli.build_parser().parse_args(arguments)
    assert parsed.support == [["a.nrrd", "a.seg.nrrd"]] and parsed.query == "q.nrrd"
    assert parsed.random_weights and parsed.image_size == 128 and parsed.json_progress
    assert list(parsed.window) == [40.0, 400.0] and parsed.top_k == 3
    download = cli.build_parser().parse_args(download_arguments("sam2.1-tiny"))
    assert (download.name, download.json_progress) == ("sam2.1-tiny", True)


@needs_engine
@pytest.mark.parametrize(
    "settings",
    [
        RunSettings(),
        RunSettings(random_weights=True, image_size=128, device="cpu", normalization="window", window=(40, 400)),
        RunSettings(
            model="sam2.0-small",
            checkpoint="/models/s.pt",
            image_size=256,
            device="cuda:1",
            top_k=5,
            slice_axis="coronal",
            percentiles=(1, 99.25),
            reuse_features=False,
            encoder_batch_size=7,
            threads=2,
            feature_cache="/tmp/features",
        ),
        RunSettings.from_preset("paper", device="cpu"),
    ],
    ids=["defaults", "window", "every setting", "paper preset"],
)
def test_settings_survive_the_engine_command_line(settings):
    """Settings -> ``fatesam segment`` arguments -> the engine's own parser -> the same settings."""
    from FateSAMLib import cli
    from FateSAMLib.cli.arguments import settings_from_args

    arguments = segment_arguments([(Path("a.nrrd"), Path("a.seg.nrrd"))], Path("q.nrrd"), Path("o.seg.nrrd"), settings)
    assert settings_from_args(cli.build_parser().parse_args(arguments)) == settings


def test_engine_command_and_environment():
    assert engine_command(["models", "list"], python="/opt/PythonSlicer") == [
        "/opt/PythonSlicer",
        "-m",
        "FateSAMLib.cli",
        "models",
        "list",
    ]
    assert PACKAGE_PARENT == REPO
    environment = engine_environment({"PYTHONPATH": os.pathsep.join(["/x", str(REPO)]), "HOME": "/h"})
    assert environment["PYTHONPATH"].split(os.pathsep) == [str(REPO), "/x"]
    assert environment["HOME"] == "/h" and environment["PYTHONUNBUFFERED"] == "1"


def test_events_arrive_in_order_with_stderr_as_log():
    process = EngineProcess(
        python_script(
            """
            import json, sys
            print(json.dumps({"event": "progress", "fraction": 0.5, "message": "half"}), flush=True)
            print("a note on stderr", file=sys.stderr, flush=True)
            print(json.dumps({"event": "done", "output": "/out.seg.nrrd"}), flush=True)
            """
        )
    )
    events = collect(process)
    assert process.returncode == 0 and not process.cancel_requested
    stdout_events = [event for event in events if event.kind != "log"]
    assert [event.kind for event in stdout_events] == ["progress", "done"]
    assert stdout_events[0].fraction == 0.5 and stdout_events[1].output == "/out.seg.nrrd"
    assert EngineEvent("log", "a note on stderr") in events


def test_poll_never_blocks_on_a_silent_process():
    process = EngineProcess(python_script("import time; time.sleep(3)"))
    started = time.monotonic()
    assert process.poll() == []
    assert time.monotonic() - started < 0.5 and not process.finished
    process.cancel()
    collect(process)


def test_cancel_sends_sigterm_which_the_engine_handles(tmp_path):
    marker = tmp_path / "started"
    process = EngineProcess(
        python_script(
            f"""
            import json, signal, sys, time
            def stop(signum, frame):
                print(json.dumps({{"event": "error", "message": "cancelled", "kind": "Cancelled"}}), flush=True)
                sys.exit(130)
            signal.signal(signal.SIGTERM, stop)
            open({str(marker)!r}, "w").close()
            time.sleep(60)
            """
        )
    )
    deadline = time.monotonic() + 20
    while not marker.exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.cancel()
    events = collect(process, timeout_s=10)
    assert process.cancel_requested and process.returncode == 130
    assert [event.error_kind for event in events if event.kind == "error"] == ["Cancelled"]


@pytest.mark.skipif(os.name == "nt", reason="process groups are a POSIX feature")
def test_cancel_kills_a_launcher_child_that_ignores_sigterm(tmp_path):
    """PythonSlicer is a launcher: the engine runs in its child. Both must end, even if the child ignores SIGTERM."""
    pid_file = tmp_path / "child.pid"
    child = (  # it says its pid once it ignores SIGTERM, then outlives the launcher's SIGTERM
        "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    )
    process = EngineProcess(
        python_script(
            f"""
            import subprocess, sys
            subprocess.Popen([sys.executable, "-c", {child!r}]).wait()
            """
        ),
        kill_after_s=0.5,
    )
    deadline = time.monotonic() + 20
    while not (pid_file.exists() and pid_file.read_text()):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    child_pid = int(pid_file.read_text())
    process.cancel()
    collect(process, timeout_s=15)
    assert process.returncode != 0
    deadline = time.monotonic() + 5
    while running(child_pid):
        assert time.monotonic() < deadline, "the launcher's child survived the cancel"
        time.sleep(0.05)


LAUNCHER = """#!{python}
# A stand-in for PythonSlicer: it starts the real Python with its arguments in a session of its own and waits, so that
# a signal to the launcher's process group misses the worker. With ENGINE, the worker runs ENGINE instead of "-m ...".
import subprocess, sys
arguments = sys.argv[1:] if not {engine!r} else [{engine!r}, *sys.argv[3:]]
sys.exit(subprocess.Popen([{python!r}, *arguments], start_new_session=True).wait())
"""


def write_launcher(folder: Path, engine: Path | None = None) -> str:
    """An executable launcher script (see ``LAUNCHER``) in ``folder``; its path."""
    path = folder / "PythonSlicer"
    path.write_text(LAUNCHER.format(python=sys.executable, engine=str(engine) if engine else ""))
    path.chmod(0o700)
    return str(path)


def launched_worker(launcher_pid: int, timeout_s: float = 20.0) -> int:
    """The process ID of the worker a launcher started, once it has started it."""
    psutil = pytest.importorskip("psutil")
    deadline = time.monotonic() + timeout_s
    while True:  # until the worker has left the launcher's session (between its fork and its exec)
        workers = [child.pid for child in psutil.Process(launcher_pid).children()]
        if workers and os.getsid(workers[0]) != os.getsid(launcher_pid):
            return workers[0]  # out of reach of a signal to the launcher's process group
        assert time.monotonic() < deadline, "the launcher started no worker in a session of its own"
        time.sleep(0.02)


@pytest.mark.skipif(os.name == "nt", reason="the launcher is a POSIX script; Windows ends the tree with psutil too")
def test_stop_ends_a_launcher_and_its_worker_in_a_session_of_its_own(tmp_path):
    pytest.importorskip("psutil", reason="without psutil (before the installation) the launcher's group is ended")
    worker = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
    process = EngineProcess([write_launcher(tmp_path), "-c", worker + "time.sleep(60)"], kill_after_s=0.5)
    worker_pid = launched_worker(process.pid)
    deadline = time.monotonic() + 20
    while not any(event.message == "ready" for event in process.poll()):  # the worker ignores SIGTERM from now on
        assert time.monotonic() < deadline
        time.sleep(0.02)
    started = time.monotonic()
    assert process.stop(timeout_s=10)
    assert time.monotonic() - started < 5 and process.finished
    assert not running(process.pid) and not running(worker_pid)


def test_a_missing_executable_gives_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match="Could not start the engine"):
        EngineProcess([str(tmp_path / "no-such-python"), "-c", "pass"])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"image_size": 0}, "--image-size must be a positive multiple of 32"),
        ({"image_size": 100}, "multiple of 32"),
        ({"top_k": 0}, "--top-k must be a whole number of at least 1"),
        ({"top_k": 2.5}, "--top-k"),
        ({"normalization": "zscore"}, "--normalization must be 'percentile' or 'window'"),
        ({"normalization": "window"}, "needs --window"),
        ({"window": (40, 400)}, "only with --normalization window"),
        ({"normalization": "window", "window": (40, 0)}, "WIDTH must be above 0"),
        ({"normalization": "window", "window": (float("nan"), 400)}, "finite"),
        ({"normalization": "window", "window": (40,)}, r"\(level, width\)"),
    ],
)
def test_run_options_refuse_values_out_of_range(options, message):
    with pytest.raises(InputError, match=message):
        RunSettings(**options)


def poll_until_cancelled(task, timeout_s: float = 10.0) -> None:
    """Poll a cancelled job (or sequence) with its own ``wait`` until it has ended, at most ``timeout_s``; past that
    the assertion fails and ``wait`` stops the task, so that nothing is left running."""
    deadline = time.monotonic() + timeout_s

    def in_time(_task) -> None:
        assert time.monotonic() < deadline, "the cancelled task did not end"

    task.wait(in_time, interval_s=0.02)


def test_a_background_job_follows_progress_to_success():
    job = BackgroundJob(
        python_script(
            """
            import json
            print(json.dumps({"event": "progress", "fraction": 0.25, "message": "a quarter"}), flush=True)
            print(json.dumps({"event": "warning", "message": "careful"}), flush=True)
            print("a plain line")
            """
        ),
        description="The test",
    )
    assert job.state == "running" and job.message == "Starting the test"
    events = []
    while not job.finished:
        events += job.poll()
        time.sleep(0.02)
    assert job.state == "succeeded" and job.error is None and job.fraction == 1.0
    assert [event.kind for event in events if event.kind != "log"] == ["progress", "warning"]
    assert job.warnings == ["careful"] and job.log_tail == ["a plain line"]
    assert job.poll() == []


def test_a_failed_job_reports_the_exit_code_and_its_last_output():
    job = BackgroundJob(python_script("print('it went wrong'); raise SystemExit(3)"), description="The test")
    job.wait(interval_s=0.02)
    assert job.state == "failed"
    assert "The test stopped with exit code 3" in str(job.error) and "it went wrong" in str(job.error)


def test_a_background_job_is_cancelled_from_a_timer_or_stopped_at_once():
    job = BackgroundJob(python_script("import time; time.sleep(30)"), description="The test")
    job.cancel()
    poll_until_cancelled(job)
    assert job.state == "cancelled" and isinstance(job.error, Cancelled) and not running(job.process.pid)

    job = BackgroundJob(python_script("import time; time.sleep(30)"), description="The test")
    started = time.monotonic()
    job.stop(timeout_s=5)
    assert job.finished and job.state == "cancelled" and time.monotonic() - started < 6
    assert job.process.returncode is not None and not running(job.process.pid)


@pytest.mark.skipif(os.name == "nt", reason="SIGTERM handling is POSIX")
def test_stop_kills_a_command_that_ignores_the_cancel():
    ignore = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
    job = BackgroundJob(python_script(ignore + "time.sleep(60)"), description="The test", kill_after_s=0.5)
    while not job.log_tail:  # wait until SIGTERM is ignored
        job.poll()
        time.sleep(0.02)
    started = time.monotonic()
    job.stop(timeout_s=10)
    assert job.state == "cancelled" and time.monotonic() - started < 5 and not running(job.process.pid)


def step(description: str, code: str) -> JobStep:
    return JobStep(description, tuple(python_script(code)))


def append_line(path: Path, text: str) -> str:
    return f"open({str(path)!r}, 'a').write({text!r} + '\\n')"


def test_a_job_sequence_runs_its_steps_in_order_and_stops_at_the_first_failure(tmp_path):
    record = tmp_path / "steps.txt"
    sequence = JobSequence(
        [
            step("The first step", append_line(record, "first")),
            step("The second step", append_line(record, "second") + "; print('half way', flush=True)"),
            step("The third step", append_line(record, "third")),
        ]
    )
    messages = []
    sequence.wait(on_poll=lambda job: messages.append((job.message, job.fraction)), interval_s=0.02)
    assert sequence.state == "succeeded" and sequence.error is None and sequence.fraction == 1.0
    assert record.read_text().split() == ["first", "second", "third"]
    assert any(message.startswith("Step 2/3: ") for message, _ in messages)
    fractions = [fraction for _, fraction in messages]
    assert fractions == sorted(fractions) and {round(value, 3) for value in fractions} >= {0.333, 0.667, 1.0}

    record.unlink()
    failing = JobSequence(
        [
            step("The first step", append_line(record, "first")),
            step("The broken step", "print('no luck'); raise SystemExit(4)"),
            step("The third step", append_line(record, "third")),
        ]
    )
    failing.wait(interval_s=0.02)
    assert failing.state == "failed" and failing.step_index == 1
    assert "The broken step stopped with exit code 4" in str(failing.error) and "no luck" in str(failing.error)
    assert record.read_text().split() == ["first"]


def test_a_cancelled_job_sequence_starts_no_later_step(tmp_path):
    record = tmp_path / "steps.txt"
    steps = [
        step("The slow step", "print('started', flush=True); import time; time.sleep(30)"),
        step("The next step", append_line(record, "next")),
    ]
    sequence = JobSequence(steps)
    while not sequence.log_tail:
        sequence.poll()
        time.sleep(0.02)
    sequence.cancel()
    poll_until_cancelled(sequence)
    assert sequence.state == "cancelled" and isinstance(sequence.error, Cancelled) and sequence.step_index == 0
    assert not running(sequence.job.process.pid) and not record.exists()

    stopped = JobSequence([step("The quick step", "pass"), *steps[1:]])
    while stopped.job.process.returncode is None:  # the first step has ended; no poll has seen it yet
        time.sleep(0.02)
    stopped.stop(timeout_s=5)
    assert stopped.finished and stopped.state == "cancelled" and "The next step was cancelled" in str(stopped.error)
    stopped.poll()
    assert stopped.step_index == 0 and not record.exists()


@needs_engine
def test_a_download_of_an_unknown_model_fails_with_the_engines_error():
    job = start_download("sam9-huge", python=sys.executable)
    assert "--json-progress" in job.process.command and "sam9-huge" in job.process.command
    job.wait(interval_s=0.05)
    assert job.state == "failed" and isinstance(job.error, ModelError) and "sam2.1-tiny" in str(job.error)
