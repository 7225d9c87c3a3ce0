"""DICOM Segmentation objects (with highdicom): a label volume on a DICOM query's grid, referencing its series, with
the segments' names and colours, so that results can go back to a PACS.

highdicom and pydicom are an optional extra (``pip install "fatesam[dicom]"``), imported only when one is written.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sized
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .. import __version__
from ..errors import InputError
from ..segments import Segment
from .labels import segments_for_values

DICOM_SEG_SUFFIX = ".dcm"


def _import_highdicom():  # noqa: ANN202 - the module, only when asked for
    try:
        import highdicom
        import pydicom
    except ImportError:
        raise InputError(
            'Writing DICOM SEG (.dcm) needs highdicom: pip install "fatesam[dicom]", or choose another --format.'
        ) from None
    return highdicom, pydicom


def read_series_headers(folder: Path) -> list:
    """The headers (no pixel data) of the largest DICOM series in ``folder``: the one ``read_image`` reads."""
    _, pydicom = _import_highdicom()
    headers = []
    for path in sorted(p for p in Path(folder).iterdir() if p.is_file()):
        try:
            headers.append(pydicom.dcmread(path, stop_before_pixels=True))
        except (pydicom.errors.InvalidDicomError, OSError):
            continue  # not a DICOM file (a README, a DICOMDIR's companions): the series reader skips it too
    series = Counter(getattr(h, "SeriesInstanceUID", None) for h in headers)
    series.pop(None, None)
    if not series:
        raise InputError(f"{folder} holds no DICOM series; DICOM SEG output needs a DICOM query series folder.")
    chosen = series.most_common(1)[0][0]
    return [h for h in headers if h.SeriesInstanceUID == chosen]


SEG_SOURCE_ATTRIBUTES = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "Modality",
    "Rows",
    "Columns",
    "PixelSpacing",
    "ImagePositionPatient",
    "ImageOrientationPatient",
)
"""What each image of a series must hold, with a value, for a DICOM SEG to reference it and lie on its grid."""

SEG_COPIED_ATTRIBUTES = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "SliceThickness",
)
"""What each image of a series must hold, possibly empty, for a DICOM SEG to copy it (the patient and the study)."""


def _is_empty(value: object) -> bool:
    return value is None or (isinstance(value, Sized) and len(value) == 0)


def check_seg_source(query: Path) -> None:
    """Refuse (:class:`InputError`), before any work, a query from which no DICOM SEG can be made: one that is not a
    DICOM series folder, highdicom missing, or a series whose images lack what a SEG references or copies (see
    :data:`SEG_SOURCE_ATTRIBUTES`, :data:`SEG_COPIED_ATTRIBUTES`; an anonymiser may have removed them)."""
    if not query.is_dir():
        raise InputError(
            f"{query} is not a DICOM series folder: a DICOM SEG (--format .dcm) references the query's series. "
            "Choose another --format for files that are not DICOM."
        )
    headers = read_series_headers(query)
    missing = {name for h in headers for name in SEG_COPIED_ATTRIBUTES if name not in h}
    missing |= {name for h in headers for name in SEG_SOURCE_ATTRIBUTES if _is_empty(h.get(name))}
    if missing:
        raise InputError(
            f"The DICOM series in {query} lacks {', '.join(sorted(missing))}, which a DICOM SEG must reference or copy "
            "(an anonymiser may have removed them). Export the series again with them (the patient and study ones "
            "may be empty), or choose another --format."
        )


def _frame_indices(headers: list, labels: sitk.Image, folder: Path) -> list[int]:
    """For each source image, the slice (k) of ``labels`` it is, found from its position."""
    indices = []
    for header in headers:
        index = labels.TransformPhysicalPointToContinuousIndex([float(v) for v in header.ImagePositionPatient])
        k = round(index[2])
        if abs(index[0]) > 0.01 or abs(index[1]) > 0.01 or abs(index[2] - k) > 0.01 or not 0 <= k < labels.GetSize()[2]:
            raise InputError(
                f"The DICOM file {header.SOPInstanceUID} in {folder} is not a slice of the segmented volume's grid; "
                "DICOM SEG needs the query series as it was read (one series per folder)."
            )
        indices.append(k)
    return indices


def dicom_seg_writer(labels: sitk.Image, segments: list[Segment], series_folder: str | Path) -> Callable[[Path], None]:
    """What writes ``labels`` (on the grid of the DICOM series in ``series_folder``) as a DICOM SEG to a given file.

    One segment per entry of ``segments`` and per other label value present (segment numbers 1..N in value order),
    named and coloured as ``segments`` describe them; the object references every image of the series. Raises
    :class:`InputError` without highdicom, for a folder without a DICOM series, or for a series off the labels' grid.
    """
    highdicom, pydicom = _import_highdicom()
    folder = Path(series_folder)
    headers = read_series_headers(folder)
    array = sitk.GetArrayViewFromImage(labels)  # (k, rows, columns), as SimpleITK reads the series
    frames = array[_frame_indices(headers, labels, folder)]
    present = segments_for_values(array, segments)  # every chosen segment, even one found nowhere
    numbered = np.zeros(frames.shape, dtype=np.uint16)
    for number, segment in enumerate(present, start=1):
        numbered[frames == segment.value] = number
    algorithm = highdicom.AlgorithmIdentificationSequence(
        name="FateSAM", version=__version__, family=pydicom.sr.codedict.codes.cid7162.ArtificialIntelligence
    )
    descriptions = [
        highdicom.seg.SegmentDescription(
            segment_number=number,
            segment_label=segment.name,
            segmented_property_category=pydicom.sr.codedict.codes.SCT.Tissue,
            segmented_property_type=pydicom.sr.codedict.codes.SCT.AnatomicalStructure,
            algorithm_type=highdicom.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            display_color=highdicom.color.CIELabColor.from_rgb(*(round(255 * c) for c in segment.color)),
        )
        for number, segment in enumerate(present, start=1)
    ]
    try:
        segmentation = _segmentation(highdicom, headers, numbered, descriptions)
    except (ValueError, AttributeError) as error:  # highdicom's refusal of a source series it cannot reference
        raise InputError(
            f"A DICOM SEG cannot reference the series in {folder} ({error}); choose another --format."
        ) from None

    def write(target: Path) -> None:
        segmentation.save_as(target)

    return write


def _segmentation(highdicom, headers: list, numbered: np.ndarray, descriptions: list):  # noqa: ANN001, ANN202
    return highdicom.seg.Segmentation(
        source_images=headers,
        pixel_array=numbered,
        segmentation_type=highdicom.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=highdicom.UID(),
        series_number=max(int(getattr(h, "SeriesNumber", 0) or 0) for h in headers) + 1000,
        sop_instance_uid=highdicom.UID(),
        instance_number=1,
        manufacturer="FateSAM",
        manufacturer_model_name="FATE-SAM few-shot segmentation",
        software_versions=__version__,
        device_serial_number="none",
        omit_empty_frames=bool(numbered.any()),  # an empty result keeps its frames: a SEG needs at least one
        series_description="FateSAM segmentation",
    )
