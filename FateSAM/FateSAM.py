"""FateSAM: few-shot segmentation of a volume from a few segmented examples, with frozen SAM2 modules (FATE-SAM).

The module is a thin GUI over FateSAMLib: the logic exports the scene's inputs, runs the engine in a separate
Python process (or submits them to a ``fatesam serve`` server: FateSAMLib.slicer.remote_run), follows it with a
timer, and imports the result (see FateSAMLib.slicer.run). The logic returns or raises and never opens a dialog: the
widget asks the user and shows errors (see :func:`confirmInstallation`). The server's URL and token are kept in
Slicer's settings (FateSAMLib.slicer.parameters.ServerChoice), never in the parameter node or the scene.
"""

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper, parameterPack
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

MINIMUM_SLICER = (5, 10)  # its Python 3.12 (sam2 needs 3.10), and vtkSegment's terminology methods


def slicerTooOld(slicerVersion) -> str:
    """Why FateSAM cannot run in Slicer ``slicerVersion`` (major, minor); "" when it can.

    Plain Python 3.9 on purpose: it runs before anything that an older Slicer's Python could not evaluate.
    """
    if tuple(slicerVersion) >= MINIMUM_SLICER:
        return ""
    return (
        "FateSAM needs 3D Slicer {}.{} or later (with Python 3.12); this is Slicer {}.{} (Python {}.{}). "
        "Install a newer Slicer from https://download.slicer.org."
    ).format(*MINIMUM_SLICER, *slicerVersion[:2], *sys.version_info[:2])


_TOO_OLD = slicerTooOld((slicer.app.majorVersion, slicer.app.minorVersion))
if _TOO_OLD:
    raise RuntimeError(_TOO_OLD)  # Slicer reports it as the reason the module could not be loaded


def _addEngineToPath() -> None:
    """Running from a source checkout: FateSAMLib sits next to this module's folder (installed, it is beside it)."""
    root = Path(__file__).resolve().parent.parent
    if (root / "FateSAMLib").is_dir() and str(root) not in sys.path:
        sys.path.insert(0, str(root))


_addEngineToPath()

from FateSAMLib.errors import FateSAMError, InputError  # noqa: E402
from FateSAMLib.models.registry import MODELS, cached_checkpoint_path, model_names  # noqa: E402
from FateSAMLib.options import DEVICES, NORMALIZATIONS, SLICE_AXIS_CHOICES, RunSettings  # noqa: E402
from FateSAMLib.progress import TaskState  # noqa: E402
from FateSAMLib.remote import ServerClient  # noqa: E402
from FateSAMLib.slicer.apply_result import ApplyPlan, KeptSegments, plan_apply, untouched_segments  # noqa: E402
from FateSAMLib.slicer.deps import (  # noqa: E402
    DependencyPlan,
    check_installed,
    dependency_plan,
    start_install,
)
from FateSAMLib.slicer.estimate import estimate_text  # noqa: E402
from FateSAMLib.slicer.parameters import (  # noqa: E402
    DEFAULT_WINDOW,
    RUN_ON_CHOICES,
    ServerChoice,
    chosen_segment_names,
    complete_pairs,
    connection_summary,
    first_scene_support,
    first_target_volume,
    is_checked,
    model_hints,
    run_options,
    support_set_folder_name,
    with_scene_supports,
)
from FateSAMLib.slicer.plan import SupportPair, segment_names  # noqa: E402
from FateSAMLib.slicer.probabilities import overlay  # noqa: E402
from FateSAMLib.slicer.process import BackgroundJob, JobSequence, start_download, start_estimate  # noqa: E402
from FateSAMLib.slicer.remote_run import RemoteRefineRun, RemoteSegmentationRun  # noqa: E402
from FateSAMLib.slicer.review import RefineRun, ReviewSession, reviewed_support  # noqa: E402
from FateSAMLib.slicer.run import SegmentationRun  # noqa: E402
from FateSAMLib.slicer.scene import (  # noqa: E402
    from_world,
    register_segmentation_converters,
)
from FateSAMLib.slicer.self_test import SelfTest  # noqa: E402
from FateSAMLib.slicer.support_set import load_support_set, save_support_set  # noqa: E402
from FateSAMLib.slicer.support_view import leaned_on, show_support_slice, stack_index  # noqa: E402
from FateSAMLib.slicer.views import display_result, jump_to  # noqa: E402
from FateSAMLib.slicer.volumes import segmentation_volumes  # noqa: E402

POLL_INTERVAL_MS = 200
README_URL = "https://github.com/fatesam/FateSAM#3d-slicer-module"
REVIEW_SESSION = ReviewSession()  # the feature cache and kept engine outputs of this Slicer session's runs
CONNECTION_TIMEOUT_S = 10.0  # "Test connection" waits this long at most (Slicer is busy meanwhile)


#
# FateSAM
#


class FateSAM(ScriptedLoadableModule):
    """Module description shown in Slicer's module panel and help."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("FateSAM")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["FateSAM contributors"]
        self.parent.helpText = _(
            "Segment a volume from a few segmented examples (supports), with no prompts and no training, using the "
            "frozen modules of Meta's SAM2 (FATE-SAM, arXiv 2501.09138). Pick the volume, add supports, press Apply; "
            "review the result in Segment Editor, starting with the slices of lowest certainty. Needs 3D Slicer "
            "{major}.{minor} or later."
        ).format(major=MINIMUM_SLICER[0], minor=MINIMUM_SLICER[1])
        self.parent.helpText += _('<p>See the <a href="{url}">FateSAM documentation</a>.</p>').format(url=README_URL)
        self.parent.acknowledgementText = _(
            "FateSAM implements FATE-SAM (He et al., arXiv 2501.09138) on SAM2 (Ravi et al., Meta AI)."
        )


#
# FateSAMParameterNode
#


@parameterPack
class FateSAMSupport:
    """One support: a volume and the segmentation drawn on it (a node deleted from the scene reads as None)."""

    volume: vtkMRMLScalarVolumeNode
    segmentation: vtkMRMLSegmentationNode


@parameterNodeWrapper
class FateSAMParameterNode:
    """The module's state, saved with the scene; the run settings' defaults and choices are FateSAMLib.options'.

    Supports are stored as complete (volume, segmentation) pairs; the segments of the supports are transferred but
    those in ``uncheckedSegments``.
    """

    targetVolume: vtkMRMLScalarVolumeNode
    supports: list[FateSAMSupport]
    uncheckedSegments: list[str]
    model: Annotated[str, Choice(model_names())] = RunSettings.model  # the registry's DEFAULT_MODEL
    device: Annotated[str, Choice(DEVICES)] = RunSettings.device
    topK: Annotated[int, WithinRange(1, 10)] = RunSettings.top_k
    sliceAxis: Annotated[str, Choice(SLICE_AXIS_CHOICES)] = RunSettings.slice_axis
    normalization: Annotated[str, Choice(NORMALIZATIONS)] = RunSettings.normalization
    windowLevel: Annotated[float, WithinRange(-5000.0, 5000.0)] = DEFAULT_WINDOW[0]
    windowWidth: Annotated[float, WithinRange(1.0, 10000.0)] = DEFAULT_WINDOW[1]
    outputSegmentation: vtkMRMLSegmentationNode


#
# Confirmation before installing: the widget's dialog, and scripts' default (the logic never opens a dialog itself)
#


def confirmInstallation(plan: DependencyPlan) -> bool:
    """Ask once (OK/Cancel) before installing what ``plan`` lists, when Slicer shows its main window.

    Without a main window (``--no-main-window``, batch scripts) or in testing mode nobody could answer: the call that
    asked for the installation is the consent, and the answer is yes.
    """
    if slicer.app.testingEnabled() or slicer.util.mainWindow() is None:
        return True
    items = []
    if plan.torch:
        packages = ", ".join(plan.torch)
        build = plan.torch_build.describe() if plan.torch_build else ""
        items.append(_("PyTorch ({packages}): {build}").format(packages=packages, build=build))
    items += plan.packages
    message = _(
        "FateSAM needs these Python packages, which will now be downloaded and installed into Slicer:\n\n"
        "{items}\n\nThis can take several minutes, and up to a few GB of disk space. They install in the background; "
        "Cancel stops the installation. Install them now?"
    ).format(items="\n".join(f"- {item}" for item in items))
    return slicer.util.confirmOkCancelDisplay(message, windowTitle=_("FateSAM: install dependencies"))


#
# FateSAMWidget
#


class FateSAMWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The GUI: inputs, model, Apply/Cancel with progress, and review of the result."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._task = None  # in the background: a SegmentationRun, a JobSequence (install), a BackgroundJob (download)
        self._taskKind = None  # "run", "install", "download" or "estimate"
        self._afterInstall = None  # what to start once the dependencies are installed
        self._lastResult = None
        self._lastTarget = None
        self._lastRun = None  # the run that made the last result: its provenance and supports
        self._timer = None
        self._updatingGui = False

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/FateSAM.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = FateSAMLogic()

        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.timeout.connect(self.onPollTask)

        self.ui.supportsTable.horizontalHeader().setSectionResizeMode(qt.QHeaderView.Stretch)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.addSupportButton.clicked.connect(self.onAddSupport)
        self.ui.removeSupportButton.clicked.connect(self.onRemoveSupport)
        self.ui.addAllSupportsButton.clicked.connect(self.onAddAllSupports)
        self.ui.saveSupportSetButton.clicked.connect(self.onSaveSupportSet)
        self.ui.loadSupportSetButton.clicked.connect(self.onLoadSupportSet)
        self.ui.segmentsList.itemChanged.connect(self.onSegmentItemChanged)
        self.ui.modelComboBox.currentTextChanged.connect(self.onModelChanged)
        self._showServerChoice(ServerChoice.load(qt.QSettings()))
        self.ui.runOnComboBox.currentIndexChanged.connect(self.onServerChoiceChanged)
        self.ui.serverURLLineEdit.editingFinished.connect(self.onServerChoiceChanged)
        self.ui.serverTokenLineEdit.editingFinished.connect(self.onServerChoiceChanged)
        self.ui.testConnectionButton.clicked.connect(self.onTestConnection)
        self.ui.downloadModelButton.clicked.connect(self.onDownloadModel)
        self.ui.measureSpeedButton.clicked.connect(self.onMeasureSpeed)
        self.ui.applyButton.clicked.connect(self.onApplyButton)
        self.ui.showInSegmentEditorButton.clicked.connect(self.onShowInSegmentEditor)
        self.ui.refineButton.clicked.connect(self.onRefine)
        self.ui.addAsSupportButton.clicked.connect(self.onAddAsSupport)
        self.ui.doubtfulSlicesList.itemClicked.connect(self.onDoubtfulSliceClicked)
        self.ui.showSupportSliceButton.clicked.connect(self.onShowSupportSlice)

        self.initializeParameterNode()
        self._showModelState()

    def cleanup(self) -> None:
        """Called when the application closes and the module widget is destroyed: stop what runs, timer first."""
        self._endTask()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self._disconnectParameterNode()

    def _disconnectParameterNode(self) -> None:
        """Undo connectGui and the observer, once: reopening the module connects the widgets once again, not twice."""
        if self._parameterNode and self._parameterNodeGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
        self._parameterNodeGuiTag = None
        if self._parameterNode:
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGuiFromParameterNode)

    def onSceneStartClose(self, caller, event) -> None:
        """A run reads and writes the scene: stop it (engine ended, folder removed) before its nodes go.

        An installation or a download goes on (they do not use the scene), but nothing is started after it.
        """
        if self._taskKind == "run":
            self._endTask()
        self._afterInstall = None
        self._lastResult = self._lastTarget = None
        self.logic.endReview()
        self.ui.doubtfulSlicesList.clear()
        self._updateButtons()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.targetVolume:
            self._parameterNode.targetVolume = first_target_volume(slicer.mrmlScene)

    def setParameterNode(self, inputParameterNode) -> None:
        self._disconnectParameterNode()
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGuiFromParameterNode)
            self.updateGuiFromParameterNode()

    # Supports table and segment list (not bound by connectGui: synchronised here)

    def _newNodeComboBox(self, nodeType: str, node) -> "slicer.qMRMLNodeComboBox":
        comboBox = slicer.qMRMLNodeComboBox()
        comboBox.nodeTypes = [nodeType]
        comboBox.showChildNodeTypes = False
        comboBox.addEnabled = False
        comboBox.removeEnabled = False
        comboBox.noneEnabled = True
        comboBox.setMRMLScene(slicer.mrmlScene)
        comboBox.setCurrentNode(node)
        comboBox.connect("currentNodeChanged(vtkMRMLNode*)", self.onSupportTableChanged)
        return comboBox

    def _appendSupportRow(self, volume, segmentation) -> None:
        row = self.ui.supportsTable.rowCount
        self.ui.supportsTable.insertRow(row)
        self.ui.supportsTable.setCellWidget(row, 0, self._newNodeComboBox("vtkMRMLScalarVolumeNode", volume))
        self.ui.supportsTable.setCellWidget(row, 1, self._newNodeComboBox("vtkMRMLSegmentationNode", segmentation))

    def _tablePairs(self) -> list:
        pairs = []
        for row in range(self.ui.supportsTable.rowCount):
            volume = self.ui.supportsTable.cellWidget(row, 0).currentNode()
            segmentation = self.ui.supportsTable.cellWidget(row, 1).currentNode()
            if volume is not None and segmentation is not None:
                pairs.append((volume, segmentation))
        return pairs

    def _storePairs(self, pairs) -> None:
        self._parameterNode.supports = [FateSAMSupport(volume, segmentation) for volume, segmentation in pairs]

    def onSupportTableChanged(self, node=None) -> None:
        if not self._updatingGui and self._parameterNode:
            self._storePairs(self._tablePairs())

    def onAddSupport(self) -> None:
        self._appendSupportRow(*first_scene_support(slicer.mrmlScene))
        self.onSupportTableChanged()

    def onRemoveSupport(self) -> None:
        selected = self.ui.supportsTable.selectionModel().selectedRows()
        rows = sorted({index.row() for index in selected}, reverse=True)
        for row in rows or [self.ui.supportsTable.rowCount - 1]:
            if row >= 0:
                self.ui.supportsTable.removeRow(row)
        self.onSupportTableChanged()

    def onAddAllSupports(self) -> None:
        self._storePairs(with_scene_supports(self._tablePairs(), slicer.mrmlScene, self._parameterNode.targetVolume))

    def onSegmentItemChanged(self, item) -> None:
        if self._updatingGui:
            return
        unchecked = []
        for index in range(self.ui.segmentsList.count):
            listItem = self.ui.segmentsList.item(index)
            if listItem.checkState() != qt.Qt.Checked:
                unchecked.append(listItem.text())
        self._parameterNode.uncheckedSegments = unchecked

    def updateGuiFromParameterNode(self, caller=None, event=None) -> None:
        """Rebuild the supports table and the segment list, and enable buttons, from the parameter node."""
        if self._parameterNode is None or self._updatingGui:
            return
        self._updatingGui = True
        try:
            pairs = complete_pairs(self._parameterNode.supports)
            if pairs != self._tablePairs():
                self.ui.supportsTable.setRowCount(0)
                for volume, segmentation in pairs:
                    self._appendSupportRow(volume, segmentation)
            self._updateSegmentList(segment_names([segmentation for _, segmentation in pairs]))
            window = self._parameterNode.normalization == "window"
            self.ui.windowLevelSpinBox.enabled = window
            self.ui.windowWidthSpinBox.enabled = window
            self._updateButtons()
        finally:
            self._updatingGui = False

    def _updateSegmentList(self, names: list) -> None:
        """Show the supports' segment names, checked unless unticked; items are rebuilt only when names change."""
        segmentsList = self.ui.segmentsList
        if [segmentsList.item(index).text() for index in range(segmentsList.count)] != names:
            segmentsList.clear()
            for name in names:
                item = qt.QListWidgetItem(name)
                item.setFlags(item.flags() | qt.Qt.ItemIsUserCheckable)
                segmentsList.addItem(item)
        unchecked = list(self._parameterNode.uncheckedSegments)
        for index in range(segmentsList.count):
            item = segmentsList.item(index)
            item.setCheckState(qt.Qt.Checked if is_checked(item.text(), unchecked) else qt.Qt.Unchecked)

    def _updateButtons(self) -> None:
        """Apply becomes Cancel while a task runs; the model and its Download button wait until it has ended."""
        busy = self._task is not None
        reviewing = not busy and self._lastResult is not None and slicer.mrmlScene.IsNodePresent(self._lastResult)
        self.ui.showInSegmentEditorButton.enabled = reviewing
        self.ui.refineButton.enabled = reviewing
        self.ui.addAsSupportButton.enabled = reviewing
        provenance = self._lastRun is not None and bool(self._lastRun.provenance)
        self.ui.showSupportSliceButton.enabled = reviewing and provenance
        self.ui.modelComboBox.enabled = not busy
        self.ui.runOnComboBox.enabled = not busy
        self._showModelState()
        if busy:
            self.ui.applyButton.text = _("Cancel")
            self.ui.applyButton.toolTip = {
                "run": _("Stop the run; the scene stays as it was."),
                "install": _("Stop installing FateSAM's Python packages."),
                "download": _("Stop the download."),
                "estimate": _("Stop measuring this computer's speed."),
            }[self._taskKind]
            self.ui.applyButton.enabled = True
            return
        self.ui.applyButton.text = _("Apply")
        if self._parameterNode is None:
            self.ui.applyButton.enabled = False
            return
        ready = self._parameterNode.targetVolume is not None and bool(complete_pairs(self._parameterNode.supports))
        self.ui.applyButton.enabled = ready
        self.ui.applyButton.toolTip = (
            _("Segment the volume from the supports.") if ready else _("Select a volume and add at least one support.")
        )

    # Model

    def _showModelState(self) -> None:
        """Show whether the chosen model's checkpoint is downloaded (the model list is the parameter node's choices).

        On a server, the checkpoints and the device are the server's: nothing to download or measure here. The time a
        typical volume takes with the model here is shown before Apply (measured once, by Measure).
        """
        remote = self._serverChoice().remote
        self.ui.estimateLabel.text = estimate_text(self.ui.modelComboBox.currentText, on_server=remote)
        self.ui.measureSpeedButton.enabled = not remote and self._task is None
        if remote:
            self.ui.modelStatusLabel.text = _("on the server")
            self.ui.downloadModelButton.enabled = False
            return
        downloaded = self.logic.modelStates().get(self.ui.modelComboBox.currentText, False)
        self.ui.modelStatusLabel.text = _("downloaded") if downloaded else _("not downloaded (about 40-900 MB)")
        self.ui.downloadModelButton.enabled = not downloaded and self._task is None

    def onModelChanged(self, name: str) -> None:
        self._showModelState()

    def onDownloadModel(self) -> None:
        self._withDependencies(self._startDownload)

    def _startDownload(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to start the download."), waitCursor=False):
            model = self.ui.modelComboBox.currentText
            self._log(_("Downloading {model}...").format(model=model))
            self._startTask(self.logic.startDownload(model), "download")

    def onMeasureSpeed(self) -> None:
        self._withDependencies(self._startEstimate)

    def _startEstimate(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to start the measurement."), waitCursor=False):
            self._startTask(self.logic.startEstimate(), "estimate")

    def onEstimateFinished(self, job: BackgroundJob) -> None:
        self._showJobEnd(job, _("Measured."), _("Measurement cancelled."), _("Measurement failed."))

    def onDownloadFinished(self, job: BackgroundJob) -> None:
        self._showJobEnd(job, _("Downloaded."), _("Download cancelled."), _("Download failed."))

    def _showJobEnd(self, job: BackgroundJob, succeeded: str, cancelled: str, failed: str) -> None:
        """The model's state again, and how a download or a measurement ended (its error in a dialog)."""
        self._showModelState()
        if job.state == TaskState.SUCCEEDED:
            self.ui.statusLabel.text = succeeded
        elif job.state == TaskState.CANCELLED:
            self.ui.statusLabel.text = cancelled
        else:
            self.ui.statusLabel.text = failed
            slicer.util.errorDisplay(str(job.error), windowTitle=_("FateSAM: ") + failed)

    # Where runs go (kept in Slicer's settings, not in the parameter node)

    def _serverChoice(self) -> ServerChoice:
        return ServerChoice(
            RUN_ON_CHOICES[max(self.ui.runOnComboBox.currentIndex, 0)],
            self.ui.serverURLLineEdit.text,
            self.ui.serverTokenLineEdit.text,
        )

    def _showServerChoice(self, choice: ServerChoice) -> None:
        self.ui.runOnComboBox.clear()
        for name in RUN_ON_CHOICES:
            self.ui.runOnComboBox.addItem(_(name))
        self.ui.runOnComboBox.currentIndex = RUN_ON_CHOICES.index(choice.run_on)
        self.ui.serverURLLineEdit.text = choice.url
        self.ui.serverTokenLineEdit.text = choice.token
        self._enableServerWidgets(choice.remote)

    def _enableServerWidgets(self, remote: bool) -> None:
        for widget in (self.ui.serverURLLineEdit, self.ui.serverTokenLineEdit, self.ui.testConnectionButton):
            widget.enabled = remote
        self.ui.deviceComboBox.enabled = not remote  # the server uses its own device
        self._showModelState()

    def onServerChoiceChanged(self, *unused) -> None:
        choice = self._serverChoice()
        choice.save(qt.QSettings())
        self.ui.serverStatusLabel.text = ""
        self._enableServerWidgets(choice.remote)

    def onTestConnection(self) -> None:
        choice = self._serverChoice()
        choice.save(qt.QSettings())
        with slicer.util.WaitCursor():
            try:
                self.ui.serverStatusLabel.text = self.logic.testConnection(**choice.run_keywords())
            except FateSAMError as error:
                self.ui.serverStatusLabel.text = str(error)

    # Dependencies

    def _withDependencies(self, then, server=None) -> None:
        """Call ``then`` once what a run needs is there: at once, or when its installation succeeded.

        With a ``server``, a run needs nothing beyond Slicer: nothing is asked or installed.
        """
        accepted, job = False, None
        with slicer.util.tryWithErrorDisplay(_("FateSAM could not install its dependencies."), waitCursor=False):
            accepted, job = self.logic.startDependencyInstall(confirmInstallation, server=server)
        if not accepted:
            return
        if job is None:
            then()
            return
        self._afterInstall = then
        self._log(_("Installing FateSAM's Python packages in the background; Cancel stops it."))
        self._startTask(job, "install")

    def onInstallFinished(self, job: JobSequence) -> None:
        then, self._afterInstall = self._afterInstall, None
        if job.state == TaskState.CANCELLED:
            self.ui.statusLabel.text = _("Installation cancelled; nothing was run.")
            return
        if job.state == TaskState.FAILED:
            self.ui.statusLabel.text = _("Installation failed.")
            slicer.util.errorDisplay(str(job.error), windowTitle=_("FateSAM: installation failed"))
            return
        try:
            with slicer.util.tryWithErrorDisplay(_("FateSAM's dependencies are incomplete."), waitCursor=False):
                check_installed()
        except FateSAMError:
            return  # shown; nothing is started
        self._log(_("FateSAM's Python packages are installed."))
        if then is not None:
            then()  # a start that fails shows its own error, once

    # Background tasks: a run, an installation or a download, followed by one timer

    def _startTask(self, task, kind: str) -> None:
        self._task, self._taskKind = task, kind
        self.ui.progressBar.maximum = 0 if kind == "install" else 100  # pip reports no fraction: busy indicator
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = task.message
        self._updateButtons()
        self._timer.start()

    def _endTask(self) -> None:
        """Stop the timer, then the task if it still runs (its process ended, its temporary folder removed)."""
        if self._timer is not None:
            self._timer.stop()
        task, self._task, self._taskKind = self._task, None, None
        if task is not None and not task.finished:
            task.stop()
        self.ui.progressBar.maximum = 100
        self._updateButtons()

    def onPollTask(self) -> None:
        task, kind = self._task, self._taskKind
        if task is None:
            self._timer.stop()
            return
        try:
            events = task.poll()
        except Exception as error:  # never leave a timer firing on a broken task
            self._endTask()
            slicer.util.errorDisplay(_("FateSAM stopped: {error}").format(error=error))
            return
        for event in events:
            if event.kind == "warning":
                self._log(_("Warning: ") + event.message)
            elif event.kind in ("log", "error") and event.message:
                self._log(event.message)
        if self.ui.progressBar.maximum:
            self.ui.progressBar.value = int(round(100 * task.fraction))
        self.ui.statusLabel.text = task.message
        if task.finished:
            self._endTask()
            handlers = {
                "run": self.onRunFinished,
                "install": self.onInstallFinished,
                "download": self.onDownloadFinished,
                "estimate": self.onEstimateFinished,
            }
            handlers[kind](task)

    # Run

    def onApplyButton(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self.ui.statusLabel.text = _("Cancelling...")
            return
        self._startWhereChosen(self._startRun, _("FateSAM could not start."))

    def _startWhereChosen(self, start: Callable[[dict], None], failure: str) -> None:
        """Call ``start`` with the server keywords of *Run on* (none: this computer) once what a run there needs is
        installed (nothing, for a server)."""
        server = None
        with slicer.util.tryWithErrorDisplay(failure, waitCursor=False):
            server = self._serverChoice().run_keywords()
        if server is not None:
            self._withDependencies(lambda: start(server), server.get("server"))

    def _startRun(self, server: dict) -> None:
        """Start a run with the module's settings, on this computer or (``server``'s keywords) on the server."""
        if self._parameterNode is None:
            return
        with slicer.util.tryWithErrorDisplay(_("FateSAM could not start."), waitCursor=True):
            probabilities = self.ui.probabilitiesCheckBox.checked
            run = self.logic.createRunFromParameterNode(
                self._parameterNode, keeping=self._askKeeping(), probabilities=probabilities, **server
            )
            self.ui.logTextEdit.clear()
            self.ui.doubtfulSlicesList.clear()
            if server:
                self._log(_("Running on the server at {url}").format(url=server["server"]))
            run.start()
            for warning in run.warnings:
                self._log(_("Warning: ") + warning)
            self._log(_("Temporary folder: ") + str(run.folder))
            self._startTask(run, "run")

    def _askKeeping(self) -> KeptSegments:
        """How the run applies into the output segmentation: the locked segments, and, when it would replace segments
        drawn or edited by hand, whether the user agrees (else the run's versions are added beside them)."""
        locked = tuple(name.strip() for name in self.ui.lockedSegmentsLineEdit.text.split(",") if name.strip())
        output = self._parameterNode.outputSegmentation
        if output is None:
            return KeptSegments(locked=locked)
        pairs = complete_pairs(self._parameterNode.supports)
        names = chosen_segment_names(pairs, self._parameterNode.uncheckedSegments)
        plan = self.logic.planApply(output, names, locked)
        replace = bool(plan.edited) and slicer.util.confirmYesNoDisplay(plan.question(), windowTitle=_("FateSAM"))
        return KeptSegments(locked=locked, replace_edited=replace)

    def _log(self, message: str) -> None:
        self.ui.logTextEdit.appendPlainText(message)

    def onRunFinished(self, run: SegmentationRun) -> None:
        if run.state == TaskState.SUCCEEDED:
            self._showModelState()  # the run may have downloaded the checkpoint
            self._lastResult, self._lastTarget, self._lastRun = run.result, run.target, run
            self._updateButtons()
            for warning in self.logic.showResult(run.result, run.target):
                self._log(_("Warning: ") + warning)
                slicer.util.warningDisplay(warning, windowTitle=_("FateSAM"))
            self.ui.statusLabel.text = _("Done: '{name}'. Review it, starting with the slices below.").format(
                name=run.result.GetName()
            )
            for doubtful in run.doubtful_slices:
                text = _("{axis} slice {index}: certainty {certainty:.2f} ({labels})").format(
                    axis=doubtful.axis,
                    index=doubtful.slice_index,
                    certainty=doubtful.certainty,
                    labels=", ".join(doubtful.labels),
                )
                item = qt.QListWidgetItem(text)
                item.setData(qt.Qt.UserRole, list(doubtful.center_ras))
                item.setData(qt.Qt.UserRole + 1, doubtful.slice_index)
                self.ui.doubtfulSlicesList.addItem(item)
            self._showVolumes()
            if run.probability_volumes:
                overlay(slicer.mrmlScene, run.probability_volumes[0])
            corrected = run.stats.corrected_slices if run.stats else []
            for index in corrected:  # not in the list above: kept as drawn
                text = _("{axis} slice {index}: corrected (kept as you drew it)").format(
                    axis=run.stats.slice_axis, index=index
                )
                self.ui.doubtfulSlicesList.addItem(qt.QListWidgetItem(text))
        elif run.state == TaskState.CANCELLED:
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = _("Cancelled; the scene was not changed.")
        else:
            self.ui.statusLabel.text = _("Failed; the scene was not changed.")
            self._log(str(run.error))
            slicer.util.errorDisplay(str(run.error), windowTitle=_("FateSAM failed"))

    def onRefine(self) -> None:
        """Refine the last result from the slices edited in Segment Editor, in the background like Apply, on this
        computer or on the server (Run on)."""
        self._startWhereChosen(self._startRefine, _("FateSAM could not refine."))

    def _startRefine(self, server: dict) -> None:
        with slicer.util.tryWithErrorDisplay(_("FateSAM could not refine."), waitCursor=True):
            run = self.logic.createRefineRun(self._lastResult, **server)
            self.ui.logTextEdit.clear()
            self.ui.doubtfulSlicesList.clear()
            self._log(_("Refining from {changes}").format(changes=run.changes.summary()))
            run.start()
            for warning in run.warnings:
                self._log(_("Warning: ") + warning)
            self._startTask(run, "run")
            self.ui.statusLabel.text = _("Refining from {changes}").format(changes=run.changes.summary())

    def onAddAsSupport(self) -> None:
        """Append the reviewed case (its volume and the result) to the supports."""
        with slicer.util.tryWithErrorDisplay(_("FateSAM could not add the support."), waitCursor=False):
            pair = reviewed_support(self._lastResult)
            self._storePairs([*self._tablePairs(), (pair.volume, pair.segmentation)])
            self._log(_("Added '{name}' as a support.").format(name=pair.segmentation.GetName()))

    def onShowInSegmentEditor(self) -> None:
        result = self._lastResult
        if result is None or not slicer.mrmlScene.IsNodePresent(result):
            self._updateButtons()
            return
        slicer.util.selectModule("SegmentEditor")
        editorWidget = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editorWidget.setSegmentationNode(result)
        reference = result.GetNodeReference(result.GetReferenceImageGeometryReferenceRole())
        if reference is not None:
            editorWidget.setSourceVolumeNode(reference)

    def onDoubtfulSliceClicked(self, item) -> None:
        """Centre the slice views on the slice, where the target volume is shown (through its parent transform), and
        show the support slice it leaned on in the yellow view."""
        if self._lastTarget is not None and item.data(qt.Qt.UserRole) is not None:
            jump_to(slicer.mrmlScene, self._lastTarget, item.data(qt.Qt.UserRole))
            self._showSupportSlice(item.data(qt.Qt.UserRole + 1))

    def onShowSupportSlice(self) -> None:
        """Show in the yellow view the support slice that the red view's slice of the result leaned on most."""
        with slicer.util.tryWithErrorDisplay(_("FateSAM could not show the support slice."), waitCursor=False):
            red = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceNode().GetSliceToRAS()
            point = from_world(self._lastTarget, [red.GetElement(row, 3) for row in range(3)])
            self._showSupportSlice(stack_index(self._lastTarget, self._lastRun.stats.slice_axis, point))

    def _showSupportSlice(self, sliceIndex: int) -> None:
        if self._lastRun is None or sliceIndex is None:
            return
        with slicer.util.tryWithErrorDisplay(_("FateSAM could not show the support slice."), waitCursor=False):
            yellow = slicer.app.layoutManager().sliceWidget("Yellow").mrmlSliceNode()
            used = self.logic.showSupportSlice(self._lastRun, int(sliceIndex), yellow)
            self.ui.statusLabel.text = _(
                "Slice {index} leaned most on slice {support_slice} of {support} (distance {distance:.3g}), in the "
                "yellow view."
            ).format(
                index=sliceIndex, support_slice=used.slice_index, support=used.support_name, distance=used.distance
            )

    def _showVolumes(self) -> None:
        """The result's segment volumes (as it is now, edits included) in the review panel."""
        with slicer.util.tryWithErrorDisplay(_("FateSAM could not measure the result."), waitCursor=False):
            rows = self.logic.segmentVolumes(self._lastResult, self._lastTarget)
            self.ui.volumesLabel.text = "\n".join(
                _("{name}: {ml:.2f} mL ({voxels} voxels)").format(name=v.name, ml=v.volume_ml, voxels=v.voxels)
                for v in rows
            )

    # Support sets

    def onSaveSupportSet(self) -> None:
        pairs = self._tablePairs()
        if not pairs:
            slicer.util.warningDisplay(_("Add supports first."))
            return
        folder = qt.QFileDialog.getExistingDirectory(None, _("Choose where to create the support set folder"))
        if not folder:
            return
        name = qt.QInputDialog.getText(None, _("Save support set"), _("Support set name:"))
        if not name:
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to save the support set."), waitCursor=True):
            folder = Path(folder) / support_set_folder_name(name)
            saved = self.logic.saveSupportSet(folder, name, pairs, self._parameterNode)
            self._log(_("Saved support set '{name}' in {folder}").format(name=saved.name, folder=saved.folder))

    def onLoadSupportSet(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(None, _("Choose a support set folder"))
        if not folder:
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to load the support set."), waitCursor=True):
            supportSet, pairs = self.logic.loadSupportSet(folder)
            self._storePairs(self._tablePairs() + pairs)
            self._log(_("Loaded support set '{name}' ({count} cases)").format(name=supportSet.name, count=len(pairs)))


#
# FateSAMLogic
#


class FateSAMLogic(ScriptedLoadableModuleLogic):
    """Scene <-> engine: dependencies, runs in the background or blocking, support sets, showing the result."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        register_segmentation_converters()

    def getParameterNode(self):
        return FateSAMParameterNode(super().getParameterNode())

    # Dependencies

    @staticmethod
    def dependencyPlan(server=None) -> DependencyPlan:
        """What the engine still needs: torch packages (and the build for this computer) and other packages.

        A run on a ``server`` needs nothing beyond Slicer (the server has torch and sam2): an empty plan.
        """
        return DependencyPlan() if server else dependency_plan()

    def startDependencyInstall(
        self, confirm: Callable[[DependencyPlan], bool] | None = None, *, server=None
    ) -> tuple[bool, JobSequence | None]:
        """Ask once, then start installing what the engine needs; returns (accepted, the job to poll or None).

        ``confirm(plan)`` is asked only when something is missing; it returns whether to install (default:
        :func:`confirmInstallation`). PyTorch (the build for this computer's NVIDIA driver, or the CPU-only build)
        and then the other packages are installed with pip by ``PythonSlicer`` in separate processes, one after another:
        the returned job, to poll until it has finished (it can be cancelled). (False, None) if declined; (True, None)
        if nothing is missing; always so for runs on a ``server``.
        """
        plan = self.dependencyPlan(server)
        if plan.complete:
            return True, None
        if not (confirm or confirmInstallation)(plan):
            return False, None
        return True, start_install(plan)

    def ensureDependencies(self, confirm: Callable[[DependencyPlan], bool] | None = None, *, server=None) -> bool:
        """Install what the engine needs and wait (for scripts); False if ``confirm`` declined.

        ``confirm(plan)`` decides whether to install what is missing (default :func:`confirmInstallation`: a dialog
        when Slicer shows its main window, else yes); ``confirm=lambda plan: True`` never asks. With a ``server``
        nothing is needed. Raises FateSAMError when an installation step failed or was cancelled.
        """
        accepted, job = self.startDependencyInstall(confirm, server=server)
        if not accepted:
            return False
        if job is not None:
            job.wait(on_poll=lambda _job: slicer.app.processEvents())
            for line in job.log_tail:
                logging.info(line)
            if job.state != TaskState.SUCCEEDED:
                raise job.error
        if not server:
            check_installed()
        return True

    # Server

    @staticmethod
    def testConnection(server: str, token: str | None = None) -> str:
        """A line describing the server at ``server`` (its models and defaults); raises FateSAMError as the client
        words it: unreachable, wrong token (HTTP 401), not a FateSAM server."""
        return connection_summary(server, ServerClient(server, token, timeout_s=CONNECTION_TIMEOUT_S).models())

    # Models

    @staticmethod
    def modelStates() -> dict:
        """Model name -> whether its checkpoint is in the cache (the registry needs neither torch nor sam2)."""
        return {name: cached_checkpoint_path(spec).is_file() for name, spec in MODELS.items()}

    @staticmethod
    def startDownload(model: str) -> BackgroundJob:
        """Start downloading a checkpoint in a separate process; poll the job until it has finished (or cancel it)."""
        return start_download(model)

    @staticmethod
    def startEstimate() -> BackgroundJob:
        """Start measuring this computer's speed with every model in a separate process (``fatesam models
        estimate``); poll the job until it has finished. The estimates are read by ``estimate_text``."""
        return start_estimate()

    # Runs

    @staticmethod
    def createRun(
        targetVolume,
        supports,
        segmentNames=None,
        outputSegmentation=None,
        *,
        server=None,
        token=None,
        keeping=None,
        probabilities=False,
        **options,
    ) -> SegmentationRun:
        """A background run; call start(), then poll() from a timer until finished (see FateSAMLib.slicer.run).

        supports: (volume, segmentation) pairs. options: RunSettings fields (FateSAMLib.options: model, checkpoint,
        random_weights, image_size, device, top_k, slice_axis, normalization, window...), refused (InputError) when
        out of range before anything is exported. With ``server`` (a ``fatesam serve`` URL) and its ``token``, the
        run goes to that server (FateSAMLib.slicer.remote_run): only the job settings are sent (model, image_size,
        top_k, slice_axis, normalization, percentiles, window); the device and weights are the server's.
        ``keeping`` (FateSAMLib.slicer.apply_result.KeptSegments): the locked segments of ``outputSegmentation`` and
        whether hand-edited ones may be replaced (default: never; the run's versions are added beside them).
        ``probabilities``: also add one probability volume per segment (on this computer only).
        """
        pairs = [SupportPair(volume, segmentation) for volume, segmentation in supports]
        if server:
            if probabilities:
                raise InputError("Probability volumes are made on this computer only; choose 'Run on: this computer'.")
            run = RemoteSegmentationRun(
                slicer.mrmlScene,
                targetVolume,
                pairs,
                server,
                token,
                segment_names=segmentNames,
                options=RunSettings(**options),
                output_node=outputSegmentation,
                session=REVIEW_SESSION,
            )
            run.keeping = keeping or KeptSegments()
            return run
        return SegmentationRun(
            slicer.mrmlScene,
            targetVolume,
            pairs,
            segment_names=segmentNames,
            options=RunSettings(**options),
            output_node=outputSegmentation,
            session=REVIEW_SESSION,
            keeping=keeping,
            probabilities=probabilities,
        )

    @staticmethod
    def createRefineRun(editedSegmentation, *, server=None, token=None) -> RefineRun:
        """A background refine of a result of this session's runs, edited in Segment Editor: the slices that differ
        from the engine's output are kept exactly, the others segmented again from them, with no slice encoded (the
        session's feature cache, or the server's); ``run.changes`` says which slices, per segment. With ``server``
        and its ``token`` the refine runs on that server (FateSAMLib.slicer.remote_run). The refined result is a new
        segmentation node (the edited one is hidden: deleting the new node undoes the refine). Start and poll it as a
        run; raises InputError when nothing was edited or the result is not this session's."""
        if server:
            return RemoteRefineRun(slicer.mrmlScene, editedSegmentation, REVIEW_SESSION, server, token)
        return RefineRun(slicer.mrmlScene, editedSegmentation, REVIEW_SESSION)

    @staticmethod
    def endReview() -> None:
        """Forget the kept engine outputs and remove the session's feature cache (e.g. when the scene closes)."""
        REVIEW_SESSION.close()

    def createRunFromParameterNode(
        self, parameterNode, *, server=None, token=None, keeping=None, probabilities=False
    ) -> SegmentationRun:
        """A background run with the module's current settings, on this computer or on ``server`` (see createRun)."""
        pairs = complete_pairs(parameterNode.supports)
        return self.createRun(
            parameterNode.targetVolume,
            pairs,
            segmentNames=chosen_segment_names(pairs, parameterNode.uncheckedSegments),
            outputSegmentation=parameterNode.outputSegmentation,
            server=server,
            token=token,
            keeping=keeping,
            probabilities=probabilities,
            **run_options(parameterNode),
        )

    def process(
        self, targetVolume, supports, segmentNames=None, outputSegmentation=None, *, server=None, token=None, **options
    ):
        """Segment ``targetVolume`` from ``supports`` and wait for the result (for scripts and batch use).

        Returns the result segmentation node (a new "<volume> FateSAM" node unless ``outputSegmentation`` is
        given). With ``server`` and ``token``, the run goes to that ``fatesam serve`` server (see createRun).
        Raises the engine's error (InputError, ModelError, ...) on failure; the scene is then unchanged.
        """
        run = self.createRun(
            targetVolume, supports, segmentNames, outputSegmentation, server=server, token=token, **options
        )
        result = run.run_blocking(on_poll=lambda _run: slicer.app.processEvents())
        for warning in run.warnings + self.showResult(result, targetVolume):
            logging.warning(warning)
        return result

    @staticmethod
    def planApply(outputSegmentation, segmentNames, locked=()) -> ApplyPlan:
        """What applying the segments ``segmentNames`` into ``outputSegmentation`` would replace, add, keep locked,
        and which of its segments were drawn or edited by hand (``plan.question()``: what to ask before replacing)."""
        untouched = untouched_segments(outputSegmentation, REVIEW_SESSION)
        return plan_apply(outputSegmentation, segmentNames, locked, untouched)

    @staticmethod
    def showSupportSlice(run, sliceIndex: int, sliceNode):
        """Show in ``sliceNode``'s view the support slice that slice ``sliceIndex`` of ``run``'s result leaned on
        most (the support volume with its segmentation); returns that support slice's provenance entry."""
        used = leaned_on(run.provenance, sliceIndex)
        pair = run.used_supports[used.support]
        show_support_slice(slicer.mrmlScene, sliceNode, pair.volume, pair.segmentation, used, run.stats.slice_axis)
        return used

    @staticmethod
    def segmentVolumes(segmentation, volume) -> list:
        """Each segment's voxel count and volume (mL) on ``volume``'s grid (FateSAMLib.measurements.SegmentVolume)."""
        return segmentation_volumes(segmentation, volume)

    @staticmethod
    def showResult(segmentation, targetVolume) -> list:
        """Show the result over its volume in the slice views and as surfaces in 3D; returns warnings, never raises.

        The result stays in the scene whatever fails here (see FateSAMLib.slicer.views.display_result).
        """
        warnings = display_result(segmentation)
        try:
            slicer.util.setSliceViewerLayers(background=targetVolume)
        except Exception as error:  # showing is a convenience: never lose the imported result over it
            warnings.append(f"Could not show '{targetVolume.GetName()}' in the slice views ({error}).")
        return warnings

    # Support sets

    @staticmethod
    def saveSupportSet(folder, name: str, supports, parameterNode=None):
        """Save (volume, segmentation) pairs as a support set, with the current settings as model hints."""
        hints = model_hints(parameterNode) if parameterNode is not None else {}
        return save_support_set(folder, name, supports, model_hints=hints)

    @staticmethod
    def loadSupportSet(folder):
        """Load a support set into the scene; returns (the set, its (volume, segmentation) pairs)."""
        return load_support_set(slicer.mrmlScene, folder)


#
# FateSAMTest
#


class FateSAMTest(ScriptedLoadableModuleTest):
    """The module's self-test: the scenario of FateSAMLib.slicer.self_test (which pytest runs too), on Slicer's scene.

    SAM2 runs with random weights (no checkpoint download). Missing dependencies (PyTorch, sam2...) are installed
    without asking, except in testing mode (``--testing``, the extension build machines): there nothing is
    downloaded, and the steps that need the engine are skipped, with a warning in the log.
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        for test in (
            self.test_processCreatesNamedColouredResultOnTargetGrid,
            self.test_cancelLeavesSceneUnchanged,
            self.test_supportSetRoundTrip,
            self.test_parameterNodeHoldsSupportPacksAndRunSettings,
            self.test_serverRunNeedsNothingInstalledAndKeepsTheTokenOutOfTheScene,
        ):
            self.setUp()
            test()

    def _scenario(self, logic=None) -> SelfTest:
        return SelfTest(
            logic or FateSAMLogic(),
            slicer.mrmlScene,
            self,
            testing=slicer.app.testingEnabled(),
            log=logging.warning,
            process_events=slicer.app.processEvents,
        )

    def test_processCreatesNamedColouredResultOnTargetGrid(self):
        self.delayDisplay("Segmenting a synthetic volume from two supports")
        self._scenario().process_creates_named_coloured_result_on_target_grid()
        self.delayDisplay("Test passed")

    def test_cancelLeavesSceneUnchanged(self):
        self.delayDisplay("Cancelling a run")
        self._scenario().cancel_leaves_scene_unchanged()
        self.delayDisplay("Test passed")

    def test_parameterNodeHoldsSupportPacksAndRunSettings(self):
        self.delayDisplay("Supports and settings in the parameter node")
        logic = FateSAMLogic()
        self._scenario(logic).run_takes_the_module_settings(logic.getParameterNode(), FateSAMSupport)
        self.delayDisplay("Test passed")

    def test_supportSetRoundTrip(self):
        self.delayDisplay("Saving and loading a support set")
        self._scenario().support_set_round_trip()
        self.delayDisplay("Test passed")

    def test_serverRunNeedsNothingInstalledAndKeepsTheTokenOutOfTheScene(self):
        self.delayDisplay("A run on a server: nothing to install, the token only in the run")
        logic = FateSAMLogic()
        scenario = self._scenario(logic)
        scenario.server_run_needs_nothing_and_keeps_the_token_out_of_the_scene(logic.getParameterNode(), FateSAMSupport)
        self.delayDisplay("Test passed")
