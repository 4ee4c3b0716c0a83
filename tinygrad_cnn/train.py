"""The training loop behind ``tinygrad-cnn train``: data, model, optimiser,
checkpoints that resume exactly, metrics, and a clean stop on Ctrl-C.

Resuming is exact: a checkpoint holds the model, the optimiser and
scheduler state, the data loader's position (epoch and batch) and the
state of the random generator, so training that stops and resumes ends
with the same weights as training that never stopped.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import tempfile
import time

import numpy as np

from . import checkpoint, models, nn, optim
from .autograd import no_grad
from .backend import get_backend
from .data import DataLoader, TensorDataset, load_dataset, mean_std, normalize
from .tensor import get_rng, manual_seed

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
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "cpu"
    data_dir: str | None = None
    checkpoint: str | None = None    # where to save (every epoch, and on Ctrl-C)
    resume: bool = False
    metrics: str | None = None       # JSON lines, one per epoch
    log_every: int = 20              # steps between progress-bar updates (each syncs once)
    max_steps: int | None = None     # stop early (fast mode for tests and examples)
    progress: bool = True

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of "
                             f"{', '.join(OPTIMIZERS)}")
        if self.model not in models.MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose one of "
                             f"{', '.join(models.MODELS)}")
        for name in ("epochs", "batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr is None:
            self.lr = OPTIMIZERS[self.optimizer]
        if self.resume and not self.checkpoint:
            raise ValueError("--resume needs --checkpoint PATH")


# ---- pieces ---------------------------------------------------------------------
def load_data(dataset, data_dir=None, stats=None):
    """Train and test arrays, normalised with the training split's mean and std."""
    x_train, y_train = load_dataset(dataset, "train", data_dir=data_dir)
    x_test, y_test = load_dataset(dataset, "test", data_dir=data_dir)
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
        opt = optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay or 1e-2)
    else:
        opt = optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = optim.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch)
    return model, opt, sched


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
    return total_loss.item() / count, total_correct.item() / count


def _atomic_write_text(path, text):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
def train(cfg, out=print):
    """Train as ``cfg`` says; returns a dict with the final test accuracy and more."""
    backend = get_backend(cfg.device)
    cfg.device = backend.device
    start_time = time.perf_counter()
    state = checkpoint.load(cfg.checkpoint) if cfg.resume else None
    stats = None
    if state is not None:
        # The run's definition comes from the checkpoint; only where it runs
        # and what it reports may change.
        for key in RUN_KEYS:
            setattr(cfg, key, state["config"][key])
        stats = (state["mean"], state["std"])
    x_train, y_train, x_test, y_test, (mean, std) = load_data(cfg.dataset, cfg.data_dir, stats)
    num_classes = int(y_train.max()) + 1
    image_shape = x_train.shape[1:]
    train_loader = DataLoader(TensorDataset(x_train, y_train), cfg.batch_size, shuffle=True,
                              seed=cfg.seed, device=backend)
    test_loader = DataLoader(TensorDataset(x_test, y_test), 256, device=backend)
    model, opt, sched = build(cfg, image_shape, num_classes, len(train_loader))
    history = []
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        train_loader.load_state_dict(state["loader"])
        get_rng().bit_generator.state = state["rng"]
        history = list(state["history"])
        out(f"resumed from {cfg.checkpoint} at epoch {train_loader.epoch + 1}, "
            f"batch {train_loader.state_dict()['batch']}")

    def save():
        checkpoint.save(cfg.checkpoint, {
            "config": dataclasses.asdict(cfg), "image_shape": list(image_shape),
            "num_classes": num_classes, "mean": mean, "std": std,
            "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "loader": train_loader.state_dict(),
            "rng": get_rng().bit_generator.state, "history": history,
        })

    n_params = sum(p.size for p in model.parameters())
    out(f"training {cfg.model} ({n_params:,} parameters) on {cfg.dataset} "
        f"({len(x_train)} train / {len(x_test)} test images) on {cfg.device}")
    steps = 0
    stopped = False
    with _StopOnSigint() as sigint:
        while train_loader.epoch < cfg.epochs and not stopped:
            epoch = train_loader.epoch
            bar = _progress(len(train_loader) - train_loader.state_dict()["batch"],
                            f"epoch {epoch + 1}/{cfg.epochs}", cfg.progress)
            model.train()
            loss_sum = correct_sum = None
            seen, t0 = 0, time.perf_counter()
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
                loss_sum = batch_loss if loss_sum is None else loss_sum + batch_loss
                correct_sum = batch_correct if correct_sum is None else correct_sum + batch_correct
                seen += len(y)
                steps += 1
                if bar is not None:
                    bar.update(1)
                    if steps % cfg.log_every == 0:
                        bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}",
                                        acc=f"{correct_sum.item() / seen:.3f}",
                                        samples_s=f"{seen / (time.perf_counter() - t0):.0f}")
                if sigint.requested or (cfg.max_steps is not None and steps >= cfg.max_steps):
                    stopped = True
                    break
            if bar is not None:
                bar.close()
            if stopped and train_loader.epoch == epoch:  # stopped inside the epoch
                break
            test_loss, test_acc = evaluate(model, test_loader)
            row = {"epoch": epoch + 1, "train_loss": loss_sum.item() / max(seen, 1),
                   "train_acc": correct_sum.item() / max(seen, 1), "test_loss": test_loss,
                   "test_acc": test_acc, "lr": sched.get_last_lr()[0],
                   "seconds": round(time.perf_counter() - t0, 3)}
            history.append(row)
            out(f"epoch {epoch + 1:3d}/{cfg.epochs}  train loss {row['train_loss']:.4f} "
                f"acc {row['train_acc']:.4f}  test loss {test_loss:.4f} acc {test_acc:.4f}  "
                f"({len(x_train) / row['seconds']:.0f} samples/s)")
            if cfg.metrics:
                _atomic_write_text(cfg.metrics, "".join(json.dumps(r) + "\n" for r in history))
            if cfg.checkpoint:
                save()
    if stopped and cfg.checkpoint:
        save()
        out(f"stopped; state saved to {cfg.checkpoint} (continue with --resume)")
    test_loss, test_acc = evaluate(model, test_loader)
    elapsed = time.perf_counter() - start_time
    out(f"test accuracy {test_acc * 100:.2f}% (loss {test_loss:.4f}) after "
        f"{train_loader.epoch} epoch(s) in {elapsed:.1f} s; {n_params:,} parameters")
    return {"test_acc": test_acc, "test_loss": test_loss, "seconds": elapsed,
            "parameters": n_params, "history": history, "model": model,
            "interrupted": stopped and train_loader.epoch < cfg.epochs}


def load_model(path, device="cpu"):
    """Rebuild the model stored in a training checkpoint; returns (model, state)."""
    state = checkpoint.load(path)
    for key in ("config", "model", "image_shape", "num_classes"):
        if key not in state:
            raise checkpoint.CheckpointError(f"{path} is not a training checkpoint "
                                             f"(no {key!r} entry)")
    cfg = state["config"]
    model = models.build(cfg["model"], state["image_shape"], state["num_classes"])
    model.load_state_dict(state["model"])
    return model.to(device).eval(), state
