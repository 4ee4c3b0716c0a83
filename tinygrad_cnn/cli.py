"""The ``tinygrad-cnn`` command (also ``python -m tinygrad_cnn``).

Exit status of every subcommand: 0 on success; 1 when something fails
while running (a bad or missing file, missing data or package, an unusable
device), with one line on stderr; 2 on a usage error (an invalid option
value, or options that contradict each other or the checkpoint named);
130 when stopped by Ctrl-C.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import stat
import sys
import warnings
from pathlib import Path

import numpy as np

from . import __version__

DEVICE_ENV = "TINYGRAD_CNN_DEVICE"
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N"  # N: a GPU number (0, 1, ...)
DATASETS = ["digits", "mnist", "fashion-mnist"]
EXIT_STATUS = ("Exit status: 0 when done (or stopped by --max-steps), 1 on an error (a bad "
               "file, missing data, an unusable device), 2 on a usage error (an invalid option "
               "value, or options that contradict each other or the checkpoint), 130 when "
               "stopped by Ctrl-C.")


class UsageError(ValueError):
    """A command line that cannot run as given: exit status 2, like argparse's errors."""


# ---- option values ------------------------------------------------------------------
# argparse turns an ArgumentTypeError into "argument --lr: <message>" and exit
# status 2, so a bad value is reported with the option's name before any work.
def _int_at_least(low):
    """An argparse type: an integer >= ``low``."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}") \
                from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
        return value
    return parse


def _finite_float(low, allow_low):
    """An argparse type: a finite number > ``low`` (>= ``low`` when ``allow_low``)."""
    wanted = f"a finite number {'>=' if allow_low else '>'} {low:g}"

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}") from None
        # float() accepts "nan" and "inf": neither is a usable rate or penalty.
        if not math.isfinite(value) or value < low or (value == low and not allow_low):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}")
        return value
    return parse


def _device(name):
    """The device a --device value (None: ``$TINYGRAD_CNN_DEVICE`` or cpu) names.

    ``auto`` is the GPU when usable, else the CPU.  A name that is no device
    is a usage error naming where it came from; a real device that is not
    usable here (cuda without a GPU) is a DeviceError naming the device as
    given and where it came from, raised before any work is done.
    """
    from .backend import DeviceError, canonical_device, get_backend
    if name is not None:
        source = f"--device {name!r}"
    elif os.environ.get(DEVICE_ENV, "").strip():
        name = os.environ[DEVICE_ENV]
        source = f"{DEVICE_ENV}={name!r} (environment variable)"
    else:
        return "cpu"
    try:
        device = canonical_device(name)   # "auto" included
    except DeviceError:
        raise UsageError(f"{source} is not a device; expected one of: {DEVICE_CHOICES} "
                         f"(N: a GPU number)") from None
    try:
        # Given the name as typed, the backend names both: "device 'cuda' (cuda:0) ...".
        get_backend(name)
    except DeviceError as e:
        if source.startswith("--device"):
            raise
        raise DeviceError(f"{source}: {e}") from None
    return device


def _environment():
    """Check the environment variables that computing reads, before any work."""
    from .conv_arrays import get_im2col_limit
    try:
        get_im2col_limit()
    except ValueError as e:
        raise UsageError(str(e)) from None


MALLOC_TUNING_ENV = "TINYGRAD_CNN_MALLOC_TUNING"
MALLOC_TUNING_HELP = (f"{MALLOC_TUNING_ENV}=1 (the default) raises glibc's malloc thresholds "
                      f"so that large temporaries are reused, not page-faulted in again every "
                      f"step; 0 leaves them; other values are refused.")


def _malloc_tuning():
    """Whether train raises glibc's malloc thresholds: ``$TINYGRAD_CNN_MALLOC_TUNING``
    1 (or unset or empty: the default) or 0; anything else is a usage error."""
    text = os.environ.get(MALLOC_TUNING_ENV, "")
    value = text.strip() or "1"
    if value not in ("0", "1"):
        raise UsageError(f"{MALLOC_TUNING_ENV}={text!r} (environment variable): expected 1 "
                         f"(raise glibc's malloc thresholds; the default) or 0 (leave them)")
    return value == "1"


def _device_option(p):
    p.add_argument("--device", default=None,
                   help=f"where to compute: {DEVICE_CHOICES} (auto: the GPU when usable, else "
                        f"the CPU; default: ${DEVICE_ENV}, or cpu when unset)")


def _png_output(path, option):
    """Check an output picture's name before any work is done.

    The pictures are always PNG, so another suffix would give a file whose
    name lies about its content; and a missing directory is more likely a
    typo than a wish to create it.
    """
    p = Path(path)
    if p.suffix.lower() != ".png":
        raise UsageError(f"{option} {path}: pictures are written as PNG; give a name ending "
                         f"in .png")
    parent = p.parent
    if not parent.is_dir():   # a usage error, as for train's --checkpoint and --metrics
        raise UsageError(f"{option} {path}: the directory {parent} does not exist (create "
                         f"it first)")
    return path


def _output_file(option, path):
    """Check, before any work, that an output file given as ``option`` can be written."""
    if path is None:
        return
    if not path:
        raise UsageError(f"{option} is empty; give a file path")
    if os.path.isdir(path):
        raise UsageError(f"{option} {path} is a directory; give a file path")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UsageError(f"{option} {path}: the directory {parent} does not exist (create it "
                         f"first)")
    if option == "--checkpoint" and stat.S_ISFIFO(_mode_of(path)):
        # Saved anew at every epoch end: a pipe's reader stops at the end of the first
        # save and the second would wait forever; nor could --resume read it back.
        raise UsageError(f"{option} {path} is a pipe; a checkpoint is saved again at every "
                         f"epoch end and read back by --resume: give a file path (or "
                         f"/dev/null to keep none)")
    from .fileio import check_writable
    try:   # a file is created and removed again: the one sure test of a directory
        check_writable(path)
    except OSError as e:
        raise type(e)(f"{option} {path} cannot be written: {e}") from None


def _mode_of(path):
    """``os.stat(path).st_mode``, or 0 for a path that does not exist (yet)."""
    try:
        return os.stat(path).st_mode
    except OSError:
        return 0


def _data_dir(data_dir, dataset=None):
    """Check --data-dir (given: ``data_dir``), else ``$TINYGRAD_CNN_DATA`` if ``dataset``
    (a name, or None: not known yet) is one that is downloaded, before any work: a file
    where the directory should be would fail only when the data are fetched.  The
    bundled digits never read the variable, so it does not stop their runs."""
    from .data.download import DATASETS, ENV_VAR, check_directory
    if data_dir is not None:
        path, source = data_dir, f"--data-dir {data_dir!r}"
    elif dataset is not None and str(dataset).replace("-", "_") in DATASETS \
            and os.environ.get(ENV_VAR, "").strip():
        path = os.environ[ENV_VAR].strip()
        source = f"{ENV_VAR}={os.environ[ENV_VAR]!r} (environment variable)"
    else:
        return
    if not path:
        raise UsageError(f"{source}: expected a directory (it is created if missing)")
    try:   # the library's check, before the work instead of at the download
        check_directory(Path(path).expanduser(), source)
    except NotADirectoryError as e:
        raise UsageError(str(e)) from None


# ---- train -----------------------------------------------------------------------------
def _add_train(sub):
    from .models import MODELS
    from .train import OPTIMIZERS, TrainConfig
    d = TrainConfig()
    p = sub.add_parser("train", help="train a model (default: the CNN on the bundled digits)",
                       description="Train a model. With no options: the default CNN on the 8x8 "
                                   "digits bundled with scikit-learn, on the CPU, offline, "
                                   "saving nothing. " + MALLOC_TUNING_HELP + " "
                                   + EXIT_STATUS)
    # The options that define a run default to None here, so that with
    # --resume an option given explicitly can be checked against the run saved
    # in the checkpoint (which otherwise wins); the defaults come from TrainConfig.
    p.add_argument("--dataset", default=None, choices=DATASETS,
                   help="digits: bundled, offline; mnist/fashion-mnist: downloaded once into "
                        f"the data directory (default: {d.dataset})")
    p.add_argument("--data-dir", default=None,
                   help="where MNIST-style files live (default: $TINYGRAD_CNN_DATA or "
                        "~/.cache/tinygrad_cnn; --resume reuses the run's)")
    p.add_argument("--model", default=None, choices=list(MODELS),
                   help="architecture; see 'tinygrad-cnn summary --model NAME' (default: "
                        f"{d.model})")
    p.add_argument("--epochs", type=_int_at_least(1), default=None, help="passes over the "
                   f"training set; the one-cycle learning-rate schedule spans them (default: "
                   f"{d.epochs})")
    p.add_argument("--batch-size", type=_int_at_least(1), default=None,
                   help=f"images per step (default: {d.batch_size})")
    p.add_argument("--lr", type=_finite_float(0, allow_low=False), default=None,
                   help="peak learning rate of the one-cycle schedule, a finite number > 0 "
                        "(default: " + ", ".join(f"{k} {v}" for k, v in OPTIMIZERS.items())
                        + ")")
    p.add_argument("--optimizer", default=None, choices=list(OPTIMIZERS),
                   help=f"update rule (default: {d.optimizer})")
    p.add_argument("--weight-decay", type=_finite_float(0, allow_low=True), default=None,
                   help=f"L2 penalty, decoupled for adamw, a finite number >= 0 (default: "
                        f"{d.weight_decay:g}; adamw: 0.01)")
    p.add_argument("--seed", type=_int_at_least(0), default=None,
                   help="seed for weights, shuffling and dropout, an integer >= 0; the same "
                        f"seed gives bit-identical runs on the CPU (default: {d.seed})")
    _device_option(p)
    p.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="save the full training state here (atomically) after every epoch "
                        "and when stopped by Ctrl-C or --max-steps (default: save nothing). "
                        "A new run refuses an existing PATH: pass --resume to continue it, "
                        "or --overwrite")
    p.add_argument("--resume", action="store_true",
                   help="continue the run saved in --checkpoint exactly where it stopped; "
                        "the run's settings (data set, model, epochs, ...) come from the "
                        "checkpoint, and so do its --metrics file and --data-dir unless given "
                        "again; on any --device. An existing metrics file must be this "
                        "run's: one that is not a metrics file, or holds another run's "
                        "epochs, is refused")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run even if --checkpoint PATH (or --metrics PATH) exists "
                        "(the old file is replaced at the first save); it replaces only a "
                        "checkpoint and a metrics file: a file of another kind (an image, "
                        "notes, the paths swapped) is refused")
    p.add_argument("--metrics", default=None, metavar="PATH",
                   help="write one JSON line per epoch (loss, accuracy, lr, time), the whole "
                        "file anew with the run's history at every epoch end; draw them "
                        "with 'tinygrad-cnn plot PATH'. Like --checkpoint, an existing PATH "
                        "needs --resume or --overwrite")
    p.add_argument("--log-every", type=_int_at_least(1), default=d.log_every,
                   help="steps between progress-bar updates (each reads the loss back from "
                        "the device once; default: %(default)s)")
    p.add_argument("--max-steps", type=_int_at_least(1), default=None,
                   help="stop after this many steps of this invocation, as Ctrl-C would "
                        "(a quick smoke run; --resume continues)")
    bar = p.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_const", const=True,
                     default=None, help="show the progress bar on stderr even when it is not "
                                        "a terminal (default: only on a terminal)")
    bar.add_argument("--no-progress", dest="progress", action="store_const", const=False,
                     help="no progress bar, even on a terminal")
    p.set_defaults(func=_train)


def _train(args):
    from .backend import reduce_malloc_churn
    from .checkpoint import load
    from .fileio import is_stream
    from .train import (RUN_KEYS, TrainConfig, checkpoint_file_problem, metrics_file_problem,
                        resume_metrics_error, train)
    # Everything the command line alone can tell is checked before any work.
    tune_malloc = _malloc_tuning()
    if args.resume and not args.checkpoint:
        raise UsageError("--resume needs --checkpoint PATH (the run to continue)")
    if args.resume and args.overwrite:
        raise UsageError("--resume continues the run in --checkpoint and --overwrite starts a "
                         "new one there: pass only one of them")
    # An unwritable output would surface only at the first save, an epoch in.
    for option, path in (("--checkpoint", args.checkpoint), ("--metrics", args.metrics)):
        _output_file(option, path)
    # Resumed, the run's data set and saved directory are the checkpoint's: a data
    # root that is a file is named when the data are fetched.
    _data_dir(args.data_dir, None if args.resume else args.dataset or TrainConfig.dataset)
    if args.checkpoint and args.metrics:
        # Files are written through a symbolic link (atomic_write), so a link named as
        # one of them that leads to the other would have each save replace the other.
        target = os.path.realpath(args.checkpoint)
        if os.path.abspath(args.checkpoint) == os.path.abspath(args.metrics):
            raise UsageError(f"--checkpoint and --metrics are the same file "
                             f"({args.checkpoint}); give them two names")
        if target == os.path.realpath(args.metrics):
            raise UsageError(f"--checkpoint {args.checkpoint} and --metrics {args.metrics} "
                             f"lead to the same file ({target}) through a symbolic link; "
                             f"give two different files")
    for option, path in (("--checkpoint", args.checkpoint), ("--metrics", args.metrics)):
        # A device or pipe (/dev/null, /dev/stdout) is written in place: nothing is replaced.
        if not path or args.resume or not os.path.lexists(path) or is_stream(path):
            continue
        if not args.overwrite:
            # Replacing a finished run (or its record) by accident loses hours.
            raise UsageError(f"{option} {path} exists: pass --resume to continue its run, "
                             f"or --overwrite to start a new run there")
        # --overwrite replaces an earlier run's file, not whatever else has the
        # name (paths swapped, an image, a data set, notes).
        what, problem = (("a checkpoint", checkpoint_file_problem(path))
                         if option == "--checkpoint"
                         else ("a metrics file", metrics_file_problem(path)))
        if problem is not None:
            raise UsageError(f"{option} {path} is not {what} ({problem}); --overwrite "
                             f"replaces only {what} of an earlier run: give another path, "
                             f"or remove the file first if it should go")
    device = _device(args.device)
    given = {k: getattr(args, k) for k in RUN_KEYS if getattr(args, k) is not None}
    if "dataset" in given:
        given["dataset"] = given["dataset"].replace("-", "_")
    state = load(args.checkpoint) if args.resume and (given or args.metrics) else None
    history = state.get("history") if state is not None else None
    if args.metrics and isinstance(history, list) and all(isinstance(r, dict) for r in history):
        # A --metrics file given with --resume is rewritten with the run's
        # history at the next epoch end: it must be this run's, or new.
        # (A damaged history is named by train().)
        error = resume_metrics_error(args.metrics, args.checkpoint, history, given=True)
        if error is not None:
            raise UsageError(error)
    if args.resume and given:
        # A resumed run keeps its settings; refuse to ignore one the user typed.
        saved = state.get("config", {})
        if not isinstance(saved, dict):   # damaged: train() says so, naming the file
            saved = {}
        clashes = [f"--{k.replace('_', '-')} {v} (the run has {saved[k]})"
                   for k, v in given.items() if k in saved and saved[k] != v]
        if clashes:
            raise UsageError(f"{args.checkpoint} continues a run with other settings: "
                             f"{'; '.join(clashes)}; drop these options, or start a new run "
                             f"with another --checkpoint")
    if tune_malloc:
        # This process is ours: keeping freed large arrays saves each step
        # thousands of page faults (see reduce_malloc_churn).
        reduce_malloc_churn()
    cfg = TrainConfig(**given, device=device, data_dir=args.data_dir,
                      checkpoint=args.checkpoint, resume=args.resume, metrics=args.metrics,
                      log_every=args.log_every, max_steps=args.max_steps,
                      progress=args.progress)
    result = train(cfg)
    return 130 if result["interrupted"] else 0


# ---- eval, predict ---------------------------------------------------------------------
def _eval(args):
    from .data import DataLoader, TensorDataset
    from .train import evaluate, load_data, load_model
    _data_dir(args.data_dir)
    device = _device(args.device)
    model, state = load_model(args.checkpoint, device)
    cfg = state["config"]
    if args.data_dir is None and not cfg.get("data_dir"):   # else that directory is used
        _data_dir(None, cfg["dataset"])
    *_, x_test, y_test, _ = load_data(cfg["dataset"], args.data_dir or cfg.get("data_dir"),
                                      (state["mean"], state["std"]),
                                      progress=sys.stderr.isatty())
    loss, acc = evaluate(model, DataLoader(TensorDataset(x_test, y_test), 256, device=device))
    print(f"{cfg['model']} on {cfg['dataset']} test set ({len(y_test)} images): "
          f"accuracy {acc * 100:.2f}%, loss {loss:.4f}")
    return 0


IMAGE_SCALE_RULE = (
    "Pixel values: PNGs (8-bit; 16-bit ones are reduced to 8 bits) and integer .npy arrays "
    "are read as 0..255; floating-point .npy arrays must already lie in [0, 1]. Anything "
    "else is an error, never a guess: for another scale, give --max-value, e.g. 16 for "
    "the raw 0..16 images of scikit-learn's load_digits().")


# Channels-last pixel layouts, as in PNGs (and PIL's, imageio's, matplotlib's arrays).
CHANNELS = {2: "grey+alpha", 3: "RGB", 4: "RGBA"}
IMAGE_SHAPES = ("(H, W) grey or (H, W, C) with C = 2, 3 or 4 channels last (grey+alpha, RGB, "
                "RGBA, as in PNGs), with or without size-1 axes such as (1, H, W)")


def _image_layout(path, img):
    """``img`` as (H, W) or (H, W, C), C in :data:`CHANNELS`, by the rule of IMAGE_SHAPES."""
    colour = img.ndim >= 3 and img.shape[-1] in CHANNELS
    lead = img.shape[:-1] if colour else img.shape
    kept = tuple(n for n in lead if n > 1)
    # One axis of a square number of pixels, as (64,), (1, 64) or (64, 1): an image
    # saved flat (load_digits().data holds them so), not a strip one pixel high.
    flat = len(kept) == 1 and math.isqrt(kept[0]) ** 2 == kept[0]
    if len(lead) == 2 and not flat:
        return img
    if len(kept) == 2:
        return img.reshape(kept + img.shape[-1:] if colour else kept)
    if flat:
        side = math.isqrt(kept[0])
        shape = f"{side}, {side}" + (f", {img.shape[-1]}" if colour else "")
        hint = f"; if it is a flattened square image, save image.reshape({shape})"
    elif len(kept) == 3 and kept[0] in CHANNELS:   # (C, H, W) or (1, C, H, W), as in torch
        hint = ("; if its channels come first, save np.moveaxis(image, -3, -1); if it is a "
                "batch of images, save one image per file")
    elif len(kept) > 2:
        hint = "; if it is a batch of images, save one image per file"
    else:
        hint = ""
    raise ValueError(f"{path}: an array of shape {img.shape} is not an image; expected "
                     f"{IMAGE_SHAPES}{hint}")


def _npy_image(path, max_value=None):
    """A .npy image as float32 (H, W) or (H, W, C) in [0, 1], by the rules of
    IMAGE_SHAPES and IMAGE_SCALE_RULE."""
    from .fileio import read_npy
    # Look at the magic bytes first, to name the two likely mix-ups.  read_npy
    # checks the header's sizes against the file's before anything is allocated.
    with open(path, "rb") as f:
        magic = f.read(6)
        if magic[:4] == b"PK\x03\x04":
            raise ValueError(f"{path}: a .npz archive, not a .npy array")
        if magic != b"\x93NUMPY":
            raise ValueError(f"{path}: not a .npy file (no NumPy header)")
        f.seek(0)
        img = read_npy(f, os.fstat(f.fileno()).st_size, f"{path}: the file")
    if img.dtype.kind not in "buif":
        raise ValueError(f"{path}: expected a numeric image array, got dtype {img.dtype}")
    if img.size == 0:
        raise ValueError(f"{path}: the array is empty (shape {img.shape})")
    # The shape first: the values of an array that is no image do not matter.
    img = _image_layout(path, img)
    low, high = img.min(), img.max()
    if img.dtype.kind == "f" and not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError(f"{path}: contains NaN or infinite values")
    if max_value is not None:
        top, wanted = max_value, f"in [0, {max_value:g}] (--max-value {max_value:g})"
    elif img.dtype.kind == "f":
        top, wanted = 1.0, ("floating-point values in [0, 1]; give --max-value for another "
                            "scale (e.g. 16 for scikit-learn's raw digits)")
    elif img.dtype.kind == "b":
        top, wanted = 1, "0 or 1"
    else:
        top, wanted = 255, ("integer values in 0..255; give --max-value for another scale "
                            "(e.g. 16 for scikit-learn's raw digits)")
    if low < 0 or high > top:
        raise ValueError(f"{path}: {img.dtype} values range from {low:g} to {high:g}; "
                         f"expected {wanted}")
    if max_value is None and img.dtype.kind in "iu" and 0 < high <= 16:
        # Read as 0..255 this is a nearly black image: most likely another scale (0..16
        # digits, 0/1 masks).  Still read as the rule says, but not silently.
        warnings.warn(f"{path}: {img.dtype} values range from {low:g} to {high:g}, read as "
                      f"0..255 (a nearly black image); if its white is {high:g}, give "
                      f"--max-value {high:g}", stacklevel=2)
    return img.astype(np.float32) / np.float32(top)


def read_image(path, background=0, max_value=None):
    """A PNG or .npy image as grey float32 (H, W) in [0, 1], at its own size.

    PNGs are read as 0..255.  A .npy array is scaled by ``max_value`` when
    given, else by its type: integers as 0..255, floats must lie in [0, 1];
    values outside the range are an error (see ``IMAGE_SCALE_RULE``).  Both
    may be colour, with or without alpha (``IMAGE_SHAPES``), and become grey
    by one rule (:func:`tinygrad_cnn.viz.png.to_grey`); transparent pixels
    take the grey level ``background`` (0..255; 0: black, the background of
    the training images).
    """
    from .viz.png import PngError, read_png, to_grey
    path = os.fspath(path)
    if path.lower().endswith(".npy"):
        img = to_grey(_npy_image(path, max_value), background=background / 255.0, white=1.0)
    else:
        try:
            img = read_png(path, mode="L", background=background).astype(np.float32) / 255.0
        except PngError as e:
            if "is not a PNG file" not in str(e):   # a PNG, damaged or not supported
                raise
            raise PngError(f"{e}; expected a .png or .npy image") from None
    return img.astype(np.float32)


def load_image(path, image_shape, background=0, max_value=None):
    """A PNG or .npy image as float32 (C, H, W) in [0, 1] of ``image_shape``: read by
    :func:`read_image`, then resized as :func:`resize` says."""
    c, h, w = image_shape
    img = resize(read_image(path, background, max_value), h, w)
    return np.broadcast_to(img, (c, h, w)).astype(np.float32)


def _model_input(path, state, args):
    """The image at ``path`` as the model of checkpoint ``state`` takes it: (1, C, H, W),
    inverted if ``args.invert``, normalised with the training statistics."""
    # Transparency is paper: white before inverting, black otherwise.
    img = read_image(path, background=255 if args.invert else 0, max_value=args.max_value)
    c, h, w = state["image_shape"]
    if img.shape != (h, w):
        # Documented, and often meant (a photo), but a wrong image or checkpoint
        # shows up here first: say so, on stderr, leaving stdout's lines as they are.
        # (A .npy image saved flat never gets here: _image_layout refuses it.)
        print(f"tinygrad-cnn {args.command}: note: {path}: resized from "
              f"{img.shape[0]}x{img.shape[1]} to {h}x{w} (height x width), the model's "
              f"input size", file=sys.stderr)
        img = resize(img, h, w).astype(np.float32)   # then normalised in float32, as ever
    img = np.broadcast_to(img, (c, h, w))
    if args.invert:
        img = 1.0 - img
    mean = np.asarray(state["mean"], np.float32).reshape(-1, 1, 1)  # (C, 1, 1)
    std = np.asarray(state["std"], np.float32).reshape(-1, 1, 1)  # (C, 1, 1)
    return ((img - mean) / std).astype(np.float32)[None]


def resize(img, h, w):
    """A 2-D image resized to (h, w), as float64, each axis on its own: a shrinking
    axis by averaging the pixels that fall into each output pixel, a growing one by
    repeating pixels (nearest neighbour).  The same size changes no value."""
    img = np.asarray(img)
    H, W = img.shape
    # Repeating first (an exact copy), so the averages below sum the same pixels.
    if h > H:
        img = np.take(img, (np.arange(h) * H) // h, axis=0)
    if w > W:
        img = np.take(img, (np.arange(w) * W) // w, axis=1)
    # Pixel (i, j) falls into output pixel (i * h // H, j * w // W): itself where
    # the axis keeps its size.  One pass over the pixels in row-major order, summed
    # in float64 (sums of many float32 pixels lose digits), as np.add.at would.
    rows = (np.arange(img.shape[0]) * h) // img.shape[0]
    cols = (np.arange(img.shape[1]) * w) // img.shape[1]
    bins = (rows[:, None] * w + cols).ravel()
    sums = np.bincount(bins, weights=img.ravel(), minlength=h * w)
    return (sums / np.bincount(bins, minlength=h * w)).reshape(h, w)


def _predict(args):
    from .data import CLASSES
    from .tensor import tensor
    from .train import load_model
    device = _device(args.device)
    model, state = load_model(args.checkpoint, device)
    names = CLASSES.get(state["config"]["dataset"])
    for path in args.files:
        x = tensor(_model_input(path, state, args), device=device)  # (1, C, H, W)
        probs = model(x).softmax(-1).numpy()[0]
        best = int(probs.argmax())
        label = names[best] if names else str(best)
        ranked = ", ".join(f"{names[i] if names else i}: {probs[i]:.3f}"
                           for i in np.argsort(-probs, kind="stable"))
        print(f"{path}: {label} (p={probs[best]:.3f}; {ranked})")
    return 0


# ---- summary, gradcheck, info ------------------------------------------------------------
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


# Optional packages: (distribution name on PyPI, name printed).  Their
# versions come from the installed metadata: importing torch and
# scikit-learn just to read a version string would take seconds.
_OPTIONAL = (("torch", "torch"), ("scikit-learn", "scikit-learn"), ("tqdm", "tqdm"),
             ("matplotlib", "matplotlib"))
_CUPY_DISTRIBUTIONS = ("cupy-cuda12x", "cupy-cuda13x", "cupy-cuda11x", "cupy")


def _installed_version(*distributions):
    """The version of the first of ``distributions`` that is installed, else None."""
    from importlib import metadata
    for name in distributions:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        # With several candidates, say which one is installed.
        return version if len(distributions) == 1 else f"{version} ({name})"
    return None


def _info(args):
    from .backend import backends, get_backend
    print(f"tinygrad_cnn {__version__}")
    print(f"python {platform.python_version()} ({sys.executable})")
    print(f"numpy {np.__version__}")
    for label, dists in [("cupy", _CUPY_DISTRIBUTIONS)] + [(n, (d,)) for d, n in _OPTIONAL]:
        version = _installed_version(*dists)
        print(f"{label} {version}" if version else f"{label}: not installed")
    print("backends:")
    for row in backends():
        mark = "usable" if row["usable"] else "not usable"
        print(f"  {row['device']:<8} {mark}: {row['reason']}")
        if row["usable"] and row["device"] == "cuda":
            for k, v in get_backend("cuda").describe().items():
                print(f"           {k}: {v}")
    return 0


# ---- show, plot ------------------------------------------------------------------------
def _has_layer(model, kinds):
    """Whether ``model`` has a layer whose class name is in ``kinds``."""
    return any(type(m).__name__ in kinds for m in model.modules())


def _models_with(kinds, image_shape):
    """The names of the models that have a layer of ``kinds`` (class names)."""
    from . import models
    return [name for name in models.MODELS
            if _has_layer(models.build(name, image_shape), kinds)]


MAX_MAPS = 16   # show --feature-maps: the channels drawn per layer unless --max-maps


def _show(args):
    from .tensor import tensor
    from .train import load_model
    from .viz import images
    if not args.filters and not args.feature_maps:
        raise UsageError("nothing to show: give --filters OUT.png and/or --feature-maps "
                         "IMAGE OUT.png")
    if not args.feature_maps:   # else they would be ignored without a word
        for option, value in (("--max-maps", args.max_maps), ("--max-value", args.max_value),
                              ("--invert", args.invert or None)):
            if value is not None:
                raise UsageError(f"{option} applies to the image of --feature-maps IMAGE "
                                 f"OUT.png, which is not given")
    if args.filters:
        _png_output(args.filters, "--filters")
    if args.feature_maps:
        _png_output(args.feature_maps[1], "--feature-maps")
    model, state = load_model(args.checkpoint)
    name, shape = state["config"]["model"], tuple(state["image_shape"])
    # Everything is checked (and the image read) before anything is written, so a
    # failure leaves no half of the output behind.
    if args.filters and not _has_layer(model, ("Conv2d",)):
        # The library would ask for a weight tensor instead; say what a
        # command-line user can change: the checkpoint.
        raise UsageError(f"--filters: {args.checkpoint} holds the {name} model, which has "
                         f"no convolution, so no filters to draw; models with "
                         f"convolutions: {', '.join(_models_with(('Conv2d',), shape))}")
    if args.feature_maps:
        image_path, out = args.feature_maps
        if not _has_layer(model, images.CONV_LAYERS):
            raise UsageError(f"--feature-maps: {args.checkpoint} holds the {name} model, which "
                             f"has no convolution or locally-connected layer, so no feature "
                             f"maps to draw; models with them: "
                             f"{', '.join(_models_with(images.CONV_LAYERS, shape))}")
        x = tensor(_model_input(image_path, state, args))
    if args.filters:
        images.save_filters(model, args.filters)
        print(f"wrote {args.filters}")
    if args.feature_maps:
        images.save_feature_maps(model, x, out, max_channels=args.max_maps or MAX_MAPS)
        print(f"wrote {out}")
    return 0


def _plot(args):
    from .viz.curves import plot_curves
    _png_output(args.output, "-o/--output")
    plot_curves(args.metrics, args.output)
    print(f"wrote {args.output}")
    return 0


# ---- the parser ------------------------------------------------------------------------
def build_parser():
    from .models import MODELS
    parser = argparse.ArgumentParser(
        prog="tinygrad-cnn",
        description="Train, inspect and check convolutional networks built on a "
                    "from-scratch autograd engine. 'tinygrad-cnn COMMAND --help' explains "
                    "each command. Exit status: 0 success, 1 error, 2 usage error, "
                    "130 Ctrl-C.")
    parser.add_argument("--version", action="version", version=f"tinygrad_cnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.commands = sub.choices   # name -> the command's parser
    _add_train(sub)
    checkpoint_help = "a checkpoint written by 'tinygrad-cnn train --checkpoint PATH'"

    p = sub.add_parser("eval", help="test-set accuracy of a checkpoint",
                       description="Evaluate a trained model on the test split of the data "
                                   "set it was trained on (loss and accuracy), normalised "
                                   "with the training statistics saved in the checkpoint.")
    p.add_argument("--checkpoint", required=True, metavar="PATH", help=checkpoint_help)
    _device_option(p)
    p.add_argument("--data-dir", default=None,
                   help="where the MNIST-style files live (default: the directory the run "
                        "was trained with, else $TINYGRAD_CNN_DATA or ~/.cache/tinygrad_cnn)")
    p.set_defaults(func=_eval)

    p = sub.add_parser("predict", help="class probabilities for PNG or .npy images",
                       description="Print the predicted class and the probability of every "
                                   "class for each image, one line per file. Images are "
                                   "made grey, resized to the model's input size (with a "
                                   "note on stderr) and normalised as in training. .npy "
                                   "arrays: " + IMAGE_SHAPES + "; one axis of a square "
                                   "number of pixels, as (64,) or (1, 64), is refused as "
                                   "an image saved flat. " + IMAGE_SCALE_RULE)
    p.add_argument("--checkpoint", required=True, metavar="PATH", help=checkpoint_help)
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="PNG or .npy, grey or colour; resized to the model's input size; bright "
                        "strokes on a dark background, like the training data")
    p.add_argument("--invert", action="store_true",
                   help="invert the images first (for dark strokes on white paper)")
    p.add_argument("--max-value", type=_finite_float(0, allow_low=False), default=None,
                   metavar="V", help="the value of a white pixel in .npy files: values must lie "
                                     "in [0, V] and are divided by V (default: 255 for "
                                     "integer arrays; floating-point arrays must lie in "
                                     "[0, 1]); PNGs are always 0..255")
    _device_option(p)
    p.set_defaults(func=_predict)

    model_help = "architecture, as in 'tinygrad-cnn train --model' (default: %(default)s)"
    dataset_help = ("the data set whose image size the model is built for: digits 8x8, "
                    "mnist/fashion-mnist 28x28 (default: %(default)s)")
    p = sub.add_parser("summary", help="layers, parameter counts and receptive fields",
                       description="Print a model's layers with their output shapes, "
                                   "parameter counts, what each convolution would cost "
                                   "fully- or locally-connected, and receptive fields. "
                                   "Nothing is trained or downloaded.")
    p.add_argument("--model", default="cnn", choices=list(MODELS), help=model_help)
    p.add_argument("--dataset", default="digits", choices=DATASETS, help=dataset_help)
    p.set_defaults(func=_summary)

    p = sub.add_parser("gradcheck", help="check a float64 copy of a model, layer by layer "
                                         "and end to end, against finite differences",
                       description="Build a model with random weights in float64 and compare "
                                   "the gradients backward computes with central finite "
                                   "differences, for every layer on its own and for the "
                                   "whole model, on randomly chosen elements of every input "
                                   "and weight. Exit status 1 when a gradient disagrees.")
    p.add_argument("--model", default="cnn", choices=list(MODELS), help=model_help)
    p.add_argument("--dataset", default="digits", choices=DATASETS, help=dataset_help)
    p.add_argument("--elements", type=_int_at_least(1), default=24,
                   help="elements checked per tensor, chosen at random (default: %(default)s)")
    p.add_argument("--seed", type=_int_at_least(0), default=0,
                   help="seed for the weights, the inputs and the elements chosen "
                        "(default: %(default)s)")
    p.set_defaults(func=_gradcheck)

    p = sub.add_parser("info", help="versions, and which backends are usable and why",
                       description="Print the versions of tinygrad_cnn, Python, NumPy and "
                                   "the optional packages, and for each backend (cpu, cuda) "
                                   "whether it is usable here and why not; for a usable GPU, "
                                   "its name, memory and CUDA versions.")
    p.set_defaults(func=_info)

    p = sub.add_parser("show", help="pictures of a trained model's filters and feature maps",
                       description="Draw a trained model as PNG pictures: the kernels of its "
                                   "first convolution (--filters; models with convolutions "
                                   "only) and what every convolution or locally-connected "
                                   "layer outputs for one image (--feature-maps; the "
                                   f"first {MAX_MAPS} channels of each layer, or --max-maps "
                                   "N). The "
                                   "output directory must exist.")
    p.add_argument("--checkpoint", required=True, metavar="PATH", help=checkpoint_help)
    p.add_argument("--filters", metavar="OUT.png", help="first-layer kernels as one image")
    p.add_argument("--feature-maps", nargs=2, metavar=("IMAGE", "OUT.png"),
                   help="what every conv layer outputs for IMAGE (a PNG or .npy, read as "
                        "by 'tinygrad-cnn predict'): the first --max-maps output channels "
                        "of each layer")
    p.add_argument("--max-maps", type=_int_at_least(1), default=None, metavar="N",
                   help=f"feature maps drawn per layer, its first N channels (default: "
                        f"{MAX_MAPS}; the cnn model's layers have 32 and 64)")
    p.add_argument("--max-value", type=_finite_float(0, allow_low=False), default=None,
                   metavar="V", help="the value of a white pixel if IMAGE is a .npy file "
                                     "(as in 'tinygrad-cnn predict')")
    p.add_argument("--invert", action="store_true",
                   help="invert IMAGE first (for dark strokes on white paper)")
    p.set_defaults(func=_show)

    p = sub.add_parser("plot", help="training curves from a --metrics file",
                       description="Draw the loss and accuracy per epoch, train and test, "
                                   "from the JSON-lines file 'tinygrad-cnn train --metrics' "
                                   "writes, into a PNG picture (with matplotlib when "
                                   "installed, else a built-in plotter).")
    p.add_argument("metrics", metavar="METRICS.jsonl",
                   help="the file written by 'tinygrad-cnn train --metrics'")
    p.add_argument("-o", "--output", default="curves.png", metavar="OUT.png",
                   help="the picture to write, a .png name in an existing directory "
                        "(default: %(default)s)")
    p.set_defaults(func=_plot)
    return parser


def _quiet_stdout():
    """Point stdout at /dev/null, so the interpreter's final flush of what is
    left in its buffer does not fail again on the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a file (a test's StringIO)
        pass


def main(argv=None):
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    Expected failures (bad files, unusable device, ...) print one line to
    stderr and return 1; usage errors (bad option values, options that
    contradict each other) return 2, and no command prints the help and
    returns 2.  A reader that closes the pipe early (``| head``) ends the
    command quietly with status 1, as the Python documentation recommends.
    """
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:   # named by the command's own parser, with its usage
        parser.commands.get(args.command, parser).error(
            f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help()
        return 2
    with warnings.catch_warnings():   # one line each on stderr, in the errors' form
        warnings.showwarning = lambda message, *_, **__: print(
            f"tinygrad-cnn {args.command}: warning: {message}", file=sys.stderr)
        return _run(args)


def _run(args):
    """The command of ``args``, its expected failures turned into exit statuses."""
    from .backend import DeviceError
    from .checkpoint import CheckpointError
    from .data import DownloadError
    try:
        if args.command != "info":   # a bad setting for computing is a usage error
            _environment()
        status = args.func(args)
        sys.stdout.flush()  # a closed pipe is reported here, not at interpreter exit
        return status
    except UsageError as e:
        print(f"tinygrad-cnn {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # Whoever read our output has gone (``| head -1``): nothing to report.
        _quiet_stdout()
        return 1
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
