"""Benchmark of the FateSAM engine on real data: where the time and the memory go, against the encoder's lower bound.

Cases (from ``../shared/data``, next to the repository):

- ``hippocampus``: query ``hippocampus_004`` with supports ``hippocampus_001``, ``_003``, ``_006`` (MSD Task04);
- ``abdomen``: query ``chaos_t2_05`` with supports ``chaos_t2_01``, ``chaos_t2_02`` (CHAOS T2-SPIR).

Configurations, each run in its own child process so that peak memories are not mixed:

- ``engine``: the engine as shipped (``reuse_features=True``: every slice goes through the image encoder once);
- ``unpaired``: the engine predicting one slice at a time (``pair_directions=False``), where it otherwise predicts
  the downward and upward passes' slices in pairs once the downward pass is far enough ahead (same masks);
- ``cached``: the engine with its support feature cache already filled (a saved support set used again): only the
  query slices are encoded. The cache is filled beforehand, outside the timings (``cache_warm_up`` in the JSON);
- ``naive``: ``reuse_features=False``, the reference code's encoder passes: every query and support slice once for
  retrieval, then for every query slice the query slice again and each retrieved support slice twice (the
  reference adds its mask as a prompt, then encodes its memory, and SAM2's video predictor keeps one frame's
  features), with the support memories encoded again for every query slice;
- ``refine``: a refine run after a review: the whole query was segmented once (filling the feature cache with every
  query and support slice and the support memories, outside the timings), then its middle slice (or
  ``--corrected-slices N`` evenly spaced slices) is taken as corrected and the rest predicted again from it: nothing
  is encoded, only the query's memory encoding, attention and decoding run again. ``--corrected-per-side`` sets how
  many corrected slices on each side a slice attends to (``all``: every one; default the engine's);
- ``encoder``: the lower bound, SAM2's image encoder alone over the slices the engine encodes (every query slice and
  every support slice that shows a label), in the engine's batches, and nothing else (no retrieval, memory or
  decoding).

Every configuration loads the model and reads the volumes as every entry point does (a ``FateSamPredictor``),
prepares them with :func:`FateSAMLib.method.pipeline.prepare_inputs` (so all
of them see the same normalised, reoriented slices), runs the engine (or the encoder alone), puts the labels back on
the query grid with :func:`FateSAMLib.method.pipeline.result_on_query_grid` and writes them to a temporary folder;
"total" is
the wall clock of all of it, model loading excluded (it is in the JSON). "other" is the total minus the four engine
stages: reading, normalising and reorienting, the confidence lists, writing, and the engine's own bookkeeping.

The JSON (``--json``, rewritten after every run) holds the machine, the options and, per case and configuration,
the seconds (``read``; ``prepare``: normalise and reorient; the four engine stages; ``engine_other``; ``finish``:
labels back to the query grid, confidence lists; ``write``; ``total``; ``model_load``; ``cache_warm_up``; ``cpu``:
CPU seconds over the total), encoder passes, slice counts, peak RSS and peak CUDA memory. On a CPU, a run whose
threads were busy less than 60% of the time gets a note under the table: another process competed and its timings
are inflated.

Usage, with the package installed as README.md says (or ``PYTHONPATH=.`` from the repository root)::

    python Testing/benchmark.py                                  # both cases, all configurations, input size 1024
    python Testing/benchmark.py --image-size 128                 # quick check (about 3 minutes on 2 CPU cores)
    python Testing/benchmark.py --cases abdomen --configs engine encoder --json abdomen.json
    python Testing/benchmark.py --checkpoint sam2.1_hiera_tiny.pt   # real weights (timings do not depend on them)

Run times with SAM2.1 tiny on a 2-core AMD EPYC CPU (2 threads), measured: at 128 the whole benchmark takes about
3 minutes, at 512 about 25. At 1024: hippocampus engine 14 minutes (memory attention and decoding 417 s, as much as
the encoder's 385 s for 114 slices), naive 26, encoder alone 6; abdomen engine 21 minutes (4 labels: SAM2
attends once per label), encoder alone 5. All of it at 1024 takes about two and a half hours.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from FateSAMLib.method.corrections import CORRECTED_PER_SIDE, Corrections
from FateSAMLib.method.encoder import FeatureCache, SliceEncoder, encoder_batch_size
from FateSAMLib.method.engine import (
    EngineOptions,
    FateSamEngine,
    RunStats,
    StackSegmentation,
    StageClock,
    support_candidates,
)
from FateSAMLib.method.normalization import to_model_input
from FateSAMLib.method.pipeline import PreparedInputs, prepare_inputs, result_on_query_grid
from FateSAMLib.method.predictor import FateSamPredictor, read_supports
from FateSAMLib.models.devices import available_memory_bytes
from FateSAMLib.options import RunSettings
from FateSAMLib.progress import CancelToken

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
CONFIGS = ("engine", "unpaired", "cached", "naive", "encoder", "refine")
# Engine stages shown in the table: (key in the engine's stats, column title).
STAGE_COLUMNS = (
    ("encode", "encode"),
    ("retrieval", "retrieval"),
    ("memory_encoding", "mem-enc"),
    ("attention_decoding", "attn+dec"),
)
GIB = 1024**3


@dataclass(frozen=True)
class Case:
    """A query and its supports, by file name, in one shared data set."""

    folder: str
    query: str
    supports: tuple[str, ...]

    def paths(self, name: str) -> tuple[Path, Path]:
        """(image, labels) of one case of this data set."""
        base = DATA / self.folder
        return base / "images" / f"{name}.nii.gz", base / "labels" / f"{name}.nii.gz"


CASES = {
    "hippocampus": Case(
        "msd_task04_hippocampus", "hippocampus_004", ("hippocampus_001", "hippocampus_003", "hippocampus_006")
    ),
    "abdomen": Case("chaos_t2spir_abdomen", "chaos_t2_05", ("chaos_t2_01", "chaos_t2_02")),
}


def _model_inputs(stacks: list[np.ndarray], image_size: int, batch: int) -> Iterator[torch.Tensor]:
    """Model inputs of every slice of ``stacks``, ``batch`` slices at a time (batches may span stacks)."""
    pending: list[torch.Tensor] = []
    for stack in stacks:
        for index in range(stack.shape[0]):
            pending.append(to_model_input(stack[index : index + 1], image_size))
            if len(pending) == batch:
                yield torch.cat(pending)
                pending = []
    if pending:
        yield torch.cat(pending)


def encode_only(engine: FateSamEngine, prepared: PreparedInputs) -> StackSegmentation:
    """The lower bound: the image encoder alone over the slices the engine encodes, features discarded, no labels."""
    clock = StageClock(engine.device)
    encoder = SliceEncoder(engine.model, engine.device, engine.options.encoder_batch_size)
    refs = support_candidates(prepared.supports, prepared.label_values)
    candidates = [support.image[[i for owner, i in refs if owner == s]] for s, support in enumerate(prepared.supports)]
    with clock.stage("encode"):
        for inputs in _model_inputs([prepared.query, *candidates], engine.image_size, encoder.batch_size):
            encoder.encode(inputs, CancelToken())
    num_slices, values = prepared.query.shape[0], prepared.label_values
    scores = np.zeros((num_slices, len(values)), dtype=np.float32)
    stats = RunStats(
        encoder_passes=encoder.passes,
        query_slices=int(num_slices),
        support_slices_encoded=encoder.passes - int(num_slices),
        support_slices_retrievable=len(refs),
        labels=list(values),
        seconds=dict(clock.seconds),
    )
    return StackSegmentation(np.zeros(prepared.query.shape, np.int64), scores, scores.copy(), values, stats)


def peak_memory(device: torch.device) -> dict:
    """Peak resident memory of this process and, on CUDA, the peak memory PyTorch allocated, in GiB."""
    rss_unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is in bytes on macOS, in KiB on Linux
    peak = {"peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * rss_unit / GIB, "peak_cuda_gib": None}
    if device.type == "cuda":
        peak["peak_cuda_gib"] = torch.cuda.max_memory_allocated(device) / GIB
    return peak


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def warm_feature_cache(engine: FateSamEngine, prepared: PreparedInputs) -> None:
    """Fill the engine's feature cache with every support's features, as a first run with a saved support set does.

    The cache is keyed by slice content, so a one-slice query that is none of the query's slices fills it with the
    supports' features only.
    """
    engine.segment(np.zeros_like(prepared.query[:1]), prepared.supports, prepared.label_values)


def corrections_after_a_full_run(engine: FateSamEngine, prepared: PreparedInputs, count: int) -> Corrections:
    """Run the whole query once (filling the cache with every slice's features, as a first run does), then take
    ``count`` evenly spaced slices (1: the middle one) as a reviewer's corrections: a refine run encodes nothing."""
    first = engine.segment(prepared.query, prepared.supports, prepared.label_values)
    num_slices = prepared.query.shape[0]
    slices = sorted({int(i) for i in np.round(np.linspace(0, num_slices - 1, count + 2)[1:-1])})
    return Corrections(first.labels, slices)


def measure(spec: dict) -> dict:
    """Run one (case, configuration) in this process and return its timings, counts and peak memories."""
    settings = RunSettings(
        model=spec["model"],
        checkpoint=spec["checkpoint"],
        random_weights=spec["random_weights"],
        image_size=spec["image_size"],
        device=spec["device"],
        threads=spec["threads"],
    )
    started = time.perf_counter()
    predictor = FateSamPredictor(settings, keep_features=False)  # the stages are timed on its engine, below
    loaded = predictor.load()
    model_load = time.perf_counter() - started
    config, case = spec["config"], CASES[spec["case"]]
    # Every configuration encodes in the batches asked for, else in the engine's own.
    batch = spec["encoder_batch_size"] or encoder_batch_size(
        loaded.device, loaded.image_size, available_memory_bytes(loaded.device)
    )
    options = EngineOptions(
        top_k=3,
        reuse_features=config != "naive",
        encoder_batch_size=batch,
        corrected_per_side=spec["corrected_per_side"],
        pair_directions=config != "unpaired",
    )
    clock = StageClock(loaded.device, stages=("cache_warm_up",))
    cpu_started = _cpu_seconds()
    with tempfile.TemporaryDirectory() as folder:
        cached = config in ("cached", "refine")
        cache = FeatureCache(Path(folder) / "features", model_key="benchmark") if cached else None
        engine = FateSamEngine(loaded, options, cache)
        with clock.stage("read"):  # read and checked as every door reads its inputs
            supports = read_supports([case.paths(name) for name in case.supports])
            query = predictor.prepare_query(case.paths(case.query)[0])
        with clock.stage("prepare"):
            prepared = prepare_inputs(supports, query)
        corrections = None
        if cache is not None:
            warm_cpu_started = _cpu_seconds()
            with clock.stage("cache_warm_up"):
                if config == "refine":
                    corrections = corrections_after_a_full_run(engine, prepared, spec["corrected_slices"])
                else:
                    warm_feature_cache(engine, prepared)
            cpu_started += _cpu_seconds() - warm_cpu_started
        with clock.stage("segment"):
            if config == "encoder":
                stack = encode_only(engine, prepared)
            else:
                stack = engine.segment(
                    prepared.query, prepared.supports, prepared.label_values, corrections=corrections
                )
        with clock.stage("finish"):
            result = result_on_query_grid(stack, prepared, query.image)
        with clock.stage("write"):
            result.write(Path(folder) / "labels.nii.gz")
    cpu = _cpu_seconds() - cpu_started
    steps = dict(clock.seconds)
    warm_up = steps.pop("cache_warm_up")  # outside the total, like model loading
    stages = stack.stats.seconds
    seconds = {
        "read": steps["read"],
        "prepare": steps["prepare"],
        **stages,
        "engine_other": steps["segment"] - sum(stages.values()),
        "finish": steps["finish"],
        "write": steps["write"],
        "total": sum(steps.values()),
        "model_load": model_load,
        "cache_warm_up": warm_up,
        # CPU time of this process over the total: well below the thread count means other processes competed.
        "cpu": cpu,
    }
    counts = {key: getattr(stack.stats, key) for key in ("encoder_passes", "query_slices", "support_slices_encoded")}
    return {
        "status": "ok",
        "device": str(loaded.device),
        "model": loaded.spec.name,
        "image_size": loaded.image_size,
        "random_weights": loaded.random_weights,
        "encoder_batch_size": batch,
        "torch_threads": torch.get_num_threads(),
        "slice_axis": result.slice_axis,
        **counts,
        "seconds": seconds,
        "load_average_1min": os.getloadavg()[0],
        **peak_memory(loaded.device),
    }


def run_child(spec: dict) -> dict:
    """Measure one (case, configuration) in a fresh Python process running this script with ``--worker``."""
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "result.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec), "--json", str(output)]
        completed = subprocess.run(command, check=False)
        if completed.returncode != 0 or not output.is_file():
            return {"status": "failed", "returncode": completed.returncode}
        return json.loads(output.read_text())


def _first_line(path: str, prefix: str) -> str | None:
    try:
        with open(path) as stream:
            return next((line.split(":", 1)[1].strip() for line in stream if line.startswith(prefix)), None)
    except OSError:
        return None


def machine_description() -> dict:
    """The CPU, cores, memory, GPU and software versions the numbers were measured with."""
    git = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    return {
        "cpu": _first_line("/proc/cpuinfo", "model name") or platform.processor(),
        "cpu_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": (os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) / GIB,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "sam2": importlib.metadata.version("sam2"),
        "commit": git.stdout.strip() or None,
    }


def _cell(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table_row(case: str, config: str, result: dict) -> str:
    """One Markdown row: seconds per stage, encoder passes and peak memories (or why there are none)."""
    if result["status"] != "ok":
        status = "not run" if result["status"] == "not run" else "failed"
        return f"| {case} | {config} | " + " | ".join([status] * (len(STAGE_COLUMNS) + 5)) + " |"
    seconds = result["seconds"]
    stages = [seconds[key] for key, _ in STAGE_COLUMNS]
    cells = [seconds["total"], *stages, seconds["total"] - sum(stages)]
    memory = [_cell(result["peak_rss_gib"]), _cell(result["peak_cuda_gib"])]
    return f"| {case} | {config} | " + " | ".join([*map(_cell, cells), str(result["encoder_passes"]), *memory]) + " |"


def markdown_table(results: dict) -> str:
    """The results of every (case, configuration) as one Markdown table."""
    header = ["case", "config", "total s", *[name for _, name in STAGE_COLUMNS], "other", "passes"]
    header += ["peak RSS GiB", "peak CUDA GiB"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [
        table_row(case, config, result) for case, configs in results.items() for config, result in configs.items()
    ]
    return "\n".join(lines)


def _ratio(numerator: dict, denominator: dict) -> float | None:
    if numerator["status"] != "ok" or denominator["status"] != "ok":
        return None
    return numerator["seconds"]["total"] / denominator["seconds"]["total"]


def ratios(results: dict) -> dict:
    """Per case: engine over encoder alone, naive over engine, engine over the run with cached supports, and a refine
    run over the full run it refines."""
    return {
        case: {
            "engine_over_encoder": _ratio(configs["engine"], configs["encoder"]),
            "unpaired_over_engine": _ratio(configs["unpaired"], configs["engine"]),
            "naive_over_engine": _ratio(configs["naive"], configs["engine"]),
            "engine_over_cached": _ratio(configs["engine"], configs["cached"]),
            "refine_over_engine": _ratio(configs["refine"], configs["engine"]),
        }
        for case, configs in results.items()
    }


def ratio_lines(case_ratios: dict) -> str:
    """The ratios as readable lines under the table."""
    lines = []
    for case, values in case_ratios.items():
        parts = [
            f"{name.replace('_over_', ' / ')} = " + ("not measured" if value is None else f"{value:.2f}x")
            for name, value in values.items()
        ]
        lines.append(f"- {case}: " + ", ".join(parts))
    return "\n".join(lines)


def contention_notes(results: dict) -> list[str]:
    """A warning for every CPU run that kept its threads busy less than 60% of the time: others competed for the CPU."""
    notes = []
    for case, configs in results.items():
        for config, result in configs.items():
            if result["status"] != "ok" or result["device"] != "cpu":
                continue
            cores_used = result["seconds"]["cpu"] / result["seconds"]["total"]
            if cores_used < 0.6 * result["torch_threads"]:
                notes.append(
                    f"- note: {case} / {config} kept {cores_used:.1f} of its {result['torch_threads']} threads busy "
                    f"(1-min load average {result['load_average_1min']:.1f}): other processes probably slowed it."
                )
    return notes


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sam2.1-tiny", help="SAM2 model name (default sam2.1-tiny)")
    parser.add_argument("--image-size", type=int, default=1024, help="model input size (default 1024)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 or mps")
    parser.add_argument(
        "--random-weights",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="seeded random weights (default; timings do not depend on the weights); off with --checkpoint",
    )
    parser.add_argument("--checkpoint", type=Path, help="real weights from this file (turns --random-weights off)")
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    parser.add_argument("--threads", type=int, help="torch.set_num_threads in every run (default PyTorch's)")
    parser.add_argument(
        "--encoder-batch-size", type=int, help="slices per encoder batch in every configuration (default: the engine's)"
    )
    parser.add_argument(
        "--corrected-slices", type=int, default=1, help="slices the refine run takes as corrected (default 1)"
    )
    parser.add_argument(
        "--corrected-per-side",
        type=lambda text: None if text == "all" else int(text),
        default=CORRECTED_PER_SIDE,
        help=f"corrected slices on each side a refine run attends to, or all (default {CORRECTED_PER_SIDE})",
    )
    parser.add_argument("--json", type=Path, default=Path("benchmark.json"), help="write all results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser


def run_benchmark(args: argparse.Namespace) -> int:
    """Measure every requested (case, configuration) in its own process, print the table, write the JSON."""
    spec = {
        "model": args.model,
        "image_size": args.image_size,
        "device": args.device,
        "checkpoint": str(args.checkpoint) if args.checkpoint else None,
        "random_weights": args.random_weights and args.checkpoint is None,
        "threads": args.threads,
        "encoder_batch_size": args.encoder_batch_size,
        "corrected_slices": args.corrected_slices,
        "corrected_per_side": args.corrected_per_side,
    }
    results = {case: {config: {"status": "not run"} for config in CONFIGS} for case in args.cases}
    machine = machine_description()
    for case in args.cases:
        for config in (c for c in CONFIGS if c in args.configs):
            print(f"Running {case} / {config} ...", file=sys.stderr, flush=True)
            results[case][config] = run_child({**spec, "case": case, "config": config})
            # Rewritten after every run, so that an interrupted benchmark keeps what it measured.
            report = {"machine": machine, "options": spec, "results": results, "ratios": ratios(results)}
            args.json.write_text(json.dumps(report, indent=2))
    print(markdown_table(results))
    print()
    print("\n".join([ratio_lines(ratios(results)), *contention_notes(results)]))
    print(f"\nWrote {args.json}")
    failed = any(r["status"] == "failed" for configs in results.values() for r in configs.values())
    return 1 if failed else 0


def main() -> int:
    """Entry point: the benchmark, or (hidden ``--worker``) one measurement written to ``--json``."""
    args = build_parser().parse_args()
    if args.worker:
        args.json.write_text(json.dumps(measure(json.loads(args.worker))))
        return 0
    return run_benchmark(args)


if __name__ == "__main__":
    sys.exit(main())
