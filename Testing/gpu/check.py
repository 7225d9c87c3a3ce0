"""The GPU check in one call: CUDA against the CPU, sam2's hole filling against ours, timings, a server and a cohort.

Run by ``Testing/gpu/check.sh`` on the lent GPU machine (random weights: timings do not depend on them), or here with
``--dry-run`` (the CPU in place of CUDA, tiny sizes, every part end to end). Writes ``check.json`` and ``check.md``
into ``--out``:

- (a) ``agreement``: the engine on CUDA (bf16 autocast, bf16 memories) and on the CPU (float32) on a small case, the
  same weights: relative errors of the encoder levels, of a support memory and of every slice's logits, and the
  share of voxels whose label differs;
- (b) ``holes``: SAM2's CUDA extension (``sam2._C``, built by check.sh from sam2's source, when that fitted in its
  time) against our SimpleITK counting (``FateSAMLib/method/holes.py``), on the raw logits of (a)'s CUDA run and on
  random masks: component areas and filled logits must be equal;
- (c) ``timings``: tiny and large at ``--image-size`` on a long volume (cases stacked to at least ``--slices``), 2
  labels (hippocampus) and 4 (abdomen): seconds per stage, slices per second, peak GPU memory, and memory
  attention's FLOPs (counted by torch's FLOP counter on each call's shapes) over its time, as a share of the bf16
  matrix rate measured in the same call;
- (d) ``service``: a warm server job (the second of two, ``fatesam segment --server``) and ``fatesam batch`` over 8
  queries, as the command line runs them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from FateSAMLib.io.geometry import to_slices  # noqa: E402
from FateSAMLib.method import holes, tracking  # noqa: E402
from FateSAMLib.method.encoder import SliceEncoder, compute_autocast  # noqa: E402
from FateSAMLib.method.engine import EngineOptions, FateSamEngine, SupportStack  # noqa: E402
from FateSAMLib.method.normalization import masks_to_model_input, normalize_intensities, to_model_input  # noqa: E402
from FateSAMLib.models.loading import load_model  # noqa: E402
from FateSAMLib.progress import CancelToken  # noqa: E402

HIPPOCAMPUS = ("msd_task04_hippocampus", ["hippocampus_001", "hippocampus_003"], "hippocampus_004", [1, 2])
ABDOMEN = ("chaos_t2spir_abdomen", ["chaos_t2_01"], "chaos_t2_05", [1, 2, 3, 4])
CASES = {"hippocampus": HIPPOCAMPUS, "abdomen": ABDOMEN}
PARTS = ("agreement", "holes", "timings", "service")


def case_stacks(data: Path, case: tuple, repeat: int = 1) -> tuple[np.ndarray, list[SupportStack], list[int]]:
    """The query (stacked ``repeat`` times along the slice axis) and supports of a case, axial, normalised."""
    folder, support_names, query_name, labels = case

    def stacks(name: str) -> tuple[np.ndarray, np.ndarray]:
        image = sitk.ReadImage(str(data / folder / "images" / f"{name}.nii.gz"))
        label_map = sitk.ReadImage(str(data / folder / "labels" / f"{name}.nii.gz"))
        return (
            to_slices(normalize_intensities(sitk.GetArrayFromImage(image)), image, "axial"),
            to_slices(sitk.GetArrayFromImage(label_map), label_map, "axial"),
        )

    query, _ = stacks(query_name)
    supports = [SupportStack(*stacks(name)) for name in support_names]
    return np.concatenate([query] * repeat), supports, labels


def relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """max |ours - theirs| / max |theirs|, in float32 on the CPU."""
    ours, theirs = ours.detach().float().cpu(), theirs.detach().float().cpu()
    return float((ours - theirs).abs().max() / theirs.abs().max().clamp_min(1e-12))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def recorded_hole_inputs(store: list[torch.Tensor]) -> Iterator[None]:
    """Keep every low-resolution logits tensor the tracker fills holes in (SAM2's raw decoder output)."""
    original = tracking.fill_small_holes

    def recording(logits: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        store.append(logits.detach().clone())
        return original(logits, *args, **kwargs)

    tracking.fill_small_holes = recording
    try:
        yield
    finally:
        tracking.fill_small_holes = original


def agreement(data: Path, device: torch.device, size: int, raw_logits: list[torch.Tensor]) -> dict:
    """(a) The same weights on ``device`` and on the CPU: per stage and by mask."""
    query, supports, labels = case_stacks(data, HIPPOCAMPUS)
    cpu = load_model("sam2.1-tiny", random_weights=True, image_size=size, device="cpu", seed=0)
    other = load_model("sam2.1-tiny", random_weights=True, image_size=size, device=str(device), seed=0)
    other.model.load_state_dict(cpu.model.state_dict())
    outputs = {}
    for name, loaded in (("cpu", cpu), ("device", other)):
        encoder = SliceEncoder(loaded.model, loaded.device, batch_size=2)
        levels = encoder.encode(to_model_input(query[:2], size), CancelToken())
        tracker = tracking.SliceTracker(loaded.model, encoder.geometry, loaded.device, query.shape[0])
        support = supports[0]
        row = int(np.argmax([(support.labels[i] > 0).sum() for i in range(support.labels.shape[0])]))
        masks = masks_to_model_input(np.stack([support.labels[row] == v for v in labels]), size)
        memory = tracker.encode_support(
            encoder.encode(to_model_input(support.image[row : row + 1], size), CancelToken()).slice_levels(0), masks
        )
        logits: dict[int, torch.Tensor] = {}
        engine = FateSamEngine(loaded, EngineOptions(encoder_batch_size=4))
        with recorded_hole_inputs(raw_logits if name == "device" else []):
            result = engine.segment(query, supports, labels, on_slice_logits=logits.__setitem__)
        outputs[name] = levels, memory, logits, result
    (levels_c, memory_c, logits_c, result_c), (levels_d, memory_d, logits_d, result_d) = (
        outputs["cpu"],
        outputs["device"],
    )
    slice_errors = [relative_error(logits_d[i], logits_c[i]) for i in sorted(logits_c)]
    differing = float((result_d.labels != result_c.labels).mean())
    foreground = float((result_c.labels > 0).mean())
    return {
        "slices": int(query.shape[0]),
        "encoder_levels": [relative_error(d, c) for d, c in zip(levels_d.levels, levels_c.levels, strict=True)],
        "support_memory_features": relative_error(memory_d["maskmem_features"], memory_c["maskmem_features"]),
        "support_obj_ptr": relative_error(memory_d["obj_ptr"], memory_c["obj_ptr"]),
        "first_slice_logits": slice_errors[0],
        "logits_median": float(np.median(slice_errors)),
        "logits_max": float(max(slice_errors)),
        "voxels_differing": differing,
        "foreground_share": foreground,
        "label_dice": {str(v): dice(result_d.labels == v, result_c.labels == v) for v in labels},
    }


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum() + b.sum())
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


def install_extension(out: Path, wait_s: float) -> str:
    """Wait for check.sh's build of sam2's extension (it writes ``sam2_C_status``), then put the built ``_C.so`` into
    sam2's package, where :mod:`FateSAMLib.method.holes` finds it. Returns what happened."""
    status_file = out / "sam2_C_status"
    deadline = time.time() + wait_s
    while not status_file.is_file() and time.time() < deadline:
        time.sleep(1)
    if not status_file.is_file():
        return "not built (no build started, or it did not end in time)"
    status = status_file.read_text().strip()
    if status.startswith("built "):
        import sam2

        shutil.copyfile(status.split(" ", 1)[1], Path(sam2.__file__).parent / "_C.so")
        importlib.invalidate_caches()
    return status


def hole_filling(raw_logits: list[torch.Tensor], device: torch.device, out: Path) -> dict:
    """(b) sam2._C's component areas and hole filling against ours, on real logits and random masks."""
    status = install_extension(out, 0 if device.type == "cpu" else 300)
    available = device.type == "cuda" and holes._sam2_extension_available()
    result = {"extension": status, "compared": available, "tensors": len(raw_logits)}
    if not available:
        result["note"] = "sam2._C is not available here: nothing to compare (our SimpleITK counting ran alone)"
        return result
    from sam2.utils.misc import get_connected_components

    rng = np.random.default_rng(3)
    random_masks = torch.from_numpy(rng.random((16, 1, 256, 256)) > 0.55).to(device)
    samples = [*raw_logits, (random_masks.float() - 0.5)]
    mismatched_areas = mismatched_fills = filled = 0
    for logits in samples:
        mask = logits <= 0
        theirs = get_connected_components(mask.to(torch.uint8))[1]
        ours = holes.component_areas(mask.cpu()).to(device)
        mismatched_areas += int((theirs != ours).sum())
        on_device = holes.fill_small_holes(logits)
        on_cpu = holes.fill_small_holes(logits.cpu())
        mismatched_fills += int((on_device.cpu() != on_cpu).sum())
        filled += int((on_cpu != logits.cpu()).sum())
    result.update(mismatched_area_pixels=mismatched_areas, mismatched_filled_pixels=mismatched_fills, filled=filled)
    return result


def matrix_rate(device: torch.device, size: int) -> float:
    """TFLOP/s of a bf16 (size x size x size) matrix product: the ceiling memory attention is compared with."""
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    synchronize(device)
    start, runs = time.perf_counter(), 10
    for _ in range(runs):
        a @ b
    synchronize(device)
    return 2 * size**3 * runs / (time.perf_counter() - start) / 1e12


class AttentionMeter:
    """Times every call of SAM2's memory attention and counts its FLOPs from the call's shapes afterwards."""

    def __init__(self, module: torch.nn.Module, device: torch.device) -> None:
        self.module, self.device = module, device
        self.seconds = 0.0
        self.calls: dict[tuple, int] = {}
        self._start = 0.0
        self._handles = [
            module.register_forward_pre_hook(self._before, with_kwargs=True),
            module.register_forward_hook(self._after),
        ]

    def _before(self, module, args, kwargs) -> None:
        curr, memory = kwargs["curr"], kwargs["memory"]
        curr = curr[0] if isinstance(curr, list) else curr
        key = (tuple(curr.shape), tuple(memory.shape), int(kwargs.get("num_obj_ptr_tokens", 0)))
        self.calls[key] = self.calls.get(key, 0) + 1
        synchronize(self.device)
        self._start = time.perf_counter()

    def _after(self, module, args, output) -> None:
        synchronize(self.device)
        self.seconds += time.perf_counter() - self._start

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()

    def flops(self) -> int:
        """FLOPs of all calls: each distinct shape run once more under torch's FLOP counter, times its calls."""
        self.close()
        total = 0
        for (curr_shape, memory_shape, pointers), count in self.calls.items():
            curr = torch.randn(curr_shape, device=self.device)
            memory = torch.randn(memory_shape, device=self.device)
            counter = FlopCounterMode(display=False)
            with torch.inference_mode(), compute_autocast(self.device), counter:
                self.module(
                    curr=[curr],
                    curr_pos=[torch.randn_like(curr)],
                    memory=memory,
                    memory_pos=torch.randn_like(memory),
                    num_obj_ptr_tokens=pointers,
                )
            total += counter.get_total_flops() * count
        return total


def timing(data: Path, device: torch.device, model: str, case: str, size: int, min_slices: int, peak: float) -> dict:
    """(c) One model on one long stacked volume: stages, slices per second, peak memory, attention's rate."""
    query, supports, labels = case_stacks(data, CASES[case])
    query = np.concatenate([query] * -(-min_slices // query.shape[0]))
    loaded = load_model(model, random_weights=True, image_size=size, device=str(device), seed=0)
    engine = FateSamEngine(loaded, EngineOptions(encoder_batch_size=8 if device.type == "cuda" else 1))
    engine.segment(query[:4], supports, labels)  # warm-up: kernels, allocator
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    meter = AttentionMeter(loaded.model.memory_attention, device)
    synchronize(device)
    start = time.perf_counter()
    result = engine.segment(query, supports, labels)
    synchronize(device)
    total = time.perf_counter() - start
    flops = meter.flops()
    rate = flops / meter.seconds / 1e12 if meter.seconds else 0.0
    return {
        "model": model,
        "case": case,
        "labels": len(labels),
        "slices": int(query.shape[0]),
        "image_size": size,
        "seconds": total,
        "stages": result.stats.seconds,
        "slices_per_s": query.shape[0] / total,
        "peak_gpu_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "attention_seconds": meter.seconds,
        "attention_tflop": flops / 1e12,
        "attention_tflops": rate,
        "attention_share_of_measured_bf16": rate / peak if peak else None,
    }


def write_case(data: Path, folder: Path, case: tuple, name: str) -> tuple[Path, Path]:
    """A case's image and labels copied to ``folder`` (the command line reads files)."""
    folder.mkdir(parents=True, exist_ok=True)
    image, labels = folder / f"{name}.nii.gz", folder / f"{name}_labels.nii.gz"
    shutil.copyfile(data / case[0] / "images" / f"{name}.nii.gz", image)
    shutil.copyfile(data / case[0] / "labels" / f"{name}.nii.gz", labels)
    return image, labels


def fatesam(*arguments: str, timeout: float) -> float:
    """Seconds one ``python -m FateSAMLib.cli`` command took; RuntimeError with its messages if it failed."""
    start = time.perf_counter()
    command = [sys.executable, "-m", "FateSAMLib.cli", *arguments]
    done = subprocess.run(command, timeout=timeout, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"fatesam {arguments[0]} exited with {done.returncode}: {done.stderr[-2000:]}")
    return time.perf_counter() - start


def service(data: Path, device: torch.device, size: int, queries: int) -> dict:
    """(d) A warm server job and a cohort of ``queries`` queries, through the command line."""
    with tempfile.TemporaryDirectory(prefix="fatesam-gpu-") as folder:
        return _service(data, Path(folder), device, size, queries)


def _service(data: Path, work: Path, device: torch.device, size: int, queries: int) -> dict:
    model = ("--random-weights", "--image-size", str(size), "--device", device.type, "--slice-axis", "axial")
    support = write_case(data, work / "support", HIPPOCAMPUS, HIPPOCAMPUS[1][0])
    query, _ = write_case(data, work / "query", HIPPOCAMPUS, HIPPOCAMPUS[2])
    token = work / "token"
    token.write_text("gpu-check-token-0123456789\n")
    token.chmod(0o600)
    with socket.socket() as probe:  # a free port on this machine
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "FateSAMLib.cli", "serve", "--port", str(port), "--token-file", str(token), *model],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def job(output: str) -> float:
        arguments = [
            "--server",
            url,
            "--token-file",
            str(token),
            "--support",
            *map(str, support),
            "--query",
            str(query),
        ]
        return fatesam("segment", *arguments, "--output", str(work / output), "--overwrite", timeout=300)

    try:
        deadline = time.time() + 60
        while True:  # the first job, once the server answers: it uploads the support set
            try:
                job("first.nii.gz")
                break
            except RuntimeError:
                if time.time() > deadline:
                    raise
                time.sleep(1)
        warm = job("warm.nii.gz")
    finally:
        server.terminate()
        server.wait(30)
    cohort = work / "cohort"
    cohort.mkdir()
    for n in range(queries):
        shutil.copyfile(query, cohort / f"q{n}.nii.gz")
    batch = fatesam(
        "batch",
        "--support",
        *map(str, support),
        "--queries",
        str(cohort),
        "--output-dir",
        str(work / "results"),
        *model,
        timeout=600,
    )
    return {
        "warm_server_job_s": warm,
        "batch_queries": queries,
        "batch_s": batch,
        "batch_cases_per_h": queries * 3600 / batch,
    }


def markdown(report: dict) -> str:
    """The report as Markdown tables."""
    lines = [f"# GPU check ({report['device']}, {report['date']})", ""]
    for name, error in report.get("errors", {}).items():
        lines.append(f"- **{name} failed**: {error}")
    if "agreement" in report:
        lines += agreement_lines(report["agreement"])
    if "holes" in report:
        lines += ["## (b) hole filling", "", "```", json.dumps(report["holes"], indent=1), "```", ""]
    if "timings" in report:
        lines += timing_lines(report["timings"], report["bf16_tflops"])
    if "service" in report:
        d = report["service"]
        lines += [
            "## (d) server and cohort",
            "",
            f"- warm server job: {d['warm_server_job_s']:.2f} s",
            f"- batch of {d['batch_queries']} queries: {d['batch_s']:.1f} s ({d['batch_cases_per_h']:.0f} cases/h)",
        ]
    return "\n".join(lines) + "\n"


def agreement_lines(a: dict) -> list[str]:
    lines = ["## (a) device against CPU (relative errors)", "", "| stage | value |", "|---|---|"]
    for key in (
        "support_memory_features",
        "support_obj_ptr",
        "first_slice_logits",
        "logits_median",
        "logits_max",
        "voxels_differing",
        "foreground_share",
    ):
        lines.append(f"| {key} | {a[key]:.3g} |")
    lines.append(f"| encoder levels | {', '.join(f'{e:.3g}' for e in a['encoder_levels'])} |")
    lines.append(f"| Dice per label | {', '.join(f'{k}: {v:.4f}' for k, v in a['label_dice'].items())} |")
    return [*lines, ""]


def timing_lines(timings: list[dict], bf16_tflops: float) -> list[str]:
    lines = [
        "## (c) timings",
        "",
        f"bf16 matrix rate measured: {bf16_tflops:.1f} TFLOP/s",
        "",
        "| model | labels | slices | size | s | slices/s | encode | retrieval | memory enc. | attn+dec | peak GiB "
        "| attention TFLOP/s | share of bf16 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in timings:
        s = t["stages"]
        peak = "-" if t["peak_gpu_gib"] is None else f"{t['peak_gpu_gib']:.2f}"
        share = "-" if t["attention_share_of_measured_bf16"] is None else f"{t['attention_share_of_measured_bf16']:.1%}"
        lines.append(
            f"| {t['model']} | {t['labels']} | {t['slices']} | {t['image_size']} | {t['seconds']:.2f} "
            f"| {t['slices_per_s']:.1f} | {s['encode']:.2f} | {s['retrieval']:.2f} | {s['memory_encoding']:.2f} "
            f"| {s['attention_decoding']:.2f} | {peak} | {t['attention_tflops']:.2f} | {share} |"
        )
    lines += [
        "",
        "Targets (issue 24): a 200-slice volume with SAM2-large at 1024 in under 5 s; memory attention at 50 % "
        "or more of the card's bf16 rate.",
        "",
    ]
    for t in timings:
        per_200 = t["seconds"] * 200 / t["slices"]
        share = t["attention_share_of_measured_bf16"] or 0.0
        lines.append(
            f"- {t['model']}, {t['labels']} labels: {per_200:.2f} s per 200 slices"
            f"{' (under 5 s: ' + ('yes' if per_200 < 5 else 'no') + ')' if 'large' in t['model'] else ''}; "
            f"attention at {share:.1%} of the measured bf16 rate ({'yes' if share >= 0.5 else 'no'})"
        )
    return [*lines, ""]


def run_parts(parts: list[tuple[str, Callable[[], object]]], report: dict, out: Path) -> None:
    """Each part in turn; a failing part is recorded with its error and the others still run. JSON after each."""
    for name, part in parts:
        start = time.perf_counter()
        try:
            report[name] = part()
        except Exception as error:  # noqa: BLE001 - one failing part must not hide the others' numbers
            report.setdefault("errors", {})[name] = f"{type(error).__name__}: {error}"
        report.setdefault("part_seconds", {})[name] = time.perf_counter() - start
        print(f"check: {name} done in {report['part_seconds'][name]:.1f} s", flush=True)
        (out / "check.json").write_text(json.dumps(report, indent=1, default=str))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for check.json and check.md")
    parser.add_argument("--data", type=Path, default=None, help="data folder (default: .gpu-data, else ../shared/data)")
    parser.add_argument("--dry-run", action="store_true", help="the CPU in place of CUDA, tiny sizes (minutes)")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="parts to run (default all)")
    args = parser.parse_args(argv)
    data = args.data or next((p for p in (ROOT / ".gpu-data", ROOT.parent / "shared" / "data") if p.is_dir()), None)
    if data is None:
        parser.error("no data folder: run Testing/gpu/wheelhouse.sh (it copies the cases to .gpu-data)")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.dry_run:
        device, size, small, min_slices, models, queries = torch.device("cpu"), 64, 64, 20, ["sam2.1-tiny"], 2
    else:
        if not torch.cuda.is_available():
            parser.error("no CUDA device: use --dry-run on a machine without one")
        device, size, small, min_slices, queries = torch.device("cuda"), 1024, 256, 200, 8
        models = ["sam2.1-tiny", "sam2.1-large"]
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run)"
    report: dict = {
        "device": name,
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "dry_run": args.dry_run,
    }
    report["bf16_tflops"] = matrix_rate(device, 256 if args.dry_run else 8192)
    raw_logits: list[torch.Tensor] = []
    parts: list[tuple[str, Callable[[], object]]] = [
        ("agreement", lambda: agreement(data, device, small, raw_logits)),
        ("holes", lambda: hole_filling(raw_logits, device, args.out)),
        (
            "timings",
            lambda: [
                timing(data, device, model, case, size, min_slices, report["bf16_tflops"])
                for model in models
                for case in ("hippocampus", "abdomen")
            ],
        ),
        ("service", lambda: service(data, device, size, queries)),
    ]
    run_parts([(name, part) for name, part in parts if name in args.parts], report, args.out)
    (args.out / "check.md").write_text(markdown(report))
    print(json.dumps(report.get("errors", {}), indent=1))
    return 1 if "errors" in report else 0


if __name__ == "__main__":
    sys.exit(main())
