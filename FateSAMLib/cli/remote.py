"""``fatesam segment --server URL``: the same segmentation, run by a ``fatesam serve`` server."""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from ..atomic import OutputFiles, check_outputs
from ..errors import InputError
from ..formats import OUTPUT_SUFFIXES, output_suffix
from ..options import SETTINGS
from ..progress import CancelToken
from ..remote import TOKEN_ENVIRONMENT, CorrectionFiles, RemoteJob, ServerClient, job_settings, read_token
from .arguments import settings_from_args, support_pairs
from .reporting import Reporter

SERVER_SIDE = ("checkpoint", "random_weights", "device", "reuse_features", "encoder_batch_size", "threads")
"""Settings the server chooses (``fatesam serve``'s options), refused with ``--server``."""


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """``--server`` and ``--token-file``."""
    group = parser.add_argument_group("remote run")
    group.add_argument("--server", metavar="URL", help="run on a 'fatesam serve' server, e.g. https://gpu-box:8765")
    group.add_argument(
        "--token-file", type=Path, help=f"file holding the server's token (default: ${TOKEN_ENVIRONMENT})"
    )


def correction_files(args: argparse.Namespace) -> CorrectionFiles | None:
    """A refine's options (``--corrections``, ``--corrected-slices``, ``--previous``) as sent to the server, which
    checks them as a local run does (against its slice axis), with the same messages; None for a plain run."""
    if not (args.corrections or args.corrected_slices or args.previous):
        return None
    labels, previous = (Path(path) if path else None for path in (args.corrections, args.previous))
    return CorrectionFiles(labels, args.corrected_slices, previous)


def run_remote_segment(args: argparse.Namespace, reporter: Reporter, cancel: CancelToken) -> int:
    """Upload the supports (once per support set), run the job (a refine with corrections) on the server, and write
    what it returns atomically."""
    output = Path(args.output)
    suffix = output_suffix(output)
    if not suffix:
        raise InputError(f"Unsupported output '{output}'. Use one of: {', '.join(OUTPUT_SUFFIXES)}.")
    check_outputs([output, args.stats_json], args.overwrite)
    given = [name for name in SERVER_SIDE if getattr(args, name) not in (None, SETTINGS[name].default)]
    given += ["feature_cache"] if args.feature_cache else []
    if given:
        flags = ", ".join(SETTINGS[name].metadata["flag"] for name in given)
        raise InputError(f"{flags}: with --server the server chooses these (options of 'fatesam serve'); leave out.")
    run = settings_from_args(args)
    supports = support_pairs(args, run, reporter)
    settings = job_settings(run)
    client = ServerClient(args.server, read_token(args.token_file))
    with tempfile.TemporaryDirectory(prefix="fatesam-remote-") as folder:
        result = Path(folder) / f"result{suffix}"
        stats = Path(folder) / "stats.json" if args.stats_json else None
        job = RemoteJob(
            client,
            supports,
            Path(args.query),
            result,
            stats,
            settings,
            args.segments,
            corrections=correction_files(args),
        )
        shown = 0
        while True:
            if cancel.cancelled:
                job.cancel()
            job.poll()
            reporter.progress(job.fraction, job.message)
            for warning in job.warnings[shown:]:
                reporter.warning(warning)
            shown = len(job.warnings)
            if job.finished:
                break
            time.sleep(0.1)
        if job.state != "succeeded":
            raise job.error
        with OutputFiles(args.overwrite) as outputs:
            outputs.add(output, lambda target: shutil.copyfile(result, target), suffix)
            if stats is not None:
                outputs.add(args.stats_json, lambda target: shutil.copyfile(stats, target))
    reporter.progress(1.0, f"Wrote {output}")
    reporter.done(str(output))
    return 0
