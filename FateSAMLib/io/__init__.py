"""Files and grids: reading images and label maps (checked for completeness and sense), writing label maps and
.seg.nrrd files, comparing voxel grids and slicing in one anatomical frame;
the one atomic write every output uses (``FateSAMLib.atomic``) is re-exported.

May import the top level, numpy, SimpleITK and slicerio; never torch, sam2 or MRML.
"""

from ..atomic import OutputFiles, check_outputs, write_file_atomically
from .geometry import check_same_geometry, choose_slice_axis, ijk_to_lps, to_slices
from .images import read_image
from .labels import read_label_map, read_labels, write_label_map

__all__ = [
    "OutputFiles",
    "check_outputs",
    "check_same_geometry",
    "choose_slice_axis",
    "ijk_to_lps",
    "read_image",
    "read_label_map",
    "read_labels",
    "to_slices",
    "write_file_atomically",
    "write_label_map",
]
