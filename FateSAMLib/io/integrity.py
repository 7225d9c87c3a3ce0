"""Refusing image files before any voxel is read: headers that name other files, promise too many voxels, or files
that are incomplete or hold values a reader would hide.

:func:`check_header` reads only the header of a file SimpleITK would read with its NIfTI, NRRD (also ``.seg.nrrd``,
which pynrrd reads) or MetaImage reader, and refuses every other kind of file. A header may name other files that
hold its voxels (NRRD ``data file``, MetaImage ``ElementDataFile``: one name, a ``LIST`` of names or a ``%d``
pattern; a NIfTI or Analyze ``.hdr`` whose voxels are in its ``.img``). Uploads must hold their own voxels
(``own_data_only``); on the command line such a file is read only when every data file lies beside its header: a
plain file name, no folder, no ``..``, no absolute path, so that a header cannot make FateSAM read (and write into a
result) a file elsewhere. The header's promise (voxels x components) can be bounded before anything is read.

Readers do not all notice a file cut short by an interrupted copy or download: ITK's NIfTI reader (niftilib's
``nifti_read_buffer``) fills the missing voxels with zeros and only prints a warning, and the NRRD and MetaImage
readers fail with messages that do not say the file is incomplete. The same NIfTI reader silently replaces NaN and
infinite float voxels by 0, so no check on the read image can see them.

:func:`check_file_integrity` therefore computes the size of the voxel data a header promises and compares it with
what the file (or its detached data file) holds: its length for raw data; for gzip or zlib data, the decompressed
length, and the stream must end with its end marker. Float NIfTI voxels are checked for NaN and infinity on the way.
Raw data costs one header read; compressed data, or float NIfTI data, one pass over the file (milliseconds for a
hippocampus volume, tens of milliseconds for a 256x256x46 abdominal MRI). Files these checks cannot interpret (an
unknown encoding, data split over several files, ASCII data) are left to the reader, which reports its own error.
"""

from __future__ import annotations

import itertools
import math
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import BinaryIO

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..formats import IMAGE_SUFFIXES, METAIMAGE_SUFFIXES, NIFTI_SUFFIXES, NRRD_SUFFIXES, check_file_name, suffix_of
from ..memory import host_memory_bytes, not_enough_memory_error

_CHUNK = 1 << 20
_ZLIB_OR_GZIP = 32 + zlib.MAX_WBITS  # zlib.decompressobj detects either header
_GZIP_MAGIC = b"\x1f\x8b"
_NIFTI_HEADER = 540  # bytes: a NIfTI-2 header; a NIfTI-1 header is 348
# the first field of a NIfTI-1 or -2 header, its own size, in either byte order
_NIFTI_SIZES = {struct.pack(endian + "i", size): size for endian in "<>" for size in (348, 540)}
_MAX_HEADER_LINES = 4096
_MAX_LINE = 1 << 16
_MAX_LISTED_FILES = 1 << 16
_LARGEST_VALUE = 8  # bytes: a double
_WORKING_COPY_BYTES = 8  # reading keeps the voxels as stored and, while they are checked and converted, a 64-bit copy
_READERS = {"NiftiImageIO": "NIfTI", "NrrdImageIO": "NRRD", "MetaImageIO": "MetaImage"}
_SUFFIX_KINDS = {
    **dict.fromkeys(NIFTI_SUFFIXES, "NIfTI"),
    **dict.fromkeys(NRRD_SUFFIXES, "NRRD"),
    **dict.fromkeys(METAIMAGE_SUFFIXES, "MetaImage"),
}
# NIfTI datatype code -> (bytes per voxel, float type whose NaN/inf niftilib turns into 0, or None)
_NIFTI_TYPES = {
    2: (1, None),
    4: (2, None),
    8: (4, None),
    16: (4, "f4"),
    32: (8, "f4"),
    64: (8, "f8"),
    128: (3, None),
    256: (1, None),
    512: (2, None),
    768: (4, None),
    1024: (8, None),
    1280: (8, None),
    1792: (16, "f8"),
    2304: (4, None),
}
# Substring of a NRRD type name -> bytes per value, first match wins ("uint8" before "int", "long long" before "int")
_NRRD_TYPES = ((("int8", "char"), 1), (("int16", "short"), 2), (("int64", "long"), 8), (("int", "float"), 4))
_META_TYPES = {
    "MET_ASCII_CHAR": 1,
    "MET_CHAR": 1,
    "MET_UCHAR": 1,
    "MET_SHORT": 2,
    "MET_USHORT": 2,
    "MET_INT": 4,
    "MET_UINT": 4,
    "MET_LONG": 4,
    "MET_ULONG": 4,
    "MET_LONG_LONG": 8,
    "MET_ULONG_LONG": 8,
    "MET_FLOAT": 4,
    "MET_DOUBLE": 8,
}


def non_finite_error(path: str | Path) -> InputError:
    """The error for a volume with NaN or infinite values (raised here for NIfTI, by the readers' checks otherwise)."""
    return InputError(
        f"{path} contains NaN or infinite values. Replace them (e.g. by the background value) and try again."
    )


def _incomplete(path: Path, detail: str) -> InputError:
    return InputError(
        f"{path} is incomplete (truncated): {detail}. The file was probably cut short while being copied, downloaded "
        "or written: copy it again from its source (or export it again), then try again."
    )


def _file_chunks(stream: BinaryIO) -> Iterator[bytes]:
    while chunk := stream.read(_CHUNK):
        yield chunk


def _inflated_chunks(stream: BinaryIO) -> Iterator[bytes]:
    """The decompressed bytes of a zlib or gzip stream (gzip members one after another).

    Raises EOFError when the stream stops before its end marker, ``zlib.error`` when it is damaged.
    """
    inflater, data = zlib.decompressobj(_ZLIB_OR_GZIP), b""
    while data or (data := stream.read(_CHUNK)):
        if inflater.eof:
            if not data.startswith(_GZIP_MAGIC):  # padding after the stream, which readers ignore too
                break
            inflater = zlib.decompressobj(_ZLIB_OR_GZIP)  # another gzip member follows
        yield inflater.decompress(data, _CHUNK)
        data = inflater.unconsumed_tail or inflater.unused_data
    yield inflater.flush()
    if not inflater.eof:
        raise EOFError


def _data_length(chunks: Iterator[bytes], start: int, float_type: str | None = None) -> tuple[int, bool]:
    """Bytes of a chunked stream after its first ``start`` bytes, and whether all of them, read as ``float_type``
    values (none: no check), are finite."""
    position, finite, pending = 0, True, b""
    for chunk in chunks:
        data = chunk[max(0, start - position) :]
        position += len(chunk)
        if float_type is not None and finite and data:
            pending += data
            usable = len(pending) - len(pending) % np.dtype(float_type).itemsize
            finite = bool(np.isfinite(np.frombuffer(pending[:usable], float_type)).all())
            pending = pending[usable:]
    return max(0, position - start), finite


@dataclass(frozen=True)
class Header:
    """What an image file's header says, read before any voxel: its format (``NIfTI``, ``NIfTI-2``, ``NRRD`` or
    ``MetaImage``), the voxel values it promises (voxels x components, None when it does not say), the bytes of
    one value (None when unknown), and the other files that hold its voxels, as the header names them."""

    kind: str
    values: int | None
    value_size: int | None
    data_files: tuple[str, ...] = ()

    @property
    def data_bytes(self) -> int | None:
        """The voxel data the header promises, in bytes (None when unknown)."""
        return None if self.values is None or self.value_size is None else self.values * self.value_size


def _split_lines(raw: bytes) -> list[str]:
    """A header line as the readers may see it: a carriage return alone also ends a line."""
    return [part.decode("latin-1").strip() for part in raw.rstrip(b"\r\n").split(b"\r")]


def _header_fields(path: Path, stream: BinaryIO, separator: str, last: str | None) -> tuple[dict[str, str], bool]:
    """Text header fields ``key<separator>value`` (keys lower-case without spaces: ``data file`` -> ``datafile``) up
    to a blank line, the field ``last``, a NRRD ``data file: LIST`` (file names follow it) or the end of the file, and
    whether the header ended before the end of the file; the stream is left after the header. A data file named twice
    is refused."""
    fields: dict[str, str] = {}
    for _ in range(_MAX_HEADER_LINES):
        raw = stream.readline(_MAX_LINE)
        if not raw.rstrip(b"\r\n"):
            return fields, bool(raw)
        for line in _split_lines(raw):
            key, found, value = line.partition(separator)
            key = re.sub(r"\s", "", key).lower()
            if not found or line.startswith("#") or value.startswith("="):  # "key:=value": NRRD metadata
                continue
            if key in fields and key in ("datafile", "elementdatafile"):
                raise InputError(f"{path} names its data file twice; save the volume again as a single file.")
            fields[key] = value.strip()
            if key == last or (key == "datafile" and fields[key].upper().startswith("LIST")):  # names follow
                return fields, True
    return fields, False


def _listed_files(path: Path, data_start: int) -> tuple[str, ...]:
    """The file names listed after a header whose data file is ``LIST``, one a line."""
    with path.open("rb") as stream:
        stream.seek(data_start)
        names = [name for raw in itertools.islice(stream, _MAX_LISTED_FILES + 1) for name in _split_lines(raw) if name]
    if len(names) > _MAX_LISTED_FILES:
        raise InputError(f"{path} lists more than {_MAX_LISTED_FILES} data files; save the volume as a single file.")
    return tuple(names)


def _named_files(path: Path, value: str | None, data_start: int) -> tuple[str, ...]:
    """The files a NRRD ``data file`` or MetaImage ``ElementDataFile`` value names: none (the voxels follow the
    header), one name, the names listed after the header (``LIST``), or a pattern and its format (``%d``)."""
    if value is None or value.upper() == "LOCAL":
        return ()
    words = value.split()
    if words and words[0].upper() == "LIST":
        return ("LIST", *_listed_files(path, data_start))
    return tuple(dict.fromkeys([value, *words[:1]]))


def _beside(name: str) -> bool:
    """Whether a data file name is a plain name in its header's own folder (no folder, ``..``, absolute path or
    drive; a pattern's only conversions are ``%d``)."""
    plain = name not in ("", ".", "..") and PurePosixPath(name).name == name and PureWindowsPath(name).name == name
    return plain and "%" not in re.sub(r"%0?\d*d", "", name)


def _nifti_fields(header: bytes) -> tuple[str, int, int, tuple[int, ...], int] | None:
    """(byte order, header size, datatype, dims, offset of the voxel data) of a NIfTI-1 or -2 header (or Analyze's)."""
    for endian in "<>":
        (size,) = struct.unpack(endian + "i", header[:4]) if len(header) >= 4 else (0,)
        if size == 348 and len(header) >= 348:
            datatype = struct.unpack(endian + "h", header[70:72])[0]
            dims = struct.unpack(endian + "8h", header[40:56])
            (vox_offset,) = struct.unpack(endian + "f", header[108:112])
            offset = int(vox_offset) if math.isfinite(vox_offset) else 0
        elif size == 540 and len(header) >= 540:
            datatype = struct.unpack(endian + "h", header[12:14])[0]
            dims = struct.unpack(endian + "8q", header[16:80])
            offset = struct.unpack(endian + "q", header[168:176])[0]
        else:
            continue
        return endian, size, datatype, dims, offset
    return None


def _single_file_nifti(header: bytes, size: int) -> bool:
    """Whether a NIfTI header says its voxels follow it (``n+1``/``n+2``), not in a ``.img`` (``ni1``, Analyze)."""
    return header[344:348] == b"n+1\0" if size == 348 else header[4:8] == b"n+2\0"


def _nifti_start(stream: BinaryIO) -> tuple[bytes, Iterator[bytes], bool]:
    """The first bytes of a NIfTI file (decompressed), at least its header's if it has them, the chunks after them,
    and whether the file is compressed."""
    compressed = stream.read(2) == _GZIP_MAGIC
    stream.seek(0)
    chunks = _inflated_chunks(stream) if compressed else _file_chunks(stream)
    header = b""
    while len(header) < _NIFTI_HEADER and (chunk := next(chunks, None)) is not None:
        header += chunk
    return header, chunks, compressed


def _nifti_header(path: Path) -> Header:
    with path.open("rb") as stream:
        header, _, _ = _nifti_start(stream)
    fields = _nifti_fields(header[:_NIFTI_HEADER])
    if fields is None:
        return Header("NIfTI", None, None)
    _, size, datatype, dims, _ = fields
    kind = "NIfTI" if size == 348 else "NIfTI-2"
    values = math.prod(max(1, d) for d in dims[1 : dims[0] + 1]) if 1 <= dims[0] <= 7 else None
    value_size = _NIFTI_TYPES[datatype][0] if datatype in _NIFTI_TYPES else None
    stem = re.sub(r"(\.nii|\.hdr|\.img)?(\.gz)?$", "", path.name, flags=re.IGNORECASE)
    data_files = () if _single_file_nifti(header, size) else (f"{stem}.img",)
    return Header(kind, values, value_size, data_files)


def _nifti_layout(header: bytes) -> tuple[int, int, str | None] | None:
    """(offset of the voxel data, its promised size, float type to check or None) from a single-file NIfTI header."""
    fields = _nifti_fields(header)
    if fields is None:
        return None
    endian, size, datatype, dims, offset = fields
    if not _single_file_nifti(header, size) or datatype not in _NIFTI_TYPES or not 1 <= dims[0] <= 7:
        return None
    item, float_type = _NIFTI_TYPES[datatype]
    voxels = math.prod(max(1, d) for d in dims[1 : dims[0] + 1])
    return max(offset, size), voxels * item, None if float_type is None else endian + float_type


def _check_nifti(path: Path) -> None:
    with path.open("rb") as stream:
        header, chunks, compressed = _nifti_start(stream)
        layout = _nifti_layout(header)
        if layout is None:
            if compressed:  # still refuse a gzip stream cut short, whatever it holds
                _data_length(chunks, 0)
            if len(header) < _NIFTI_SIZES.get(header[:4], 0):
                raise _incomplete(path, f"it stops within its header, after {len(header)} bytes")
            return
        start, promised, float_type = layout
        held, finite = _data_length(itertools.chain([header], chunks), start, float_type)
    if held < promised:
        raise _incomplete(path, f"its header promises {promised} bytes of voxel data, the file holds {held}")
    if not finite:
        raise non_finite_error(path)


def _nrrd_fields(path: Path) -> tuple[dict[str, str], bool, int]:
    """A NRRD header's fields, whether it ended before the end of the file, and where the data after it starts."""
    with path.open("rb") as stream:
        if stream.read(4) != b"NRRD":
            raise InputError(
                f"{path} is not a NRRD file: it does not start with 'NRRD'. Check that it is the intended file, or "
                "save the volume again as .nrrd (e.g. from 3D Slicer)."
            )
        stream.readline()
        fields, ended = _header_fields(path, stream, ":", None)
        return fields, ended, stream.tell()


def _nrrd_value_size(fields: dict[str, str]) -> int:
    name = fields["type"].lower()
    if name == "block":
        return int(fields["blocksize"])
    if name == "double":
        return 8
    return next(size for keys, size in _NRRD_TYPES if any(key in name for key in keys))


def _sizes(text: str | None) -> int | None:
    """The product of a header's sizes (None when missing or not whole numbers)."""
    try:
        return math.prod(int(s) for s in text.split()) if text else None
    except ValueError:
        return None


def _nrrd_header(path: Path) -> Header:
    fields, ended, data_start = _nrrd_fields(path)
    data_file = fields.get("datafile")
    if data_file is None and not ended:
        raise _incomplete(path, "its header stops before the voxel data")
    try:
        value_size = _nrrd_value_size(fields)
    except (KeyError, ValueError, StopIteration):
        value_size = None
    return Header("NRRD", _sizes(fields.get("sizes")), value_size, _named_files(path, data_file, data_start))


def _meta_fields(path: Path) -> tuple[dict[str, str], bool, int]:
    """A MetaImage header's fields (up to ElementDataFile), whether it has that last field, where the data starts."""
    with path.open("rb") as stream:
        fields, ended = _header_fields(path, stream, "=", "elementdatafile")
        return fields, ended, stream.tell()


def _meta_header(path: Path) -> Header:
    fields, ended, data_start = _meta_fields(path)
    if not ended and {"objecttype", "ndims"} & fields.keys():
        raise _incomplete(path, "its header stops before its last field, ElementDataFile")
    if not ended:  # also a header longer than is read here: a data file named further on would go unseen
        raise InputError(
            f"{path} is not a MetaImage file FateSAM can read: no header ending with ElementDataFile was found at its "
            "start. Check that it is the intended file, or save the volume again as .mha (e.g. from 3D Slicer)."
        )
    dims = fields.get("dimsize")
    values = _sizes(f"{dims} {fields.get('elementnumberofchannels', '1')}") if dims else None
    value_size = _META_TYPES.get(fields.get("elementtype", "").upper().removesuffix("_ARRAY"))
    return Header("MetaImage", values, value_size, _named_files(path, fields.get("elementdatafile"), data_start))


def _image_io(path: Path) -> str:
    """The name of the ImageIO SimpleITK would read ``path`` with ('' when none can)."""
    try:
        return sitk.ImageFileReader().GetImageIOFromFileName(str(path))
    except RuntimeError:
        return ""


def read_header(path: str | Path, *, own_data_only: bool) -> Header:
    """Read what ``path``'s header promises, without reading any voxel; refuse (:class:`InputError`) a file name that
    is not UTF-8, a file that SimpleITK would not read as NIfTI, NRRD or MetaImage, and a header naming other files
    that hold its voxels: any with ``own_data_only``, else any that does not lie beside it (see :func:`_beside`)."""
    path = Path(path)
    check_file_name(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist or is not a file. Check the path.")
    reader = _image_io(path)  # '' also for a file too damaged for any reader: its suffix tells the check to use
    kind = _READERS.get(reader) or (None if reader else _SUFFIX_KINDS.get(suffix_of(path, IMAGE_SUFFIXES)))
    if kind is None:
        raise InputError(
            f"{path} could not be read as a NIfTI, NRRD or MetaImage file. Check that the file is complete and in "
            "one of these formats, e.g. by opening it in 3D Slicer, and save it again as .nrrd or .nii.gz."
        )
    try:
        header = {"NIfTI": _nifti_header, "NRRD": _nrrd_header, "MetaImage": _meta_header}[kind](path)
    except (EOFError, zlib.error):  # a damaged or truncated start of a compressed file: the integrity check says so
        return Header(kind, None, None)
    except OSError as error:
        raise _unreadable(path, error) from error
    if header.kind == "NIfTI-2" and not reader:
        raise InputError(
            f"{path} is a NIfTI-2 file, which this SimpleITK ({sitk.Version.VersionString()}) cannot read. Save it as "
            "NIfTI-1 (e.g. with nibabel: nibabel.Nifti1Image(image.dataobj, image.affine).to_filename(...)), NRRD or "
            "MHA, then try again."
        )
    if header.data_files and own_data_only:
        raise InputError(
            f"{path.name} is a detached header: it names another file that holds its voxels. An upload must hold "
            "its own voxels: save the volume as a single .nrrd, .mha or .nii.gz file and upload that."
        )
    outside = [name for name in header.data_files if name != "LIST" and not _beside(name)]
    if outside:
        raise InputError(
            f"{path} names {outside[0]!r} as the file that holds its voxels, which is not a file beside it. A "
            "header's data file is read only from the header's own folder, named without a folder, '..' or an "
            f"absolute path: move the data file next to {path.name} and name it so, or save the volume as a single "
            ".nrrd, .mha or .nii.gz file."
        )
    return header


def check_header(path: str | Path, *, own_data_only: bool, max_voxels: int | None = None) -> None:
    """Refuse (:class:`InputError`, one message) a file whose header names other data files (see
    :func:`read_header`) or, with ``max_voxels``, promises more voxel values than that, more than
    ``_LARGEST_VALUE`` bytes a value (or does not say how many).

    Only the header is read; ``own_data_only=True`` is for uploads, ``False`` for files a user passes.
    """
    header = read_header(path, own_data_only=own_data_only)
    if max_voxels is None:
        return
    if header.values is None:
        promise = "does not say how many voxel values it holds"
    elif header.values > max_voxels or (header.data_bytes or 0) > max_voxels * _LARGEST_VALUE:
        promise = f"promises {header.values} voxel values of {header.value_size} bytes"
    else:
        return
    raise InputError(
        f"{Path(path).name}: its header {promise}; at most {max_voxels} voxel values of at most {_LARGEST_VALUE} "
        "bytes are accepted. Crop or resample the volume to fewer voxels, then try again."
    )


def check_fits_in_memory(path: Path, values: int | None, data_bytes: int | None) -> None:
    """Refuse (:class:`ResourceError`) to read a volume of ``values`` voxel values stored in ``data_bytes`` (None:
    unknown, not checked) when they and a 64-bit working copy of them exceed the memory free for this process."""
    if values is None or data_bytes is None:
        return
    needed, available = data_bytes + values * _WORKING_COPY_BYTES, host_memory_bytes()
    if needed > available:
        raise not_enough_memory_error(
            f"reading {path} ({values} voxel values, as its header says) needs about {needed / 1024**3:.1f} GB",
            "this machine",
            available,
        )


def _unreadable(path: Path, error: OSError) -> InputError:
    return InputError(
        f"{path} could not be read ({error.strerror or error}). Check that the file is readable (its permissions, "
        "a mounted disk or share) and try again."
    )


def _data_source(path: Path, name: str | None, data_start: int) -> tuple[Path, int] | None:
    """The file holding the voxel data and where it starts; None for data split over several files."""
    if name is None or name.upper() == "LOCAL":
        return path, data_start
    if name.upper().startswith("LIST") or "%" in name:
        return None
    source = path.parent / name
    if not source.is_file():
        raise InputError(
            f"{path} keeps its voxels in {source}, which does not exist. Copy that file next to {path.name} "
            "(or save the volume as a single .nrrd, .mha or .nii.gz file), then try again."
        )
    return source, 0


def _check_data(path: Path, source: Path, start: int, skip_lines: int, compressed: bool, promised: int) -> None:
    with source.open("rb") as stream:
        stream.seek(start)
        for _ in range(skip_lines):
            stream.readline()
        held, _ = _data_length(_inflated_chunks(stream) if compressed else _file_chunks(stream), 0)
    if held < promised:
        where = "" if source == path else f" (in {source.name})"
        raise _incomplete(path, f"its header promises {promised} bytes of voxel data, the file{where} holds {held}")


def _check_nrrd(path: Path) -> None:
    fields, _, data_start = _nrrd_fields(path)
    try:
        encoding = fields.get("encoding", "raw").lower()
        byte_skip = int(fields.get("byteskip", "0"))
        if encoding not in ("raw", "gzip", "gz") or byte_skip < 0:
            return
        promised = int(_sizes(fields["sizes"])) * _nrrd_value_size(fields)
        skip_lines = int(fields.get("lineskip", "0"))
    except (KeyError, ValueError, TypeError, StopIteration):  # a malformed header: the reader reports it
        return
    source = _data_source(path, fields.get("datafile"), data_start)
    if source is not None:
        _check_data(path, *source, skip_lines, encoding != "raw", promised + byte_skip)


def _check_meta(path: Path) -> None:
    fields, _, data_start = _meta_fields(path)
    try:
        if "elementdatafile" not in fields or fields.get("binarydata", "true").lower() == "false":
            return
        value_size = _META_TYPES[fields["elementtype"].upper().removesuffix("_ARRAY")]
        channels = int(fields.get("elementnumberofchannels", "1"))
        promised = int(_sizes(fields["dimsize"])) * channels * value_size
        header_size = int(fields.get("headersize", "0"))
    except (KeyError, ValueError, TypeError):
        return
    source = _data_source(path, fields["elementdatafile"], data_start)
    if source is not None and header_size >= 0:
        compressed = fields.get("compresseddata", "false").lower() == "true"
        _check_data(path, source[0], source[1] + header_size, 0, compressed, promised)


def check_image_file(path: Path) -> Header:
    """The checks every image or label file read goes through before its reader: its header (:func:`read_header`,
    data files only beside it), whether the voxels it promises fit in memory, then whether it holds the voxel data
    its header promises (a truncated file or gzip stream, a damaged compressed file) and, for a float NIfTI, no NaN
    or infinite voxels. Returns the header. Headers these checks cannot interpret are left to the reader.
    """
    header = read_header(path, own_data_only=False)
    check_fits_in_memory(path, header.values, header.data_bytes)
    check = {"NIfTI": _check_nifti, "NIfTI-2": _check_nifti, "NRRD": _check_nrrd, "MetaImage": _check_meta}[header.kind]
    try:
        check(path)
    except EOFError as error:
        raise _incomplete(path, "its compressed data stops before the end of the stream") from error
    except zlib.error as error:
        raise InputError(
            f"{path} is damaged: its compressed data cannot be decompressed ({error}). Copy it again from its "
            "source (or export it again), then try again."
        ) from error
    except OSError as error:
        raise _unreadable(path, error) from error
    return header
