"""Command-line options shared by the commands: the supports, and those that choose the model, the method settings
and the intensity rule."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

from ..errors import InputError
from ..io.label_names import parse_label_names
from ..options import PRESETS, SETTINGS, RunSettings, option_arguments
from ..support_sets import MANIFEST_NAME, read_support_set
from .reporting import Reporter

PRESET_SETTINGS = frozenset(name for values in PRESETS.values() for name in values)
"""Settings a preset may set: their options default to None, so that one given explicitly is told apart."""


def add_support_argument(parser: argparse.ArgumentParser) -> None:
    """``--support IMAGE LABELS`` (repeated once per support) or ``--support-set DIR``, one of the two: every command
    that takes supports; :func:`support_pairs` reads them."""
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--support",
        nargs=2,
        action="append",
        metavar=("IMAGE", "LABELS"),
        help="a support image and its label map or .seg.nrrd (repeat for more supports)",
    )
    group.add_argument(
        "--support-set",
        type=Path,
        metavar="DIR",
        help=f"a support set folder saved by the Slicer module ({MANIFEST_NAME} and its cases), instead of --support",
    )


class _LabelNames(argparse.Action):
    """``--label-names 1=anterior 2=posterior``, parsed and checked as it is read (a bad item exits 1 at once)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        try:
            setattr(namespace, self.dest, parse_label_names(values))
        except InputError as error:
            parser.error(str(error))


def add_label_names_argument(parser: argparse.ArgumentParser) -> None:
    """``--label-names VALUE=NAME ...``: names for the values of plain label maps (see ``io.label_names``)."""
    parser.add_argument(
        "--label-names",
        nargs="+",
        action=_LabelNames,
        metavar="VALUE=NAME",
        help="names of plain label maps' values, e.g. 1=anterior 2=posterior (default: a dataset.json beside the "
        "labels, else 'Label N'); a .seg.nrrd keeps its own names",
    )


def support_pairs(args: argparse.Namespace, settings: RunSettings, reporter: Reporter) -> list[tuple[Path, Path]]:
    """The supports' (image, labels) files: each ``--support`` pair, or the cases of the ``--support-set`` folder.

    A support set's manifest and files are checked here, before any model work (InputError). Its model hints are
    not applied: the run's options (or their defaults) win, and a warning names those that differ from the hints.
    """
    if args.support_set is None:
        return [(Path(image), Path(labels)) for image, labels in args.support]
    support_set = read_support_set(args.support_set)
    differences = hint_differences(support_set.model_hints, settings)
    if differences:
        hinted, used = (" ".join(options) for options in zip(*differences, strict=True))
        reporter.warning(
            f"The support set '{support_set.name}' was saved with {hinted}; this run uses {used}. A set's settings "
            "are hints, not applied: give those options to use them."
        )
    return support_set.pairs()


def hint_differences(hints: Mapping[str, object], settings: RunSettings) -> list[tuple[str, str]]:
    """(hinted, used) options of each run setting whose value differs from a support set's hint for it."""
    differences = []
    for name, hint in hints.items():
        if name not in SETTINGS:
            continue  # a hint this FateSAM has no setting for
        hinted, used = (option_arguments(name, value) for value in (hint, getattr(settings, name)))
        if hinted != used:
            flag = SETTINGS[name].metadata["flag"]
            differences.append((" ".join(hinted) or f"no {flag}", " ".join(used) or f"no {flag}"))
    return differences


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by every command that runs the model: one per :class:`RunSettings` field, after ``--preset``."""
    group = parser.add_argument_group("model")
    group.add_argument("--preset", choices=sorted(PRESETS), help="named set of defaults (paper: the reference's)")
    for name, setting in SETTINGS.items():
        metadata = setting.metadata
        group.add_argument(
            metadata["flag"],
            dest=name,
            default=None if name in PRESET_SETTINGS else setting.default,
            help=metadata["help"].format(default=setting.default),
            **metadata["argparse"],
        )


def settings_from_args(args: argparse.Namespace) -> RunSettings:
    """The run settings the options ask for, with the preset's where left out; refused (InputError) as in Slicer."""
    return RunSettings.from_preset(args.preset, **{name: getattr(args, name) for name in SETTINGS})
