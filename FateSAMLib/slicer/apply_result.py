"""Applying a run's result into a segmentation node the user picked, so that the node's segments stay as the user left
them: only the segments this run produced are replaced (matched by name, :func:`~FateSAMLib.segments.segment_key`),
every other segment is kept bit for bit, a ``locked`` segment is never replaced, and a segment the user drew or edited
by hand is replaced only with the user's consent (``replace_edited``); without it, the run's version is added beside
it as "<name> FateSAM" (nothing is overwritten, nothing is lost).

A segment counts as untouched when it is exactly as a FateSAM run of this session wrote it (compared with the kept
engine output, :class:`~FateSAMLib.slicer.review.ReviewSession`); any other segment of the same name (drawn by hand,
edited, or in a node no run of this session wrote) counts as the user's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import slicer

from ..errors import InputError
from ..segments import segment_key
from .scene import node_label, segment_infos

if TYPE_CHECKING:
    from .review import ReviewSession

EDITED_SUFFIX = " FateSAM"


@dataclass(frozen=True)
class ApplyPlan:
    """What applying a run's segments (by name) into a node does: ``replaced`` (untouched since a FateSAM run wrote
    them), ``added`` (new names), ``locked`` (kept as they are) and ``edited`` (the user's: replaced only with consent,
    else the run's version is added beside them)."""

    replaced: list[str]
    added: list[str]
    locked: list[str]
    edited: list[str]

    def question(self) -> str:
        """What to ask the user before a run that would replace ``edited`` segments ("" when there are none)."""
        if not self.edited:
            return ""
        return (
            f"The segments {', '.join(self.edited)} were drawn or edited by hand. Replace them with this run's result? "
            f"(No: the run's versions are added beside them, as '<name>{EDITED_SUFFIX}'.)"
        )


@dataclass
class KeptSegments:
    """How a run applies into an existing node: ``locked`` segment names are never replaced, ``replace_edited`` is the
    user's consent to replace hand-edited ones, ``untouched`` the name keys FateSAM wrote and nobody changed since
    (:func:`untouched_segments`, taken when the result is applied); ``warnings`` collects what was kept."""

    locked: tuple[str, ...] = ()
    replace_edited: bool = False
    untouched: set[str] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)


def untouched_segments(node: slicer.vtkMRMLSegmentationNode, session: ReviewSession | None) -> set[str]:
    """The name keys of ``node``'s segments that are exactly as a FateSAM run of ``session`` wrote them."""
    if session is None:
        return set()
    try:
        changes = session.changes(node)
    except InputError:  # not written by this session's runs (or its target is gone): nothing is FateSAM's
        return set()
    names = {segment_key(info.name) for info in segment_infos(node)}
    return {segment_key(name) for name, slices in changes.per_segment.items() if not slices} & names


def plan_apply(
    node: slicer.vtkMRMLSegmentationNode, produced: Iterable[str], locked: Iterable[str], untouched: set[str]
) -> ApplyPlan:
    """How the ``produced`` segment names would go into ``node`` (see :class:`ApplyPlan`)."""
    present = {segment_key(info.name) for info in segment_infos(node)}
    locked_keys = {segment_key(name) for name in locked}
    plan = ApplyPlan([], [], [], [])
    for name in produced:
        key = segment_key(name)
        if key not in present:
            plan.added.append(name)
        elif key in locked_keys:
            plan.locked.append(name)
        elif key in untouched:
            plan.replaced.append(name)
        else:
            plan.edited.append(name)
    return plan


def _copy_segment(
    target: slicer.vtkMRMLSegmentationNode, source: slicer.vtkMRMLSegmentationNode, segment_id: str, index: int
) -> None:
    """Copy one segment of ``source`` into ``target`` (under a new ID if its own is taken) at ``index`` (-1: last)."""
    segmentation = target.GetSegmentation()
    if not segmentation.CopySegmentFromSegmentation(source.GetSegmentation(), segment_id, False):
        raise InputError(f"The segment '{segment_id}' could not be copied into '{node_label(target)}'; run again.")
    if index >= 0:  # the copy is the last segment
        segmentation.SetSegmentIndex(segmentation.GetNthSegmentID(segmentation.GetNumberOfSegments() - 1), index)


def apply_result(
    node: slicer.vtkMRMLSegmentationNode,
    result: slicer.vtkMRMLSegmentationNode,
    locked: Iterable[str] = (),
    untouched: set[str] | None = None,
    replace_edited: bool = False,
) -> list[str]:
    """Put the segments of ``result`` (a node outside the scene) into ``node`` as :func:`plan_apply` says; returns a
    warning per edited segment that was kept (the run's version added beside it, replacing an earlier such copy)."""
    infos = segment_infos(result)
    plan = plan_apply(node, [info.name for info in infos], locked, untouched or set())
    locked_keys = {segment_key(name) for name in plan.locked}
    kept_keys = set() if replace_edited else {segment_key(name) for name in plan.edited}
    segmentation = node.GetSegmentation()
    warnings = []
    for info in infos:
        name = info.name
        if segment_key(name) in locked_keys:
            continue
        if segment_key(name) in kept_keys:  # the user's segment stays; the run's version goes beside it
            name = f"{info.name}{EDITED_SUFFIX}"
            result.GetSegmentation().GetSegment(info.segment_id).SetName(name)
            warnings.append(
                f"'{info.name}' in '{node_label(node)}' was drawn or edited by hand and is kept; this run's version "
                f"is the segment '{name}'."
            )
        old = next((i for i in segment_infos(node) if segment_key(i.name) == segment_key(name)), None)
        index = segmentation.GetSegmentIndex(old.segment_id) if old else -1
        if old:
            segmentation.RemoveSegment(old.segment_id)
        _copy_segment(node, result, info.segment_id, index)
    return warnings
