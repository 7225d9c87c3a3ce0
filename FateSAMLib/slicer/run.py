"""One segmentation run of the Slicer module, without Qt: scene -> temporary files -> engine process -> scene.

The inputs are exported to a temporary folder (volumes as NRRD, supports' segments as ``.seg.nrrd`` label maps whose
label values are assigned by segment name, matched across supports by :func:`~FateSAMLib.segments.segment_key`, as
the command line matches them), the engine runs as a separate
process, and its ``.seg.nrrd`` is imported into a new segmentation node (or the one the user picked) only when it
succeeded. A cancelled or failed run leaves the scene as it was. The temporary folder (private to the user) is
removed in every ending: success, failure, cancel, :meth:`SegmentationRun.stop`, and at the latest when Python exits.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import slicer

from ..errors import Cancelled, FateSAMError, InputError
from ..formats import NRRD_SUFFIX, SEGMENTATION_SUFFIX
from ..json_input import parse_json
from ..options import RunSettings
from ..segments import Segment, segment_key
from .apply_result import KeptSegments, apply_result, untouched_segments
from .probabilities import place_probabilities, read_probabilities
from .process import BackgroundJob, EngineEvent, EngineProcess, engine_command, poll_until_finished, segment_arguments
from .provenance import SupportSliceRef, read_provenance
from .scene import (
    add_to_scene,
    check_same_frame,
    ijk_to_ras,
    label_array_to_segmentation,
    lps_to_ras,
    node_label,
    read_segmentation,
    save_segmentation,
    save_volume,
    segment_infos,
    segmentation_to_label_array,
    to_world,
)

if TYPE_CHECKING:
    from .review import ReviewSession

RESULT_SUFFIX = " FateSAM"
STATS_BYTES = 64 * 1024**2
"""The largest statistics JSON read (per slice and label confidence of a long volume is a few MB)."""


@dataclass(frozen=True)
class SupportPair:
    """A labelled example: a volume and the segmentation drawn on it."""

    volume: slicer.vtkMRMLScalarVolumeNode
    segmentation: slicer.vtkMRMLSegmentationNode


@dataclass(frozen=True)
class SupportSegments:
    """The segments of the supports, matched across them by name once (by :func:`segment_key`), first-seen order.

    Per name key: the first spelling, the first colour and the first terminology found (the result gets them).
    """

    names: dict[str, str]
    colors: dict[str, tuple[float, float, float]]
    terminologies: dict[str, str]

    @classmethod
    def of(cls, segmentations: Sequence[slicer.vtkMRMLSegmentationNode]) -> SupportSegments:
        """The segments found in ``segmentations``."""
        names: dict[str, str] = {}
        colors: dict[str, tuple[float, float, float]] = {}
        terminologies: dict[str, str] = {}
        for segmentation in segmentations:
            for info in segment_infos(segmentation):
                key = segment_key(info.name)
                names.setdefault(key, info.name)
                colors.setdefault(key, info.color)
                if info.terminology:
                    terminologies.setdefault(key, info.terminology)
        return cls(names, colors, terminologies)

    def plan(self, names: Sequence[str] | None = None) -> list[Segment]:
        """One segment per wanted name (default: every name), valued 1..N, named and coloured as first found.

        Raises :class:`InputError` naming the supports' segments when a wanted name is in no support.
        """
        wanted: dict[str, str] = {}  # key -> the first spelling asked for
        for name in names if names is not None else self.names.values():
            wanted.setdefault(segment_key(name), name)
        missing = [name for key, name in wanted.items() if key not in self.names]
        if missing:
            raise InputError(
                f"No support has a segment named {', '.join(repr(name) for name in missing)}; "
                f"choose among {', '.join(self.names.values()) or '(none)'}."
            )
        if not wanted:
            raise InputError("No segment to transfer: check at least one segment (the supports need named segments).")
        return [Segment(value, self.names[key], self.colors[key]) for value, key in enumerate(wanted, start=1)]


def segment_names(segmentations: Sequence[slicer.vtkMRMLSegmentationNode]) -> list[str]:
    """The segment names found across segmentations, matched by :func:`segment_key`, first spelling and order."""
    return list(SupportSegments.of(segmentations).names.values())


def plan_segments(supports: Sequence[SupportPair], names: Sequence[str] | None = None) -> list[Segment]:
    """The segments of a run on ``supports`` (see :meth:`SupportSegments.plan`)."""
    return SupportSegments.of([pair.segmentation for pair in supports]).plan(names)


@dataclass(frozen=True)
class RunInputs:
    """The files of one run inside its temporary folder."""

    supports: list[tuple[Path, Path]]
    query: Path
    output: Path
    stats: Path
    warnings: list[str] = field(default_factory=list)
    pairs: list[SupportPair] = field(default_factory=list)  # the supports exported, in order (as the stats number)


def export_inputs(
    folder: Path, target: slicer.vtkMRMLScalarVolumeNode, supports: Sequence[SupportPair], segments: Sequence[Segment]
) -> RunInputs:
    """Write the target and the supports into ``folder``; nothing in the scene changes.

    Each support's segments are merged into one label map on its volume's grid, with the values of ``segments``
    (matched by name); empty segments are left out, and so is a support with none of them (with a warning).
    """
    if not supports:
        raise InputError("No support: add at least one (volume, segmentation) pair that shows the structures.")
    by_key = {segment_key(segment.name): segment for segment in segments}
    exported, warnings, pairs = [], [], []
    for index, pair in enumerate(supports, start=1):
        check_same_frame(pair.segmentation, pair.volume)
        chosen = [info for info in segment_infos(pair.segmentation) if segment_key(info.name) in by_key]
        values = {info.segment_id: by_key[segment_key(info.name)].value for info in chosen}
        labels = segmentation_to_label_array(pair.segmentation, pair.volume, values)
        present = [segment for segment in segments if (labels == segment.value).any()]
        if not present:
            warnings.append(f"Support '{node_label(pair.segmentation)}' has none of the chosen segments; left out.")
            continue
        label_node = label_array_to_segmentation(labels, ijk_to_ras(pair.volume), present, f"support {index}")
        exported.append(
            (
                save_volume(pair.volume, folder / f"support-{index}{NRRD_SUFFIX}"),
                save_segmentation(label_node, folder / f"support-{index}{SEGMENTATION_SUFFIX}"),
            )
        )
        pairs.append(pair)
    if not exported:
        raise InputError("None of the supports has the chosen segments; check other segments or add supports.")
    query = save_volume(target, folder / f"query{NRRD_SUFFIX}")
    result, stats = folder / f"result{SEGMENTATION_SUFFIX}", folder / "stats.json"
    return RunInputs(exported, query, result, stats, warnings, pairs)


@dataclass(frozen=True)
class DoubtfulSlice:
    """A result slice worth reviewing first: where it is (RAS, mm), how confident the model was, which labels."""

    slice_index: int
    axis: str
    center_ras: tuple[float, float, float]
    certainty: float
    labels: tuple[str, ...]


def read_run_stats(stats_path: Path) -> dict:
    """The engine's stats JSON (``{}`` when it wrote none); :class:`InputError` when it is not a JSON object."""
    if not Path(stats_path).is_file():
        return {}
    stats = parse_json(Path(stats_path), f"The engine's statistics {stats_path}", "run again.", max_bytes=STATS_BYTES)
    if not isinstance(stats, dict):
        raise InputError(f"The engine's statistics {stats_path} are not a JSON object; run again.")
    return stats


def read_doubtful_slices(stats_path: Path, stats: dict | None = None) -> list[DoubtfulSlice]:
    """The ``doubtful_slices`` of the engine's stats JSON, lowest certainty first, with centres converted LPS -> RAS.

    ``stats``: the file's content when it was read already (:func:`read_run_stats`), so it is not read again.
    """
    stats = read_run_stats(stats_path) if stats is None else stats
    try:
        entries = stats.get("doubtful_slices", [])
        slices = [
            DoubtfulSlice(
                slice_index=int(entry["slice_index"]),
                axis=str(entry["axis"]),
                center_ras=lps_to_ras(entry["center_lps"]),
                certainty=float(entry["certainty"]),
                labels=tuple(str(label) for label in entry.get("labels", [])),
            )
            for entry in entries
        ]
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as error:
        raise InputError(f"The engine's statistics {stats_path} are malformed ({error}); run again.") from error
    return sorted(slices, key=lambda doubtful: doubtful.certainty)


def jump_to(scene: slicer.vtkMRMLScene, node: slicer.vtkMRMLTransformableNode, point_ras: Sequence[float]) -> tuple:
    """Centre every slice view on a point given in ``node``'s coordinates (e.g. a doubtful slice of the target).

    The point goes through the node's parent transforms first, so that the views land where the node is shown.
    Returns the world point.
    """
    world = to_world(node, point_ras)
    slicer.vtkMRMLSliceNode.JumpAllSlices(scene, *world, slicer.vtkMRMLSliceNode.CenteredJumpSlice)
    return world


def display_result(segmentation: slicer.vtkMRMLSegmentationNode) -> list[str]:
    """Show an imported result in the slice views and as surfaces in 3D; returns warnings, never raises.

    The result is already in the scene: if showing it fails (no display node, the 3D surface cannot be built...),
    it stays there and the warning says how to show it by hand.
    """
    try:
        segmentation.CreateDefaultDisplayNodes()
        display = segmentation.GetDisplayNode()
        if display is None:
            raise InputError("it has no display node (was it removed from the scene?)")
        display.SetVisibility(True)
        if not segmentation.CreateClosedSurfaceRepresentation():
            raise InputError("its 3D surface could not be built")
    except Exception as error:  # showing is a convenience: the imported result must survive any failure here
        return [
            f"The result '{node_label(segmentation)}' was imported, but showing it failed: {error}. Show it from the "
            "Data module, and its 3D surface with 'Show 3D' in Segment Editor."
        ]
    return []


def import_result(
    scene: slicer.vtkMRMLScene,
    result_path: Path,
    target: slicer.vtkMRMLScalarVolumeNode,
    output_node: slicer.vtkMRMLSegmentationNode | None = None,
    terminologies: Mapping[str, str] | None = None,
    keeping: KeptSegments | None = None,
) -> slicer.vtkMRMLSegmentationNode:
    """Put the engine's ``.seg.nrrd`` into ``output_node``, or a new node "<target> FateSAM"; returns the node.

    The result keeps its segment names and colours, takes the supports' terminology by name, lies under the target's
    parent transform and refers to the target as its reference geometry. The scene changes only once the file read.
    In ``output_node`` only the run's segments are replaced, as ``keeping`` says (:func:`apply_result`: locked and
    hand-edited segments are kept; its ``warnings`` say which).
    """
    if not scene.IsNodePresent(target):
        raise InputError("The target volume was removed from the scene during the run; select it again and rerun.")
    result = read_segmentation(result_path)
    by_key = {segment_key(name): term for name, term in (terminologies or {}).items()}
    segmentation = result.GetSegmentation()
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        if by_key.get(segment_key(segment.GetName())):
            segment.SetTerminology(by_key[segment_key(segment.GetName())])
    if output_node is None:
        result.SetName(scene.GenerateUniqueName(f"{node_label(target)}{RESULT_SUFFIX}"))
        output_node = add_to_scene(scene, result)
    else:
        keeping = keeping or KeptSegments()
        keeping.warnings += apply_result(output_node, result, keeping.locked, keeping.untouched, keeping.replace_edited)
    output_node.SetReferenceImageGeometryParameterFromVolumeNode(target)
    output_node.SetAndObserveTransformNodeID(target.GetTransformNodeID())
    return output_node


_LIVE_FOLDERS: set[Path] = set()
_LIVE_RUNS: set[SegmentationRun] = set()


class RunFolder:
    """A temporary folder for one run's files, private to the user (mode 0700), removed by :meth:`remove` (or on
    leaving a ``with`` block), and at the latest when the Python process exits (see :func:`stop_all_runs`)."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="FateSAM-"))  # mkdtemp creates it readable by its owner only
        _LIVE_FOLDERS.add(self.path)

    def remove(self) -> None:
        """Delete the folder and everything in it."""
        shutil.rmtree(self.path, ignore_errors=True)
        _LIVE_FOLDERS.discard(self.path)

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()


def stop_all_runs(timeout_s: float = 10.0) -> None:
    """Stop every run still going (ending its engine process) and remove every run folder left.

    Registered with :mod:`atexit`: when Slicer exits during a run, no engine keeps running and no exported patient
    image stays in the temporary folder.
    """
    for run in list(_LIVE_RUNS):
        run.stop(timeout_s)
    for folder in list(_LIVE_FOLDERS):
        shutil.rmtree(folder, ignore_errors=True)
        _LIVE_FOLDERS.discard(folder)


atexit.register(stop_all_runs)


class SegmentationRun:
    """A background run: :meth:`start`, then :meth:`poll` (e.g. from a timer) until :attr:`finished`.

    States: "ready", "running", "succeeded", "failed", "cancelled". On success :attr:`result` is the segmentation
    node and :attr:`doubtful_slices` the slices to review first; otherwise :attr:`error` says what went wrong.
    The run owns its temporary folder and its engine process: both are gone once it has finished, and
    :meth:`stop` ends it at once (module closed, scene closed, Slicer exiting). With a ``session``
    (:class:`~FateSAMLib.slicer.review.ReviewSession`) the engine uses the session's feature cache and its output is
    kept there on success, for a refine of the result (:class:`~FateSAMLib.slicer.review.RefineRun`); :attr:`stats`
    is then the engine's stats JSON.
    """

    def __init__(
        self,
        scene: slicer.vtkMRMLScene,
        target: slicer.vtkMRMLScalarVolumeNode,
        supports: Sequence[SupportPair],
        segment_names: Sequence[str] | None = None,
        options: RunSettings | None = None,
        output_node: slicer.vtkMRMLSegmentationNode | None = None,
        python: str | None = None,
        environment: Mapping[str, str] | None = None,
        session: ReviewSession | None = None,
        keeping: KeptSegments | None = None,
        probabilities: bool = False,
    ) -> None:
        self.scene = scene
        self.target = target
        self.supports = list(supports)
        self.segment_names = segment_names
        self.options = options or RunSettings()
        self.output_node = output_node
        self.python = python
        self.environment = environment
        self.session = session
        if session is not None and self.options.feature_cache is None:  # a refine of the result encodes nothing
            self.options = replace(self.options, feature_cache=session.feature_cache)
        self.state = "ready"
        self.fraction = 0.0
        self.message = ""
        self.error: FateSAMError | None = None
        self.result: slicer.vtkMRMLSegmentationNode | None = None
        self.doubtful_slices: list[DoubtfulSlice] = []
        self.stats: dict = {}
        self.segments: list[Segment] = []
        self.keeping = keeping or KeptSegments()
        self.probabilities = probabilities
        self.probability_volumes: list[slicer.vtkMRMLScalarVolumeNode] = []
        self.provenance: dict[int, list[SupportSliceRef]] = {}
        self._export_warnings: list[str] = []
        self._folder: RunFolder | None = None
        self._inputs: RunInputs | None = None
        self._segments: SupportSegments | None = None
        self._job: BackgroundJob | None = None

    @property
    def finished(self) -> bool:
        return self.state in ("succeeded", "failed", "cancelled")

    @property
    def folder(self) -> Path | None:
        """The run's temporary folder while it exists."""
        return self._folder.path if self._folder is not None else None

    @property
    def process(self) -> EngineProcess | None:
        """The engine process, once started."""
        return self._job.process if self._job is not None else None

    @property
    def warnings(self) -> list[str]:
        """What the export and the engine warned about."""
        job_warnings = self._job.warnings if self._job is not None else []
        return self._export_warnings + job_warnings + self.keeping.warnings

    @property
    def used_supports(self) -> list[SupportPair]:
        """The supports the engine was given (those with a chosen segment), as the stats' provenance numbers them."""
        return self._inputs.pairs if self._inputs is not None else []

    def start(self) -> None:
        """Export the inputs and start the engine; on an input error nothing is left behind and it is raised."""
        if self.state != "ready":
            raise RuntimeError("A run starts once; create a new SegmentationRun to run again.")
        if self.target is None:
            raise InputError("No target volume: select the volume to segment.")
        self._folder = RunFolder()
        try:
            self._segments = SupportSegments.of([pair.segmentation for pair in self.supports])
            self.segments = self._segments.plan(self.segment_names)
            self._inputs = export_inputs(self._folder.path, self.target, self.supports, self.segments)
            self._export_warnings = list(self._inputs.warnings)
            self._job = self._start_job(self._inputs)
        except BaseException:
            self._folder.remove()
            self._folder = None
            raise
        _LIVE_RUNS.add(self)
        self.state = "running"
        self.message = "Starting the engine"

    def _start_job(self, inputs: RunInputs) -> BackgroundJob:
        """Start the engine process on the exported files (a remote run submits them to a server instead)."""
        arguments = segment_arguments(inputs.supports, inputs.query, inputs.output, self.options, inputs.stats)
        if self.probabilities:
            arguments += ["--probabilities", str(self._probabilities_path(inputs))]
        return BackgroundJob(engine_command(arguments, self.python), self.environment)

    def poll(self) -> list[EngineEvent]:
        """Handle what the engine reported since the last call; when it has ended, import or clean up."""
        if self.state != "running":
            return []
        events = self._job.poll()
        self.fraction, self.message = self._job.fraction, self._job.message
        if self._job.finished:
            self._finish()
        return events

    def _finish(self) -> None:
        try:
            if self._job.state == "succeeded" and self._job.done_output:
                if self.output_node is not None:  # as the node is now: the user may have edited it during the run
                    self.keeping.untouched = untouched_segments(self.output_node, self.session)
                self.stats = read_run_stats(self._inputs.stats)
                self.provenance = read_provenance(self.stats)
                if self.probabilities:  # read before the scene changes
                    names = [str(segment["name"]) for segment in self.stats.get("segments", [])]
                    path = self._probabilities_path(self._inputs)
                    self.probability_volumes = read_probabilities(path, self.target, names)
                self.result = import_result(
                    self.scene,
                    Path(self._job.done_output),
                    self.target,
                    self.output_node,
                    self._segments.terminologies,
                    self.keeping,
                )
                self.doubtful_slices = read_doubtful_slices(self._inputs.stats, self.stats)
                if self.probability_volumes:
                    place_probabilities(self.scene, self.probability_volumes, self.target)
                if self.session is not None:
                    self.session.keep(self, Path(self._job.done_output))
                self.state, self.fraction, self.message = "succeeded", 1.0, "Done"
            elif self._job.state == "cancelled":
                self.state, self.error = "cancelled", Cancelled("The run was cancelled; the scene was not changed.")
            else:
                self.state = "failed"
                details = "\n".join(self._job.log_tail[-10:])
                self.error = self._job.error or FateSAMError(
                    f"The engine ended without reporting a result; run again. Its last output:\n{details}"
                )
        except Exception as error:  # a run must always end: report anything that breaks the import
            self.state = "failed"
            self.error = (
                error if isinstance(error, FateSAMError) else FateSAMError(f"Importing the result failed: {error}")
            )
        finally:
            self._folder.remove()
            self._folder = None
            _LIVE_RUNS.discard(self)

    @staticmethod
    def _probabilities_path(inputs: RunInputs) -> Path:
        return inputs.output.with_name(f"probabilities{NRRD_SUFFIX}")

    def cancel(self) -> None:
        """Ask the engine to stop; the run ends as "cancelled" at a later :meth:`poll` (see :meth:`stop`)."""
        if self.state == "running":
            self._job.cancel()
            self.message = "Cancelling"

    def stop(self, timeout_s: float = 10.0) -> None:
        """Cancel and wait (at most about ``timeout_s`` seconds) for the engine to end, then remove the folder.

        The run is then "cancelled" and the scene untouched (nothing is imported), even if the engine had just
        finished: for when the module, the scene or Slicer closes during a run.
        """
        if self.state != "running":
            return
        self._job.stop(timeout_s)
        if self._job.state == "succeeded":  # it finished before the cancel reached it: import nothing
            self._job.state = "cancelled"
        self._finish()

    def run_blocking(
        self, on_poll: Callable[[SegmentationRun], None] | None = None, interval_s: float = 0.1
    ) -> slicer.vtkMRMLSegmentationNode:
        """Start (if needed) and wait for the end; returns the result node or raises the run's error."""
        if self.state == "ready":
            self.start()
        poll_until_finished(self, on_poll, interval_s)  # stops the engine on an exception (e.g. KeyboardInterrupt)
        if self.state != "succeeded":
            raise self.error
        return self.result
