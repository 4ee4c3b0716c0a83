"""The ``tinygrad-cnn`` command: every subcommand, its files, its errors and Ctrl-C.

Most tests call :func:`tinygrad_cnn.cli.main` in this process (fast, and an
exception escaping ``main`` fails the test, so "no traceback" is checked
for free).  Two tests run the real command in a subprocess: Ctrl-C, and
the README's main command ``tinygrad-cnn train`` (the one long test).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinygrad_cnn import __version__, checkpoint, models
from tinygrad_cnn.cli import build_parser, main
from tinygrad_cnn.data import download, write_idx
from tinygrad_cnn.viz.png import read_png_size, write_png

ROOT = Path(__file__).resolve().parents[1]


def cli(*argv):
    """Run the command in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main([str(a) for a in argv])
        except SystemExit as e:  # argparse: --help, --version, usage errors
            status = e.code
    return status, out.getvalue(), err.getvalue()


def final_accuracy(stdout):
    return float(re.search(r"^test accuracy ([\d.]+)%", stdout, re.M).group(1))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A CNN trained on the digits by the command, with its checkpoint and metrics."""
    pytest.importorskip("sklearn")
    d = tmp_path_factory.mktemp("trained")
    status, out, err = cli("train", "--epochs", 4, "--batch-size", 64, "--seed", 1,
                           "--checkpoint", d / "c.npz", "--metrics", d / "m.jsonl",
                           "--no-progress")
    assert status == 0, err
    return d, out


# ---- train, eval, predict, show, plot ------------------------------------------------
def test_train_output_and_files(trained):
    d, out = trained
    lines = out.splitlines()
    assert lines[0].startswith("training cnn (53,002 parameters) on digits")
    assert [line.split()[1] for line in lines if line.startswith("epoch")] == \
        ["1/4", "2/4", "3/4", "4/4"]
    assert final_accuracy(out) > 90
    rows = [json.loads(line) for line in (d / "m.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["test_acc"] * 100 == pytest.approx(final_accuracy(out), abs=0.005)


def test_max_steps_stops_with_status_0_and_resume_finishes(tmp_path):
    pytest.importorskip("sklearn")
    ckpt = tmp_path / "c.npz"
    status, out, _ = cli("train", "--model", "mlp", "--epochs", 2, "--batch-size", 256,
                         "--max-steps", 4, "--checkpoint", ckpt, "--no-progress")
    assert status == 0  # a requested stop is not an interruption
    assert f"stopped after 4 step(s) (--max-steps) at epoch 1, batch 4; state saved to {ckpt}" \
        in out
    # The saved max_steps is not part of the run: the resumed one goes to the end.
    status, out, _ = cli("train", "--checkpoint", ckpt, "--resume", "--no-progress")
    assert status == 0
    assert out.startswith(f"resumed from {ckpt} at epoch 1, batch 4\ntraining mlp")
    assert [line.split()[1] for line in out.splitlines() if line.startswith("epoch")] == \
        ["1/2", "2/2"]


@pytest.mark.parametrize("device", ["cpu", "strict"])
def test_eval_reproduces_the_final_accuracy(trained, device):
    d, out = trained
    status, text, _ = cli("eval", "--checkpoint", d / "c.npz", "--device", device)
    assert status == 0
    assert text.startswith("cnn on digits test set (360 images): accuracy ")
    assert f"accuracy {final_accuracy(out):.2f}%" in text


def test_predict_png_and_npy(trained, tmp_path):
    """Images saved the way a user would save them get the labels the model gives the
    test set: same scaling, same normalisation as in training."""
    from tinygrad_cnn.data import load_digits
    from tinygrad_cnn.train import load_model
    d, _ = trained
    model, state = load_model(d / "c.npz")
    x, y = load_digits("test")
    mean, std = state["mean"].reshape(-1, 1, 1), state["std"].reshape(-1, 1, 1)
    right = np.flatnonzero(model(__import__("tinygrad_cnn").tensor((x - mean) / std))
                           .numpy().argmax(1) == y)[:4]
    files, labels = [], []
    for k, i in enumerate(right):
        raw = np.rint(x[i, 0] * 16).astype(np.int64)              # (8, 8) in 0..16
        big = np.kron(x[i, 0], np.ones((4, 4)))                    # (32, 32): resized back
        grey = np.rint(big * 255).astype(np.uint8)
        variants = {f"{k}.npy": raw, f"{k}.png": grey,
                    f"{k}-rgb.png": np.repeat(grey[:, :, None], 3, axis=2)}
        for name, image in variants.items():
            (np.save if name.endswith(".npy") else write_png)(tmp_path / name, image)
            files.append(tmp_path / name)
            labels.append(str(y[i]))
    status, text, err = cli("predict", "--checkpoint", d / "c.npz", *files)
    assert status == 0, err
    lines = text.splitlines()
    assert len(lines) == len(files)
    for line, path, label in zip(lines, files, labels):
        m = re.fullmatch(rf"{re.escape(str(path))}: (\S+) \(p=([\d.]+); (.*)\)", line)
        assert m and m.group(1) == label, line
        top = [part.split(": ") for part in m.group(3).split(", ")]
        assert top[0] == [label, m.group(2)] and len(top) == 10  # every class, ranked
        assert 1 >= float(top[0][1]) >= float(top[1][1]) >= float(top[2][1]) >= 0

    # Dark strokes on white paper, with --invert.
    big = np.kron(x[right[0], 0], np.ones((4, 4)))
    write_png(tmp_path / "paper.png", 255 - np.rint(big * 255).astype(np.uint8))
    status, text, _ = cli("predict", "--invert", "--checkpoint", d / "c.npz",
                          tmp_path / "paper.png")
    assert status == 0 and text.split()[1] == labels[0]


def test_show_writes_pngs(trained, tmp_path):
    d, _ = trained
    np.save(tmp_path / "digit.npy", np.eye(8))
    status, out, _ = cli("show", "--checkpoint", d / "c.npz", "--filters", tmp_path / "f.png",
                         "--feature-maps", tmp_path / "digit.npy", tmp_path / "maps.png")
    assert status == 0
    assert out.splitlines() == [f"wrote {tmp_path / 'f.png'}", f"wrote {tmp_path / 'maps.png'}"]
    for name in ("f.png", "maps.png"):
        height, width = read_png_size(tmp_path / name)
        assert height > 8 and width > 8
    status, out, _ = cli("show", "--checkpoint", d / "c.npz")
    assert status == 2 and "nothing to show" in out


def test_plot_draws_the_metrics(trained, tmp_path):
    d, _ = trained
    status, out, _ = cli("plot", d / "m.jsonl", "-o", tmp_path / "curves.png")
    assert status == 0 and out == f"wrote {tmp_path / 'curves.png'}\n"
    assert min(read_png_size(tmp_path / "curves.png")) > 100


# ---- summary, gradcheck, info, help ---------------------------------------------------------
@pytest.mark.parametrize("model", list(models.MODELS))
@pytest.mark.parametrize("dataset, shape", [("digits", (1, 8, 8)), ("mnist", (1, 28, 28))])
def test_summary(model, dataset, shape):
    status, out, _ = cli("summary", "--model", model, "--dataset", dataset)
    assert status == 0
    n = sum(p.size for p in models.build(model, shape).parameters())
    assert out.startswith(f"{model} for {dataset} images {shape}")
    assert f"Total params: {n:,}" in out


@pytest.mark.parametrize("model", ["mlp", "cnn", "local"])
def test_gradcheck_passes_on_the_models(model):
    status, out, _ = cli("gradcheck", "--model", model, "--elements", 6)
    assert status == 0
    assert out.rstrip().endswith("all gradients agree with finite differences")
    assert re.search(r"^model \(end to end\) .* ok$", out, re.M)


def test_gradcheck_catches_a_wrong_backward(monkeypatch):
    import tinygrad_cnn as tg
    from tinygrad_cnn import nn

    class Cube(tg.Function):
        """y = x^3 (with a wrong derivative, 2x^2 instead of 3x^2)"""

        def forward(self, x):
            return x ** 3

        def backward(self, grad_out):
            x, = self.inputs
            return grad_out * 2 * x * x

    class CubeLayer(nn.Module):
        def forward(self, x):
            return Cube.apply(x)

    monkeypatch.setitem(models.MODELS, "broken", lambda shape, n: nn.Sequential(
        nn.Flatten(), nn.Linear(shape[0] * shape[1] * shape[2], n), CubeLayer()))
    status, out, _ = cli("gradcheck", "--model", "broken", "--elements", 4)
    assert status == 1
    assert re.search(r"^2: CubeLayer .*FAIL: gradcheck: analytic and numerical", out, re.M)
    assert re.search(r"^1: Linear .* ok$", out, re.M)
    assert out.rstrip().endswith("gradient check FAILED")


def test_info():
    status, out, _ = cli("info")
    assert status == 0
    assert out.startswith(f"tinygrad_cnn {__version__}\n")
    assert re.search(r"^  cpu +usable: numpy ", out, re.M)
    assert re.search(r"^  cuda +(usable|not usable): ", out, re.M)


def train_options():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return [a for a in sub.choices["train"]._actions if a.option_strings]


@pytest.mark.parametrize("option", [a.option_strings[-1] for a in train_options()])
def test_train_help_explains_every_option(option):
    status, out, _ = cli("train", "--help")
    assert status == 0
    # The option's line in the help text, then its explanation.
    m = re.search(rf"^  (?:-\w, )?{re.escape(option)}\b.*?(?=^  -|\Z)", out, re.M | re.S)
    assert m, f"{option} missing from the help"
    text = " ".join(m.group(0).split()[1:])
    assert len(re.sub(r"[A-Z_{}\[\],.-]+", "", text).split()) >= 2, m.group(0)


def test_train_help_shows_the_choices_and_defaults():
    _, out, _ = cli("train", "--help")
    out = " ".join(out.split())
    for text in ("{digits,mnist,fashion-mnist}", "{" + ",".join(models.MODELS) + "}",
                 "(default: digits)", "(default: cnn)", "(default: 15)", "(default: 32)",
                 "(default: adam)", "adam 0.002", "Exit status: 0 when done, 130 when stopped by "
                 "Ctrl-C, 1 on an error."):
        assert text in out


@pytest.mark.parametrize("argv, status", [
    ((), 2), (("--version",), 0), (("train", "--model", "resnet"), 2),
    (("train", "--epochs", "two"), 2), (("eval",), 2), (("predict", "--checkpoint", "c"), 2),
])
def test_usage(argv, status):
    code, out, err = cli(*argv)
    assert code == status
    if argv == ("--version",):
        assert out == f"tinygrad_cnn {__version__}\n"
    elif argv:
        assert err.startswith("usage: tinygrad-cnn")
    else:
        assert "COMMAND" in out and "train" in out


# ---- MNIST-style data sets, offline ---------------------------------------------------------
@pytest.fixture
def fake_idx_data(tmp_path, monkeypatch):
    """Small MNIST and Fashion-MNIST look-alikes in tmp_path/data, with a checksum table
    that names them (the real one names the real files) and no mirrors (no network)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for key, table in list(download.DATASETS.items()):
        directory = root / table.directory
        directory.mkdir(parents=True)
        files = []
        for name, n in (("train", 96), ("t10k", 40)):
            labels = rng.integers(0, 10, n).astype(np.uint8)
            # A bright square whose position tells the class: learnable in one epoch.
            images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
            for i, label in enumerate(labels):
                images[i, 2 * label + 2:2 * label + 8, 4:24] = 250
            for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
                path = directory / f"{name}-{kind}-ubyte.gz"
                write_idx(path, array)
                files.append(download.RemoteFile(
                    path.name, sha256=hashlib.sha256(path.read_bytes()).hexdigest()))
        monkeypatch.setitem(download.DATASETS, key, dataclasses.replace(
            table, mirrors=(), files=tuple(files)))
    return root


@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
def test_train_and_eval_on_mnist_style_files(fake_idx_data, tmp_path, dataset):
    status, out, err = cli("train", "--dataset", dataset, "--data-dir", fake_idx_data,
                           "--model", "lenet5", "--epochs", 2, "--batch-size", 16,
                           "--checkpoint", tmp_path / "c.npz", "--no-progress")
    assert status == 0, err
    name = dataset.replace("-", "_")
    assert out.startswith(f"training lenet5 (61,706 parameters) on {name} "
                          f"(96 train / 40 test images) on cpu")
    status, text, err = cli("eval", "--checkpoint", tmp_path / "c.npz",
                            "--data-dir", fake_idx_data)
    assert status == 0, err
    assert text.startswith(f"lenet5 on {name} test set (40 images): accuracy "
                           f"{final_accuracy(out):.2f}%")
    if dataset == "fashion-mnist":  # class names, not numbers
        np.save(tmp_path / "x.npy", np.zeros((28, 28)))
        _, text, _ = cli("predict", "--checkpoint", tmp_path / "c.npz", tmp_path / "x.npy")
        from tinygrad_cnn.data import FASHION_MNIST_CLASSES
        assert text.split(": ")[1].split(" (p=")[0] in FASHION_MNIST_CLASSES


def test_mnist_files_missing_or_corrupt_are_reported(fake_idx_data, tmp_path):
    (fake_idx_data / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    status, out, err = cli("train", "--dataset", "mnist", "--data-dir", fake_idx_data,
                           "--no-progress")
    assert status == 1 and "Traceback" not in err
    assert err.startswith("tinygrad-cnn train: error: MNIST: could not download "
                          "t10k-labels-idx1-ubyte.gz")
    assert str(fake_idx_data / "mnist") in err  # where to put the file by hand
    with open(fake_idx_data / "mnist" / "train-images-idx3-ubyte.gz", "r+b") as f:
        f.write(b"\0\0\0\0")
    status, _, err = cli("train", "--dataset", "mnist", "--data-dir", fake_idx_data)
    assert status == 1 and "sha256 of" in err and "Traceback" not in err


# ---- errors: one line, exit status 1, no traceback ---------------------------------------------
@pytest.fixture
def damaged(trained, tmp_path):
    """Checkpoints damaged in the ways a user meets: name -> path."""
    good = trained[0] / "c.npz"
    paths = {}
    data = good.read_bytes()
    (tmp_path / "truncated.npz").write_bytes(data[:len(data) // 2])
    (tmp_path / "garbage.npz").write_bytes(os.urandom(2000))
    np.savez(tmp_path / "foreign.npz", a=np.zeros(2))
    checkpoint.save(tmp_path / "not-training.npz", {"weights": np.zeros(2)})
    state = checkpoint.load(good)
    state["config"]["model"] = "mlp"  # the weights are a CNN's
    checkpoint.save(tmp_path / "mismatched.npz", state)
    state = checkpoint.load(good)
    state["model"]["0.weight"] = np.zeros((32, 1, 5, 5), np.float32)
    checkpoint.save(tmp_path / "wrong-shape.npz", state)
    for name in ("truncated", "garbage", "foreign", "not-training", "mismatched",
                 "wrong-shape"):
        paths[name] = tmp_path / f"{name}.npz"
    paths["missing"] = tmp_path / "missing.npz"
    return paths


@pytest.mark.parametrize("command", ["eval", "predict", "show", "resume"])
@pytest.mark.parametrize("kind, message", [
    ("truncated", "is not a readable checkpoint"),
    ("garbage", "is not a readable checkpoint"),
    ("foreign", "not a tinygrad_cnn checkpoint"),
    ("not-training", "is not a training checkpoint"),
    ("mismatched", "cannot restore the model"),
    ("wrong-shape", "0.weight: checkpoint shape (32, 1, 5, 5), model shape (32, 1, 3, 3)"),
    ("missing", "no checkpoint at"),
])
def test_bad_checkpoints_give_one_line_and_status_1(damaged, tmp_path, command, kind, message):
    path = damaged[kind]
    np.save(tmp_path / "img.npy", np.zeros((8, 8)))
    argv = {"eval": ("eval", "--checkpoint", path),
            "predict": ("predict", "--checkpoint", path, tmp_path / "img.npy"),
            "show": ("show", "--checkpoint", path, "--filters", tmp_path / "f.png"),
            "resume": ("train", "--checkpoint", path, "--resume", "--no-progress")}[command]
    status, out, err = cli(*argv)
    assert status == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"tinygrad-cnn {argv[0]}: error: ")
    assert message in err and str(path) in err


@pytest.mark.parametrize("argv, message", [
    (("train", "--device", "nonsense"), "nonsense"),
    (("train", "--checkpoint", "{good}", "--resume", "--epochs", 9, "--seed", 1),
     "continues a run with other settings: --epochs 9 (the run has 4); drop these options"),
    (("train", "--resume"), "--resume needs --checkpoint PATH"),
    (("train", "--max-steps", 0), "max_steps must be at least 1"),
    (("predict", "--checkpoint", "{good}", "{tmp}/nothing.png"), "No such file"),
    (("predict", "--checkpoint", "{good}", "{tmp}/text.png"), "is not a PNG file"),
    (("predict", "--checkpoint", "{good}", "{tmp}/cube.npy"), "expected a single-channel image"),
    (("plot", "{tmp}/no-losses.jsonl"), "has no loss or accuracy values"),
])
def test_other_errors_give_a_message_and_status_1(trained, tmp_path, argv, message):
    (tmp_path / "text.png").write_text("not a picture\n")
    (tmp_path / "no-losses.jsonl").write_text('{"epoch": 1}\n')
    np.save(tmp_path / "cube.npy", np.zeros((3, 4, 5)))
    argv = [str(a).format(good=trained[0] / "c.npz", tmp=tmp_path) for a in argv]
    status, out, err = cli(*argv)
    assert status == 1, (out, err)
    assert err.startswith(f"tinygrad-cnn {argv[0]}: error: ") and message in err
    assert err.count("\n") == 1


def test_unusable_cuda_is_an_error_not_a_traceback():
    from tinygrad_cnn.backend import cuda_status
    if cuda_status()[0]:
        pytest.skip("a GPU is usable here")
    status, _, err = cli("train", "--device", "cuda")
    assert status == 1 and err.startswith("tinygrad-cnn train: error: device 'cuda")


# ---- the real command, in a subprocess ----------------------------------------------------
def command_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]]
                                                       if env.get("PYTHONPATH") else []))
    env.pop("TINYGRAD_CNN_DEVICE", None)
    return env


@pytest.mark.slow
def test_ctrl_c_saves_and_resume_finishes(tmp_path):
    pytest.importorskip("sklearn")
    ckpt = tmp_path / "c.npz"
    with open(tmp_path / "stderr.txt", "w") as stderr:  # a file: a full pipe would block
        proc = subprocess.Popen(
            [sys.executable, "-m", "tinygrad_cnn", "train", "--checkpoint", str(ckpt),
             "--epochs", "3", "--batch-size", "128"],
            stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=tmp_path, env=command_env())
        try:
            lines = []
            for line in proc.stdout:  # each line arrives as printed: train() flushes
                lines.append(line)
                if line.startswith("epoch   1/3"):
                    proc.send_signal(signal.SIGINT)
                    break
            rest, _ = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    err = (tmp_path / "stderr.txt").read_text()
    out = "".join(lines) + rest
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err
    assert re.search(r"^interrupted at epoch \d, batch \d+; state saved to .*c\.npz "
                     r"\(continue with --resume\)$", out, re.M), out
    assert "test accuracy" in out.splitlines()[-1]
    saved = checkpoint.load(ckpt)
    assert 1 <= saved["loader"]["epoch"] < 3 and len(saved["history"]) >= 1
    status, out, err = cli("train", "--checkpoint", ckpt, "--resume", "--no-progress")
    assert status == 0, err
    assert out.startswith(f"resumed from {ckpt} at epoch ")
    assert [line.split()[1] for line in out.splitlines() if line.startswith("epoch")][-1] == "3/3"
    assert checkpoint.load(ckpt)["loader"]["epoch"] == 3


def readme_command():
    """``tinygrad-cnn`` as installed beside this Python, else ``python -m tinygrad_cnn``."""
    script = shutil.which("tinygrad-cnn", path=os.path.dirname(sys.executable)) \
        or shutil.which("tinygrad-cnn")
    return [script] if script else [sys.executable, "-m", "tinygrad_cnn"]


@pytest.mark.slow
def test_the_default_command_reaches_97_percent(tmp_path):
    """`tinygrad-cnn train`, exactly as the README says: the default CNN on the digits."""
    pytest.importorskip("sklearn")
    done = subprocess.run(readme_command() + ["train"], capture_output=True, text=True,
                          cwd=tmp_path, env=command_env(), timeout=600)
    out, err = done.stdout, done.stderr
    assert done.returncode == 0, err
    assert "Traceback" not in err
    lines = out.splitlines()
    assert lines[0] == ("training cnn (53,002 parameters) on digits (1437 train / 360 test "
                        "images) on cpu")
    epochs = [line for line in lines if line.startswith("epoch")]
    assert len(epochs) == 15 and all("samples/s" in line for line in epochs)
    assert re.fullmatch(r"test accuracy [\d.]+% \(loss [\d.]+\) after 15 epoch\(s\) in "
                        r"[\d.]+ s; 53,002 parameters", lines[-1])
    assert final_accuracy(out) >= 97.0
    # The progress bar (on stderr) shows the running loss, accuracy and speed.
    assert re.search(r"epoch 15/15: .*loss=[\d.]+, acc=[\d.]+, samples/s=\d+", err)
    assert list(tmp_path.iterdir()) == []  # no files unless asked for
