"""Read and write IDX files, the format MNIST and Fashion-MNIST ship in.

An IDX file is a 4-byte magic number, one big-endian uint32 per dimension,
then the values in C order, big-endian::

    offset 0   0x00 0x00      two zero bytes
    offset 2   type code      0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
                              0x0D float32, 0x0E float64
    offset 3   ndim           number of dimensions
    offset 4   ndim x uint32  the sizes (e.g. 60000, 28, 28)
    then       the data       prod(sizes) values of the type

Files may be gzip-compressed; :func:`read_idx` tells by the gzip magic bytes
(``1f 8b``), not by the file name.
"""
from __future__ import annotations

import gzip
import io
import math
import zlib
from pathlib import Path

import numpy as np

from ..fileio import atomic_write

# IDX type code -> big-endian NumPy dtype.
IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_OF = {dt.newbyteorder("="): code for code, dt in IDX_DTYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"
# Deflate expands data at most 1032-fold (a 258-byte match in 2 bits): a
# header declaring more than that many bytes per byte of gzip file cannot be
# right, however much data the stream inflates to.
_MAX_EXPANSION = 1032


class IdxError(ValueError):
    """An IDX file is malformed, truncated, or not an IDX file at all."""


def _describe(dims, dtype):
    shape = "x".join(str(d) for d in dims) or "scalar"
    return f"{shape} {dtype.newbyteorder('=').name}"


def _read_bytes(path):
    """The file's bytes, gunzipped if it starts with the gzip magic.

    A gzip stream is expanded only as far as its IDX header says the file
    reaches, plus one byte to notice trailing data, so a small file that
    inflates to gigabytes (a decompression bomb) costs no more memory than
    the array it claims to hold.
    """
    with open(path, "rb") as f:
        raw = f.read()
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return _gunzip_idx(raw, path)
    except (EOFError, OSError, zlib.error) as e:
        # EOFError: the gzip stream stops early (a partial download).
        raise IdxError(f"{path}: corrupt or truncated gzip data ({type(e).__name__}: {e})") from e


def _gunzip_idx(raw, name):
    """Decompress ``raw`` up to the length its IDX header implies, plus one byte.

    A header declaring more than deflate can expand ``raw`` to is refused
    before the data are inflated.  Other problems (too short, a trailing
    byte, a bad header) are left for :func:`parse_idx` to name; only the size
    of the expansion is decided here.
    """
    out = bytearray()
    with gzip.GzipFile(fileobj=io.BytesIO(raw)) as g:
        _read_into(out, g, 4)
        if len(out) < 4 or out[:2] != b"\0\0" or out[2] not in IDX_DTYPES:
            return bytes(out)  # parse_idx names the problem
        if _read_into(out, g, 4 * out[3]):
            dims = [int.from_bytes(out[i:i + 4], "big") for i in range(4, len(out), 4)]
            dtype = IDX_DTYPES[out[2]]
            payload = math.prod(dims) * dtype.itemsize
            if len(out) + payload > _MAX_EXPANSION * len(raw):
                raise IdxError(f"{name}: the header declares {_describe(dims, dtype)} "
                               f"({len(out) + payload} bytes), more than the {len(raw)} bytes "
                               f"of gzip data can expand to (at most {_MAX_EXPANSION} times "
                               f"as many); truncated or crafted file")
            _read_into(out, g, payload + 1)
    return out


def _read_into(out, f, n):
    """Append up to ``n`` bytes of ``f`` to ``out``; False if the stream ended first."""
    while n > 0:
        # Bounded reads: one read(n) of a hostile n would allocate n bytes up front.
        chunk = f.read(min(n, 1 << 24))
        if not chunk:
            return False
        out += chunk
        n -= len(chunk)
    return True


def parse_idx(data, name="<bytes>"):
    """Parse the bytes of an (uncompressed) IDX file into a native-endian array.

    ``name`` is only used in error messages.
    """
    if len(data) < 4:
        raise IdxError(f"{name}: {len(data)} bytes is too short for an IDX header "
                       f"(needs at least 4)")
    zero0, zero1, code, ndim = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0:
        raise IdxError(f"{name}: not an IDX file: magic number starts with bytes "
                       f"{data[:4].hex(' ')}, expected 00 00 <type> <ndim>")
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X} ({d.newbyteorder('=').name})" for c, d in IDX_DTYPES.items())
        raise IdxError(f"{name}: unknown IDX type code 0x{code:02X}; expected one of {known}")
    dtype = IDX_DTYPES[code]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxError(f"{name}: header says {ndim} dimensions, which needs {header} "
                       f"header bytes, but the file has only {len(data)} bytes")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + math.prod(dims) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise IdxError(f"{name}: {what}: expected {expected} bytes for "
                       f"{_describe(dims, dtype)}, got {len(data)}")
    try:
        values = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    except (ValueError, MemoryError) as e:
        # Reachable with more dimensions than NumPy allows (64; 32 before NumPy
        # 2), or with a zero dimension beside huge ones (the length check
        # passes with 0 bytes): NumPy says which.
        raise IdxError(f"{name}: dimensions {'x'.join(map(str, dims))} cannot be "
                       f"represented as a NumPy array ({e}); expected dimensions of a "
                       f"real data set") from None
    # astype copies into native byte order and gives a writable array
    # (frombuffer over ``bytes`` is read-only).
    return values.astype(dtype.newbyteorder("="))


def read_idx(path):
    """Read an IDX file (gzipped or not) into a NumPy array.

    The magic number, type code, dimensions and total length are all
    checked; any problem raises :class:`IdxError` naming the file and what
    is wrong, e.g. ``expected 47040016 bytes for 60000x28x28 uint8, got 1000``.
    A gzipped file is decompressed only up to the size its header declares
    (plus one byte, to detect trailing data), however far it would expand.
    """
    path = Path(path)
    return parse_idx(_read_bytes(path), str(path))


def write_idx(path, array, compress=None):
    """Write ``array`` as an IDX file, atomically.

    ``compress`` (default: whether ``path`` ends in ``.gz``) gzips the file.
    Supported dtypes: uint8, int8, int16, int32, float32, float64.
    """
    array = np.asarray(array)
    code = _CODE_OF.get(array.dtype.newbyteorder("="))
    if code is None:
        raise TypeError(f"write_idx: dtype {array.dtype} has no IDX type code; expected "
                        f"one of uint8, int8, int16, int32, float32, float64")
    if array.ndim > 255:
        raise ValueError(f"write_idx: IDX supports at most 255 dimensions, got {array.ndim}")
    path = Path(path)
    if compress is None:
        compress = path.suffix == ".gz"
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    data = header + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    if compress:
        # mtime=0 makes the bytes (and so their checksum) reproducible.
        data = gzip.compress(data, mtime=0)
    return atomic_write(path, data)
