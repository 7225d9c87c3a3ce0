"""The Slicer module's self-test scenario, without Qt: ``FateSAMTest`` runs it in Slicer, and pytest runs the very same
steps with the slicer-core wheel's MRML (Testing/slicer_adapter/test_module_self_test.py), so that a failure of the
self-test is caught without Slicer.

Each step drives the module's logic (``FateSAMLogic``, passed in) on small synthetic volumes in a real scene and
checks the outcome with a :class:`unittest.TestCase` (the Slicer test itself, or a bare one under pytest). The steps
that run the engine use SAM2 at random weights (no checkpoint download); they need PyTorch and sam2, which Slicer's
testing mode (``--testing``, as on the extension build machines) never downloads: there they are skipped, and the
skip is logged.
"""

from __future__ import annotations

import tempfile
import unittest
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..options import RunSettings
from ..progress import TaskState
from ..segments import Segment
from .deps import dependency_plan
from .scene import (
    add_to_scene,
    array_to_volume,
    label_array_to_segmentation,
    segment_infos,
    segmentation_to_label_array,
    volume_to_array,
)

RANDOM_WEIGHTS = {"random_weights": True, "image_size": 128, "device": "cpu"}  # SAM2 untrained, small, on the CPU
SEGMENTS = (Segment(1, "Ball", (0.9, 0.2, 0.2)), Segment(2, "Box", (0.2, 0.5, 0.9)))
SERVER = "http://127.0.0.1:8765"  # never contacted: a server run is only created
TOKEN = "self-test-token"


def geometry(spacing: tuple[float, float, float], angle_degrees: float) -> np.ndarray:
    """An IJK-to-RAS matrix rotated about the z axis, with ``spacing``."""
    angle = np.radians(angle_degrees)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    matrix = np.eye(4)
    matrix[:3, :3] = rotation @ np.diag(spacing)
    matrix[:3, 3] = (-20.0, 15.0, 5.0)
    return matrix


def synthetic_case(scene, name: str, shape, spacing, angle: float, labelled: bool):
    """A volume with a bright ball and box in ``scene``, and (``labelled``) a segmentation of them: (volume, seg)."""
    k, j, i = np.indices(shape)
    centre = np.array(shape) / 2
    ball = (k - centre[0]) ** 2 / 4 + (j - centre[1]) ** 2 + (i - centre[2] + 5) ** 2 < 36
    box = (abs(k - centre[0]) < 3) & (abs(j - centre[1]) < 4) & (abs(i - centre[2] - 8) < 3)
    labels = np.where(ball, 1, np.where(box, 2, 0)).astype(np.uint8)
    image = (labels.astype(np.int16) * 300 + np.random.default_rng(len(name)).normal(200, 20, shape)).astype(np.int16)
    matrix = geometry(spacing, angle)
    volume = add_to_scene(scene, array_to_volume(image, matrix, name))
    if not labelled:
        return volume, None
    segmentation = add_to_scene(scene, label_array_to_segmentation(labels, matrix, SEGMENTS, f"{name} segmentation"))
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    return volume, segmentation


def scene_snapshot(scene) -> list[tuple[str, str]]:
    """Each node's ID and name: what a cancelled run must leave unchanged."""
    nodes = [scene.GetNthNode(index) for index in range(scene.GetNumberOfNodes())]
    return [(node.GetID(), node.GetName()) for node in nodes]


class SelfTest:
    """The scenario's steps on ``scene`` through ``logic`` (a ``FateSAMLogic``), checked with ``check``.

    ``testing``: Slicer's testing mode, where nothing is downloaded (the engine steps are skipped when PyTorch or
    sam2 is missing); ``log(message)`` reports such a skip; ``process_events()`` keeps a GUI responsive meanwhile.
    """

    def __init__(
        self,
        logic,
        scene,
        check: unittest.TestCase,
        testing: bool,
        log: Callable[[str], None] = print,
        process_events: Callable[[], None] = lambda: None,
    ) -> None:
        self.logic, self.scene, self.check, self.testing = logic, scene, check, testing
        self.log, self.process_events = log, process_events

    def inputs(self):
        """Two supports and a target on three different oblique grids: (target, [(volume, segmentation)] * 2)."""
        first = synthetic_case(self.scene, "support A", (10, 40, 44), (1.0, 1.0, 2.5), 0, True)
        second = synthetic_case(self.scene, "support B", (12, 36, 40), (1.1, 1.1, 2.0), 10, True)
        target = synthetic_case(self.scene, "target", (11, 38, 42), (0.9, 0.9, 2.2), -15, False)[0]
        return target, [first, second]

    def engine_ready(self, step: str) -> bool:
        """Whether ``step`` can run the engine: its dependencies are installed, or may be (not in testing mode)."""
        plan = dependency_plan()
        if plan.complete:
            return True
        if self.testing:
            missing = ", ".join([*plan.torch, *plan.packages])
            self.log(f"FateSAM self-test: '{step}' skipped: testing mode downloads nothing, and {missing} is missing.")
            return False
        self.check.assertTrue(self.logic.ensureDependencies(confirm=lambda plan: True))
        return True

    def process_creates_named_coloured_result_on_target_grid(self) -> None:
        """A blocking run from two supports: a new node named after the target, the supports' names and colours,
        on the target's grid, which it refers to."""
        if not self.engine_ready("segment a synthetic volume"):
            return
        target, supports = self.inputs()
        result = self.logic.process(target, supports, **RANDOM_WEIGHTS)
        self.check.assertEqual(result.GetName(), "target FateSAM")
        infos = segment_infos(result)
        self.check.assertEqual([info.name for info in infos], [segment.name for segment in SEGMENTS])
        for info, segment in zip(infos, SEGMENTS, strict=True):
            np.testing.assert_allclose(info.color, segment.color, atol=1e-5)
        labels = segmentation_to_label_array(result, target, {info.segment_id: 1 for info in infos})
        self.check.assertEqual(labels.shape, volume_to_array(target)[0].shape)
        self.check.assertIs(result.GetNodeReference(result.GetReferenceImageGeometryReferenceRole()), target)

    def cancel_leaves_scene_unchanged(self) -> None:
        """A background run cancelled at once ends "cancelled", the scene as it was, its folder gone."""
        if not self.engine_ready("cancel a run"):
            return
        target, supports = self.inputs()
        before = scene_snapshot(self.scene)
        run = self.logic.createRun(target, supports, **RANDOM_WEIGHTS)
        run.start()
        folder = run.folder
        self.check.assertTrue(folder.is_dir())
        run.cancel()
        while not run.finished:
            run.poll()
            self.process_events()
        self.check.assertEqual(run.state, TaskState.CANCELLED)
        self.check.assertEqual(scene_snapshot(self.scene), before)
        self.check.assertFalse(folder.exists())

    def run_takes_the_module_settings(self, parameter_node, support_pack) -> None:
        """A run made from the module's parameter node (``support_pack(volume, segmentation)`` makes a row of its
        supports, ``support_pack()`` an empty one) takes its supports but the unfilled row, its segments but the
        unticked, and the default settings with the session's feature cache (not started: no engine needed)."""
        target, supports = self.inputs()
        parameter_node.targetVolume = target
        parameter_node.supports = [support_pack(volume, segmentation) for volume, segmentation in supports]
        parameter_node.supports.append(support_pack())  # a row not filled in yet
        parameter_node.uncheckedSegments = ["BOX"]
        run = self.logic.createRunFromParameterNode(parameter_node)
        self.check.assertEqual([(pair.volume, pair.segmentation) for pair in run.supports], supports)
        self.check.assertEqual(run.segment_names, ["Ball"])
        self.check.assertIsNotNone(run.options.feature_cache)  # the review session's: a refine encodes nothing
        self.check.assertEqual(replace(run.options, feature_cache=None), RunSettings())
        self.scene.RemoveNode(supports[1][1])
        self.check.assertEqual(len(self.logic.createRunFromParameterNode(parameter_node).supports), 1)

    def support_set_round_trip(self) -> None:
        """Supports saved as a support set load back, named, into an emptied scene."""
        supports = self.inputs()[1]
        with tempfile.TemporaryDirectory() as folder:
            saved = self.logic.saveSupportSet(Path(folder) / "set", "Synthetic", supports)
            self.check.assertEqual(len(saved.cases), 2)
            self.scene.Clear()
            support_set, pairs = self.logic.loadSupportSet(Path(folder) / "set")
        self.check.assertEqual(support_set.name, "Synthetic")
        self.check.assertEqual([info.name for info in segment_infos(pairs[0][1])], [s.name for s in SEGMENTS])

    def server_run_needs_nothing_and_keeps_the_token_out_of_the_scene(self, parameter_node, support_pack) -> None:
        """A run on a server needs nothing installed, and neither its URL nor its token reaches the parameter node
        (saved with the scene)."""
        self.check.assertTrue(self.logic.dependencyPlan(server=SERVER).complete)
        asked = self.logic.ensureDependencies(confirm=lambda plan: self.check.fail("asked to install"), server=SERVER)
        self.check.assertTrue(asked)
        target, supports = self.inputs()
        parameter_node.targetVolume = target
        parameter_node.supports = [support_pack(volume, segmentation) for volume, segmentation in supports]
        run = self.logic.createRunFromParameterNode(parameter_node, server=SERVER, token=TOKEN)
        self.check.assertEqual((type(run).__name__, run.client.url), ("RemoteSegmentationRun", SERVER))
        node = parameter_node.parameterNode
        values = [node.GetParameter(name) for name in node.GetParameterNames()]
        self.check.assertFalse([value for value in values if TOKEN in value or SERVER in value])
