"""Checkpoint files: round trips, atomic writes, any device to any device, clear errors."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import tinygrad_cnn as tg
from tinygrad_cnn import checkpoint, nn, optim
from tinygrad_cnn.checkpoint import CheckpointError


def tree():
    return {
        "weights": {"w": np.arange(6, dtype=np.float32).reshape(2, 3),
                    "b": np.array([1.5, -2.0], dtype=np.float64)},
        "labels": np.array([3, 1, 4], dtype=np.int64),
        "pixels": np.array([[0, 255]], dtype=np.uint8),
        "mask": np.array([True, False]),
        "scalar_array": np.array(7.25, dtype=np.float32),
        "numpy_scalar": np.float32(0.5),
        "count": 3, "rate": 1e-3, "name": "cnn", "flag": False, "nothing": None,
        "list": [1, "two", np.zeros(2, np.int32), {"deep": [None, 2.5]}],
        "empty": {}, "empty_list": [],
    }


def test_round_trip_keeps_values_and_dtypes(tmp_path):
    path = checkpoint.save(tmp_path / "c.npz", tree())
    got = checkpoint.load(path)
    want = tree()
    want["numpy_scalar"] = 0.5  # NumPy scalars are stored as plain numbers
    assert got.keys() == want.keys()
    arrays = [(got["weights"][k], want["weights"][k]) for k in ("w", "b")] + \
        [(got[k], want[k]) for k in ("labels", "pixels", "mask", "scalar_array")]
    for g, w in arrays:
        assert type(g) is np.ndarray and g.dtype == w.dtype and np.array_equal(g, w)
    assert got["scalar_array"].shape == ()
    assert got["list"][:2] == [1, "two"] and got["list"][3] == {"deep": [None, 2.5]}
    assert got["list"][2].dtype == np.int32
    assert [got[k] for k in ("numpy_scalar", "count", "rate", "name", "flag", "nothing",
                             "empty", "empty_list")] == [0.5, 3, 1e-3, "cnn", False, None, {}, []]


def test_the_file_is_a_plain_npz_that_loads_without_pickle(tmp_path):
    path = checkpoint.save(tmp_path / "c.npz", tree())
    with np.load(path, allow_pickle=False) as npz:
        assert "weights/w" in npz.files and "list/2" in npz.files
        header = json.loads(npz["__header__"].tobytes())
    assert header["format"] == checkpoint.FORMAT
    assert header["tree"]["weights"]["w"] == {"__array__": "weights/w"}


def test_tensors_and_device_arrays_are_saved_on_the_host(tmp_path):
    t = tg.tensor([[1.0, 2.0]], device="strict")
    raw = t.data  # a strict array: refuses implicit conversion, like a CuPy array
    checkpoint.save(tmp_path / "c.npz", {"t": t, "raw": raw, "cpu": tg.tensor([3])})
    got = checkpoint.load(tmp_path / "c.npz")
    assert type(got["t"]) is np.ndarray and np.array_equal(got["t"], [[1.0, 2.0]])
    assert type(got["raw"]) is np.ndarray and got["raw"].dtype == np.float32
    assert np.array_equal(got["cpu"], [3])


@pytest.mark.parametrize("bad, error, match", [
    ({"x": object()}, TypeError, "cannot store a object at 'x'"),
    ({"x": np.array(["a"])}, TypeError, "dtype <U1 at 'x'"),
    ({"a/b": 1}, TypeError, "without '/'"),
    ({1: 1}, TypeError, "must be strings"),
    ([1, 2], TypeError, "a checkpoint is a dict"),
])
def test_what_cannot_be_stored_is_refused_before_writing(tmp_path, bad, error, match):
    with pytest.raises(error, match=match):
        checkpoint.save(tmp_path / "c.npz", bad)
    assert list(tmp_path.iterdir()) == []


# ---- atomic writes -------------------------------------------------------------------
@pytest.mark.parametrize("exc", [OSError("disk full"), KeyboardInterrupt()])
def test_a_crash_mid_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch, exc):
    path = tmp_path / "c.npz"
    checkpoint.save(path, {"version": 1, "w": np.ones(1000)})
    before = path.read_bytes()

    def crashing_savez(f, **arrays):
        f.write(b"PK\x03\x04" + b"\0" * 5000)  # the start of a zip file, then the crash
        raise exc
    monkeypatch.setattr(np, "savez", crashing_savez)
    with pytest.raises(type(exc)):
        checkpoint.save(path, {"version": 2, "w": np.zeros(1000)})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert checkpoint.load(path)["version"] == 1
    assert sorted(os.listdir(tmp_path)) == ["c.npz"]  # no temporary file left behind


def test_save_replaces_and_creates_directories(tmp_path):
    path = tmp_path / "new" / "dir" / "c.npz"
    checkpoint.save(path, {"v": 1})
    checkpoint.save(path, {"v": 2})
    assert checkpoint.load(path) == {"v": 2}
    assert os.listdir(path.parent) == ["c.npz"]


# ---- device to device -------------------------------------------------------------------
def one_step(device):
    """A small conv net and Adam after one training step on ``device``."""
    tg.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 8 * 8, 10)).to(device)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    x = tg.randn(5, 1, 8, 8, device=device)
    y = tg.tensor(np.arange(5), device=device)
    nn.cross_entropy(model(x), y).backward()
    opt.step()
    return model, opt


@pytest.mark.parametrize("source, target", [("strict", "cpu"), ("cpu", "strict"),
                                            ("strict", "strict2")])
def test_save_on_one_device_load_on_another(tmp_path, source, target):
    model, opt = one_step(source)
    checkpoint.save(tmp_path / "c.npz", {"model": model.state_dict(),
                                         "optimizer": opt.state_dict()})
    state = checkpoint.load(tmp_path / "c.npz")
    fresh, fresh_opt = one_step(target)  # same architecture, now on ``target``
    for p in fresh.parameters():
        p.data = p._backend.asarray(np.zeros(p.shape, p.dtype))
    fresh.load_state_dict(state["model"])
    fresh_opt.load_state_dict(state["optimizer"])
    for (name, p), q in zip(fresh.state_dict().items(), model.state_dict().values()):
        assert p.device == target and np.array_equal(p.numpy(), q.numpy()), name
    # A second step from the loaded state matches one taken on the source device.
    for m, o, dev in ((model, opt, source), (fresh, fresh_opt, target)):
        x = tg.tensor(np.linspace(-1, 1, 5 * 64, dtype=np.float32).reshape(5, 1, 8, 8),
                      device=dev)
        o.zero_grad()
        nn.cross_entropy(m(x), tg.tensor(np.arange(5), device=dev)).backward()
        o.step()
    for p, q in zip(fresh.parameters(), model.parameters()):
        assert np.array_equal(p.numpy(), q.numpy())


# ---- errors ------------------------------------------------------------------------------
def _rewrite_header(path, edit):
    """Copy ``path`` with its JSON header replaced by ``edit(header)`` (bytes)."""
    with np.load(path, allow_pickle=False) as npz:
        members = {k: npz[k] for k in npz.files}
    header = json.loads(members["__header__"].tobytes())
    members["__header__"] = np.frombuffer(edit(header), dtype=np.uint8)
    np.savez(path, **members)


def _truncate(fraction):
    def make(path):
        data = path.read_bytes()
        path.write_bytes(data[:int(len(data) * fraction)])
    return make


def _flip_a_byte_inside_an_array(path):
    data = bytearray(path.read_bytes())
    at = data.index(np.arange(6, dtype=np.float32).reshape(2, 3).tobytes())
    data[at + 5] ^= 0xFF  # the zip's CRC no longer matches
    path.write_bytes(bytes(data))


def _pickled(path):
    np.savez(path, __header__=np.array([{"evil": "object"}], dtype=object))


CORRUPTIONS = {
    "missing": (lambda p: p.unlink(), "no checkpoint at"),
    "empty": (lambda p: p.write_bytes(b""), "not a readable checkpoint"),
    "text": (lambda p: p.write_text("hello\n"), "not a readable checkpoint"),
    "truncated to 10%": (_truncate(0.1), "not a readable checkpoint"),
    "truncated to 90%": (_truncate(0.9), "not a readable checkpoint"),
    "flipped byte": (_flip_a_byte_inside_an_array, "not a readable checkpoint"),
    "pickled": (_pickled, "pickled"),
    "foreign npz": (lambda p: np.savez(p, a=np.zeros(3)), "has no __header__ member"),
    "header not JSON": (lambda p: _rewrite_header(p, lambda h: b"{oops"), "header is damaged"),
    "other format": (lambda p: _rewrite_header(
        p, lambda h: json.dumps(dict(h, format="other/9")).encode()), "unknown checkpoint format"),
    "no tree": (lambda p: _rewrite_header(
        p, lambda h: json.dumps({"format": h["format"]}).encode()), "no 'tree' entry"),
    "dangling array": (lambda p: _rewrite_header(
        p, lambda h: json.dumps(dict(h, tree={"x": {"__array__": "nope"}})).encode()),
        "names array 'nope'"),
    "a directory": (lambda p: (p.unlink(), p.mkdir()), "is a directory"),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_damaged_files_give_one_clear_line(tmp_path, corruption):
    path = tmp_path / "c.npz"
    checkpoint.save(path, tree())
    damage, message = CORRUPTIONS[corruption]
    damage(path)
    with pytest.raises(CheckpointError, match=message) as info:
        checkpoint.load(path)
    text = str(info.value)
    assert "\n" not in text and str(path) in text
    assert "allow_pickle" not in text  # never advise loading unsafely


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)  # callers may catch either
