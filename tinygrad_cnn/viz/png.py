"""A small PNG writer and reader with no dependency beyond NumPy and zlib.

A PNG file is an 8-byte signature followed by chunks, each
``length | type | data | crc32(type + data)``.  The image lives in the
``IDAT`` chunks as one zlib stream of rows; every row starts with a
*filter* byte that says how the row was predicted from its left and upper
neighbours (0 none, 1 Sub, 2 Up, 3 Average, 4 Paeth).

* :func:`write_png` writes uint8 grayscale ``(H, W)``, gray+alpha
  ``(H, W, 2)``, RGB ``(H, W, 3)`` or RGBA ``(H, W, 4)`` arrays, atomically.
* :func:`read_png` reads non-interlaced PNGs: grayscale, RGB, palette,
  with or without alpha, bit depths 1-16 (16-bit samples are reduced to
  8 bits), all five filter types.  It is written for the small images a
  user hands to ``predict``; a multi-megapixel image with many Paeth rows
  takes seconds, since those rows are undone one byte at a time.
* :func:`to_grey` turns those pixel layouts into grey on any scale: the one
  rule for colour and transparency, shared by PNGs and ``.npy`` images.
"""
from __future__ import annotations

import struct
import zlib
from collections import namedtuple

import numpy as np

from ..fileio import atomic_write

SIGNATURE = b"\x89PNG\r\n\x1a\n"

# colour type -> samples per pixel
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_COLOR_TYPE_OF_CHANNELS = {1: 0, 2: 4, 3: 2, 4: 6}
_ALLOWED_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}

# PNG limits width and height to 2**31 - 1.  MAX_PIXELS bounds the images
# read_png accepts: a file of a few kilobytes can declare, and hold, an image
# of billions of pixels (a decompression bomb), and decoding takes several
# bytes per pixel (float64 ones, converting to grey).  2**24 pixels is a
# 4096 x 4096 image, more than a 12-megapixel photo.
_MAX_SIDE = 2**31 - 1
MAX_PIXELS = 2**24

PngHeader = namedtuple("PngHeader", "width height bit_depth color_type interlace")


class PngError(ValueError):
    """A file that is not a PNG this reader understands, or is damaged."""


# ---- writing --------------------------------------------------------------------
def _chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def encode_png(array):
    """The bytes of a PNG file holding a uint8 image array (see :func:`write_png`)."""
    a = np.asarray(array)
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    if a.dtype != np.uint8:
        raise TypeError(f"write_png needs a uint8 array, got dtype {a.dtype}; scale and "
                        f"convert first, e.g. (a * 255).round().clip(0, 255).astype(np.uint8)")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (2, 3, 4)):
        raise ValueError(f"write_png needs an image of shape (H, W), (H, W, 2), (H, W, 3) "
                         f"or (H, W, 4), got {a.shape}")
    h, w = a.shape[:2]
    if h == 0 or w == 0:
        raise ValueError(f"write_png: an image needs at least one pixel, got shape {a.shape}")
    channels = 1 if a.ndim == 2 else a.shape[2]
    header = struct.pack(">IIBBBBB", w, h, 8, _COLOR_TYPE_OF_CHANNELS[channels], 0, 0, 0)
    rows = np.ascontiguousarray(a).reshape(h, w * channels)  # (H, W*channels)
    # Filter type 0 (none) on every row: simplest, and zlib still compresses
    # the flat regions of plots and tiles well.
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1)  # (H, 1 + W*channels)
    return (SIGNATURE + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) + _chunk(b"IEND", b""))


def write_png(path, array):
    """Write a uint8 image to ``path`` as a PNG, atomically; returns the path.

    ``array``: ``(H, W)`` grayscale, ``(H, W, 2)`` gray+alpha, ``(H, W, 3)``
    RGB or ``(H, W, 4)`` RGBA, dtype uint8 (bool is taken as 0/255).
    """
    return atomic_write(path, encode_png(array))


# ---- reading --------------------------------------------------------------------
def _chunks(data, where):
    if data[:8] != SIGNATURE:
        raise PngError(f"{where} is not a PNG file (its first bytes are {data[:8]!r})")
    pos = 8
    while pos < len(data):
        if pos + 8 > len(data):
            raise PngError(f"{where} is truncated inside a chunk header at byte {pos}")
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body_end = pos + 8 + length
        if body_end + 4 > len(data):
            raise PngError(f"{where} is truncated: chunk {kind!r} at byte {pos} needs "
                           f"{length} bytes")
        body = data[pos + 4:body_end]
        (crc,) = struct.unpack(">I", data[body_end:body_end + 4])
        if zlib.crc32(body) != crc:
            raise PngError(f"{where} is damaged: chunk {kind!r} at byte {pos} fails its CRC check")
        yield kind, body[4:]
        if kind == b"IEND":
            return
        pos = body_end + 4
    raise PngError(f"{where} is truncated: it has no IEND chunk")


def _parse_header(body, where):
    if len(body) != 13:
        raise PngError(f"{where}: IHDR chunk has {len(body)} bytes, expected 13")
    w, h, depth, ctype, compression, filt, interlace = struct.unpack(">IIBBBBB", body)
    if not (1 <= w <= _MAX_SIDE and 1 <= h <= _MAX_SIDE):
        raise PngError(f"{where}: IHDR says {w}x{h} pixels; width and height must be "
                       f"between 1 and {_MAX_SIDE}")
    if ctype not in _CHANNELS or depth not in _ALLOWED_DEPTHS[ctype]:
        raise PngError(f"{where}: colour type {ctype} with bit depth {depth} is not valid PNG")
    if compression != 0 or filt != 0:
        raise PngError(f"{where}: unknown compression/filter method {compression}/{filt}")
    return PngHeader(w, h, depth, ctype, interlace)


def read_png_header(path):
    """The ``PngHeader(width, height, bit_depth, color_type, interlace)`` of a PNG file."""
    with open(path, "rb") as f:
        data = f.read(33)  # the signature and the IHDR chunk, which must come first
    if len(data) < 33 or data[:8] != SIGNATURE or data[12:16] != b"IHDR":
        raise PngError(f"{path} is not a PNG file, or does not start with an IHDR chunk")
    _, body = next(_chunks(data, str(path)))
    return _parse_header(body, str(path))


def read_png_size(path):
    """``(height, width)`` of a PNG file, from its header alone."""
    header = read_png_header(path)
    return header.height, header.width


def _unfilter(raw, height, stride, bpp, where):
    """Undo the per-row filters; returns ``(height, stride)`` uint8 rows.

    ``bpp`` is the number of bytes per complete pixel (at least 1): the
    "left" neighbour of a byte is the byte ``bpp`` positions earlier.
    """
    if len(raw) < height * (stride + 1):
        raise PngError(f"{where}: image data is too short ({len(raw)} bytes for "
                       f"{height} rows of {stride + 1})")
    rows = np.frombuffer(raw, np.uint8, height * (stride + 1)).reshape(height, stride + 1)
    out = np.zeros((height, stride), np.uint8)
    prev = np.zeros(stride, np.uint8)
    for y in range(height):
        kind, line = rows[y, 0], rows[y, 1:]
        if kind == 0:    # None
            cur = line.copy()
        elif kind == 1:  # Sub: x + left, a running sum (mod 256) over each byte of a pixel
            cur = np.cumsum(line.reshape(-1, bpp), axis=0, dtype=np.uint8).ravel()
        elif kind == 2:  # Up: x + above
            cur = line + prev
        elif kind in (3, 4):  # Average / Paeth depend on the left result: byte by byte
            cur = _unfilter_sequential(kind, line.tolist(), prev.tolist(), bpp)
        else:
            raise PngError(f"{where}: row {y} has unknown filter type {kind}")
        out[y] = cur
        prev = out[y]
    return out


def _unfilter_sequential(kind, line, prev, bpp):
    cur = bytearray(len(line))
    for i, x in enumerate(line):
        a = cur[i - bpp] if i >= bpp else 0
        b = prev[i]
        if kind == 3:
            cur[i] = (x + ((a + b) >> 1)) & 0xFF
        else:
            c = prev[i - bpp] if i >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            cur[i] = (x + pred) & 0xFF
    return np.frombuffer(bytes(cur), np.uint8)


def _inflate(data, needed, where):
    """Decompress the IDAT stream, which must hold exactly ``needed`` bytes.

    Asking zlib for at most ``needed + 1`` bytes bounds the memory by what
    the header declares however far the data would expand (a decompression
    bomb), and the one extra byte tells surplus data apart.
    """
    d = zlib.decompressobj()
    try:
        raw = d.decompress(data, needed + 1)
    except zlib.error as e:
        raise PngError(f"{where}: image data does not decompress ({e})") from None
    if len(raw) > needed:
        raise PngError(f"{where}: image data holds more than the {needed} bytes its "
                       f"header declares (damaged or crafted file)")
    if len(raw) < needed:
        raise PngError(f"{where}: image data is too short ({len(raw)} bytes for "
                       f"{needed} declared by the header)")
    if not d.eof:
        raise PngError(f"{where}: image data does not decompress (incomplete or "
                       f"truncated stream)")
    return raw


def read_png(path, mode=None, background=255):
    """Read a PNG file into a uint8 array.

    Returns ``(H, W)`` for grayscale, ``(H, W, 2)`` gray+alpha, ``(H, W, 3)``
    RGB or ``(H, W, 4)`` RGBA, as stored (palette images are expanded to RGB,
    or RGBA when they have transparency).  ``mode="L"`` converts to
    grayscale and ``mode="RGB"`` to RGB; both drop alpha by blending onto a
    ``background`` gray level (255: white, as a page shows it).  A
    transparent colour key (``tRNS``) of a gray or RGB image is ignored.
    Interlaced PNGs are refused with a clear error, as are images of more
    than :data:`MAX_PIXELS` pixels (4096 x 4096; checked before decompressing),
    a second IHDR or PLTE chunk, and image data longer or shorter than the
    header declares.
    """
    if mode not in (None, "L", "RGB"):
        raise ValueError(f"read_png: mode must be None, 'L' or 'RGB', got {mode!r}")
    where = str(path)
    with open(path, "rb") as f:
        data = f.read()
    header, palette, trns, idat = None, None, None, []
    for kind, body in _chunks(data, where):
        if kind == b"IHDR" and header is None:
            header = _parse_header(body, where)
        elif header is None:
            raise PngError(f"{where}: the first chunk is {kind!r}, not IHDR")
        elif kind == b"IHDR" or (kind == b"PLTE" and palette is not None):
            # read_png_header reads the first: a second one could describe
            # another image than the one decoded.
            raise PngError(f"{where} has a second {kind.decode()} chunk; a PNG has one at most")
        elif kind == b"PLTE":
            if len(body) % 3 or not 1 <= len(body) // 3 <= 256:
                raise PngError(f"{where}: PLTE chunk has {len(body)} bytes; expected a "
                               f"multiple of 3 (RGB entries), 1 to 256 entries")
            palette = np.frombuffer(body, np.uint8).reshape(-1, 3)
        elif kind == b"tRNS":
            trns = body
        elif kind == b"IDAT":
            idat.append(body)
    if header is None or not idat:
        raise PngError(f"{where} has no {'IHDR' if header is None else 'IDAT'} chunk")
    if header.interlace:
        raise PngError(f"{where} is an interlaced (Adam7) PNG, which this reader does not "
                       f"support; save it again without interlacing")
    w, h, depth, ctype = header.width, header.height, header.bit_depth, header.color_type
    if w * h > MAX_PIXELS:
        raise PngError(f"{where}: IHDR says {w}x{h} pixels ({w * h}), more than the "
                       f"{MAX_PIXELS} read_png accepts; scale the image down")
    channels = _CHANNELS[ctype]
    bits = depth * channels
    stride = -(-w * bits // 8)  # bytes per row, rounded up
    needed = h * (stride + 1)  # a filter byte per row
    raw = _inflate(b"".join(idat), needed, where)
    rows = _unfilter(raw, h, stride, max(1, bits // 8), where)  # (H, stride)

    if depth == 16:
        samples = rows.reshape(h, w * channels, 2)[:, :, 0]  # keep the high byte
    elif depth == 8:
        samples = rows
    else:  # 1, 2 or 4 bits: unpack, then read groups of `depth` bits as integers
        bitplane = np.unpackbits(rows, axis=1)[:, :w * depth].reshape(h, w, depth)
        samples = (bitplane * (1 << np.arange(depth - 1, -1, -1))).sum(-1).astype(np.uint8)
        if ctype == 0:  # scale gray levels up to 0..255
            samples = (samples * (255 // ((1 << depth) - 1))).astype(np.uint8)
    image = samples.reshape(h, w, channels)

    if ctype == 3:
        if palette is None:
            raise PngError(f"{where}: palette image without a PLTE chunk")
        index = image[:, :, 0]
        if index.max(initial=0) >= len(palette):
            raise PngError(f"{where}: pixel refers to palette entry {int(index.max())} of "
                           f"{len(palette)}")
        image = palette[index]
        if trns is not None:
            alpha = np.full(len(palette), 255, np.uint8)
            alpha[:len(trns)] = np.frombuffer(trns, np.uint8)[:len(palette)]
            image = np.concatenate([image, alpha[index][:, :, None]], axis=2)
    image = image[:, :, 0] if image.shape[2] == 1 else image
    return image if mode is None else _convert(image, mode, background)


def _flatten(image, background, white):
    """``image`` as float64 (H, W, 1) grey or (H, W, 3) RGB, any alpha channel
    blended onto the grey level ``background`` (all on a 0..``white`` scale)."""
    img = np.asarray(image, np.float64)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] in (2, 4):  # has alpha
        alpha = img[:, :, -1:] / white
        img = img[:, :, :-1] * alpha + background * (1.0 - alpha)
    return img


def to_grey(image, background=255, white=255):
    """A grey float64 (H, W) image from the samples of a PNG's pixel layouts.

    ``image``: ``(H, W)`` grey, ``(H, W, 2)`` grey+alpha, ``(H, W, 3)`` RGB or
    ``(H, W, 4)`` RGBA, on a 0..``white`` scale (255 for 8-bit samples, 1 for
    an image already in [0, 1]).  Alpha is blended onto the grey level
    ``background`` (same scale); RGB becomes ITU-R BT.601 luma, the usual
    weights.  No rounding: the result is on the same scale.  ``read_png``'s
    ``mode="L"`` is this, rounded to uint8.
    """
    img = np.asarray(image)
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (1, 2, 3, 4))):
        raise ValueError(f"to_grey: expected (H, W) or (H, W, C) with C = 1, 2, 3 or 4 "
                         f"channels, got shape {img.shape}")
    img = _flatten(img, background, white)
    return img[:, :, 0] if img.shape[2] == 1 else img @ np.array([0.299, 0.587, 0.114])


def _convert(image, mode, background):
    """Grayscale or RGB, with any alpha channel blended onto ``background``."""
    if mode == "L":
        img = to_grey(image, background)
    else:
        img = _flatten(image, background, 255.0)
        if img.shape[2] == 1:
            img = np.repeat(img, 3, axis=2)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)
