"""A segmentation run of the Slicer module on a ``fatesam serve`` server, without Qt.

The same run as :class:`~FateSAMLib.slicer.run.SegmentationRun` (export to a private folder, import the result only
on success, the scene untouched otherwise, the folder removed in every ending), but the exported files go to the
server: the support set is uploaded once (by content hash), the job submitted and followed from :meth:`poll`, its
``.seg.nrrd`` downloaded and imported; Cancel cancels the job on the server. Needs neither torch nor sam2 here.

With a :class:`~FateSAMLib.slicer.review.ReviewSession` a remote run's output is kept for a refine, and
:class:`RemoteRefineRun` refines an edited result on the server as :class:`~FateSAMLib.slicer.review.RefineRun` does
here: the server's feature cache holds the query's features from the first run, so the refine encodes nothing there.
"""

from __future__ import annotations

from collections.abc import Sequence

import slicer

from ..options import RunSettings
from ..remote import CorrectionFiles, RemoteJob, ServerClient, job_settings
from .exchange import RunInputs
from .plan import SupportPair
from .review import RefineRun, ReviewSession
from .run import SegmentationRun


def start_remote_job(
    client: ServerClient,
    inputs: RunInputs,
    options: RunSettings,
    interval_s: float,
    corrections: CorrectionFiles | None = None,
) -> RemoteJob:
    """The remote job of a run on its exported files: only the settings a job may choose are sent."""
    return RemoteJob(
        client,
        inputs.supports,
        inputs.query,
        inputs.output,
        inputs.stats,
        job_settings(options),
        interval_s=interval_s,
        corrections=corrections,
    )


class RemoteSegmentationRun(SegmentationRun):
    """A background run on the server at ``server_url`` with ``token``: :meth:`start`, then :meth:`poll` until
    :attr:`finished`. Only the settings a job may choose are sent (model, input size, top-k, slice axis,
    normalisation); the device, weights and threads are the server's. With a ``session`` its output is kept there
    for a refine (:class:`RemoteRefineRun`, or a local :class:`~FateSAMLib.slicer.review.RefineRun`)."""

    def __init__(
        self,
        scene: slicer.vtkMRMLScene,
        target: slicer.vtkMRMLScalarVolumeNode,
        supports: Sequence[SupportPair],
        server_url: str,
        token: str | None,
        segment_names: Sequence[str] | None = None,
        options: RunSettings | None = None,
        output_node: slicer.vtkMRMLSegmentationNode | None = None,
        interval_s: float = 0.5,
        session: ReviewSession | None = None,
    ) -> None:
        self.client = ServerClient(server_url, token)  # a malformed URL is refused here, before any export
        self.interval_s = interval_s
        super().__init__(scene, target, supports, segment_names, options, output_node, session=session)

    def _start_job(self, inputs: RunInputs) -> RemoteJob:
        return start_remote_job(self.client, inputs, self.options, self.interval_s)


class RemoteRefineRun(RefineRun):
    """A refine of ``edited`` (a result kept in ``session``) on the server at ``server_url``: the edited result goes
    as the job's corrections (``["auto"]`` against the kept output), so the edited slices come back exactly and the
    others are predicted from them. Start and poll it as a :class:`RefineRun`."""

    def __init__(
        self,
        scene: slicer.vtkMRMLScene,
        edited: slicer.vtkMRMLSegmentationNode,
        session: ReviewSession,
        server_url: str,
        token: str | None,
        interval_s: float = 0.5,
    ) -> None:
        self.client = ServerClient(server_url, token)
        self.interval_s = interval_s
        super().__init__(scene, edited, session)

    def _start_job(self, inputs: RunInputs) -> RemoteJob:
        corrections = CorrectionFiles(self.export_corrections(), ["auto"], self.kept_result.path)
        return start_remote_job(self.client, inputs, self.options, self.interval_s, corrections)
