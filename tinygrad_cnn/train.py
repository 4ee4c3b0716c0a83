"""The training loop behind ``tinygrad-cnn train``: data, model, optimiser,
checkpoints that resume exactly, metrics, and a clean stop on Ctrl-C.

Resuming is exact: a checkpoint holds the model, the optimiser and
scheduler state, the data loader's position (epoch and batch), the state
of the random generator and the running sums of an unfinished epoch, so
training that stops and resumes ends with the same weights (and reports
the same per-epoch numbers) as training that never stopped.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import numbers
import signal
import sys
import time
import warnings
import zipfile

import numpy as np

from . import checkpoint, models, nn, optim
from ._checks import is_int, is_real, one_line
from .autograd import no_grad
from .backend import get_backend
from .fileio import atomic_write, is_stream
from .data import DataLoader, TensorDataset, download, load_dataset, mean_std, normalize
from .tensor import Tensor, get_rng, manual_seed, stack

OPTIMIZERS = {"adam": 2e-3, "adamw": 2e-3, "sgd": 0.05}  # name -> default learning rate
RUN_KEYS = ("dataset", "model", "epochs", "batch_size", "lr", "optimizer", "weight_decay", "seed")


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a run (saved in every checkpoint)."""
    dataset: str = "digits"
    model: str = "cnn"
    epochs: int = 15
    batch_size: int = 32
    lr: float | None = None          # None: the optimiser's default above
    optimizer: str = "adam"
    weight_decay: float | None = None  # None: 0.01 for adamw, 0 otherwise
    seed: int = 0
    device: str = "cpu"
    data_dir: str | None = None
    checkpoint: str | None = None    # where to save (every epoch, and on Ctrl-C)
    resume: bool = False
    metrics: str | None = None       # JSON lines, one per epoch
    log_every: int = 20              # steps between progress-bar updates (each syncs once)
    max_steps: int | None = None     # stop after this many steps of this call (as on Ctrl-C)
    progress: bool | None = None     # None: only when stderr is a terminal

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of "
                             f"{', '.join(OPTIMIZERS)}")
        if self.model not in models.MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose one of "
                             f"{', '.join(models.MODELS)}")
        for name in ("epochs", "batch_size", "log_every") + (
                ("max_steps",) if self.max_steps is not None else ()):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.lr is None:
            self.lr = OPTIMIZERS[self.optimizer]
        if self.weight_decay is None:
            self.weight_decay = 1e-2 if self.optimizer == "adamw" else 0.0
        # NaN passes every comparison, so "lr > 0" alone would let it through.
        if not is_real(self.lr) or not math.isfinite(self.lr) or self.lr <= 0:
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        if not is_real(self.weight_decay) or not math.isfinite(self.weight_decay) \
                or self.weight_decay < 0:
            raise ValueError(f"weight_decay must be a finite number >= 0, got "
                             f"{self.weight_decay!r}")
        if not isinstance(self.seed, numbers.Integral) or isinstance(self.seed, bool) \
                or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        if self.resume and not self.checkpoint:
            raise ValueError("--resume needs --checkpoint PATH")
        # Saved in checkpoints: a resumed run started elsewhere finds the same files.
        for name in ("metrics", "data_dir"):
            if getattr(self, name):
                setattr(self, name, os.path.abspath(getattr(self, name)))


# ---- pieces ---------------------------------------------------------------------
def load_data(dataset, data_dir=None, stats=None, progress=True):
    """Train and test arrays, normalised with the training split's mean and std
    (or with ``stats`` = (mean, std) when given, e.g. those of a checkpoint)."""
    if dataset.replace("-", "_") in download.DATASETS:
        # Fetch both splits' files first, so that an offline machine hears of
        # every missing file at once rather than of the test files only
        # after the training files were placed by hand.
        download.fetch(dataset, data_dir=data_dir, progress=progress)
    x_train, y_train = load_dataset(dataset, "train", data_dir=data_dir, progress=progress)
    x_test, y_test = load_dataset(dataset, "test", data_dir=data_dir, progress=progress)
    mean, std = stats if stats is not None else mean_std(x_train)
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    return (normalize(x_train, mean, std), y_train, normalize(x_test, mean, std), y_test,
            (mean, std))


def build(cfg, image_shape, num_classes, steps_per_epoch):
    """Model, optimiser and learning-rate schedule (one-cycle over the whole run)."""
    manual_seed(cfg.seed)
    model = models.build(cfg.model, image_shape, num_classes).to(cfg.device)
    params = list(model.parameters())
    if cfg.optimizer == "sgd":
        opt = optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True,
                        weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "adamw":
        opt = optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = optim.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch)
    return model, opt, sched


def _read(*scalars):
    """0-d tensors -> Python floats, read with one device -> host transfer."""
    return [float(v) for v in stack([s.detach() for s in scalars]).numpy()]


def evaluate(model, loader):
    """Mean loss and accuracy over a loader; one host sync at the end."""
    was_training = model.training
    model.eval()
    total_loss = total_correct = None
    count = 0
    with no_grad():
        for x, y in loader:
            logits = model(x)
            loss = nn.cross_entropy(logits, y, reduction="sum")
            correct = (logits.argmax(axis=1) == y).astype("float32").sum()
            total_loss = loss if total_loss is None else total_loss + loss
            total_correct = correct if total_correct is None else total_correct + correct
            count += len(y)
    model.train(was_training)
    if count == 0:
        raise ValueError(f"evaluate: the loader gave no samples ({len(loader)} batches of "
                         f"a data set of {len(loader.dataset)}); nothing to average")
    total_loss, total_correct = _read(total_loss, total_correct)
    return total_loss / count, total_correct / count


class _StopOnSigint:
    """First Ctrl-C asks the loop to stop after the current step; a second one
    interrupts at once."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        self._previous = signal.getsignal(signal.SIGINT)
        try:
            signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave Ctrl-C alone
            self._previous = None
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class _MetricsWriter:
    """Writes the run's per-epoch records (JSON lines) to ``path`` at each epoch end.

    A file is rewritten whole, atomically, so that it always holds the run's
    history.  A device or pipe (``/dev/stdout``, a FIFO) is opened once, at the
    first epoch end, and gets each record once: its reader sees every write, so
    rewriting would repeat every earlier record, and a FIFO's reader stops at
    the end of file a close sends, so a second open would wait for it forever.
    What a stream receives in all is what the file would hold at the end.
    """

    def __init__(self, path):
        self.path = path
        self._stream = None
        self._sent = 0   # records of the history already written to the stream

    def __enter__(self):
        return self

    def write(self, history):
        """Record ``history``, the run's records so far (earlier ones included)."""
        if not self.path:
            return
        if not is_stream(self.path):
            atomic_write(self.path, "".join(json.dumps(r) + "\n" for r in history))
            return
        if self._stream is None:
            self._stream = open(self.path, "wb")
        self._stream.write("".join(json.dumps(r) + "\n" for r in history[self._sent:])
                           .encode("utf-8"))
        self._stream.flush()   # each epoch's line reaches the reader at its epoch's end
        self._sent = len(history)

    def __exit__(self, exc_type, *exc):
        if self._stream is None:
            return
        try:
            self._stream.close()
        except OSError:   # a reader gone (broken pipe): not to hide the error in flight
            if exc_type is None:
                raise


def _show_progress(setting):
    """Whether to draw progress bars: ``setting`` if given, else only on a terminal
    (a bar redrawn with carriage returns turns a log file into noise)."""
    if setting is not None:
        return bool(setting)
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def _progress(total, desc, enabled):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True,
                file=sys.stderr)


# ---- the loop -------------------------------------------------------------------
def _print(message):
    # Flush every line: a log piped to a file or another program (tee, a
    # supervisor waiting for "epoch") should see each epoch as it ends.
    print(message, flush=True)


TRAINING_KEYS = ("config", "image_shape", "num_classes", "mean", "std", "model")
RESUME_KEYS = TRAINING_KEYS + ("optimizer", "scheduler", "loader", "rng", "history")


def _check_training_checkpoint(state, path, keys=TRAINING_KEYS):
    """Raise CheckpointError unless ``state`` has every entry in ``keys``."""
    missing = [k for k in keys if not isinstance(state, dict) or k not in state]
    if missing:
        raise checkpoint.CheckpointError(
            f"{path} is not a training checkpoint of tinygrad-cnn (no "
            f"{', '.join(repr(k) for k in missing)} entr{'y' if len(missing) == 1 else 'ies'})")
    config = state["config"]
    if not isinstance(config, dict) or not {"model", "dataset"} <= set(config) \
            or not all(isinstance(config[k], str) for k in ("model", "dataset")):
        raise checkpoint.CheckpointError(f"{path}: the checkpoint's 'config' entry is damaged "
                                         f"(expected a dict naming the model and data set)")
    if not isinstance(config.get("data_dir"), (str, type(None))):
        raise checkpoint.CheckpointError(f"{path}: the checkpoint's 'config' entry is damaged "
                                         f"(its data_dir {one_line(str(config['data_dir']))} is "
                                         f"not a path)")


def _restore(path, what, load, value):
    """Run ``load(value)``; any complaint becomes a one-line CheckpointError."""
    try:
        load(value)
    # OverflowError: an integer beyond what NumPy takes (a generator's state).
    except (KeyError, TypeError, ValueError, RuntimeError, OverflowError) as e:
        lines = [line.strip() for line in str(e).strip("'\"").splitlines() if line.strip()]
        detail = " ".join(lines[:1] + ["; ".join(lines[1:])]).strip()  # one line
        raise checkpoint.CheckpointError(f"{path}: cannot restore the {what} (checkpoint "
                                         f"damaged or from another model?): {detail}") from None


def train(cfg, out=_print):
    """Train as ``cfg`` says; returns a dict with the final test accuracy and more.

    ``cfg.max_steps`` counts the steps of this call only, so a run resumed
    from a checkpoint may be continued in slices of ``max_steps`` steps.
    Stopping (Ctrl-C or ``max_steps``) saves the full state when
    ``cfg.checkpoint`` is set; ``result["interrupted"]`` is true only for
    Ctrl-C.
    """
    backend = get_backend(cfg.device)
    cfg.device = backend.device
    start_time = time.perf_counter()
    state = None
    if cfg.resume:
        state = checkpoint.load(cfg.checkpoint)
        _check_training_checkpoint(state, cfg.checkpoint, RESUME_KEYS)
        # The run's definition comes from the checkpoint; only where it runs
        # and what it reports may change.
        missing = [k for k in RUN_KEYS if k not in state["config"]]
        if missing:
            raise checkpoint.CheckpointError(f"{cfg.checkpoint}: the saved configuration lacks "
                                             f"{', '.join(missing)}")
        for key in RUN_KEYS:
            setattr(cfg, key, state["config"][key])
        # Where the run reports and finds its data carry over too, unless
        # given anew: a resumed run keeps appending to its metrics file.
        metrics_from_checkpoint = cfg.metrics is None
        for key in ("metrics", "data_dir"):
            if getattr(cfg, key) is None:
                setattr(cfg, key, state["config"].get(key))
        try:   # the saved settings pass the checks typed ones pass
            cfg.__post_init__()
        except (TypeError, ValueError) as e:
            raise checkpoint.CheckpointError(f"{cfg.checkpoint}: the saved configuration is "
                                             f"damaged: {e}") from None
        if not isinstance(state["history"], list) or not all(
                isinstance(r, dict) for r in state["history"]):
            raise checkpoint.CheckpointError(f"{cfg.checkpoint}: the saved history is damaged "
                                             f"(expected a list of per-epoch records)")
        if cfg.metrics:
            # Each epoch end rewrites the file with the whole history: refuse to
            # replace what is not this run's record (see resume_metrics_error).
            error = resume_metrics_error(cfg.metrics, cfg.checkpoint, state["history"],
                                         given=not metrics_from_checkpoint)
            if error is not None:
                raise (ValueError if not metrics_from_checkpoint
                       else checkpoint.CheckpointError)(error)
            later = len(_read_metrics_file(cfg.metrics)) - len(state["history"])
            if later > 0:
                out(f"{cfg.metrics}: its last {later} epoch(s) go beyond the "
                    f"{len(state['history'])} saved in {cfg.checkpoint}; they are dropped at "
                    f"the next epoch end, and the resumed run writes its own")
        _check_declared(state, cfg.checkpoint)
        state["partial"] = _check_partial(state.get("partial"), cfg.checkpoint)
    progress = _show_progress(cfg.progress)
    if cfg.progress and importlib.util.find_spec("tqdm") is None:   # asked for, not possible
        # A warning (stderr, in the command's "warning:" form), not a line of the log.
        warnings.warn("no progress bar: training draws it with tqdm, which is not installed "
                      "(pip install tqdm, or the [examples] extra)", stacklevel=2)
    stats = (state["mean"], state["std"]) if state is not None else None
    x_train, y_train, x_test, y_test, (mean, std) = load_data(cfg.dataset, cfg.data_dir, stats,
                                                              progress=progress)
    num_classes = int(y_train.max()) + 1
    image_shape = x_train.shape[1:]
    train_loader = DataLoader(TensorDataset(x_train, y_train), cfg.batch_size, shuffle=True,
                              seed=cfg.seed, device=backend)
    test_loader = DataLoader(TensorDataset(x_test, y_test), 256, device=backend)
    model, opt, sched = build(cfg, image_shape, num_classes, len(train_loader))
    history = []
    # The running sums of the epoch in progress: saved when training stops
    # mid-epoch, so the resumed epoch reports the same numbers.
    acc = {"loss_sum": None, "correct_sum": None, "seen": 0, "seconds": 0.0}
    if state is not None:
        path = cfg.checkpoint
        if tuple(state["image_shape"]) != tuple(image_shape) \
                or state["num_classes"] != num_classes:
            raise checkpoint.CheckpointError(
                f"{path} was saved for {state['num_classes']} classes of images "
                f"{tuple(state['image_shape'])}, but {cfg.dataset} has {num_classes} of "
                f"{tuple(image_shape)}")
        _restore(path, "model", model.load_state_dict, state["model"])
        _restore(path, "optimizer", opt.load_state_dict, state["optimizer"])
        _restore(path, "learning-rate schedule", sched.load_state_dict, state["scheduler"])
        _restore(path, "data loader position", train_loader.load_state_dict, state["loader"])
        _restore(path, "random generator",
                 lambda rng: setattr(get_rng().bit_generator, "state", rng), state["rng"])
        history = list(state["history"])
        partial = state.get("partial")
        if partial is not None and partial["epoch"] == train_loader.epoch:
            acc = {"loss_sum": Tensor._make(backend.asarray(partial["loss_sum"]), backend),
                   "correct_sum": Tensor._make(backend.asarray(partial["correct_sum"]), backend),
                   "seen": int(partial["seen"]), "seconds": float(partial["seconds"])}
        if train_loader.epoch >= cfg.epochs:
            out(f"{path}: the run finished all {cfg.epochs} epochs; nothing to resume (start "
                f"a new run with --overwrite or another --checkpoint)")
        else:
            out(f"resumed from {path} at epoch {train_loader.epoch + 1}, "
                f"batch {train_loader.state_dict()['batch']}")

    def save():
        mid_epoch = train_loader.state_dict()["batch"] > 0
        checkpoint.save(cfg.checkpoint, {
            "config": dataclasses.asdict(cfg), "image_shape": list(image_shape),
            "num_classes": num_classes, "mean": mean, "std": std,
            "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "loader": train_loader.state_dict(),
            "rng": get_rng().bit_generator.state, "history": history,
            "partial": None if not mid_epoch else {
                "epoch": train_loader.epoch, "loss_sum": acc["loss_sum"],
                "correct_sum": acc["correct_sum"], "seen": acc["seen"],
                "seconds": acc["seconds"]},
        })

    n_params = sum(p.size for p in model.parameters())
    if train_loader.epoch < cfg.epochs:   # (a finished run resumed only reports its result)
        out(f"training {cfg.model} ({n_params:,} parameters) on {cfg.dataset} "
            f"({len(x_train)} train / {len(x_test)} test images) on {cfg.device}")
    steps = 0  # steps of this call (what max_steps counts)
    stopped = interrupted = False
    with _StopOnSigint() as sigint, _MetricsWriter(cfg.metrics) as metrics:
        while train_loader.epoch < cfg.epochs and not stopped:
            epoch = train_loader.epoch
            bar = _progress(len(train_loader) - train_loader.state_dict()["batch"],
                            f"epoch {epoch + 1}/{cfg.epochs}", progress)
            model.train()
            t0 = time.perf_counter() - acc["seconds"]
            for x, y in train_loader:
                logits = model(x)
                loss = nn.cross_entropy(logits, y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                # Accumulate on the device; read back only every log_every steps.
                batch_loss = loss.detach() * len(y)
                batch_correct = (logits.detach().argmax(axis=1) == y).astype("float32").sum()
                acc["loss_sum"] = batch_loss if acc["loss_sum"] is None \
                    else acc["loss_sum"] + batch_loss
                acc["correct_sum"] = batch_correct if acc["correct_sum"] is None \
                    else acc["correct_sum"] + batch_correct
                acc["seen"] += len(y)
                acc["seconds"] = time.perf_counter() - t0
                steps += 1
                if bar is not None:
                    bar.update(1)
                    if steps % cfg.log_every == 0:  # the one host sync of a logged step
                        seen = acc["seen"]
                        loss_sum, correct_sum = _read(acc["loss_sum"], acc["correct_sum"])
                        # The read waited for the queued GPU work: only now is the
                        # clock a measure of what was computed.
                        acc["seconds"] = time.perf_counter() - t0
                        bar.set_postfix({"loss": f"{loss_sum / seen:.4f}",
                                         "acc": f"{correct_sum / seen:.3f}",
                                         "samples/s": f"{seen / acc['seconds']:.0f}"})
                interrupted = sigint.requested
                if interrupted or (cfg.max_steps is not None and steps >= cfg.max_steps):
                    stopped = True
                    break
            if bar is not None:
                bar.close()
            if train_loader.epoch == epoch:  # stopped inside the epoch
                break
            # Reading the sums waits for the epoch's queued GPU work; time after it.
            loss_sum, correct_sum = _read(acc["loss_sum"], acc["correct_sum"])
            train_seconds = time.perf_counter() - t0
            test_loss, test_acc = evaluate(model, test_loader)
            seen = max(acc["seen"], 1)
            row = {"epoch": epoch + 1, "train_loss": loss_sum / seen,
                   "train_acc": correct_sum / seen, "test_loss": test_loss,
                   "test_acc": test_acc, "lr": sched.get_last_lr()[0],
                   "seconds": round(train_seconds, 3)}
            history.append(row)
            acc = {"loss_sum": None, "correct_sum": None, "seen": 0, "seconds": 0.0}
            out(f"epoch {epoch + 1:3d}/{cfg.epochs}  train loss {row['train_loss']:.4f} "
                f"acc {row['train_acc']:.4f}  test loss {test_loss:.4f} acc {test_acc:.4f}  "
                f"({seen / max(train_seconds, 1e-9):.0f} samples/s)")
            metrics.write(history)
            if cfg.checkpoint:
                save()
    where = train_loader.state_dict()
    if stopped and where["epoch"] < cfg.epochs:
        why = "interrupted" if interrupted else f"stopped after {steps} step(s) (--max-steps)"
        if cfg.checkpoint:
            if where["batch"] > 0:  # (stopped at an epoch end: saved just above)
                save()
            out(f"{why} at epoch {where['epoch'] + 1}, batch {where['batch']}; state saved to "
                f"{cfg.checkpoint} (continue with --resume)")
        else:
            out(f"{why} at epoch {where['epoch'] + 1}, batch {where['batch']}; nothing saved "
                f"(no --checkpoint)")
    else:
        interrupted = False  # the run was complete: nothing was cut short
    test_loss, test_acc = evaluate(model, test_loader)
    elapsed = time.perf_counter() - start_time
    out(f"test accuracy {test_acc * 100:.2f}% (loss {test_loss:.4f}) after "
        f"{where['epoch']} epoch(s) in {elapsed:.1f} s; {n_params:,} parameters")
    return {"test_acc": test_acc, "test_loss": test_loss, "seconds": elapsed,
            "parameters": n_params, "history": history, "model": model,
            "stopped": stopped and where["epoch"] < cfg.epochs, "interrupted": interrupted}


# Models this small are built without comparing their size with the weights
# the checkpoint holds, so that a wrong shape is named by load_state_dict.
_ALWAYS_BUILT = 2**20


def _damaged(path, key, expected, value):
    return checkpoint.CheckpointError(f"{path}: the checkpoint's {key!r} entry is damaged: "
                                      f"expected {expected}, got {one_line(str(value))}")


def _check_declared(state, path):
    """Check the image shape, class count and training statistics a training
    checkpoint declares; returns ``(image_shape, num_classes)`` and puts
    ``state["mean"]`` and ``state["std"]`` back as float32 arrays."""
    shape, num_classes = state["image_shape"], state["num_classes"]
    # Below 2**63: no array has a larger size, and the model's size, computed
    # from them, keeps few enough digits to be printed.
    if not isinstance(shape, (list, tuple)) or len(shape) != 3 \
            or not all(is_int(s) and 1 <= s < 2**63 for s in shape):
        raise _damaged(path, "image_shape", "three positive ints (C, H, W) below 2**63", shape)
    if not (is_int(num_classes) and 1 <= num_classes < 2**63):
        raise _damaged(path, "num_classes", "a positive int below 2**63", num_classes)
    channels = int(shape[0])
    for key in ("mean", "std"):
        value = state[key]
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            array = None
        if array is None or isinstance(value, (bool, str)) \
                or array.shape not in ((), (channels,)) or not np.isfinite(array).all() \
                or (key == "std" and not (array > 0).all()):
            raise _damaged(path, key, f"{'positive ' if key == 'std' else ''}finite numbers, "
                                      f"one or one per channel ({channels})", value)
        state[key] = array.astype(np.float32)
    return tuple(int(s) for s in shape), int(num_classes)


def _amount(value, finite=True):
    """Whether ``value`` is a real number >= 0 (a 0-d array counts), finite unless
    ``finite`` is false, when NaN and infinity pass too."""
    if isinstance(value, (bool, str)):
        return False
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return array.shape == () and not array < 0 and (not finite or bool(np.isfinite(array)))


def _check_partial(partial, path):
    """The running sums of an epoch saved midway (None if there are none), checked,
    with the loss and accuracy sums as the float32 0-d arrays the trainer keeps."""
    keys = ("epoch", "loss_sum", "correct_sum", "seen", "seconds")
    if partial is None:
        return None
    # The loss sum of a run that diverged is NaN or infinite: resumed as saved.
    if isinstance(partial, dict) and set(keys) <= set(partial) \
            and all(is_int(partial[k]) and partial[k] >= 0 for k in ("epoch", "seen")) \
            and _amount(partial["loss_sum"], finite=False) \
            and all(_amount(partial[k]) for k in ("correct_sum", "seconds")):
        # A plain number (an edited header holds them) would meet the epoch's
        # float32 sums as a Python float, which no operation takes.
        with np.errstate(over="ignore"):   # a sum beyond float32 is infinite there too
            sums = {k: np.asarray(partial[k], np.float32) for k in ("loss_sum", "correct_sum")}
        return dict(partial, **sums)
    raise _damaged(path, "partial", f"None or a dict of {', '.join(keys)}: numbers >= 0 "
                                    f"(the loss sum may be NaN or infinite)", partial)


# The first bytes of the binary files a user is likely to have beside a run's files.
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "a PNG image"), (b"\x93NUMPY", "a .npy array"),
          (b"PK\x03\x04", "a zip archive"), (b"PK\x05\x06", "a zip archive"))


def _file_kind(path):
    """What the file at ``path`` is by its first bytes: "a tinygrad_cnn checkpoint",
    "an .npz (zip) archive", "an unreadable zip archive, ...", "a PNG image",
    "a .npy array", or None (none of these)."""
    with open(path, "rb") as f:
        head = f.read(8)
    kind = next((name for magic, name in _MAGIC if head.startswith(magic)), None)
    if kind != "a zip archive":
        return kind
    try:
        with zipfile.ZipFile(path) as zf:
            if checkpoint._HEADER + ".npy" in zf.namelist():
                return "a tinygrad_cnn checkpoint"
    except (zipfile.BadZipFile, OSError, EOFError):
        # Cut short, its member list (at the end) is lost: whose it was cannot be told.
        return "an unreadable zip archive, damaged or cut short"
    return "an .npz (zip) archive"


def _read_metrics_file(metrics):
    """The records of the metrics file ``metrics`` ([] if it does not exist; a last
    line cut short after whole records is left out); a ValueError says why a file
    that exists is not a metrics file."""
    from .viz.curves import read_metrics
    if not os.path.exists(metrics):   # missing (or a dangling link): nothing to lose
        return []
    if is_stream(metrics):   # /dev/null, a pipe: nothing kept, and /dev/zero never ends
        return []
    try:
        kind = _file_kind(metrics)
        if kind is not None:
            raise ValueError(f"it is {kind}")
        with warnings.catch_warnings(record=True) as cut:
            warnings.simplefilter("always")
            records = read_metrics(metrics)
        # read_metrics skips an unfinished last line with a warning: after whole
        # records, a write cut short; alone, it may be a line of notes.
        if cut and not records:
            raise ValueError("its last line is cut short and not JSON")
        return records
    except OSError as e:
        raise ValueError(str(e)) from None
    except ValueError as e:
        # read_metrics names the file first ("m.jsonl, line 2: ..."): said by the caller.
        text = str(e)
        for prefix in (f"{metrics}: ", f"{metrics}, "):
            text = text.removeprefix(prefix)
        raise ValueError(text) from None


def metrics_file_problem(metrics):
    """Why the file ``metrics`` may not be replaced by a run's metrics (None: it is
    missing, or a metrics file): a file that is not one may be anything of the user's."""
    try:
        _read_metrics_file(metrics)
    except ValueError as e:
        return str(e)
    return None


def checkpoint_file_problem(path):
    """Why the file ``path`` may not be replaced by a checkpoint (None: it is missing,
    empty or blank, or a tinygrad_cnn checkpoint whose member list can be read)."""
    if not os.path.exists(path) or is_stream(path):   # nothing there to lose
        return None
    try:
        kind = _file_kind(path)
    except OSError as e:
        return str(e)
    if kind == "a tinygrad_cnn checkpoint":
        return None
    if kind is None:
        try:
            if not _read_metrics_file(path):   # empty or blank: nothing to lose
                return None
            kind = "a metrics file"
        except ValueError:
            kind = "not an .npz file"
    return f"it is {kind}"


def _record_key(record):
    """A record as comparable text: NaN (a diverged run's loss) equals NaN here."""
    return json.dumps(record, sort_keys=True, default=repr)


def resume_metrics_error(metrics, path, history, given):
    """The message refusing to let the run resumed from checkpoint ``path`` (whose
    per-epoch records are ``history``) rewrite the metrics file ``metrics``, or None.

    The trainer rewrites the metrics file with the run's whole history at
    every epoch end, so a file that exists must be a metrics file (not, say,
    a user's notes) and agree with ``history`` on the epochs both hold (not
    another run's record).  A file holding epochs beyond the checkpoint
    passes when its earlier epochs agree: the resumed run redoes those.
    ``given``: whether the path was given for this call (``--metrics``) rather
    than taken from the checkpoint.
    """
    if given:
        where, fix = f"--metrics {metrics}", "give --metrics a new path, or this run's metrics file"
        not_one = f"{where} is not a metrics file"
    else:
        where = f"{path} names {metrics} as its metrics file, but it"
        fix = "give --metrics PATH for this run's metrics"
        not_one = f"{path} names {metrics} as its metrics file, which is not one"
    try:
        records = _read_metrics_file(metrics)
    except ValueError as e:
        return f"{not_one} ({e}); it is not replaced: {fix}"
    for i, (record, saved) in enumerate(zip(records, history), 1):
        if _record_key(record) != _record_key(saved):
            return (f"{where} holds another run's metrics (its record {i}, epoch "
                    f"{one_line(str(record.get('epoch')))}, differs from epoch "
                    f"{saved.get('epoch')} saved in {path}); it is not replaced: {fix}")
    if records and not history:
        return (f"{where} holds {len(records)} epoch(s) of metrics, and the run in {path} "
                f"has finished no epoch to compare them with, so they may be another "
                f"run's; it is not replaced: {fix} (or remove the file if it is this run's)")
    return None


def load_model(path, device="cpu"):
    """Rebuild the model stored in a training checkpoint; returns (model, state).

    The image shape, number of classes and training statistics the checkpoint
    declares are checked first, and a model far larger than the weights the
    file holds (a damaged or crafted declaration) is refused before it is
    built; every problem is a :class:`~tinygrad_cnn.checkpoint.CheckpointError`
    naming the file.  ``state["mean"]`` and ``state["std"]`` come back as
    float32 arrays.
    """
    state = checkpoint.load(path)
    _check_training_checkpoint(state, path)
    name = state["config"]["model"]
    image_shape, num_classes = _check_declared(state, path)
    try:
        count = models.parameter_count(name, image_shape, num_classes)
    except (TypeError, ValueError) as e:
        raise checkpoint.CheckpointError(f"{path}: cannot rebuild the model: {e}") from None
    weights = state["model"]
    held = sum(np.size(v) for v in weights.values() if isinstance(v, np.ndarray)) \
        if isinstance(weights, dict) else 0
    if count > max(held, _ALWAYS_BUILT):
        raise checkpoint.CheckpointError(
            f"{path}: the checkpoint declares a {name} model for images {image_shape} and "
            f"{num_classes} classes, which has {count:,} parameters, but holds {held:,} "
            f"weight values (file damaged or edited); the model is not built")
    try:
        model = models.build(name, image_shape, num_classes)
    except (TypeError, ValueError) as e:
        raise checkpoint.CheckpointError(f"{path}: cannot rebuild the model: {e}") from None
    _restore(path, "model", model.load_state_dict, state["model"])
    return model.to(device).eval(), state
