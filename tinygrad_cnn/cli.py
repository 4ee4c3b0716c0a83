"""The ``tinygrad-cnn`` command (also ``python -m tinygrad_cnn``)."""
from __future__ import annotations

import argparse
import os
import platform
import sys

import numpy as np

from . import __version__


def _add_train(sub):
    from .models import MODELS
    from .train import OPTIMIZERS, TrainConfig
    d = TrainConfig()
    p = sub.add_parser("train", help="train a model (default: the CNN on the bundled digits)",
                       description="Train a model. With no options: the default CNN on the 8x8 "
                                   "digits bundled with scikit-learn, on the CPU, offline. "
                                   "Exit status: 0 when done, 130 when stopped by Ctrl-C, "
                                   "1 on an error.")
    # The options that define a run default to None here, so that with
    # --resume an option given explicitly can be checked against the run saved
    # in the checkpoint (which otherwise wins); the defaults come from TrainConfig.
    p.add_argument("--dataset", default=None, choices=["digits", "mnist", "fashion-mnist"],
                   help="digits: bundled, offline; mnist/fashion-mnist: downloaded once into "
                        f"the data directory (default: {d.dataset})")
    p.add_argument("--data-dir", default=None,
                   help="where MNIST-style files live (default: $TINYGRAD_CNN_DATA or "
                        "~/.cache/tinygrad_cnn)")
    p.add_argument("--model", default=None, choices=list(MODELS),
                   help="architecture; see 'tinygrad-cnn summary --model NAME' (default: "
                        f"{d.model})")
    p.add_argument("--epochs", type=int, default=None, help="passes over the training "
                   f"set; the one-cycle learning-rate schedule spans them (default: {d.epochs})")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"images per step (default: {d.batch_size})")
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate of the one-cycle schedule (default: "
                        + ", ".join(f"{k} {v}" for k, v in OPTIMIZERS.items()) + ")")
    p.add_argument("--optimizer", default=None, choices=list(OPTIMIZERS),
                   help=f"update rule (default: {d.optimizer})")
    p.add_argument("--weight-decay", type=float, default=None,
                   help=f"L2 penalty, decoupled for adamw (default: {d.weight_decay:g}; "
                        f"adamw: 0.01)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed for weights, shuffling and dropout; the same seed gives "
                        f"bit-identical runs on the CPU (default: {d.seed})")
    _device_option(p)
    p.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="save the full training state here (atomically) after every epoch "
                        "and when stopped by Ctrl-C or --max-steps")
    p.add_argument("--resume", action="store_true",
                   help="continue the run saved in --checkpoint exactly where it stopped; "
                        "the run's settings (data set, model, epochs, ...) come from the "
                        "checkpoint, on any --device")
    p.add_argument("--metrics", default=None, metavar="PATH",
                   help="write one JSON line per epoch (loss, accuracy, lr, time); "
                        "draw them with 'tinygrad-cnn plot PATH'")
    p.add_argument("--log-every", type=int, default=d.log_every,
                   help="steps between progress-bar updates (each reads the loss back from "
                        "the device once; default: %(default)s)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="stop after this many steps of this invocation, as Ctrl-C would "
                        "(a quick smoke run; --resume continues)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)


def _device(name):
    """A --device value: cpu, cuda, cuda:N, or auto (the GPU when usable)."""
    from .backend import cuda_status
    if name == "auto":
        return "cuda:0" if cuda_status()[0] else "cpu"
    return name


def _device_option(p):
    p.add_argument("--device", default=os.environ.get("TINYGRAD_CNN_DEVICE", "cpu"),
                   help="cpu, cuda, cuda:N or auto (default: $TINYGRAD_CNN_DEVICE or cpu)")


def _train(args):
    from .backend import reduce_malloc_churn
    if os.environ.get("TINYGRAD_CNN_MALLOC_TUNING", "1") != "0":
        # This process is ours: keeping freed large arrays saves each step
        # thousands of page faults (see reduce_malloc_churn).
        reduce_malloc_churn()
    from .checkpoint import load
    from .train import RUN_KEYS, TrainConfig, train
    device = _device(args.device)
    given = {k: getattr(args, k) for k in RUN_KEYS if getattr(args, k) is not None}
    if "dataset" in given:
        given["dataset"] = given["dataset"].replace("-", "_")
    if args.resume and given and args.checkpoint:
        # A resumed run keeps its settings; refuse to ignore one the user typed.
        saved = load(args.checkpoint).get("config", {})
        clashes = [f"--{k.replace('_', '-')} {v} (the run has {saved[k]})"
                   for k, v in given.items() if k in saved and saved[k] != v]
        if clashes:
            raise ValueError(f"{args.checkpoint} continues a run with other settings: "
                             f"{'; '.join(clashes)}; drop these options, or start a new run "
                             f"with another --checkpoint")
    cfg = TrainConfig(**given, device=device, data_dir=args.data_dir,
                      checkpoint=args.checkpoint, resume=args.resume, metrics=args.metrics,
                      log_every=args.log_every, max_steps=args.max_steps,
                      progress=not args.no_progress)
    result = train(cfg)
    return 130 if result["interrupted"] else 0


def _eval(args):
    from .data import DataLoader, TensorDataset
    from .train import evaluate, load_data, load_model
    model, state = load_model(args.checkpoint, _device(args.device))
    cfg = state["config"]
    *_, x_test, y_test, _ = load_data(cfg["dataset"], args.data_dir or cfg.get("data_dir"),
                                      (state["mean"], state["std"]))
    loss, acc = evaluate(model, DataLoader(TensorDataset(x_test, y_test), 256,
                                           device=_device(args.device)))
    print(f"{cfg['model']} on {cfg['dataset']} test set ({len(y_test)} images): "
          f"accuracy {acc * 100:.2f}%, loss {loss:.4f}")
    return 0


def load_image(path, image_shape, background=0):
    """A PNG or .npy image as float32 (C, H, W) in [0, 1], resized by area averaging.

    Colour PNGs become grey; transparent pixels take the grey level
    ``background`` (0: black, the background of the training images).
    """
    from .viz.png import read_png
    c, h, w = image_shape
    if path.lower().endswith(".npy"):
        img = np.load(path, allow_pickle=False).astype(np.float32)
        if img.ndim > 2 and img.size == img.shape[-1] * img.shape[-2]:
            img = img.reshape(img.shape[-2:])  # (1, H, W) or (1, 1, H, W) -> (H, W)
        if img.max() > 1:
            img = img / (16.0 if img.max() <= 16 else 255.0)
    else:
        img = read_png(path, mode="L", background=background).astype(np.float32) / 255.0
    if img.ndim != 2:
        raise ValueError(f"{path}: expected a single-channel image, got an array of shape "
                         f"{img.shape}")
    if img.shape != (h, w):
        img = _resize(img, h, w)
    return np.broadcast_to(img, (c, h, w)).astype(np.float32)


def _resize(img, h, w):
    """Area-average (shrinking) or nearest (growing) resize of a 2-D image."""
    rows = np.minimum((np.arange(img.shape[0]) * h) // img.shape[0], h - 1)
    cols = np.minimum((np.arange(img.shape[1]) * w) // img.shape[1], w - 1)
    if img.shape[0] >= h and img.shape[1] >= w:
        out = np.zeros((h, w))
        count = np.zeros((h, w))
        np.add.at(out, (rows[:, None], cols[None, :]), img)
        np.add.at(count, (rows[:, None], cols[None, :]), 1)
        return out / count
    ri = (np.arange(h) * img.shape[0]) // h
    ci = (np.arange(w) * img.shape[1]) // w
    return img[np.ix_(ri, ci)]


def _predict(args):
    from .data import CLASSES
    from .tensor import tensor
    from .train import load_model
    model, state = load_model(args.checkpoint, _device(args.device))
    mean = np.asarray(state["mean"], np.float32).reshape(-1, 1, 1)  # (C, 1, 1)
    std = np.asarray(state["std"], np.float32).reshape(-1, 1, 1)  # (C, 1, 1)
    names = CLASSES.get(state["config"]["dataset"])
    for path in args.files:
        # Transparency is paper: white before inverting, black otherwise.
        img = load_image(path, state["image_shape"], background=255 if args.invert else 0)
        if args.invert:
            img = 1.0 - img
        x = tensor(((img - mean) / std)[None], device=_device(args.device))  # (1, C, H, W)
        probs = model(x).softmax(-1).numpy()[0]
        best = int(probs.argmax())
        label = names[best] if names else str(best)
        ranked = ", ".join(f"{names[i] if names else i}: {probs[i]:.3f}"
                           for i in np.argsort(-probs, kind="stable"))
        print(f"{path}: {label} (p={probs[best]:.3f}; {ranked})")
    return 0


def _image_shape(dataset):
    return (1, 8, 8) if dataset == "digits" else (1, 28, 28)


def _summary(args):
    from . import models, nn
    shape = _image_shape(args.dataset.replace("-", "_"))
    model = models.build(args.model, shape)
    print(f"{args.model} for {args.dataset} images {shape}")
    print(nn.summary(model, (1,) + shape))
    return 0


def _gradcheck(args):
    from . import models
    from .autograd import no_grad
    from .gradcheck import gradcheck
    from .tensor import manual_seed, randn
    manual_seed(args.seed)
    shape = _image_shape(args.dataset.replace("-", "_"))
    model = models.build(args.model, shape).to(dtype="float64").eval()
    x = randn(2, *shape, dtype="float64", requires_grad=True)
    rows, ok = [], True
    # Every layer on its own input, then the whole model end to end.
    layers = [(f"{i}: {type(m).__name__}", m) for i, m in enumerate(model)] \
        + [("model (end to end)", model)]
    # Each layer gets a fresh random input of the shape it sees in the model:
    # activations after a ReLU are full of exact zeros, i.e. of ties and kinks
    # where finite differences legitimately disagree with the analytic rule.
    inputs = {}
    h = x
    with no_grad():
        for name, layer in layers[:-1]:
            inputs[name] = randn(*h.shape, dtype="float64", requires_grad=True)
            h = layer(h)
    inputs[layers[-1][0]] = x
    for name, layer in layers:
        params = list(layer.parameters())
        xin = inputs[name]

        def fn(inp, *ps, layer=layer):
            # gradcheck hands in float64 copies; run the layer with them in
            # place of its own parameters so the gradients reach the copies.
            own = _swap_parameters(layer, ps)
            try:
                return layer(inp)
            finally:
                _swap_parameters(layer, own)
        try:
            gradcheck(fn, [xin] + params, max_elements=args.elements, seed=args.seed)
            status = "ok"
        except AssertionError as e:
            status, ok = f"FAIL: {e}", False
        sizes = [t.size for t in [xin] + params]
        checked = sum(min(n, args.elements) for n in sizes)
        rows.append((name, str(tuple(xin.shape)), f"{checked}/{sum(sizes)}", status))
    header = ("layer", "input", "elements checked", "result")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(4)]
    for r in [header] + rows:
        print("  ".join(c.ljust(wd) for c, wd in zip(r, widths)).rstrip())
    print("all gradients agree with finite differences" if ok else "gradient check FAILED")
    return 0 if ok else 1


def _swap_parameters(module, tensors):
    """Put ``tensors`` in place of ``module``'s parameters (named_parameters
    order) and return the ones they replaced."""
    replaced = []
    for (name, _), t in zip(list(module.named_parameters()), tensors):
        *path, leaf = name.split(".")
        owner = module
        for part in path:
            owner = getattr(owner, part)
        replaced.append(owner._parameters[leaf])
        owner._parameters[leaf] = t
    return replaced


def _info(args):
    from .backend import backends, get_backend
    print(f"tinygrad_cnn {__version__}")
    print(f"python {platform.python_version()} ({sys.executable})")
    print(f"numpy {np.__version__}")
    for mod in ("cupy", "torch", "sklearn", "tqdm", "matplotlib"):
        try:
            module = __import__(mod)
            print(f"{mod} {getattr(module, '__version__', '?')}")
        except Exception as e:  # noqa: BLE001 - report, never crash
            print(f"{mod}: not available ({type(e).__name__})")
    print("backends:")
    for row in backends():
        mark = "usable" if row["usable"] else "not usable"
        print(f"  {row['device']:<8} {mark}: {row['reason']}")
        if row["usable"] and row["device"] == "cuda":
            for k, v in get_backend("cuda").describe().items():
                print(f"           {k}: {v}")
    return 0


def _show(args):
    from .tensor import tensor
    from .train import load_model
    from .viz import images
    model, state = load_model(args.checkpoint)
    if args.filters:
        images.save_filters(model, args.filters)
        print(f"wrote {args.filters}")
    if args.feature_maps:
        image_path, out = args.feature_maps
        img = load_image(image_path, state["image_shape"])
        mean = np.asarray(state["mean"], np.float32).reshape(-1, 1, 1)  # (C, 1, 1)
        std = np.asarray(state["std"], np.float32).reshape(-1, 1, 1)  # (C, 1, 1)
        images.save_feature_maps(model, tensor(((img - mean) / std)[None]), out)
        print(f"wrote {out}")
    if not args.filters and not args.feature_maps:
        print("nothing to show: give --filters OUT.png and/or --feature-maps IMAGE OUT.png")
        return 2
    return 0


def _plot(args):
    from .viz.curves import plot_curves
    plot_curves(args.metrics, args.output)
    print(f"wrote {args.output}")
    return 0


def build_parser():
    from .models import MODELS
    parser = argparse.ArgumentParser(
        prog="tinygrad-cnn",
        description="Train, inspect and check convolutional networks built on a "
                    "from-scratch autograd engine.")
    parser.add_argument("--version", action="version", version=f"tinygrad_cnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_train(sub)

    p = sub.add_parser("eval", help="test-set accuracy of a checkpoint")
    p.add_argument("--checkpoint", required=True, metavar="PATH")
    _device_option(p)
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=_eval)

    p = sub.add_parser("predict", help="class probabilities for PNG or .npy images")
    p.add_argument("--checkpoint", required=True, metavar="PATH")
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="grey or RGB PNG, or .npy; resized to the model's input size; bright "
                        "strokes on a dark background, like the training data")
    p.add_argument("--invert", action="store_true",
                   help="invert the images first (for dark strokes on white paper)")
    _device_option(p)
    p.set_defaults(func=_predict)

    p = sub.add_parser("summary", help="layers, parameter counts and receptive fields")
    p.add_argument("--model", default="cnn", choices=list(MODELS))
    p.add_argument("--dataset", default="digits", choices=["digits", "mnist", "fashion-mnist"])
    p.set_defaults(func=_summary)

    p = sub.add_parser("gradcheck", help="check a float64 copy of a model, layer by layer "
                                         "and end to end, against finite differences")
    p.add_argument("--model", default="cnn", choices=list(MODELS))
    p.add_argument("--dataset", default="digits", choices=["digits", "mnist", "fashion-mnist"])
    p.add_argument("--elements", type=int, default=24,
                   help="elements checked per tensor, chosen at random (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_gradcheck)

    p = sub.add_parser("info", help="versions, and which backends are usable and why")
    p.set_defaults(func=_info)

    p = sub.add_parser("show", help="pictures of a trained model's filters and feature maps")
    p.add_argument("--checkpoint", required=True, metavar="PATH")
    p.add_argument("--filters", metavar="OUT.png", help="first-layer kernels as one image")
    p.add_argument("--feature-maps", nargs=2, metavar=("IMAGE", "OUT.png"),
                   help="what every conv layer outputs for IMAGE")
    p.set_defaults(func=_show)

    p = sub.add_parser("plot", help="training curves from a --metrics file")
    p.add_argument("metrics", metavar="METRICS.jsonl")
    p.add_argument("-o", "--output", default="curves.png", metavar="OUT.png")
    p.set_defaults(func=_plot)
    return parser


def main(argv=None):
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    Expected failures (bad files, unusable device, ...) print one line to
    stderr and return 1; no command prints the help and returns 2.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from .backend import DeviceError
    from .checkpoint import CheckpointError
    from .data import DownloadError
    try:
        return args.func(args)
    except (DeviceError, CheckpointError, DownloadError, OSError, ValueError,
            ImportError) as e:
        # Expected failures (bad files, missing data or optional packages, an
        # unusable device) get a message, not a traceback; bugs still get one.
        print(f"tinygrad-cnn {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
