"""The training loop: determinism, exact resume after any kind of stop, devices, metrics.

Every run here is small (the CNN, which has dropout and so exercises the
saved random-generator state, on the bundled digits with big batches and
two epochs).  "Exact" means ``np.array_equal`` on every parameter,
every optimiser and scheduler entry, the loader position, the generator
state and the per-epoch numbers.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import threading

import numpy as np
import pytest

pytest.importorskip("sklearn")  # the digits data set

from tinygrad_cnn import checkpoint, optim  # noqa: E402
from tinygrad_cnn.train import TrainConfig, evaluate, load_model, train  # noqa: E402

BATCH = 128
N_TRAIN = 1437                            # images in the digits training split
STEPS_PER_EPOCH = -(-N_TRAIN // BATCH)    # 12 batches of 128, the last of 29
SMALL = dict(model="cnn", epochs=2, batch_size=BATCH, seed=3, progress=False)


def run(tmp_path, name, lines=None, **overrides):
    """Train a SMALL run (``overrides`` win) saving to tmp_path/name; returns the result."""
    settings = dict(SMALL, **overrides)
    settings.setdefault("checkpoint", name and str(tmp_path / name))
    out = (lambda s: None) if lines is None else lines.append
    return train(TrainConfig(**settings), out=out)


def assert_same_run(path_a, path_b, rtol=0.0):
    """Two checkpoints hold bit-identical training states (with ``rtol``: float arrays
    within ``rtol`` times their largest magnitude)."""
    a, b = checkpoint.load(path_a), checkpoint.load(path_b)
    for section in ("model", "optimizer", "scheduler", "loader", "rng"):
        assert_tree_equal(a[section], b[section], section, rtol)
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in a["history"]]
    other = [{k: v for k, v in row.items() if k != "seconds"} for row in b["history"]]
    assert strip == (other if not rtol else [pytest.approx(row, rel=rtol) for row in other])


def assert_tree_equal(a, b, where, rtol=0.0):
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            assert_tree_equal(a[k], b[k], f"{where}/{k}", rtol)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_tree_equal(x, y, f"{where}/{i}", rtol)
    elif isinstance(a, np.ndarray) and rtol and a.dtype.kind == "f":
        assert a.dtype == b.dtype, where
        np.testing.assert_allclose(a, b, rtol=0, atol=rtol * float(np.abs(b).max(initial=0)),
                                   err_msg=where)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b), where
    else:
        assert a == b, where


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted SMALL run: its final checkpoint and its output lines."""
    path = tmp_path_factory.mktemp("reference") / "ref.npz"
    lines = []
    result = train(TrainConfig(**SMALL, checkpoint=str(path)), out=lines.append)
    assert not result["stopped"] and not result["interrupted"]
    return path, lines, result


# ---- determinism -----------------------------------------------------------------------
def test_same_seed_gives_bit_identical_weights(tmp_path, reference):
    ref_path, ref_lines, ref_result = reference
    again = run(tmp_path, "again.npz")
    assert_same_run(ref_path, tmp_path / "again.npz")
    assert again["test_acc"] == ref_result["test_acc"]
    other = run(tmp_path, "other.npz", seed=4, max_steps=2)["model"]
    assert not all(np.array_equal(p.numpy(), q.numpy()) for p, q in
                   zip(other.parameters(), again["model"].parameters()))


def test_result_and_output(reference):
    path, lines, result = reference
    assert lines[0].startswith("training cnn (53,002 parameters) on digits "
                               "(1437 train / 360 test images) on cpu")
    epoch_lines = [line for line in lines if line.startswith("epoch")]
    assert len(epoch_lines) == 2 and "samples/s" in epoch_lines[0]
    assert lines[-1].startswith(f"test accuracy {result['test_acc'] * 100:.2f}%")
    assert "after 2 epoch(s)" in lines[-1] and "53,002 parameters" in lines[-1]
    assert result["parameters"] == 53002 and len(result["history"]) == 2
    assert result["test_acc"] > 0.7  # two short epochs already learn the digits
    # The final accuracy is what evaluate() says of the returned model.
    model, state = load_model(path)
    assert [r["test_acc"] for r in state["history"]] == [r["test_acc"] for r in result["history"]]
    assert state["history"][-1]["test_acc"] == result["test_acc"]
    # Both splits are normalised with the training split's statistics (never the test's).
    from tinygrad_cnn.data import load_digits
    x_train = load_digits("train")[0].astype(np.float64)
    np.testing.assert_allclose(state["mean"], [x_train.mean()], rtol=1e-6)
    np.testing.assert_allclose(state["std"], [x_train.std()], rtol=1e-6)


# ---- exact resume --------------------------------------------------------------------
def sigint_after_step(monkeypatch, k):
    """Deliver a real SIGINT (as Ctrl-C does) right after the k-th optimiser step."""
    count = {"n": 0}
    step = optim.Adam.step

    def stepping(self, *args, **kwargs):
        result = step(self, *args, **kwargs)
        count["n"] += 1
        if count["n"] == k:
            signal.raise_signal(signal.SIGINT)
        return result
    monkeypatch.setattr(optim.Adam, "step", stepping)


# name -> how the first part of the run is stopped
STOPS = {
    "max_steps at an epoch end": lambda mp: {"max_steps": STEPS_PER_EPOCH},
    "max_steps mid-epoch": lambda mp: {"max_steps": STEPS_PER_EPOCH + 5},
    "Ctrl-C mid-epoch": lambda mp: sigint_after_step(mp, 7) or {},
    "Ctrl-C at the last step of an epoch": lambda mp: sigint_after_step(mp, STEPS_PER_EPOCH)
    or {},
}


@pytest.mark.parametrize("stop", list(STOPS))
def test_resume_gives_the_same_final_state(tmp_path, reference, monkeypatch, stop):
    lines = []
    first = run(tmp_path, "run.npz", lines, **STOPS[stop](monkeypatch))
    monkeypatch.undo()
    assert first["stopped"]
    assert first["interrupted"] == stop.startswith("Ctrl-C")
    assert any("state saved to" in line and "--resume" in line for line in lines)
    saved = checkpoint.load(tmp_path / "run.npz")
    assert saved["loader"]["epoch"] < 2
    second = run(tmp_path, "run.npz", resume=True)
    assert not second["stopped"]
    assert_same_run(reference[0], tmp_path / "run.npz")
    assert second["test_acc"] == reference[2]["test_acc"]


def test_resume_in_slices_of_max_steps(tmp_path, reference):
    """max_steps counts the steps of one call: each resume advances it again."""
    path = tmp_path / "run.npz"
    run(tmp_path, "run.npz", max_steps=7)
    positions = []
    for _ in range(10):
        positions.append(checkpoint.load(path)["loader"])
        if not run(tmp_path, "run.npz", resume=True, max_steps=7)["stopped"]:
            break
    steps = [p["epoch"] * STEPS_PER_EPOCH + p["batch"] for p in positions]
    assert steps == list(range(7, 2 * STEPS_PER_EPOCH, 7))
    assert_same_run(reference[0], path)


def test_resumed_settings_come_from_the_checkpoint(tmp_path, reference):
    run(tmp_path, "run.npz", max_steps=5)
    lines = []
    # Another batch size or seed here would break exactness: the checkpoint's win.
    result = run(tmp_path, "run.npz", lines, resume=True, batch_size=7, seed=99, epochs=9,
                 model="mlp")
    assert lines[0] == f"resumed from {tmp_path / 'run.npz'} at epoch 1, batch 5"
    assert len(result["history"]) == 2
    assert_same_run(reference[0], tmp_path / "run.npz")


def test_a_resumed_run_normalises_with_the_saved_statistics(tmp_path):
    """The model learnt on inputs scaled with the saved mean and std: a resumed run keeps
    them rather than computing them again from the data it finds."""
    path = tmp_path / "run.npz"
    run(tmp_path, "run.npz", model="mlp", max_steps=1)
    state = checkpoint.load(path)
    state["mean"], state["std"] = state["mean"] + 0.25, state["std"] * 2
    checkpoint.save(path, state)
    run(tmp_path, "run.npz", resume=True, max_steps=1)
    resumed = checkpoint.load(path)
    assert resumed["loader"]["batch"] == 2
    np.testing.assert_array_equal(resumed["mean"], state["mean"])
    np.testing.assert_array_equal(resumed["std"], state["std"])


def test_partial_sums_given_as_plain_numbers_resume_exactly(tmp_path, reference):
    """The epoch's running sums are float32 0-d arrays in a checkpoint; as JSON numbers
    (a header edited by hand) they were summed in float64, or, as an int too large for
    NumPy's integers, failed inside the first addition."""
    path = tmp_path / "run.npz"
    run(tmp_path, "run.npz", max_steps=5)
    state = checkpoint.load(path)
    for key in ("loss_sum", "correct_sum"):
        state["partial"][key] = float(state["partial"][key])   # float32 -> float: exact
    checkpoint.save(path, state)
    run(tmp_path, "run.npz", resume=True)
    assert_same_run(reference[0], path)
    run(tmp_path, "huge.npz", max_steps=5)
    state = checkpoint.load(tmp_path / "huge.npz")
    state["partial"]["loss_sum"] = 10**300   # beyond float32: an infinite loss
    checkpoint.save(tmp_path / "huge.npz", state)
    assert run(tmp_path, "huge.npz", resume=True)["history"][0]["train_loss"] == np.inf


@pytest.mark.filterwarnings("ignore:overflow encountered", "ignore:invalid value encountered")
def test_a_run_that_diverged_resumes_with_its_nan_loss(tmp_path):
    """A learning rate far too large makes the loss NaN: the checkpoint of that run,
    stopped mid-epoch, is no damaged file, and resumes as any other."""
    diverging = dict(optimizer="sgd", lr=1e4, metrics=str(tmp_path / "m.jsonl"))
    run(tmp_path, "run.npz", max_steps=STEPS_PER_EPOCH + 2, **diverging)
    partial = checkpoint.load(tmp_path / "run.npz")["partial"]
    assert partial["epoch"] == 1 and np.isnan(partial["loss_sum"])
    result = run(tmp_path, "run.npz", resume=True)   # the metrics file from the checkpoint
    assert not result["stopped"] and len(result["history"]) == 2
    assert np.isnan(result["history"][1]["train_loss"])
    assert [json.loads(line)["epoch"] for line in open(tmp_path / "m.jsonl")] == [1, 2]


def test_epoch_train_numbers_are_averaged_over_samples(tmp_path, monkeypatch):
    """train_loss and train_acc weigh every sample once: the last, smaller batch
    counts for its 29 samples, not as much as a full batch."""
    from tinygrad_cnn import nn
    # The spy sees each training step's batch: train.py calls nn.cross_entropy through the
    # module, with the mean for a step and reduction="sum" in evaluate().  Should either
    # change, `seen` stops matching the batch sizes asserted below: a loud failure.
    seen = []
    cross_entropy = nn.cross_entropy

    def spy(logits, y, **kwargs):
        loss = cross_entropy(logits, y, **kwargs)
        if kwargs.get("reduction", "mean") == "mean":   # a training step, not evaluate()
            correct = int((logits.numpy().argmax(1) == y.numpy()).sum())
            seen.append((float(loss.numpy()), correct, len(y)))
        return loss
    monkeypatch.setattr(nn, "cross_entropy", spy)
    result = run(tmp_path, None, model="mlp", epochs=1)
    losses, correct, sizes = map(np.array, zip(*seen))
    assert sizes.tolist() == [BATCH] * (STEPS_PER_EPOCH - 1) + [N_TRAIN % BATCH]
    row = result["history"][0]
    assert row["train_loss"] == pytest.approx((losses * sizes).sum() / N_TRAIN, rel=1e-5)
    assert row["train_acc"] == pytest.approx(correct.sum() / N_TRAIN, rel=1e-6)


def test_resuming_a_finished_run_trains_no_further(tmp_path, reference):
    path = tmp_path / "done.npz"
    path.write_bytes(reference[0].read_bytes())
    lines = []
    result = run(tmp_path, "done.npz", lines, resume=True)
    assert not any(line.startswith(("epoch", "training")) for line in lines)
    assert any("the run finished all" in line and "nothing to resume" in line
               for line in lines)
    assert result["test_acc"] == reference[2]["test_acc"]
    assert path.read_bytes() == reference[0].read_bytes()  # not even rewritten


def test_stop_without_checkpoint_says_nothing_was_saved(tmp_path):
    lines = []
    result = run(tmp_path, None, lines, checkpoint=None, max_steps=2)
    assert result["stopped"] and not result["interrupted"]
    assert any("nothing saved (no --checkpoint)" in line for line in lines)
    assert list(tmp_path.iterdir()) == []


# ---- devices -------------------------------------------------------------------------
@pytest.mark.parametrize("first, second", [("strict", "cpu"), ("cpu", "strict")])
def test_stop_on_one_device_resume_on_another(tmp_path, first, second):
    """The strict backend follows CuPy's rules (no implicit host transfers):
    a checkpoint saved there loads on the CPU and the other way round.

    The model is the MLP: both backends then run the very same NumPy
    arithmetic, and the mixed run must end bit-identical to one on the CPU.
    (A CNN's convolutions keep batch-last outputs on the host, which the
    GPU-like strict backend copies to NCHW; its sums then round differently,
    and Adam amplifies that in elements with tiny gradients.)
    """
    run(tmp_path, "ref.npz", model="mlp")
    run(tmp_path, "run.npz", model="mlp", device=first, max_steps=STEPS_PER_EPOCH + 3)
    saved = checkpoint.load(tmp_path / "run.npz")
    assert saved["config"]["device"] == first
    assert all(type(v) is np.ndarray for v in saved["model"].values())  # host arrays
    model, _ = load_model(tmp_path / "run.npz", device=second)
    assert {p.device for p in model.parameters()} == {second}
    for name, p in model.state_dict().items():
        assert np.array_equal(p.numpy(), saved["model"][name])
    run(tmp_path, "run.npz", model="mlp", device=second, resume=True)
    assert checkpoint.load(tmp_path / "run.npz")["config"]["device"] == second
    assert_same_run(tmp_path / "ref.npz", tmp_path / "run.npz")


def test_a_cnn_resumed_on_another_device_ends_as_on_one(tmp_path, reference):
    """The CNN, stopped on the strict backend and resumed on the CPU, ends as the
    reference run up to float32 rounding: every element within 1 % of its array's
    largest value (a wrong optimizer state would move Adam's moments by their size)."""
    run(tmp_path, "run.npz", device="strict", max_steps=STEPS_PER_EPOCH + 3)
    run(tmp_path, "run.npz", device="cpu", resume=True)
    assert_same_run(reference[0], tmp_path / "run.npz", rtol=1e-2)


# ---- metrics, evaluation, configuration --------------------------------------------------
def test_metrics_file_has_one_json_line_per_epoch(tmp_path, reference):
    metrics = tmp_path / "m.jsonl"
    run(tmp_path, "run.npz", metrics=str(metrics), max_steps=STEPS_PER_EPOCH + 2)
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1]
    run(tmp_path, "run.npz", metrics=str(metrics), resume=True)
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert set(rows[0]) == {"epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr",
                            "seconds"}
    # The epoch cut in two reports the same numbers as the uninterrupted one.
    ref = reference[2]["history"]
    for row, ref_row in zip(rows, ref):
        assert {k: v for k, v in row.items() if k != "seconds"} == \
            {k: v for k, v in ref_row.items() if k != "seconds"}


def _named_pipe(tmp_path):
    """A FIFO: its reader stops at the end of file its first writer's close sends.
    Returns the paths to read and write, and what frees a writer blocked in open()."""
    fifo = str(tmp_path / "metrics.fifo")
    os.mkfifo(fifo)
    return fifo, fifo, lambda: os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))


def _anonymous_pipe(tmp_path):
    """A pipe reached as /dev/fd/N, as /dev/stdout is when the output is piped."""
    if not os.path.isdir("/dev/fd"):
        pytest.skip("no /dev/fd here")
    r, w = os.pipe()
    return f"/dev/fd/{r}", f"/dev/fd/{w}", lambda: (os.close(w), os.close(r))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs pipes (POSIX)")
@pytest.mark.parametrize("make_pipe", [_named_pipe, _anonymous_pipe], ids=["fifo", "pipe"])
def test_metrics_sent_to_a_pipe_give_each_epoch_once(tmp_path, make_pipe):
    # The whole history rewritten at each epoch end would send epoch 1 twice, and a
    # FIFO reopened after its reader saw the end of file would block the run forever.
    read_end, write_end, release = make_pipe(tmp_path)
    received, result = [], []
    reader = threading.Thread(target=lambda: received.append(open(read_end, "rb").read()),
                              daemon=True)
    reader.start()
    trainer = threading.Thread(target=lambda: result.append(run(
        tmp_path, None, model="mlp", metrics=write_end)), daemon=True)
    trainer.start()
    trainer.join(60)
    release()   # (a run blocked in open() then fails: the pipe has no reader left)
    reader.join(20)
    assert result, "the run did not finish: it waited to open the pipe again"
    assert [json.loads(line)["epoch"] for line in received[0].splitlines()] == [1, 2]
    assert received[0].decode().splitlines() == [json.dumps(r) for r in result[0]["history"]]


def test_resume_keeps_writing_the_runs_metrics_file(tmp_path):
    """A resumed run that names no metrics file keeps the one of the run; a new name wins."""
    metrics, other = tmp_path / "m.jsonl", tmp_path / "other.jsonl"
    small = dict(model="mlp", epochs=3)
    run(tmp_path, "run.npz", metrics=str(metrics), max_steps=STEPS_PER_EPOCH, **small)
    assert len(metrics.read_text().splitlines()) == 1
    run(tmp_path, "run.npz", resume=True, max_steps=STEPS_PER_EPOCH, **small)
    assert [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()] == [1, 2]
    run(tmp_path, "run.npz", resume=True, metrics=str(other), **small)
    assert len(metrics.read_text().splitlines()) == 2
    assert [json.loads(line)["epoch"] for line in other.read_text().splitlines()] == [1, 2, 3]


@pytest.mark.parametrize("edit, problem", [
    (lambda text: text.replace('"epoch": 1,', '"epoch": 1, "seed": 7,', 1),
     "holds another run's metrics (its record 1, epoch 1, differs from epoch 1 saved in"),
    (lambda text: "my notes\n", "is not a metrics file (line 1: not valid JSON"),
], ids=["another run's", "notes"])
def test_a_resumed_run_rewrites_only_its_own_metrics_file(tmp_path, edit, problem):
    """Every epoch end rewrites the metrics file with the run's whole history: a file
    that is not this run's record is refused, whether given or named by the checkpoint."""
    metrics, given = tmp_path / "m.jsonl", tmp_path / "given.jsonl"
    small = dict(model="mlp", epochs=3)
    run(tmp_path, "run.npz", metrics=str(metrics), max_steps=STEPS_PER_EPOCH + 1, **small)
    given.write_text(edit(metrics.read_text()))
    before = given.read_bytes()
    with pytest.raises(ValueError, match=re.escape(f"--metrics {given} {problem}")):
        run(tmp_path, "run.npz", resume=True, metrics=str(given), **small)
    metrics.write_bytes(before)
    with pytest.raises(checkpoint.CheckpointError,
                       match=re.escape(f"run.npz names {metrics} as its metrics file, ")):
        run(tmp_path, "run.npz", resume=True, **small)
    assert given.read_bytes() == before == metrics.read_bytes()


def test_output_paths_are_saved_absolute(tmp_path, monkeypatch):
    """A run resumed from another directory writes the same metrics file and reads the
    same data directory."""
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig(metrics="m.jsonl", data_dir="data")
    assert cfg.metrics == str(tmp_path / "m.jsonl") and cfg.data_dir == str(tmp_path / "data")


def test_progress_asked_for_without_tqdm_says_so(tmp_path, monkeypatch):
    import importlib.util
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "tqdm" else find_spec(name, *args))
    lines = []
    # A warning (the command shows it on stderr), not a line of the training log.
    with pytest.warns(UserWarning, match=r"^no progress bar: training draws it with tqdm, which "
                                         r"is not installed \(pip install tqdm"):
        run(tmp_path, None, lines, checkpoint=None, max_steps=1, progress=True)
    assert not any("tqdm" in line for line in lines)


def test_evaluate_refuses_an_empty_loader():
    from tinygrad_cnn.data import DataLoader, TensorDataset
    empty = DataLoader(TensorDataset(np.zeros((0, 1, 8, 8), np.float32), np.zeros(0, np.int64)))
    with pytest.raises(ValueError, match="no samples"):
        evaluate(__import__("tinygrad_cnn").models.cnn(), empty)


def test_evaluate_matches_a_direct_computation(reference):
    from tinygrad_cnn.data import DataLoader, TensorDataset
    from tinygrad_cnn.train import load_data
    model, state = load_model(reference[0])
    *_, x_test, y_test, _ = load_data("digits", stats=(state["mean"], state["std"]))
    loss, acc = evaluate(model, DataLoader(TensorDataset(x_test, y_test), 100))
    logits = model(__import__("tinygrad_cnn").tensor(x_test)).numpy().astype(np.float64)
    log_p = logits - logits.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    assert acc == np.mean(logits.argmax(1) == y_test) == reference[2]["test_acc"]
    assert loss == pytest.approx(-log_p[np.arange(len(y_test)), y_test].mean(), rel=1e-5)
    assert not model.training
    model.train()                       # evaluate() runs in eval mode, then gives it back
    assert evaluate(model, DataLoader(TensorDataset(x_test, y_test), 100)) == (loss, acc)
    assert all(m.training for m in model.modules())


@pytest.mark.parametrize("settings, message", [
    (dict(optimizer="rmsprop"), "unknown optimizer 'rmsprop'"),
    (dict(model="resnet"), "unknown model 'resnet'"),
    (dict(epochs=0), "epochs must be an integer >= 1"),
    (dict(batch_size=0), "batch_size must be an integer >= 1"),
    (dict(max_steps=0), "max_steps must be an integer >= 1"),
    (dict(epochs="many"), "epochs must be an integer >= 1, got 'many'"),
    (dict(batch_size=2.5), "batch_size must be an integer >= 1, got 2.5"),
    (dict(resume=True), "--resume needs --checkpoint"),
    (dict(lr=float("nan")), "lr must be a finite number > 0, got nan"),
    (dict(lr=float("inf")), "lr must be a finite number > 0, got inf"),
    (dict(lr=0.0), "lr must be a finite number > 0"),
    (dict(weight_decay=float("nan")), "weight_decay must be a finite number >= 0"),
    (dict(weight_decay=-1e-4), "weight_decay must be a finite number >= 0"),
    (dict(seed=-1), "seed must be an integer >= 0, got -1"),
    (dict(seed=1.5), "seed must be an integer >= 0"),
])
def test_bad_configuration_is_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**settings)


def test_default_configuration_is_the_documented_one():
    cfg = TrainConfig()
    assert (cfg.dataset, cfg.model, cfg.device, cfg.optimizer, cfg.lr) == \
        ("digits", "cnn", "cpu", "adam", 2e-3)
    assert dataclasses.asdict(cfg)["max_steps"] is None


def test_adamw_weight_decay_zero_is_kept():
    from tinygrad_cnn.train import TrainConfig
    assert TrainConfig(optimizer="adamw", weight_decay=0.0).weight_decay == 0.0
    assert TrainConfig(optimizer="adamw").weight_decay == 0.01
    assert TrainConfig(optimizer="adam").weight_decay == 0.0


def _dangling_link(path):
    path.symlink_to(path.with_name("nowhere"))


def _empty_zip(path):
    import zipfile
    zipfile.ZipFile(path, "w").close()   # the end record alone: PK\5\6


@pytest.mark.parametrize("problem, make, expected", [
    # A link to a file yet to be written: nothing to lose (the write goes through it).
    ("checkpoint", _dangling_link, None),
    ("checkpoint", _empty_zip, "it is an .npz (zip) archive"),
    ("metrics", _dangling_link, None),
    ("metrics", lambda path: path.mkdir(), "Is a directory"),
], ids=["checkpoint dangling link", "checkpoint empty zip", "metrics dangling link",
        "metrics directory"])
def test_what_a_run_may_replace(tmp_path, problem, make, expected):
    from tinygrad_cnn.train import checkpoint_file_problem, metrics_file_problem
    path = tmp_path / "out.file"
    make(path)
    found = {"checkpoint": checkpoint_file_problem, "metrics": metrics_file_problem}[problem](path)
    assert found == expected if expected is None else expected in found


def test_resumed_metrics_compare_records_whatever_their_key_order(tmp_path):
    """A metrics file rewritten by a tool that reorders keys still holds this run's records."""
    from tinygrad_cnn.train import resume_metrics_error
    history = [{"epoch": 1, "train_loss": 0.5}, {"epoch": 2, "train_loss": 0.25}]
    metrics = tmp_path / "m.jsonl"
    metrics.write_text("".join(json.dumps(dict(reversed(r.items()))) + "\n" for r in history))
    assert resume_metrics_error(metrics, "c.npz", history, given=True) is None
    history[1]["train_loss"] = 0.3
    assert "holds another run's metrics (its record 2, epoch 2" in \
        resume_metrics_error(metrics, "c.npz", history, given=True)
