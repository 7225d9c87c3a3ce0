"""``fatesam models``: list the known models (with this machine's time estimate for each), download one into the
cache, measure this machine's speed again, show the cache folder."""

from __future__ import annotations

import argparse

from ..estimates import TYPICAL, architecture_key, duration_text
from ..method.speed import measure_estimates
from ..models.checkpoints import SET_ASIDE_MARK, ensure_checkpoint
from ..models.devices import use_threads
from ..models.registry import DEFAULT_MODEL, MODELS, cache_dir, cached_checkpoint_path, get_model_spec
from ..progress import CancelToken
from .reporting import Reporter

_MB = 1e6


def _size(num_bytes: int) -> str:
    return f"{num_bytes / _MB:.1f} MB"


def _write_table(reporter: Reporter, rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        reporter.stdout.write(line.rstrip() + "\n")


def list_models(reporter: Reporter, cancel: CancelToken, estimate: bool = True, again: bool = False) -> int:
    """Print each model, its input size, its weights' license, whether its checkpoint is cached (and its size) and,
    with ``estimate``, how long a typical volume takes here (measured first where it was not yet, or ``again``)."""
    threads = use_threads()  # what a run gets: the estimates are measured with it
    times = {}
    if estimate:
        times = measure_estimates(MODELS.values(), again=again, progress=reporter.progress, cancel=cancel)
        reporter.end_progress()
    rows = [("MODEL", "INPUT", "LICENSE", "CACHED", "SIZE", "TYPICAL VOLUME HERE")]
    for name, spec in MODELS.items():
        path = cached_checkpoint_path(spec)
        cached = path.is_file()
        step = times.get(architecture_key(spec))
        rows.append(
            (
                f"{name} (default)" if name == DEFAULT_MODEL else name,
                str(spec.image_size),
                spec.license,
                "yes" if cached else "no",
                _size(path.stat().st_size) if cached else "-",
                f"{duration_text(step.typical_seconds())} ({step.device})" if step else "-",
            )
        )
    _write_table(reporter, rows)
    if times:
        reporter.stdout.write(
            f"Typical volume: {TYPICAL.query_slices} query slices, {TYPICAL.support_slices} labelled support slices "
            f"and {TYPICAL.labels} labels at the model's input size, {threads} CPU threads; measured once on this "
            "machine ('fatesam models estimate' measures again).\n"
        )
    for spec in MODELS.values():
        if spec.license_notice:
            reporter.stdout.write(f"{spec.license_notice}\n")
    return 0


def download_model(name: str, reporter: Reporter, cancel: CancelToken) -> int:
    """Download (or check the cached copy of) model ``name``'s checkpoint; report the file's path."""
    path = ensure_checkpoint(get_model_spec(name), reporter.progress, cancel)
    reporter.done(str(path))
    return 0


def estimate_models(reporter: Reporter, cancel: CancelToken) -> int:
    """Measure this machine's speed with every model again (the Slicer module runs this in its engine process)."""
    use_threads()
    measure_estimates(MODELS.values(), again=True, progress=reporter.progress, cancel=cancel)
    reporter.done(str(cache_dir()))
    return 0


def show_cache(reporter: Reporter) -> int:
    """Print the cache folder and the files in it with their sizes (and which ones were set aside)."""
    folder = cache_dir()
    reporter.stdout.write(f"{folder}\n")
    files = sorted(path for path in folder.iterdir() if path.is_file()) if folder.is_dir() else []
    for path in files:
        set_aside = SET_ASIDE_MARK in path.name
        note = "  (failed its check and was set aside; delete it when it is no longer needed)" if set_aside else ""
        reporter.stdout.write(f"  {path.name}  {_size(path.stat().st_size)}{note}\n")
    if not files:
        reporter.stdout.write("  (empty)\n")
    return 0


def run_models(args: argparse.Namespace, reporter: Reporter, cancel: CancelToken) -> int:
    """Dispatch ``fatesam models [list|download NAME|estimate|cache]`` (``list`` when no action is given)."""
    if args.models_action == "download":
        return download_model(args.name, reporter, cancel)
    if args.models_action == "estimate":
        return estimate_models(reporter, cancel)
    if args.models_action == "cache":
        return show_cache(reporter)
    return list_models(reporter, cancel, estimate=not getattr(args, "no_estimate", False))


def add_models_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``models`` subcommand and its actions on the ``fatesam`` subparsers."""
    models = subparsers.add_parser("models", help="list, download and locate checkpoints; this machine's speed")
    actions = models.add_subparsers(dest="models_action", metavar="{list,download,estimate,cache}")
    listing = actions.add_parser(
        "list", help="each model, its input size, license, whether it is cached, and its time here (the default)"
    )
    listing.add_argument(
        "--no-estimate", action="store_true", help="no time estimates (they are measured once, about 2 min on a CPU)"
    )
    download = actions.add_parser("download", help="download a model's checkpoint into the cache and verify it")
    download.add_argument("name", help=f"model name, e.g. {DEFAULT_MODEL} (see 'fatesam models list')")
    download.add_argument("--json-progress", action="store_true", help="one JSON object per line on stdout")
    estimate = actions.add_parser("estimate", help="measure this machine's speed with every model again")
    estimate.add_argument("--json-progress", action="store_true", help="one JSON object per line on stdout")
    actions.add_parser("cache", help="print the cache folder and the files in it")
    models.set_defaults(func=run_models, reporting=True)
