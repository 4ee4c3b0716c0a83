"""Draw the pictures of the tour in docs/images/ from the project's own output.

    python docs/make_images.py              # everything below except --compare
    python docs/make_images.py --graphs     # only the graph pictures (a second)
    python docs/make_images.py --compare    # also: fully-connected vs local vs conv

* graphs: ``tg.viz.graph`` of the chapter-1 examples and of the default CNN,
  saved as DOT text and rendered to SVG with Graphviz's ``dot`` (the SVGs are
  committed, so readers without Graphviz see them; tests/test_docs.py checks
  that the DOT files match what the code draws today);
* unfold: a digit and the matrix ``F.unfold`` makes of it (chapter 2);
* training: the default CNN trained on the bundled digits exactly as
  ``tinygrad-cnn train --metrics m.jsonl`` does (15 epochs, seed 0, a few
  seconds), then its loss/accuracy curves, first-layer filters and the
  feature maps of one test digit (chapter 3);
* --compare: ``tinygrad-cnn train --model M --seed S`` for the
  fully-connected (mlp), locally-connected (local) and convolutional
  (nielsen, cnn) models, seeds 0-2, printed as the markdown table of
  chapter 3 (several minutes on 2 cores).

Matplotlib is used for the PNGs when installed (nicer, with titles); the
built-in PNG writer of tinygrad_cnn.viz otherwise.
"""
from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing

import numpy as np  # noqa: E402

import tinygrad_cnn as tg  # noqa: E402
import tinygrad_cnn.functional as F  # noqa: E402
from tinygrad_cnn import models, nn  # noqa: E402
from tinygrad_cnn.viz.png import atomic_write  # noqa: E402

IMAGES = HERE / "images"


# ---- graphs (chapter 1) -----------------------------------------------------------
def graphs():
    """``{file stem: tg.viz.Graph}`` for every graph picture of the docs."""
    out = {}

    x = tg.tensor(3.0, requires_grad=True)
    x.name = "x"
    out["graph-add-mul"] = tg.viz.graph((x + x) * x)

    x = tg.tensor(1.5, requires_grad=True)
    x.name = "x"
    h = x * 2
    h.name = "h"
    out["graph-diamond"] = tg.viz.graph(h ** 2 + h * 3)

    x = tg.tensor(3.0, requires_grad=True)
    x.name = "x"
    (slope,) = tg.grad(x ** 3, [x], create_graph=True)
    out["graph-gradient"] = tg.viz.graph(slope)

    # The picture shows no values, so no seed; but leave the global generator
    # as it was (the docs test calls this).
    rng_state = tg.get_rng().bit_generator.state
    model = models.cnn()
    images = tg.randn(4, 1, 8, 8)
    labels = tg.tensor([0, 1, 2, 3])
    tg.get_rng().bit_generator.state = rng_state
    with tg.viz.record_modules(model) as rec:
        loss = nn.cross_entropy(model(images), labels)
    out["graph-cnn"] = tg.viz.graph(loss, collapse=rec, names=dict(model.named_parameters()))
    return out


def save_graphs():
    for name, g in graphs().items():
        g.save(IMAGES / f"{name}.dot")
        try:
            g.save(IMAGES / f"{name}.svg")
        except tg.viz.GraphvizNotFoundError as e:
            print(f"skipped {name}.svg: {e}")
            continue
        print(f"wrote docs/images/{name}.svg")


# ---- unfold (chapter 2) -----------------------------------------------------------
def save_unfold_picture():
    """A digit (8x8) and its unfold with a 3x3 window: (9, 36), one column per position."""
    from tinygrad_cnn.data import load_digits
    images, labels = load_digits("test")
    digit = images[int(np.argmax(labels == 3))]                  # (1, 8, 8)
    cols = F.unfold(tg.tensor(digit[None]), 3).numpy()[0]        # (9, 36)
    path = IMAGES / "unfold-digit.png"
    try:
        from matplotlib.figure import Figure
    except ImportError:
        _save_unfold_png(digit[0], cols, path)
        return
    fig = Figure(figsize=(9.0, 2.6))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 3.6]})
    left.imshow(digit[0], cmap="gray_r", interpolation="nearest")
    # Two windows and their columns: (oh, ow) = (0, 0) is l = 0, (2, 3) is l = 15.
    windows = (((0, 0), "tab:red"), ((2, 3), "tab:blue"))
    for (oh, ow), color in windows:
        left.add_patch(_window_patch(oh, ow, color))
    left.set_title("x: (1, 1, 8, 8); two 3x3 windows", fontsize=9)
    right.imshow(cols, cmap="gray_r", interpolation="nearest", aspect="auto")
    for (oh, ow), color in windows:
        right.add_patch(_column_patch(oh * 6 + ow, cols.shape[0], color))
    right.set_title("F.unfold(x, 3): (1, 9, 36) - one column per window position l = oh*6 + ow",
                    fontsize=9)
    right.set_xlabel("l (output position)")
    right.set_ylabel("c*KH*KW + i*KW + j")
    for ax in (left, right):
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write(path, buf.getvalue())   # as every picture: never half a file
    print(f"wrote {path.relative_to(HERE.parent)}")


def _window_patch(oh, ow, color):
    from matplotlib.patches import Rectangle
    return Rectangle((ow - 0.5, oh - 0.5), 3, 3, fill=False, edgecolor=color, linewidth=2.5)


def _column_patch(column, rows, color):
    from matplotlib.patches import Rectangle
    return Rectangle((column - 0.5, -0.5), 1, rows, fill=False, edgecolor=color, linewidth=2.5)


def _save_unfold_png(digit, cols, path):
    from tinygrad_cnn.viz import png

    def gray(a, k):
        a = (255 * (1 - (a - a.min()) / max(np.ptp(a), 1e-12))).astype(np.uint8)
        return np.kron(a, np.ones((k, k), np.uint8))
    left, right = gray(digit, 24), gray(cols, 16)
    h = max(left.shape[0], right.shape[0])
    canvas = np.full((h, left.shape[1] + 24 + right.shape[1]), 255, np.uint8)
    canvas[:left.shape[0], :left.shape[1]] = left
    canvas[:right.shape[0], left.shape[1] + 24:] = right
    png.write_png(path, canvas)
    print(f"wrote {path.relative_to(HERE.parent)}")


# ---- a training run (README, chapter 3) -------------------------------------------------
def save_training_pictures():
    """Train the default CNN as ``tinygrad-cnn train`` does; draw curves, filters, maps."""
    from tinygrad_cnn.train import TrainConfig, load_data, train
    with tempfile.TemporaryDirectory() as tmp:
        metrics = Path(tmp) / "metrics.jsonl"
        result = train(TrainConfig(metrics=str(metrics), progress=False))
        tg.viz.plot_curves(metrics, IMAGES / "curves-cnn-digits.png")
        atomic_write(IMAGES / "metrics-cnn-digits.jsonl", metrics.read_text())
    model = result["model"]
    tg.viz.save_filters(model, IMAGES / "filters-cnn-digits.png")
    *_, x_test, y_test, _ = load_data("digits")
    index = int(np.argmax(y_test == 3))
    tg.viz.save_feature_maps(model, tg.tensor(x_test[index]),
                             IMAGES / "feature-maps-cnn-digits.png", max_channels=8)
    for name in ("curves", "filters", "feature-maps"):
        print(f"wrote docs/images/{name}-cnn-digits.png")
    print(f"(test accuracy {result['test_acc'] * 100:.2f}% after "
          f"{len(result['history'])} epochs)")


# ---- fully-connected vs locally-connected vs convolutional (chapter 3) ------------------
COMPARED = (("mlp", "fully-connected (one hidden layer of 100)"),
            ("local", "locally-connected"),
            ("nielsen", "convolutional"), ("cnn", "convolutional (default CNN)"))
SEEDS = (0, 1, 2)


def compare():
    """Train each model of COMPARED with each seed, as the CLI does; print a table."""
    from tinygrad_cnn.train import TrainConfig, train
    rows = []
    for name, kind in COMPARED:
        accs, params = [], None
        for seed in SEEDS:
            result = train(TrainConfig(model=name, seed=seed, progress=False),
                           out=lambda *a: None)
            accs.append(result["test_acc"] * 100)
            params = result["parameters"]
            print(f"  {name} seed {seed}: {accs[-1]:.2f}%", file=sys.stderr)
        rows.append((name, kind, params, accs))
    print("| model | layers | parameters | test accuracy, seeds "
          + " / ".join(map(str, SEEDS)) + " | mean |")
    print("|---|---|---:|---|---:|")
    for name, kind, params, accs in rows:
        print(f"| `{name}` | {kind} | {params:,} | "
              + " / ".join(f"{a:.2f}" for a in accs) + f" | {statistics.mean(accs):.2f} % |")
    atomic_write(IMAGES / "compare-digits.json", json.dumps(
        [dict(model=n, kind=k, parameters=p, test_acc=[round(x, 2) for x in a])
         for n, k, p, a in rows], indent=1) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--graphs", action="store_true", help="only the graph pictures")
    parser.add_argument("--compare", action="store_true",
                        help="also train the fully-connected/local/conv comparison (minutes)")
    args = parser.parse_args(argv)
    IMAGES.mkdir(exist_ok=True)
    save_graphs()
    if args.graphs:
        return
    save_unfold_picture()
    save_training_pictures()
    if args.compare:
        compare()


if __name__ == "__main__":
    main()
