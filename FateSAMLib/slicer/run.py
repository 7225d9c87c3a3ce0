"""One segmentation run of the Slicer module, without Qt: scene -> temporary files -> engine process -> scene.

The run plans its segments (:mod:`.plan`), exports the inputs to its temporary folder (:mod:`.exchange`,
:mod:`.folders`), runs the engine as a separate process (:mod:`.process`), and imports its ``.seg.nrrd`` into a new
segmentation node (or the one the user picked) only when it succeeded, with the slices to review (:mod:`.stats`).
A cancelled or failed run leaves the scene as it was. The temporary folder (private to the user) is removed in every
ending: success, failure, cancel, :meth:`SegmentationRun.stop`, and at the latest when Python exits.
"""

from __future__ import annotations

import atexit
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import slicer

from ..errors import Cancelled, FateSAMError, InputError
from ..formats import NRRD_SUFFIX
from ..options import RunSettings
from ..progress import TaskState
from ..segments import Segment
from ..summary import RunSummary
from .apply_result import KeptSegments, untouched_segments
from .exchange import RunInputs, export_inputs, import_result
from .folders import RunFolder, remove_all_folders
from .plan import SupportPair, SupportSegments
from .probabilities import place_probabilities, read_probabilities
from .process import BackgroundJob, EngineEvent, EngineProcess, engine_command, poll_until_finished, segment_arguments
from .provenance import SupportSliceRef, read_provenance
from .stats import DoubtfulSlice, read_doubtful_slices, read_run_stats

if TYPE_CHECKING:
    from .review import ReviewSession

_LIVE_RUNS: set[SegmentationRun] = set()


def stop_all_runs(timeout_s: float = 10.0) -> None:
    """Stop every run still going (ending its engine process) and remove every run folder left.

    Registered with :mod:`atexit`: when Slicer exits during a run, no engine keeps running and no exported patient
    image stays in the temporary folder.
    """
    for run in list(_LIVE_RUNS):
        run.stop(timeout_s)
    remove_all_folders()


atexit.register(stop_all_runs)


class SegmentationRun:
    """A background run: :meth:`start`, then :meth:`poll` (e.g. from a timer) until :attr:`finished`.

    States: "ready", "running", "succeeded", "failed", "cancelled". On success :attr:`result` is the segmentation
    node and :attr:`doubtful_slices` the slices to review first; otherwise :attr:`error` says what went wrong.
    The run owns its temporary folder and its engine process: both are gone once it has finished, and
    :meth:`stop` ends it at once (module closed, scene closed, Slicer exiting). With a ``session``
    (:class:`~FateSAMLib.slicer.review.ReviewSession`) the engine uses the session's feature cache and its output is
    kept there on success, for a refine of the result (:class:`~FateSAMLib.slicer.review.RefineRun`); :attr:`stats`
    is then the engine's statistics (a :class:`~FateSAMLib.summary.RunSummary`).
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
        self.state = TaskState.READY
        self.fraction = 0.0
        self.message = ""
        self.error: FateSAMError | None = None
        self.result: slicer.vtkMRMLSegmentationNode | None = None
        self.doubtful_slices: list[DoubtfulSlice] = []
        self.stats: RunSummary | None = None
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
        return TaskState(self.state).finished

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
        if self.state != TaskState.READY:
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
        self.state = TaskState.RUNNING
        self.message = "Starting the engine"

    def _start_job(self, inputs: RunInputs) -> BackgroundJob:
        """Start the engine process on the exported files (a remote run submits them to a server instead)."""
        arguments = segment_arguments(inputs.supports, inputs.query, inputs.output, self.options, inputs.stats)
        if self.probabilities:
            arguments += ["--probabilities", str(self._probabilities_path(inputs))]
        return BackgroundJob(engine_command(arguments, self.python), self.environment)

    def poll(self) -> list[EngineEvent]:
        """Handle what the engine reported since the last call; when it has ended, import or clean up."""
        if self.state != TaskState.RUNNING:
            return []
        events = self._job.poll()
        self.fraction, self.message = self._job.fraction, self._job.message
        if self._job.finished:
            self._finish()
        return events

    def _finish(self) -> None:
        try:
            if self._job.state == TaskState.SUCCEEDED and self._job.done_output:
                if self.output_node is not None:  # as the node is now: the user may have edited it during the run
                    self.keeping.untouched = untouched_segments(self.output_node, self.session)
                self.stats = read_run_stats(self._inputs.stats)
                self.provenance = read_provenance(self.stats)
                if self.probabilities:  # read before the scene changes
                    names = [segment.name for segment in self.stats.segments]
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
                self.state, self.fraction, self.message = TaskState.SUCCEEDED, 1.0, "Done"
            elif self._job.state == TaskState.CANCELLED:
                self.state, self.error = (
                    TaskState.CANCELLED,
                    Cancelled("The run was cancelled; the scene was not changed."),
                )
            else:
                self.state = TaskState.FAILED
                details = "\n".join(self._job.log_tail[-10:])
                self.error = self._job.error or FateSAMError(
                    f"The engine ended without reporting a result; run again. Its last output:\n{details}"
                )
        except Exception as error:  # a run must always end: report anything that breaks the import
            self.state = TaskState.FAILED
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
        if self.state == TaskState.RUNNING:
            self._job.cancel()
            self.message = "Cancelling"

    def stop(self, timeout_s: float = 10.0) -> None:
        """Cancel and wait (at most about ``timeout_s`` seconds) for the engine to end, then remove the folder.

        The run is then "cancelled" and the scene untouched (nothing is imported), even if the engine had just
        finished: for when the module, the scene or Slicer closes during a run.
        """
        if self.state != TaskState.RUNNING:
            return
        self._job.stop(timeout_s)
        if self._job.state == TaskState.SUCCEEDED:  # it finished before the cancel reached it: import nothing
            self._job.state = TaskState.CANCELLED
        self._finish()

    def run_blocking(
        self, on_poll: Callable[[SegmentationRun], None] | None = None, interval_s: float = 0.1
    ) -> slicer.vtkMRMLSegmentationNode:
        """Start (if needed) and wait for the end; returns the result node or raises the run's error."""
        if self.state == TaskState.READY:
            self.start()
        poll_until_finished(self, on_poll, interval_s)  # stops the engine on an exception (e.g. KeyboardInterrupt)
        if self.state != TaskState.SUCCEEDED:
            raise self.error
        return self.result
