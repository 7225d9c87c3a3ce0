"""The module's settings turned into a run, in a real MRML scene: complete supports, ticked segments, run options,
support-set hints, folder names and where runs go (the parameter node and ``qt.QSettings`` exist only inside Slicer:
a dataclass and a dict-backed store with QSettings' two methods stand in)."""

from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass

import pytest
from scene_helpers import KIDNEY, LIVER, SPLEEN, make_case, slicer

from FateSAMLib.errors import InputError
from FateSAMLib.options import RunSettings
from FateSAMLib.slicer.parameters import (
    DEFAULT_WINDOW,
    RUN_ON_CHOICES,
    RUN_ON_KEY,
    SERVER_TOKEN_KEY,
    SERVER_URL_KEY,
    SETTINGS_OF_PARAMETERS,
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


@dataclass
class Support:
    volume: object = None
    segmentation: object = None


# The module's parameter node as data, with its defaults (FateSAM.py declares the real one with these defaults).
Settings = make_dataclass(
    "Settings",
    [
        ("supports", list, field(default_factory=list)),
        ("uncheckedSegments", list, field(default_factory=list)),
        *(
            (parameter, object, field(default=getattr(RunSettings, name)))
            for parameter, name in SETTINGS_OF_PARAMETERS.items()
        ),
        ("windowLevel", float, field(default=DEFAULT_WINDOW[0])),
        ("windowWidth", float, field(default=DEFAULT_WINDOW[1])),
    ],
)


def test_the_defaults_of_the_parameters_make_the_default_run_settings():
    assert RunSettings(**run_options(Settings())) == RunSettings()


def forget_reference_volume(segmentation) -> None:
    segmentation.SetNodeReferenceID(segmentation.GetReferenceImageGeometryReferenceRole(), None)


def test_only_supports_with_both_nodes_make_pairs():
    scene = slicer.vtkMRMLScene()
    first = make_case(scene, "first")[:2]
    second = make_case(scene, "second", seed=1)[:2]
    supports = [Support(*first), Support(first[0], None), Support(None, second[1]), Support(), Support(*second)]
    assert complete_pairs(supports) == [first, second]
    assert complete_pairs([]) == []


def test_unticked_segments_are_left_out_whatever_their_case():
    scene = slicer.vtkMRMLScene()
    pairs = [make_case(scene, "first")[:2], make_case(scene, "second", segments=(SPLEEN,), seed=1)[:2]]
    assert chosen_segment_names(pairs, []) == [LIVER.name, SPLEEN.name, KIDNEY.name]
    assert chosen_segment_names(pairs, [" LIVER ", "left KIDNEY"]) == [SPLEEN.name]
    assert chosen_segment_names(pairs, [LIVER.name, SPLEEN.name, KIDNEY.name]) == []
    assert is_checked("Liver", ["spleen"]) and not is_checked("Liver", ["liver"])


def test_run_options_pass_the_window_only_with_window_normalisation():
    settings = Settings(model="sam2.1-small", device="cpu", topK=5, sliceAxis="coronal")
    options = run_options(settings)
    assert options == {
        "model": "sam2.1-small",
        "device": "cpu",
        "top_k": 5,
        "slice_axis": "coronal",
        "normalization": "percentile",
        "window": None,
    }
    windowed = run_options(Settings(normalization="window", windowLevel=-600.0, windowWidth=1500.0))
    assert windowed["window"] == (-600.0, 1500.0)
    assert RunSettings(**windowed).window == (-600.0, 1500.0)


def test_support_set_hints_name_the_settings_that_matter_to_a_later_run():
    hints = model_hints(Settings(model="sam2-large", topK=4, normalization="window"))
    assert hints == {"model": "sam2-large", "top_k": 4, "slice_axis": "auto", "normalization": "window"}


def test_a_new_support_starts_from_the_first_segmentation_and_its_volume():
    scene = slicer.vtkMRMLScene()
    assert first_scene_support(scene) == (None, None)
    volume, segmentation, _ = make_case(scene, "first")
    make_case(scene, "second", seed=1)
    assert first_scene_support(scene) == (volume, segmentation)
    forget_reference_volume(segmentation)
    assert first_scene_support(scene) == (None, segmentation)


def test_the_first_target_is_a_volume_the_selector_shows():
    """The target selector lists scalar volumes but not their subclasses (label maps) nor hidden nodes: the first
    guess is one it lists, so that Apply is never enabled for a target the user cannot see."""
    scene = slicer.vtkMRMLScene()
    assert first_target_volume(scene) is None
    scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    hidden = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "hidden")
    hidden.SetHideFromEditors(True)
    assert scene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode").GetName() == "labels"  # what the module took before
    assert first_target_volume(scene) is None
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "T2")
    assert first_target_volume(scene) is volume


def test_add_all_keeps_the_table_and_adds_the_other_segmented_volumes_but_the_target():
    scene = slicer.vtkMRMLScene()
    first, second, target = (make_case(scene, name, seed=seed)[:2] for seed, name in enumerate("abc"))
    unreferenced = make_case(scene, "d", seed=3)[1]
    forget_reference_volume(unreferenced)
    assert with_scene_supports([second], scene, target[0]) == [second, first]
    assert with_scene_supports([], scene, None) == [first, second, target]
    assert with_scene_supports([first, second], scene, target[0]) == [first, second]


def test_support_set_folder_names_are_safe_on_every_file_system():
    assert support_set_folder_name("Liver T2") == "Liver T2"
    assert support_set_folder_name('a/b\\c:d*e?f"g<h>i|j') == "a_b_c_d_e_f_g_h_i_j"
    assert support_set_folder_name(" .hidden. ") == "hidden"
    assert support_set_folder_name("...") == "support set"


class SettingsFile(dict):
    """Slicer's settings as ``qt.QSettings`` reads and writes them: ``value(key, default)`` and ``setValue``."""

    def value(self, key: str, defaultValue: object = None) -> object:
        return self.get(key, defaultValue)

    def setValue(self, key: str, value: object) -> None:
        self[key] = value


def test_where_runs_go_is_kept_in_slicers_settings_under_the_modules_keys():
    store = SettingsFile()
    assert ServerChoice.load(store) == ServerChoice("this computer", "", "")
    ServerChoice("server", " http://gpu-box:8765/ ", " secret \n").save(store)
    assert store == {RUN_ON_KEY: "server", SERVER_URL_KEY: "http://gpu-box:8765/", SERVER_TOKEN_KEY: "secret"}
    assert ServerChoice.load(store) == ServerChoice("server", "http://gpu-box:8765/", "secret")
    store[RUN_ON_KEY] = "the cloud"  # a setting from another version of the module
    assert not ServerChoice.load(store).remote and ServerChoice.load(store).url == "http://gpu-box:8765/"


def test_a_server_choice_gives_the_logics_server_keywords_and_a_local_one_none():
    assert RUN_ON_CHOICES == ("this computer", "server")
    assert ServerChoice("this computer", "http://gpu-box:8765", "secret").run_keywords() == {}
    assert ServerChoice("server", " http://gpu-box:8765 ", " secret ").run_keywords() == {
        "server": "http://gpu-box:8765",
        "token": "secret",
    }
    assert ServerChoice("server", "http://127.0.0.1:8765", "").run_keywords()["token"] is None
    with pytest.raises(InputError, match="no server URL is given.*Run on: this computer"):
        ServerChoice("server", "  ", "secret").run_keywords()


def test_the_connection_line_names_the_servers_default_model_device_and_models():
    answer = {"models": ["sam2.1-tiny", "sam2.1-large"], "defaults": {"model": "sam2.1-large", "device": "cuda"}}
    assert connection_summary("http://gpu-box:8765", answer) == (
        "Connected to http://gpu-box:8765: default model sam2.1-large on cuda; models: sam2.1-tiny, sam2.1-large."
    )
    assert connection_summary("http://x:1", {}) == "Connected to http://x:1: default model ? on ?; models: none."
