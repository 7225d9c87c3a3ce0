"""A segmentation run of the Slicer module on a ``fatesam serve`` server, without Qt.

The same run as :class:`~FateSAMLib.slicer.run.SegmentationRun` (export to a private folder, import the result only
on success, the scene untouched otherwise, the folder removed in every ending), but the exported files go to the
server: the support set is uploaded once (by content hash), the job submitted and followed from :meth:`poll`, its
``.seg.nrrd`` downloaded and imported; Cancel cancels the job on the server. Needs neither torch nor sam2 here.
"""

from __future__ import annotations

from collections.abc import Sequence

import slicer

from ..options import RunSettings
from ..remote import RemoteJob, ServerClient, job_settings
from .run import RunInputs, SegmentationRun, SupportPair


class RemoteSegmentationRun(SegmentationRun):
    """A background run on the server at ``server_url`` with ``token``: :meth:`start`, then :meth:`poll` until
    :attr:`finished`. Only the settings a job may choose are sent (model, input size, top-k, slice axis,
    normalisation); the device, weights and threads are the server's."""

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
    ) -> None:
        super().__init__(scene, target, supports, segment_names, options, output_node)
        self.client = ServerClient(server_url, token)  # a malformed URL is refused here, before any export
        self.interval_s = interval_s

    def _start_job(self, inputs: RunInputs) -> RemoteJob:
        return RemoteJob(
            self.client,
            inputs.supports,
            inputs.query,
            inputs.output,
            inputs.stats,
            job_settings(self.options),
            interval_s=self.interval_s,
        )
