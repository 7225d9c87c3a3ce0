"""Review, correct, refine in the Slicer module, without Qt: the engine output kept per result, the slices the user
edited, the refine run, and the reviewed case as a new support.

A :class:`ReviewSession` (one per module logic) owns a private folder (a :class:`~FateSAMLib.slicer.folders.RunFolder`,
so removed when Python exits at the latest) with a feature cache, which the session's runs pass to the engine, and a
copy of each result's engine output. :class:`RefineRun` exports the result node as the user edited it as the
corrections, and the engine (``--corrected-slices auto --previous KEPT``) keeps the slices that differ from the kept
output exactly and predicts the others from them, with every encoder feature from the cache.

The refined result goes into a new node and the edited one is hidden: Slicer's scene undo is off by default and
Segment Editor's undo history belongs to its widget, so an in-place replacement could not be undone reliably, while
the edited node, left untouched, is the undo (delete the new node, show the old one).
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import slicer

from ..errors import InputError
from ..formats import SEGMENTATION_SUFFIX
from ..options import RunSettings
from ..progress import TaskState
from ..segments import Segment, segment_key
from .exchange import RunInputs
from .folders import RunFolder
from .plan import SupportPair
from .process import BackgroundJob, engine_command, segment_arguments
from .run import SegmentationRun
from .scene import (
    ijk_to_ras,
    label_array_to_segmentation,
    node_label,
    read_segmentation,
    reference_volume,
    save_segmentation,
    segment_infos,
    segmentation_to_label_array,
)

# The RAS/LPS axis (0: left-right, 1: anterior-posterior, 2: inferior-superior) each slice axis slices across.
_ACROSS = {"sagittal": 0, "coronal": 1, "axial": 2}


def slice_array_axis(ijk_to_ras_matrix: np.ndarray, slice_axis: str) -> int:
    """The axis of a ``[k, j, i]`` array that the engine's ``slice_axis`` stack slices along (one slice per index).

    Each voxel axis is matched to the anatomical axis its direction is closest to, over the six permutations, as the
    engine does (``io.geometry.anatomical_axes``).
    """
    if slice_axis not in _ACROSS:
        raise InputError(f"Unknown slice axis '{slice_axis}'; use one of {', '.join(_ACROSS)}.")
    columns = np.asarray(ijk_to_ras_matrix, dtype=float)[:3, :3]
    direction = columns / np.linalg.norm(columns, axis=0)
    best = max(itertools.permutations(range(3)), key=lambda p: sum(abs(direction[p[v], v]) for v in range(3)))
    return 2 - best.index(_ACROSS[slice_axis])  # voxel axis v (i, j, k) is array axis 2 - v


def changed_slices(edited: np.ndarray, previous: np.ndarray, axis: int = 0) -> list[int]:
    """The indices along ``axis`` of the slices where ``edited`` and ``previous`` differ in any voxel (the engine's
    ``--corrected-slices auto`` rule, ``method.corrections.changed_slices``)."""
    if edited.shape != previous.shape:
        raise InputError(
            f"The edited result ({edited.shape}) and the kept engine output ({previous.shape}) differ in size; "
            "run Apply again on this volume."
        )
    differs = np.moveaxis(edited != previous, axis, 0)
    return [int(i) for i in np.flatnonzero(differs.reshape(differs.shape[0], -1).any(axis=1))]


@dataclass(frozen=True)
class SliceChanges:
    """What the user edited: the changed slices of each segment (by name), and of all (the slices the refine keeps),
    as indices along ``axis`` of the target's ``[k, j, i]`` array."""

    per_segment: dict[str, list[int]]
    slices: list[int]
    axis: int

    def summary(self) -> str:
        """E.g. "2 edited slices (Liver: 2, Spleen: 0)"."""
        details = ", ".join(f"{name}: {len(slices)}" for name, slices in self.per_segment.items())
        count = len(self.slices)
        return f"{count} edited slice{'' if count == 1 else 's'} ({details})"


@dataclass(frozen=True)
class KeptResult:
    """A result's engine output as written (``path``, in the session folder) and what the run that made it used."""

    path: Path
    target: slicer.vtkMRMLScalarVolumeNode
    supports: list[SupportPair]
    segments: list[Segment]  # names and label values of the engine output
    options: RunSettings
    slice_axis: str  # as the engine resolved it

    def labels(self) -> np.ndarray:
        """The kept output as a label array on the target's grid, valued as :attr:`segments`."""
        node = read_segmentation(self.path)
        return _label_array(node, self.target, self.segments)


def _label_array(
    segmentation: slicer.vtkMRMLSegmentationNode, target: slicer.vtkMRMLScalarVolumeNode, segments: Sequence[Segment]
) -> np.ndarray:
    """The segments of ``segmentation`` named as ``segments`` (by :func:`segment_key`) with their values, on the
    target's grid; other segments are left out."""
    values = {segment_key(segment.name): segment.value for segment in segments}
    chosen = {info.segment_id: values.get(segment_key(info.name)) for info in segment_infos(segmentation)}
    return segmentation_to_label_array(segmentation, target, {sid: value for sid, value in chosen.items() if value})


class ReviewSession:
    """The module's private per-session folder: the feature cache of its runs and each result's kept engine output.

    Removed by :meth:`close` (module closed, scene closed) and, like run folders, at the latest when Python exits.
    """

    def __init__(self) -> None:
        self._folder: RunFolder | None = None
        self._kept: dict[str, KeptResult] = {}

    @property
    def folder(self) -> Path:
        """The session folder (created on first use, private to the user)."""
        if self._folder is None or not self._folder.path.is_dir():
            self._folder = RunFolder()
        return self._folder.path

    @property
    def feature_cache(self) -> Path:
        """The session's feature cache folder (support and query features, keyed by content)."""
        return self.folder / "features"

    def keep(self, run: SegmentationRun, output: Path) -> KeptResult:
        """Move a succeeded run's engine output into the session folder, for a later refine of ``run.result``."""
        path = self.folder / f"result-{len(self._kept) + 1}{SEGMENTATION_SUFFIX}"
        shutil.move(str(output), path)  # both in the temporary folder: a rename
        kept = KeptResult(
            path,
            run.target,
            list(run.supports),
            list(run.segments),
            run.options,
            run.stats.slice_axis if run.stats else "",
        )
        self._kept[run.result.GetID()] = kept
        return kept

    def kept(self, result: slicer.vtkMRMLSegmentationNode) -> KeptResult:
        """The kept output of ``result``; :class:`InputError` if it has none (not made by this session's runs)."""
        kept = self._kept.get(result.GetID()) if result is not None else None
        if kept is None or not kept.path.is_file():
            raise InputError(
                f"'{node_label(result) if result is not None else 'No result'}' was not made by a FateSAM run in this "
                "session; run Apply, edit the result, then refine it."
            )
        scene = result.GetScene()
        nodes = [kept.target, *(node for pair in kept.supports for node in (pair.volume, pair.segmentation))]
        if scene is None or not all(scene.IsNodePresent(node) for node in nodes):
            raise InputError(
                "The target or a support of this result was removed from the scene; run Apply again to refine."
            )
        return kept

    def changes(self, result: slicer.vtkMRMLSegmentationNode) -> SliceChanges:
        """The slices of ``result`` the user edited since the engine wrote it, per segment (:func:`changed_slices`)."""
        kept = self.kept(result)
        axis = slice_array_axis(ijk_to_ras(kept.target), kept.slice_axis)
        edited, previous = _label_array(result, kept.target, kept.segments), kept.labels()
        per_segment = {
            segment.name: changed_slices(edited == segment.value, previous == segment.value, axis)
            for segment in kept.segments
        }
        return SliceChanges(per_segment, changed_slices(edited, previous, axis), axis)

    def close(self) -> None:
        """Remove the folder: the kept outputs and the feature cache."""
        if self._folder is not None:
            self._folder.remove()
        self._folder = None
        self._kept.clear()


class RefineRun(SegmentationRun):
    """A background refine of a result the user edited: the slices where it differs from the kept engine output are
    kept exactly, the others predicted again from them and from the supports of the first run; every encoder feature
    comes from the session's cache. The refined result is a new node; the edited one is hidden (see the module
    docstring). Start and poll it as a :class:`SegmentationRun`; :attr:`changes` is what the user edited."""

    def __init__(
        self,
        scene: slicer.vtkMRMLScene,
        edited: slicer.vtkMRMLSegmentationNode,
        session: ReviewSession,
        python: str | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> None:
        kept = session.kept(edited)
        super().__init__(
            scene,
            kept.target,
            kept.supports,
            [segment.name for segment in kept.segments],
            kept.options,
            python=python,
            environment=environment,
            session=session,
        )
        self.edited = edited
        self.kept_result = kept
        self.changes = session.changes(edited)
        if not self.changes.slices:
            raise InputError(
                f"'{node_label(edited)}' has no edited slice: correct some slices in Segment Editor first."
            )

    def export_corrections(self) -> Path:
        """Write the edited result into the run's folder as the corrections (a ``.seg.nrrd`` valued as the kept
        output, so that ``--corrected-slices auto --previous KEPT`` finds the edited slices); returns its path."""
        labels = _label_array(self.edited, self.target, self.kept_result.segments)
        present = [segment for segment in self.kept_result.segments if (labels == segment.value).any()]
        return save_segmentation(
            label_array_to_segmentation(labels, ijk_to_ras(self.target), present, "corrections"),
            self.folder / f"corrections{SEGMENTATION_SUFFIX}",
        )

    def _start_job(self, inputs: RunInputs) -> BackgroundJob:
        arguments = segment_arguments(
            inputs.supports,
            inputs.query,
            inputs.output,
            self.options,
            inputs.stats,
            corrections=(self.export_corrections(), self.kept_result.path),
        )
        return BackgroundJob(engine_command(arguments, self.python), self.environment)

    def _finish(self) -> None:
        super()._finish()
        if self.state == TaskState.SUCCEEDED and self.edited.GetDisplayNode() is not None:
            self.edited.GetDisplayNode().SetVisibility(False)


def reviewed_support(result: slicer.vtkMRMLSegmentationNode) -> SupportPair:
    """The reviewed case as a support: ``result`` and the volume it was made on (its reference geometry)."""
    volume = reference_volume(result)
    if volume is None:
        raise InputError(
            f"'{node_label(result)}' has no reference volume; select its volume as the source volume in Segment "
            "Editor, then add it as a support."
        )
    if not any(segment_infos(result)):
        raise InputError(f"'{node_label(result)}' has no segment to learn from; review it first.")
    return SupportPair(volume, result)
