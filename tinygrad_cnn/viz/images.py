"""Pictures of what a CNN learned: first-layer filters and feature maps.

* :func:`filter_grid` tiles convolution kernels ``(OC, C, KH, KW)`` into
  one uint8 image; :func:`save_filters` writes it for a model's first
  convolution.
* :func:`feature_maps` runs one input through a model and returns the
  output of every convolution layer; :func:`save_feature_maps` draws them,
  one block of channels per layer.

With matplotlib installed the pictures get a colour map and titles;
without it (or with ``use_matplotlib=False``) a grayscale PNG is written
by :mod:`tinygrad_cnn.viz.png`.
"""
from __future__ import annotations

import io
import math
import numbers
import warnings
from collections import namedtuple
from pathlib import Path

import numpy as np

from ..autograd import no_grad
from ..tensor import Tensor, tensor as make_tensor
from .graph import record_modules
from .png import MAX_PIXELS, atomic_write, write_png

__all__ = ["CONV_LAYERS", "FeatureMaps", "filter_grid", "save_filters", "first_conv_weight",
           "feature_maps", "feature_map_image", "save_feature_maps"]

CONV_LAYERS = ("Conv2d", "LocallyConnected2d")  # layer class names whose outputs are drawn

FeatureMaps = namedtuple("FeatureMaps", "name layer maps")
FeatureMaps.__doc__ = """One layer's output for one input: ``maps`` is a host array (C, H, W)."""


# ---- small image helpers -----------------------------------------------------------
def _host(a):
    """A host float64 NumPy copy of a Tensor or array."""
    if isinstance(a, Tensor):
        return a.numpy().astype(np.float64)
    if hasattr(a, "get") and not isinstance(a, np.ndarray):  # a CuPy array
        a = a.get()
    return np.asarray(a, dtype=np.float64)


def _warn_non_finite(a, what):
    """Warn if ``a`` holds NaN or infinity: a diverged model, not a constant kernel."""
    bad = a.size - int(np.count_nonzero(np.isfinite(a)))
    if bad:
        warnings.warn(f"{what} holds {bad} non-finite value(s) (NaN or infinity) of {a.size}; "
                      f"they are drawn black, the rest scaled over the finite values "
                      f"(did training diverge?)", RuntimeWarning, stacklevel=3)


def _to_uint8(a, axes, what="the image"):
    """Scale ``a`` to 0..255 with min and max taken over ``axes`` (a flat slice -> 128).

    Only finite values set the range; NaN and infinity become 0 (black),
    with a warning naming ``what``.
    """
    _warn_non_finite(a, what)
    finite = np.isfinite(a)
    a = np.where(finite, a, 0.0)
    lo = np.where(finite, a, np.inf).min(axis=axes, keepdims=True)
    hi = np.where(finite, a, -np.inf).max(axis=axes, keepdims=True)
    flat = ~(hi > lo)  # constant, or no finite value at all
    lo, hi = np.where(flat, 0.0, lo), np.where(flat, 1.0, hi)
    # Halved, since hi - lo overflows for values near the float limits.  Two
    # neighbouring subnormals can still give 0/0; nan_to_num covers that.
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = np.where(flat, 0.5, (a / 2 - lo / 2) / (hi / 2 - lo / 2))
    scaled = np.where(finite, np.nan_to_num(np.clip(scaled, 0.0, 1.0)), 0.0)
    return np.round(scaled * 255).astype(np.uint8)


def _upscale(img, k):
    """Each pixel becomes a k x k block (nearest neighbour)."""
    return img if k == 1 else np.repeat(np.repeat(img, k, axis=0), k, axis=1)


def _tile(tiles, ncols, pad, background):
    """Arrange equally sized tiles (n, h, w[, 3]) in a grid with ``pad`` pixels between."""
    n, h, w = tiles.shape[:3]
    nrows = -(-n // ncols)
    shape = (nrows * (h + pad) - pad, ncols * (w + pad) - pad) + tiles.shape[3:]
    grid = np.full(shape, background, tiles.dtype)
    for i in range(n):
        r, c = divmod(i, ncols)
        grid[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = tiles[i]
    return grid


def _stack(blocks, gap, background):
    """Stack images of different widths vertically, left-aligned, ``gap`` rows apart."""
    width = max(b.shape[1] for b in blocks)
    rows = []
    for i, b in enumerate(blocks):
        if i:
            rows.append(np.full((gap, width) + b.shape[2:], background, np.uint8))
        rows.append(np.pad(b, ((0, 0), (0, width - b.shape[1])) + ((0, 0),) * (b.ndim - 2),
                           constant_values=background))
    return np.concatenate(rows, axis=0)


def _png_path(path, caller):
    """``path``, checked to name a PNG file: every picture here is written as PNG,
    and a file called ``.jpg`` or ``.svg`` holding PNG bytes would lie about its
    content."""
    if Path(path).suffix.lower() != ".png":
        raise ValueError(f"{caller}: pictures are written as PNG; give a file name ending "
                         f"in .png, got {str(path)!r}")
    return path


def _whole(value, name, caller, low=1):
    """``value`` if it is an integer >= ``low``; else a TypeError (not an integer: a
    float, a bool) or a ValueError (too small) naming ``name``."""
    message = f"{caller}: {name} must be an integer >= {low}, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(message)
    if value < low:
        raise ValueError(message)
    return int(value)


def _want_matplotlib(use_matplotlib):
    """True to draw with matplotlib: if asked, or (``None``) if it is installed."""
    if use_matplotlib is False:
        return False
    try:
        import matplotlib.figure  # noqa: F401  (the only part used)
    except ImportError:
        if use_matplotlib:
            raise ImportError("use_matplotlib=True but matplotlib is not installed; "
                              "pip install matplotlib") from None
        return False
    return True


def _save_figure(fig, path):
    """Render a matplotlib Figure to PNG bytes and write them atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return atomic_write(path, buf.getvalue())


# ---- filters -------------------------------------------------------------------------
def filter_grid(weight, scale=None, pad=2, rgb=None, background=0):
    """Tile convolution kernels ``(OC, C, KH, KW)`` into one uint8 image.

    Each kernel is scaled to 0..255 by its own minimum and maximum (over
    all its input channels), then enlarged ``scale`` times (default: about
    24 pixels per kernel side).  NaN and infinity are left out of the range
    and drawn black, with a ``RuntimeWarning``.  With 3 input channels (``rgb=None`` or
    True) each kernel is one colour tile, ``(H, W, 3)``; with one, a gray
    tile; both in a near-square grid.  Otherwise each output channel is a
    row of ``C`` gray tiles.  ``pad`` pixels of ``background`` separate tiles.
    """
    w = _host(weight)
    if w.ndim != 4:
        raise ValueError(f"filter_grid needs convolution weights of shape (OC, C, KH, KW), "
                         f"got shape {w.shape}")
    oc, c, kh, kw = w.shape
    if w.size == 0:
        raise ValueError(f"filter_grid: the weight of shape {w.shape} is empty")
    rgb = (c == 3) if rgb is None else rgb
    if rgb and c != 3:
        raise ValueError(f"rgb=True needs 3 input channels, the weight has {c} (shape {w.shape})")
    # A whole number of pixels per weight (2.5 is refused, not drawn at 2).
    scale = (max(1, math.ceil(24 / max(kh, kw))) if scale is None
             else _whole(scale, "scale", "filter_grid"))
    pad = _whole(pad, "pad", "filter_grid", low=0)
    n_tiles, ncols = (oc, math.ceil(math.sqrt(oc))) if rgb or c == 1 else (oc * c, c)
    nrows = -(-n_tiles // ncols)
    height, width = nrows * (kh * scale + pad) - pad, ncols * (kw * scale + pad) - pad
    if height * width > MAX_PIXELS:
        # A deep layer's weight at the default scale: gigabytes of picture, no use to the eye.
        raise ValueError(f"filter_grid: {n_tiles} tile(s) of {kh * scale}x{kw * scale} pixels "
                         f"(the weight {w.shape} at scale {scale}) make a picture of "
                         f"{height}x{width} pixels, more than the {MAX_PIXELS} allowed; draw "
                         f"fewer kernels (weight[:16]) or pass a smaller scale")
    kernels = _to_uint8(w, axes=(1, 2, 3), what=f"the weight {w.shape}")  # own range each
    if rgb:
        tiles = kernels.transpose(0, 2, 3, 1)  # (OC, KH, KW, 3)
    elif c == 1:
        tiles = kernels[:, 0]  # (OC, KH, KW)
    else:
        tiles = kernels.reshape(oc * c, kh, kw)  # (OC*C, KH, KW): a row of C per kernel
    tiles = np.stack([_upscale(t, scale) for t in tiles])  # (n, KH*scale, KW*scale[, 3])
    return _tile(tiles, ncols, pad, background)


def first_conv_weight(model):
    """``(name, weight)`` of the first 4-D parameter named ``weight`` or ``*.weight``."""
    for name, p in model.named_parameters():
        if (name == "weight" or name.endswith(".weight")) and p.ndim == 4:
            return name, p
    raise ValueError(f"{type(model).__name__} has no 4-D parameter named '*.weight' "
                     f"(no convolution layer); pass the weight itself instead")


def save_filters(model_or_weight, path, scale=None, use_matplotlib=None):
    """Draw the first convolution's kernels (see :func:`filter_grid`) into a PNG file.

    ``model_or_weight``: a model (its first 4-D ``*.weight`` parameter in
    ``named_parameters()`` order is used) or a weight of shape
    ``(OC, C, KH, KW)``.  ``path`` must end in ``.png``.  Returns the path written.
    """
    _png_path(path, "save_filters")
    if hasattr(model_or_weight, "named_parameters"):
        name, weight = first_conv_weight(model_or_weight)
    else:
        name, weight = "weight", model_or_weight
    weight = _host(weight)
    grid = filter_grid(weight, scale=scale)
    if not _want_matplotlib(use_matplotlib):
        return write_png(path, grid)
    from matplotlib.figure import Figure
    # The same grid as RGBA with transparent padding, so the gaps between
    # tiles show the (blue) axes colour instead of blending with dark pixels.
    opaque = filter_grid(np.ones(weight.shape), scale=scale, background=0) > 0
    if opaque.ndim == 3:
        opaque = opaque.all(axis=2)
    rgb = grid if grid.ndim == 3 else np.repeat(grid[:, :, None], 3, axis=2)
    rgba = np.concatenate([rgb, opaque[:, :, None].astype(np.uint8) * 255], axis=2)  # (H, W, 4)
    h, w = grid.shape[:2]
    # About 1.7 figure pixels per grid pixel, so that no gap is lost in resampling;
    # at most 40 inches (4000 pixels) a side, which a large grid would make gigabytes.
    fig = Figure(figsize=(min(40.0, max(3.0, w / 60)), min(40.0, max(3.0, h / 60)) + 0.4))
    ax = fig.add_subplot()
    ax.imshow(rgba, interpolation="nearest")
    ax.set_facecolor("#3d6b99")
    ax.set_xticks([])
    ax.set_yticks([])
    shape = "x".join(map(str, weight.shape))
    ax.set_title(f"{name} {shape}\n(each kernel scaled to its own min..max)", fontsize=9)
    return _save_figure(fig, path)


# ---- feature maps ----------------------------------------------------------------------
def _as_batch(model, x):
    """One example as a (1, C, H, W) tensor on the model's device."""
    if not isinstance(x, Tensor):
        params = list(model.parameters()) if hasattr(model, "parameters") else []
        like = params[0] if params else None  # the model's device and dtype
        x = make_tensor(np.asarray(x), dtype=like.dtype if like is not None else "float32",
                        device=like.device if like is not None else None)
    if x.ndim == 2:
        return x.reshape(1, 1, *x.shape)
    if x.ndim == 3:
        return x.reshape(1, *x.shape)
    if x.ndim == 4:
        return x[:1]
    raise ValueError(f"feature_maps needs one image of shape (H, W) or (C, H, W), or a "
                     f"batch (N, C, H, W), got shape {x.shape}")


def feature_maps(model, x, layer_types=CONV_LAYERS):
    """The output of every convolution layer of ``model`` for one input ``x``.

    ``x``: an image ``(H, W)`` or ``(C, H, W)``, or a batch whose first
    example is used.  Layers are found by class name (``layer_types``)
    while ``model(x)`` runs, in eval mode and without a graph (the model's
    train/eval mode is restored afterwards).  Returns a list of
    :class:`FeatureMaps` ``(name, layer class, maps (C, H, W))`` in the
    order the layers ran.
    """
    batch = _as_batch(model, x)
    was_training = getattr(model, "training", None)
    if was_training is not None and hasattr(model, "eval"):
        model.eval()
    try:
        with record_modules(model) as rec, no_grad():
            model(batch)
    finally:
        if was_training is not None and hasattr(model, "train"):
            model.train(was_training)
    found = []
    for path, module, _, outputs in rec.calls:
        kind = type(module).__name__
        if kind in layer_types and outputs and outputs[0].ndim == 4:
            found.append(FeatureMaps(path, kind, _host(outputs[0])[0]))
    if not found:
        ran = sorted({type(m).__name__ for _, m, _, _ in rec.calls})
        raise ValueError(f"no layer of type {', '.join(layer_types)} ran in "
                         f"{type(model).__name__}(x); the layers that ran: "
                         f"{', '.join(ran) or 'none'}")
    return found


def feature_map_image(maps, max_channels=16, columns=8, size=48, pad=3, gap=12,
                      background=255, image=None):
    """One grayscale uint8 image of feature maps: a block of channels per layer.

    ``maps`` is what :func:`feature_maps` returns.  Each channel is scaled
    to the range of its finite values (NaN and infinity are drawn black, with a
    ``RuntimeWarning``) and enlarged by an integer factor to about ``size``
    pixels; at most ``max_channels`` per layer, ``columns`` per row.  The
    input ``image`` ``(C, H, W)`` or ``(H, W)``, if given, forms the first block.
    """
    for name, value in (("max_channels", max_channels), ("columns", columns), ("size", size)):
        _whole(value, name, "feature_map_image")
    blocks = []
    if image is not None:
        img = _host(image)
        img = img.reshape(-1, *img.shape[-2:])[:1]  # (1, H, W): its first channel
        scaled = _to_uint8(img, (1, 2), what="the input image")[0]
        blocks.append(_upscale(scaled, max(1, round(size / img.shape[1]))))
    for fm in maps:
        m = fm.maps[:max_channels]  # (C', H, W)
        k = max(1, round(size / m.shape[1]))
        scaled = _to_uint8(m, (1, 2), what=f"the output of {fm.name} ({fm.layer})")
        tiles = np.stack([_upscale(t, k) for t in scaled])
        blocks.append(_tile(tiles, min(columns, len(tiles)), pad, background))
    return _stack(blocks, gap, background)


def save_feature_maps(model, x, path, max_channels=16, use_matplotlib=None,
                      layer_types=CONV_LAYERS):
    """Draw every convolution layer's output for input ``x`` into one PNG file.

    The input comes first, then one row (or block) per layer with its first
    ``max_channels`` channels (all of them if it has fewer), each scaled to
    its own range; with matplotlib, a row's title gives the layer's output
    shape and, for a layer with more channels, how many of them are drawn
    ("first 16 of 32 maps").  ``path`` must end in ``.png``.  Returns the path written.
    """
    _png_path(path, "save_feature_maps")
    _whole(max_channels, "max_channels", "save_feature_maps")
    maps = feature_maps(model, x, layer_types)
    image = _host(_as_batch(model, x))[0]  # (C, H, W)
    if not _want_matplotlib(use_matplotlib):
        return write_png(path, feature_map_image(maps, max_channels, image=image))
    from matplotlib.figure import Figure
    cols = max(min(max_channels, fm.maps.shape[0]) for fm in maps)
    rows = 1 + len(maps)
    fig = Figure(figsize=(1.1 * cols + 0.4, 1.3 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    # An RGB input is shown in colour, any other by its first channel.
    first = image.transpose(1, 2, 0) if image.shape[0] == 3 else image[0]  # (H, W[, 3])
    axes[0, 0].imshow(_to_uint8(first, None, what="the input image"), cmap="gray",
                      interpolation="nearest")
    axes[0, 0].set_title("input " + "x".join(map(str, image.shape)), fontsize=8, loc="left")
    # matplotlib masks NaN and infinity and scales over the rest; "bad"
    # pixels are drawn black, as in the grayscale picture.
    import matplotlib
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="black")
    for r, fm in enumerate(maps, 1):
        _warn_non_finite(fm.maps[:cols], f"the output of {fm.name} ({fm.layer})")
        for c, channel in enumerate(fm.maps[:cols]):
            axes[r, c].imshow(channel, cmap=cmap, interpolation="nearest")
        c, h, w = fm.maps.shape
        shown = min(cols, c)   # say when the row is not the whole layer
        part = f": first {shown} of {c} maps" if shown < c else ""
        axes[r, 0].set_title(f"{fm.name} ({fm.layer}) {c}x{h}x{w}{part}", fontsize=8,
                             loc="left")
    return _save_figure(fig, path)
