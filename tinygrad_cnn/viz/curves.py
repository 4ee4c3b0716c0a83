"""Training curves from a metrics file: loss and accuracy per epoch.

The metrics file has one JSON object per line (JSON lines), e.g.::

    {"epoch": 1, "train_loss": 0.91, "train_acc": 0.71, "test_loss": 0.42, "test_acc": 0.88}

Every key ending in ``loss`` goes to the loss panel and every key ending
in ``acc`` or ``accuracy`` to the accuracy panel, labelled by what comes
before (``train``, ``test``, ``val``...).  Missing keys, non-numeric values
and numbers that are not finite floats (NaN, infinity, integers too large
for a float) are skipped; a line without ``epoch`` counts as the next epoch.

With matplotlib installed :func:`plot_curves` draws a proper figure;
without it (or with ``use_matplotlib=False``) it draws a plain RGB line
plot itself, with a tiny built-in font for titles, legend and axis ends,
and writes it with :mod:`tinygrad_cnn.viz.png`.
"""
from __future__ import annotations

import json
import math
import numbers
import os
import stat
import sys
import warnings
from pathlib import Path

import numpy as np

from .images import _save_figure, _want_matplotlib, _png_path
from .png import write_png

__all__ = ["read_metrics", "metric_series", "plot_curves", "curves_image"]

_COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75)]


def read_metrics(path):
    """The JSON objects of a JSON-lines file, one per non-empty line.

    An unfinished last line (no line break after it: a writer interrupted
    mid-line) that is not valid JSON is skipped with a warning; any other
    bad line, the last one included when it is finished, is an error naming
    it.  A device (``/dev/zero``, a terminal) is refused: reading it may never
    end.  A pipe is read to its end.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        mode = None   # reported by the read below, as open() words it
    if mode is not None and (stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISSOCK(mode)):
        raise ValueError(f"{path}: not a metrics file (a device or socket, not a file "
                         f"written by 'tinygrad-cnn train --metrics')")
    try:
        # utf-8-sig: a byte-order mark, as some editors write, is no JSON.
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a metrics file (JSON lines of text; this file is "
                         f"binary, a checkpoint perhaps?)") from None
    lines = text.splitlines()
    # A last line with a line break after it was written whole.
    unfinished = len(lines) if lines and lines[-1].strip() and \
        not text.endswith(("\n", "\r")) else 0
    records = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line, parse_int=_parse_int)
        except json.JSONDecodeError as e:
            if i == unfinished:
                warnings.warn(f"{path}: skipping the unfinished last line {i} (not valid "
                              f"JSON, and no line break at its end: a write cut short?)",
                              stacklevel=2)
                continue
            raise ValueError(f"{path}, line {i}: not valid JSON ({e.msg})") from None
        except RecursionError:
            raise ValueError(f"{path}, line {i}: nested too deeply to read (not a metrics "
                             f"record)") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}, line {i}: expected a JSON object, got "
                             f"{type(record).__name__}")
        records.append(record)
    return records


def _parse_int(text):
    """A JSON integer: an int, or for one of more digits than Python converts
    (4300), a float (infinite: far beyond a float's range), skipped like one."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def _panel_of(key):
    """``("loss", "train")`` for "train_loss"; None for keys that are not plotted."""
    k = key.lower()
    for panel, suffixes in (("loss", ("loss",)), ("accuracy", ("accuracy", "acc"))):
        for suffix in suffixes:
            if k.endswith(suffix):
                label = key[:len(key) - len(suffix)].rstrip("_- ") or panel
                return panel, label
    return None


def metric_series(records):
    """``{"loss": {"train": [(epoch, value), ...], ...}, "accuracy": {...}}``."""
    panels = {}
    for i, record in enumerate(records, 1):
        epoch = _finite_float(record.get("epoch", i))
        if epoch is None:
            epoch = float(i)
        for key, value in record.items():
            where = _panel_of(key)
            value = _finite_float(value)
            if where is None or value is None:
                continue
            panel, label = where
            panels.setdefault(panel, {}).setdefault(label, []).append((epoch, value))
    for series in panels.values():
        for points in series.values():
            points.sort()
    return {p: panels[p] for p in ("loss", "accuracy") if p in panels}


def _finite_float(v):
    """``v`` as a finite float, or None for anything else (not a number, NaN, inf)."""
    if not isinstance(v, numbers.Real) or isinstance(v, bool):
        return None
    try:
        v = float(v)
    except OverflowError:  # JSON allows integers of any size; a float does not
        return None
    return v if math.isfinite(v) else None


def plot_curves(metrics_jsonl_path, out_png, use_matplotlib=None):
    """Draw loss and accuracy per epoch, train and test, into a PNG file.

    ``out_png`` must end in ``.png``.  Returns the path written.
    ``use_matplotlib``: None uses it when installed, False always draws with
    the built-in plotter.
    """
    _png_path(out_png, "plot_curves")
    panels = metric_series(read_metrics(metrics_jsonl_path))
    if not panels:
        raise ValueError(f"{metrics_jsonl_path} has no loss or accuracy values; expected "
                         f"keys such as 'train_loss', 'test_loss', 'train_acc', 'test_acc'")
    if not _want_matplotlib(use_matplotlib):
        return write_png(out_png, curves_image(panels))
    from matplotlib.figure import Figure
    fig = Figure(figsize=(5 * len(panels), 3.8))
    for ax, (panel, series) in zip(fig.subplots(1, len(panels), squeeze=False)[0],
                                   panels.items()):
        for label, points in series.items():
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", markersize=3, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(panel)
        ax.set_title(panel)
        ax.grid(alpha=0.3)
        ax.legend()
    try:
        fig.tight_layout()
        return _save_figure(fig, out_png)
    except (ValueError, OverflowError) as e:
        # Matplotlib cannot place ticks on an axis spanning nearly the whole
        # range of floats; the built-in plotter can.
        warnings.warn(f"{metrics_jsonl_path}: matplotlib cannot draw these values ({e}); "
                      f"drawn with the built-in plotter instead", stacklevel=2)
        return write_png(out_png, curves_image(panels))


# ---- the built-in plotter -------------------------------------------------------------
def curves_image(panels, width=440, height=300):
    """An RGB uint8 image of the panels from :func:`metric_series`, side by side."""
    return np.concatenate([_panel(title, series, width, height)
                           for title, series in panels.items()], axis=1)


def _panel(title, series, width, height):
    img = np.full((height, width, 3), 255, np.uint8)
    x0, x1, y0, y1 = 72, width - 12, 26, height - 30  # the plot box; y grows downwards
    points = [p for pts in series.values() for p in pts]
    xmin, xmax = _range([p[0] for p in points])
    ymin, ymax = _y_range(title, [p[1] for p in points])

    def to_px(x, y):
        return (x0 + _fraction(x, xmin, xmax) * (x1 - x0),
                y1 - _fraction(y, ymin, ymax) * (y1 - y0))

    for k in range(1, 4):  # light horizontal grid lines
        y = round(y0 + k * (y1 - y0) / 4)
        img[y, x0:x1] = 225
    _rect(img, x0, y0, x1, y1, (90, 90, 90))
    for (label, pts), color in zip(series.items(), _cycle(_COLORS)):
        pixels = [to_px(x, y) for x, y in pts]
        for p, q in zip(pixels, pixels[1:]):
            _line(img, p, q, color)
        for px, py in pixels:
            _fill(img, round(px) - 2, round(py) - 2, 5, 5, color)
    _text(img, x0, 6, title, (0, 0, 0))
    _text(img, 4, y0, _fmt(ymax), (60, 60, 60))
    _text(img, 4, y1 - 10, _fmt(ymin), (60, 60, 60))
    _text(img, x0, y1 + 8, _fmt(xmin), (60, 60, 60))
    _text(img, x1 - _text_width(_fmt(xmax)), y1 + 8, _fmt(xmax), (60, 60, 60))
    _text(img, (x0 + x1 - _text_width("epoch")) // 2, y1 + 8, "epoch", (60, 60, 60))
    # The legend goes in the right-hand corner (top or bottom) with fewer points near it.
    near = [py for pts in series.values() for px, py in (to_px(x, y) for x, y in pts)
            if px > (x0 + x1) / 2]
    top = sum(py < (y0 + y1) / 2 for py in near) <= len(near) / 2
    ly0 = y0 + 8 if top else y1 - 8 - 14 * len(series)
    for i, ((label, _), color) in enumerate(zip(series.items(), _cycle(_COLORS))):
        lx, ly = x1 - 8 - _text_width(label) - 16, ly0 + 14 * i
        _fill(img, lx, ly + 2, 12, 6, color)
        _text(img, lx + 16, ly, label, (0, 0, 0))
    return img


def _y_range(title, values):
    """The value axis: the values' range and 5 % more on each side, but not below 0
    for values that are never negative (a loss) nor above 1 for an accuracy."""
    lo, hi = _range(values)
    pad = 0.05 * hi - 0.05 * lo   # 0.05 * (hi - lo) could overflow
    low = lo - pad if min(values) < 0 else max(0.0, lo - pad)
    high = min(1.0, hi + pad) if title == "accuracy" and max(values) <= 1 else hi + pad
    return _finite(low), _finite(high)


def _range(values):
    """``(lo, hi)`` of ``values``, with ``lo < hi``: a single value is widened by 0.5
    each way, or by a millionth of itself where 0.5 would be lost in rounding."""
    lo, hi = min(values), max(values)
    if hi == lo:
        d = max(0.5, abs(lo) * 1e-6)
        lo, hi = _finite(lo - d), _finite(hi + d)
    return lo, hi


def _finite(v):
    """``v`` with an overflow to infinity brought back to the largest float."""
    return max(-sys.float_info.max, min(v, sys.float_info.max))


def _fraction(v, lo, hi):
    """Where ``v`` lies between ``lo`` and ``hi`` (0 to 1); values near the largest
    float are halved first, since ``hi - lo`` would overflow."""
    if math.isinf(hi - lo):
        return (v / 2 - lo / 2) / (hi / 2 - lo / 2)
    return (v - lo) / (hi - lo)


def _cycle(items):
    while True:
        yield from items


def _fmt(v):
    return f"{v:.3g}"


def _fill(img, x, y, w, h, color):
    H, W = img.shape[:2]
    img[max(y, 0):min(y + h, H), max(x, 0):min(x + w, W)] = color


def _rect(img, xa, ya, xb, yb, color):
    img[ya, xa:xb + 1] = img[yb, xa:xb + 1] = color
    img[ya:yb + 1, xa] = img[ya:yb + 1, xb] = color


def _line(img, p, q, color, thickness=2):
    """A straight line from p to q (pixel coordinates x, y), sampled once per pixel."""
    n = int(max(abs(q[0] - p[0]), abs(q[1] - p[1]))) + 1
    xs = np.rint(np.linspace(p[0], q[0], n)).astype(int)
    ys = np.rint(np.linspace(p[1], q[1], n)).astype(int)
    H, W = img.shape[:2]
    for d in range(thickness):
        img[np.clip(ys + d, 0, H - 1), np.clip(xs, 0, W - 1)] = color


# A 3x5 pixel font: each glyph is five rows of three pixels ('#' on).
_GLYPHS = {
    "A": ".#. #.# ### #.# #.#", "B": "##. #.# ##. #.# ##.", "C": ".## #.. #.. #.. .##",
    "D": "##. #.# #.# #.# ##.", "E": "### #.. ##. #.. ###", "F": "### #.. ##. #.. #..",
    "G": ".## #.. #.# #.# .##", "H": "#.# #.# ### #.# #.#", "I": "### .#. .#. .#. ###",
    "J": "..# ..# ..# #.# .#.", "K": "#.# #.# ##. #.# #.#", "L": "#.. #.. #.. #.. ###",
    "M": "#.# ### ### #.# #.#", "N": "##. #.# #.# #.# #.#", "O": ".#. #.# #.# #.# .#.",
    "P": "##. #.# ##. #.. #..", "Q": ".#. #.# #.# ##. .##", "R": "##. #.# ##. #.# #.#",
    "S": ".## #.. .#. ..# ##.", "T": "### .#. .#. .#. .#.", "U": "#.# #.# #.# #.# ###",
    "V": "#.# #.# #.# #.# .#.", "W": "#.# #.# ### ### #.#", "X": "#.# #.# .#. #.# #.#",
    "Y": "#.# #.# .#. .#. .#.", "Z": "### ..# .#. #.. ###",
    "0": "### #.# #.# #.# ###", "1": ".#. ##. .#. .#. ###", "2": "##. ..# .#. #.. ###",
    "3": "##. ..# .#. ..# ##.", "4": "#.# #.# ### ..# ..#", "5": "### #.. ##. ..# ##.",
    "6": ".## #.. ### #.# ###", "7": "### ..# .#. .#. .#.", "8": "### #.# ### #.# ###",
    "9": "### #.# ### ..# ##.", ".": "... ... ... ... .#.", "-": "... ... ### ... ...",
    "_": "... ... ... ... ###", ":": "... .#. ... .#. ...", "%": "#.# ..# .#. #.. #.#",
    "/": "..# ..# .#. #.. #..", "(": ".#. #.. #.. #.. .#.", ")": ".#. ..# ..# ..# .#.",
    "+": "... .#. ### .#. ...", " ": "... ... ... ... ...", "?": "##. ..# .#. ... .#.",
}
_SCALE = 2  # each font pixel is 2x2 image pixels


def _text_width(text):
    return len(text) * 4 * _SCALE - _SCALE


def _text(img, x, y, text, color):
    """Draw ``text`` (upper-cased) with its top-left corner at (x, y)."""
    for i, ch in enumerate(text.upper()):
        rows = _GLYPHS.get(ch, _GLYPHS["?"]).split()
        for r, row in enumerate(rows):
            for c, bit in enumerate(row):
                if bit == "#":
                    _fill(img, x + (4 * i + c) * _SCALE, y + r * _SCALE, _SCALE, _SCALE, color)
