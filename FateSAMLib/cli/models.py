"""``fatesam models``: list the known SAM2 models, download one into the cache, show the cache folder."""

from __future__ import annotations

import argparse

from ..models.checkpoints import SET_ASIDE_MARK, ensure_checkpoint
from ..models.registry import DEFAULT_MODEL, MODELS, cache_dir, cached_checkpoint_path, get_model_spec
from ..progress import CancelToken
from .reporting import Reporter

_MB = 1e6


def _size(num_bytes: int) -> str:
    return f"{num_bytes / _MB:.1f} MB"


def list_models(reporter: Reporter) -> int:
    """Print each model, its sam2 config, whether its checkpoint is cached, and the cached file's size."""
    rows = [("MODEL", "CONFIG", "CACHED", "SIZE")]
    for name, spec in MODELS.items():
        path = cached_checkpoint_path(spec)
        cached = path.is_file()
        label = f"{name} (default)" if name == DEFAULT_MODEL else name
        rows.append((label, spec.config, "yes" if cached else "no", _size(path.stat().st_size) if cached else "-"))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        reporter.stdout.write(line.rstrip() + "\n")
    return 0


def download_model(name: str, reporter: Reporter, cancel: CancelToken) -> int:
    """Download (or check the cached copy of) model ``name``'s checkpoint; report the file's path."""
    path = ensure_checkpoint(get_model_spec(name), reporter.progress, cancel)
    reporter.done(str(path))
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
    """Dispatch ``fatesam models [list|download NAME|cache]`` (``list`` when no action is given)."""
    if args.models_action == "download":
        return download_model(args.name, reporter, cancel)
    if args.models_action == "cache":
        return show_cache(reporter)
    return list_models(reporter)


def add_models_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``models`` subcommand and its actions on the ``fatesam`` subparsers."""
    models = subparsers.add_parser("models", help="list, download and locate SAM2 checkpoints")
    actions = models.add_subparsers(dest="models_action", metavar="{list,download,cache}")
    actions.add_parser("list", help="each model, its config, whether it is cached and its size (the default)")
    download = actions.add_parser("download", help="download a model's checkpoint into the cache and verify it")
    download.add_argument("name", help=f"model name, e.g. {DEFAULT_MODEL} (see 'fatesam models list')")
    download.add_argument("--json-progress", action="store_true", help="one JSON object per line on stdout")
    actions.add_parser("cache", help="print the cache folder and the files in it")
    models.set_defaults(func=run_models, reporting=True)
