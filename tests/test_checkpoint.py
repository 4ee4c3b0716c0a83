"""Checkpoint files: round trips, atomic writes, any device to any device, clear errors."""
from __future__ import annotations

import io
import json
import os
import struct
import tracemalloc
import warnings
import zipfile
import zlib

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
    ({"__header__": np.ones(2)}, TypeError, "holds the checkpoint's header"),
    ({"a\0b": np.ones(2)}, TypeError, "NUL character"),
    ([1, 2], TypeError, "a checkpoint is a dict"),
])
def test_what_cannot_be_stored_is_refused_before_writing(tmp_path, bad, error, match):
    with pytest.raises(error, match=match):
        checkpoint.save(tmp_path / "c.npz", bad)
    assert list(tmp_path.iterdir()) == []


class ForeignTensor:
    """Another library's tensor, as ``torch.nn.Module.state_dict()`` holds them."""

    def __array__(self, dtype=None, copy=None):
        return np.ones(2)


def test_another_librarys_tensor_is_named_with_its_module_and_how_to_convert_it(tmp_path):
    # Named "Tensor" alone, it read as this package's Tensor, which save does store.
    with pytest.raises(TypeError) as info:
        checkpoint.save(tmp_path / "c.npz", {"model": {"weight": ForeignTensor()}})
    message = str(info.value)
    assert f"cannot store a {__name__}.ForeignTensor at 'model/weight'" in message
    assert "convert it to a NumPy array first" in message and ".detach().cpu().numpy()" in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("key", ["allow_pickle", "file", "args", "kwds", "compress",
                                 "arr_0", "x.npy", "", "..", "a b"])
def test_any_top_level_name_round_trips(tmp_path, key):
    # Names that are parameters of numpy.savez must not collide with them.
    path = checkpoint.save(tmp_path / "c.npz", {key: np.arange(3), "other": np.ones(2)})
    got = checkpoint.load(path)
    assert set(got) == {key, "other"} and np.array_equal(got[key], np.arange(3))
    assert np.array_equal(got["other"], np.ones(2))


def test_files_written_with_numpy_savez_still_load(tmp_path):
    # Earlier versions of save wrote the same layout with numpy.savez.
    header = {"format": checkpoint.FORMAT,
              "tree": {"w": {"__array__": "w"}, "n": 3, "l": [{"__array__": "l/0"}]}}
    np.savez(tmp_path / "c.npz", w=np.eye(2), **{"l/0": np.arange(2, dtype=np.int32)},
             __header__=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8))
    got = checkpoint.load(tmp_path / "c.npz")
    assert np.array_equal(got["w"], np.eye(2)) and got["n"] == 3
    assert got["l"][0].dtype == np.int32


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_members_in_any_npy_version_numpy_writes_load(tmp_path, version):
    """np.load reads members of each .npy version NumPy writes (it picks 3.0 itself
    only for non-ASCII field names, but writes any array in it when asked)."""
    path = checkpoint.save(tmp_path / "c.npz", tree())
    want = checkpoint.load(path)
    with zipfile.ZipFile(path) as zf:
        members = {info.filename: zf.read(info) for info in zf.infolist()}
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            array = np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
            f = io.BytesIO()
            np.lib.format.write_array(f, array, version=version, allow_pickle=False)
            zf.writestr(name, f.getvalue())
    got = checkpoint.load(path)
    assert json.dumps(got, default=lambda a: [a.dtype.str, a.tolist()]) == \
        json.dumps(want, default=lambda a: [a.dtype.str, a.tolist()])


def test_dicts_that_look_like_array_references_are_refused(tmp_path):
    for bad in ({"meta": {"__array__": "w"}, "w": np.ones(2)},
                {"meta": [{"__array__": 1, "other": 2}]}):
        with pytest.raises(TypeError, match="'__array__' at 'meta.*' is reserved"):
            checkpoint.save(tmp_path / "c.npz", bad)
    assert list(tmp_path.iterdir()) == []


def test_tuples_come_back_as_lists(tmp_path):
    path = checkpoint.save(tmp_path / "c.npz", {"t": (1, (2, np.ones(1)))})
    got = checkpoint.load(path)["t"]
    assert got[:1] == [1] and isinstance(got[1], list) and np.array_equal(got[1][1], [1.0])


# ---- atomic writes -------------------------------------------------------------------
@pytest.mark.parametrize("exc", [OSError("disk full"), KeyboardInterrupt()])
def test_a_crash_mid_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch, exc):
    path = tmp_path / "c.npz"
    checkpoint.save(path, {"version": 1, "w": np.ones(1000)})
    before = path.read_bytes()

    def crashing_write_array(f, array, **kwargs):
        f.write(b"\x93NUMPY" + b"\0" * 5000)  # the start of a member, then the crash
        raise exc
    monkeypatch.setattr(np.lib.format, "write_array", crashing_write_array)
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
    # (up to rounding: the host keeps batch-last convolution outputs, which
    # the GPU-like strict backend copies to NCHW, and sums round differently)
    for p, q in zip(fresh.parameters(), model.parameters()):
        q = q.numpy()
        np.testing.assert_allclose(p.numpy(), q, rtol=0, atol=1e-5 * np.abs(q).max())


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
    # Through a link, as a user's "--checkpoint /dev/stdin" or a mistyped path could be.
    "link to /dev/null": (lambda p: (p.unlink(), p.symlink_to("/dev/null")),
                          "is not a regular file"),
    "link to /dev/zero": (lambda p: (p.unlink(), p.symlink_to("/dev/zero")),
                          "is not a regular file"),
}


def _npy(array=None, header=None, data=b""):
    """The bytes of a .npy member: of ``array``, or a raw ``header`` dict and ``data``."""
    f = io.BytesIO()
    if array is not None:
        np.lib.format.write_array(f, array, allow_pickle=False)
    else:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(data)
    return f.getvalue()


def _crafted(header_bytes, compression=zipfile.ZIP_STORED, **members):
    """Damage: replace the file by a zip of ``members`` (.npy bytes) and a raw header."""
    def make(path):
        with zipfile.ZipFile(path, "w", compression) as zf:
            for name, data in members.items():
                zf.writestr(name + ".npy", data)
            zf.writestr("__header__.npy", _npy(np.frombuffer(header_bytes, np.uint8)))
    return make


def _crafted_entries(header_bytes, entries):
    """Damage: replace the file by a zip of ``(name, bytes)`` entries (names may repeat)."""
    def make(path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # zipfile warns of a repeated name
            with zipfile.ZipFile(path, "w") as zf:
                for name, data in entries:
                    zf.writestr(name, data)
                zf.writestr("__header__.npy", _npy(np.frombuffer(header_bytes, np.uint8)))
    return make


def _refs(*names):
    tree = {name: {"__array__": name} for name in names}
    return json.dumps({"format": checkpoint.FORMAT, "tree": tree}).encode()


def _flag_encrypted(path):
    """Set the zip 'encrypted' bit on every local and central header."""
    raw = bytearray(path.read_bytes())
    for signature, flag_offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = raw.find(signature)
        while start >= 0:
            raw[start + flag_offset] |= 1
            start = raw.find(signature, start + 4)
    path.write_bytes(bytes(raw))


HUGE = {"descr": "<f8", "fortran_order": False, "shape": (10**12,)}
GOOD = _npy(np.arange(3, dtype=np.float32))
UNTERMINATED = b"\x93NUMPY\x01\x00\x36\x00{'descr': '<f8', 'fortran_order': False, 'shape': (1,\n"
SHORT = {"descr": "<i4", "fortran_order": False, "shape": (3,)}
CRAFTED = {
    "huge shape": (_crafted(_refs("x"), x=_npy(header=HUGE, data=b"\0" * 8)),
                   r"member 'x.npy' claims shape \(1000000000000,\) of float64"),
    "short data": (_crafted(_refs("x"), x=_npy(header=SHORT, data=b"\0" * 8)),
                   r"member 'x.npy' claims .* \(12 bytes\) but holds 8 bytes"),
    "deep JSON": (_crafted(b'{"tree": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
                  "nested too deeply"),
    "strings": (_crafted(_refs("s"), s=_npy(np.array(["a"]))), r"member 's.npy' has dtype <U1"),
    "structured": (_crafted(_refs("r"), r=_npy(np.zeros(2, [("a", "f4"), ("b", "i4")]))),
                   r"member 'r.npy' has dtype \[\('a'"),
    "complex": (_crafted(_refs("c"), c=_npy(np.ones(2, complex))),
                r"member 'c.npy' has dtype complex128"),
    "not .npy": (_crafted(_refs("x"), x=b"hello"), r"member 'x.npy' is not a readable .npy"),
    # 4 MB of zeros deflate to a few KB: a "zip bomb" in miniature, refused unexpanded
    "compressed": (_crafted(_refs("z"), zipfile.ZIP_DEFLATED, z=_npy(np.zeros(2**20, "f4"))),
                   r"member 'z.npy' is stored compressed \(\d+ bytes expanding to 4194432\)"),
    "encrypted": (_flag_encrypted, r"member '.*' is encrypted"),
    # NumPy's header reader takes any tuple; True once escaped as a raw TypeError.
    "bool shape": (_crafted(_refs("x"), x=_npy(header=dict(SHORT, shape=(True,)), data=b"\0" * 4)),
                   r"member 'x.npy' has shape \(True,\) in its .npy header, which is not valid: "
                   r"expected a tuple of integers >= 0"),
    "negative shape": (_crafted(_refs("x"), x=_npy(header=dict(SHORT, shape=(-1, -4)))),
                       r"member 'x.npy' has shape \(-1, -4\) .* not valid"),
    # -1 alone would pass for NumPy's "infer this size" and end in a wrong-size message.
    "minus one in shape": (_crafted(_refs("x"), x=_npy(header=dict(SHORT, shape=(-1,)))),
                           r"member 'x.npy' has shape \(-1,\) .* not valid"),
    ".npy version 4.0": (_crafted(_refs("x"), x=b"\x93NUMPY\x04\x00" + GOOD[8:]),
                         r"member 'x.npy' .*: \.npy format version 4\.0 is not one NumPy writes"),
    # One message on every Python (3.10 words its own refusal of 4300+ digits otherwise).
    "huge integer": (_crafted(json.dumps({"format": checkpoint.FORMAT, "tree": {"n": 1}})
                              .replace("1}", "1" * 5000 + "}").encode()),
                     r"header is damaged: an integer of 5000 digits$"),
    "tree not a dict": (_crafted(json.dumps({"format": checkpoint.FORMAT, "tree": "x"}).encode()),
                        "no 'tree' entry holding a dict"),
    "other format family": (_crafted(json.dumps({"format": "tinygrad_cnn.checkpoints/1",
                                                 "tree": {}}).encode()),
                            r"unknown checkpoint format 'tinygrad_cnn.checkpoints/1'; expected"),
    "newer format": (_crafted(json.dumps({"format": "tinygrad_cnn.checkpoint/2",
                                          "tree": {}}).encode()),
                     r"checkpoint format 'tinygrad_cnn.checkpoint/2', written by another "
                     r"version of tinygrad_cnn; this one reads version 1 "),
    "long format": (_crafted(json.dumps({"format": list(range(10**5)), "tree": {}}).encode()),
                    r"unknown checkpoint format \[0, 1, 2, .{,100}\.\.\.; expected"),
    "member twice": (_crafted_entries(_refs("x"), [("x.npy", GOOD), ("x.npy", GOOD)]),
                     r"members 'x.npy' and 'x.npy' both hold the array 'x'"),
    "x and x.npy": (_crafted_entries(_refs("x"), [("x", GOOD), ("x.npy", GOOD)]),
                    r"members 'x' and 'x.npy' both hold the array 'x'"),
    # NumPy retries a header it cannot parse with Python's tokenizer, whose own error
    # (TokenError, no ValueError) escaped.
    "unterminated .npy header": (_crafted(_refs("x"), x=UNTERMINATED),
                                 r"member 'x.npy' is not a readable .npy array .*EOF in "
                                 r"multi-line statement"),
    # NumPy's dtype parser raises a SyntaxError for this descr, which escaped.
    "descr ',f4'": (_crafted(_refs("x"), x=_npy(header=dict(SHORT, descr=",f4"), data=bytes(12))),
                    r"member 'x.npy' is not a readable .npy array \(file damaged or edited\): "
                    r"invalid syntax"),
}
CORRUPTIONS.update(CRAFTED)


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_damaged_files_give_one_clear_line(tmp_path, corruption):
    path = tmp_path / "c.npz"
    checkpoint.save(path, tree())
    damage, message = CORRUPTIONS[corruption]
    damage(path)
    with pytest.raises(CheckpointError, match=message) as info:
        checkpoint.load(path)
    text = str(info.value)
    assert "\n" not in text and text.count(str(path)) == 1
    assert "allow_pickle" not in text  # never advise loading unsafely


@pytest.mark.parametrize("exc, message", [
    (TypeError("an integer is required"), r"is not a readable \.npy array \(file damaged or "
                                          r"edited\): an integer is required"),
    # A consistent member too large for this machine's memory.
    (MemoryError(), r"\(12 bytes of float32, shape \(3,\)\) is too large to load into memory"),
], ids=["TypeError", "MemoryError"])
def test_an_error_from_numpy_reading_a_member_is_a_checkpoint_error(
        tmp_path, monkeypatch, exc, message):
    """Member contents NumPy rejects in ways not checked beforehand: the member is named."""
    path = checkpoint.save(tmp_path / "c.npz", {"x": np.zeros(3, np.float32)})

    def choke(*args, **kwargs):
        raise exc
    monkeypatch.setattr(np.lib.format, "read_array", choke)
    with pytest.raises(CheckpointError, match=r"member '.*\.npy' " + message):
        checkpoint.load(path)


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)  # callers may catch either


def _claiming(size, last=False):
    """A checkpoint whose member ``x.npy`` claims ``size`` bytes of data (its zip
    sizes, and the .npy shape to match), though the file holds 8; stored first,
    or ``last`` (just before the central directory)."""
    header = {"descr": "|u1", "fortran_order": False, "shape": (size,)}
    npy = _npy(header=header, data=bytes(8))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        if last:
            zf.writestr("__header__.npy", _npy(np.frombuffer(_refs("x"), np.uint8)))
        zf.writestr("x.npy", npy)
        if not last:
            zf.writestr("__header__.npy", _npy(np.frombuffer(_refs("x"), np.uint8)))
    raw = bytearray(buf.getvalue())
    claim = len(npy) - 8 + size
    find = raw.rindex if last else raw.index
    struct.pack_into("<II", raw, find(b"PK\3\4") + 18, claim, claim)   # its local header
    struct.pack_into("<II", raw, find(b"PK\1\2") + 20, claim, claim)   # its entry
    return bytes(raw)


def _local(name, data):
    """A stored zip member: its local header, then ``data``; and its central entry maker."""
    crc = zlib.crc32(data)
    head = struct.pack("<4sHHHHHIIIHH", b"PK\3\4", 20, 0, 0, 0, 0, crc, len(data), len(data),
                       len(name), 0) + name

    def entry(offset):
        return struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\1\2", 20, 20, 0, 0, 0, 0, crc,
                           len(data), len(data), len(name), 0, 0, 0, 0, 0, offset) + name
    return head, entry


def _nested(n, payload):
    """A zip of ``n`` stored members, the data of each holding the next member whole
    (local header and data): every member is a valid uint8 .npy with a correct CRC,
    and reading them all costs about ``n`` times the size of the file."""
    names = [f"m{i}.npy".encode() for i in range(n)]
    header = _npy(np.frombuffer(_refs(*[f"m{i}" for i in range(n)]), np.uint8))
    heads, entries, npy_heads, data = [None] * n, [None] * n, [None] * n, payload
    for i in reversed(range(n)):   # the innermost member first
        npy_heads[i] = _npy(header={"descr": "|u1", "fortran_order": False,
                                    "shape": (len(data),)})
        data = npy_heads[i] + data
        heads[i], entries[i] = _local(names[i], data)
        data = heads[i] + data
    head, entry = _local(b"__header__.npy", header)
    body = head + header + data
    offsets, at = [], len(head + header)
    for i in range(n):
        offsets.append(at)
        at += len(heads[i]) + len(npy_heads[i])
    directory = entry(0) + b"".join(e(o) for e, o in zip(entries, offsets))
    return body + directory + struct.pack("<4sHHHHIIH", b"PK\5\6", 0, 0, n + 1, n + 1,
                                          len(directory), len(body), 0)


@pytest.mark.parametrize("data, message", [
    (_claiming(2**31), r"member 'x.npy' claims 2147483\d+ bytes of data at offset 0, which "
                       r"overlap the next member or run past the end of the data"),
    (_claiming(2**31, last=True), r"member 'x.npy' claims 2147483\d+ bytes of data at offset "
                                  r"\d+, which .* run past the end of the data"),
    (_nested(20, bytes(1 << 20)), r"member 'm0.npy' claims \d+ bytes of data at offset \d+, "
                                  r"which overlap the next member"),
], ids=["size beyond the file", "last member beyond the file", "members nested in one another"])
def test_sizes_a_file_cannot_hold_are_refused_before_allocating(tmp_path, data, message):
    """Zip sizes are declared: a member may claim more bytes than the file holds, or
    members may overlap, so that a small file would expand to many times its size."""
    path = tmp_path / "c.npz"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=message):
            checkpoint.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < len(data) + (1 << 20)
