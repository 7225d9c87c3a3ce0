"""Refusing image files that are incomplete or hold values a reader would hide, before any voxel is used.

Readers do not all notice a file cut short by an interrupted copy or download: ITK's NIfTI reader (niftilib's
``nifti_read_buffer``) fills the missing voxels with zeros and only prints a warning, and the NRRD and MetaImage
readers fail with messages that do not say the file is incomplete. The same NIfTI reader silently replaces NaN and
infinite float voxels by 0, so no check on the read image can see them.

:func:`check_file_integrity` therefore reads the header of a NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr, .seg.nrrd) or
MetaImage (.mha, .mhd) file, computes the size of the voxel data it promises, and compares it with what the file
(or its detached data file) holds: its length for raw data; for gzip or zlib data, the decompressed length, and the
stream must end with its end marker. Float NIfTI voxels are checked for NaN and infinity on the way. Raw data costs
one header read; compressed data, or float NIfTI data, one pass over the file (milliseconds for a hippocampus
volume, tens of milliseconds for a 256x256x46 abdominal MRI). Files these checks cannot interpret (an unknown
encoding, data split over several files, ASCII data) are left to the reader, which reports its own error.
"""

from __future__ import annotations

import itertools
import math
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..errors import InputError
from ..formats import IMAGE_SUFFIXES, METAIMAGE_SUFFIXES, NIFTI_SUFFIXES, NRRD_SUFFIXES, suffix_of

_CHUNK = 1 << 20
_ZLIB_OR_GZIP = 32 + zlib.MAX_WBITS  # zlib.decompressobj detects either header
_GZIP_MAGIC = b"\x1f\x8b"
_NIFTI_HEADER = 540  # bytes: a NIfTI-2 header; a NIfTI-1 header is 348
# the first field of a NIfTI-1 or -2 header, its own size, in either byte order
_NIFTI_SIZES = {struct.pack(endian + "i", size): size for endian in "<>" for size in (348, 540)}
_MAX_HEADER_LINES = 4096
_MAX_LINE = 1 << 16
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


def _nifti_layout(header: bytes) -> tuple[int, int, str | None] | None:
    """(offset of the voxel data, its promised size, float type to check or None) from a NIfTI-1 or -2 header."""
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
        two_files = header[344:348] == b"ni1\0" if size == 348 else header[4:8] == b"ni2\0"  # voxels in a .img
        if two_files or datatype not in _NIFTI_TYPES or not 1 <= dims[0] <= 7:
            return None
        item, float_type = _NIFTI_TYPES[datatype]
        voxels = int(np.prod([max(1, d) for d in dims[1 : dims[0] + 1]], dtype=np.int64))
        return max(offset, size), voxels * item, None if float_type is None else endian + float_type
    return None


def _check_nifti(path: Path) -> None:
    with path.open("rb") as stream:
        compressed = stream.read(2) == _GZIP_MAGIC
        stream.seek(0)
        chunks = _inflated_chunks(stream) if compressed else _file_chunks(stream)
        header = b""
        while len(header) < _NIFTI_HEADER and (chunk := next(chunks, None)) is not None:
            header += chunk
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


def _header_fields(stream: BinaryIO, separator: str, last: str | None) -> tuple[dict[str, str], bool]:
    """Text header fields ``key<separator>value`` (keys lower-case) up to a blank line, the field ``last`` or the end
    of the file, and whether the header ended before the end of the file; the stream is left after the header."""
    fields: dict[str, str] = {}
    for _ in range(_MAX_HEADER_LINES):
        raw = stream.readline(_MAX_LINE)
        line = raw.decode("latin-1").strip()
        if not line:
            return fields, bool(raw)
        key, found, value = line.partition(separator)
        key = key.strip().lower()
        if found and not line.startswith("#") and not value.startswith("="):  # "key:=value": NRRD metadata
            fields[key] = value.strip()
            if key == last:
                return fields, True
    return fields, False


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


def _nrrd_value_size(fields: dict[str, str]) -> int:
    name = fields["type"].lower()
    if name == "block":
        return int(fields["block size"])
    if name == "double":
        return 8
    return next(size for keys, size in _NRRD_TYPES if any(key in name for key in keys))


def _check_nrrd(path: Path) -> None:
    with path.open("rb") as stream:
        if stream.read(4) != b"NRRD":
            return
        stream.readline()
        fields, ended = _header_fields(stream, ":", None)
        data_start = stream.tell()
    data_file = fields.get("data file", fields.get("datafile"))
    if data_file is None and not ended:
        raise _incomplete(path, "its header stops before the voxel data")
    try:
        encoding = fields.get("encoding", "raw").lower()
        byte_skip = int(fields.get("byte skip", fields.get("byteskip", "0")))
        if encoding not in ("raw", "gzip", "gz") or byte_skip < 0:
            return
        promised = int(np.prod([int(s) for s in fields["sizes"].split()], dtype=np.int64)) * _nrrd_value_size(fields)
        skip_lines = int(fields.get("line skip", fields.get("lineskip", "0")))
    except (KeyError, ValueError, StopIteration):  # a malformed header: the reader reports it
        return
    source = _data_source(path, data_file, data_start)
    if source is not None:
        _check_data(path, *source, skip_lines, encoding != "raw", promised + byte_skip)


def _check_meta(path: Path) -> None:
    with path.open("rb") as stream:
        fields, ended = _header_fields(stream, "=", "elementdatafile")
        data_start = stream.tell()
    if not ended and {"objecttype", "ndims"} & fields.keys():
        raise _incomplete(path, "its header stops before its last field, ElementDataFile")
    try:
        if "elementdatafile" not in fields or fields.get("binarydata", "true").lower() == "false":
            return
        value_size = _META_TYPES[fields["elementtype"].upper().removesuffix("_ARRAY")]
        channels = int(fields.get("elementnumberofchannels", "1"))
        promised = int(np.prod([int(s) for s in fields["dimsize"].split()], dtype=np.int64)) * channels * value_size
        header_size = int(fields.get("headersize", "0"))
    except (KeyError, ValueError):
        return
    source = _data_source(path, fields["elementdatafile"], data_start)
    if source is not None and header_size >= 0:
        compressed = fields.get("compresseddata", "false").lower() == "true"
        _check_data(path, source[0], source[1] + header_size, 0, compressed, promised)


def check_file_integrity(path: Path) -> None:
    """Raise :class:`InputError` when a NIfTI, NRRD or MetaImage file holds less voxel data than its header promises
    (a truncated file or gzip stream), is a damaged compressed file, or is a float NIfTI with NaN or infinite voxels.

    Other files, and headers these checks cannot interpret, are left to the reader.
    """
    suffix = suffix_of(path, IMAGE_SUFFIXES)
    check = (
        _check_nifti
        if suffix in NIFTI_SUFFIXES
        else _check_nrrd
        if suffix in NRRD_SUFFIXES
        else _check_meta
        if suffix in METAIMAGE_SUFFIXES
        else None
    )
    if check is None:
        return
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
        raise InputError(
            f"{path} could not be read ({error.strerror or error}). Check that the file is readable (its permissions, "
            "a mounted disk or share) and try again."
        ) from error
