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
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import struct
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import tinygrad_cnn as tg
from tinygrad_cnn import __version__, checkpoint, models
from tinygrad_cnn.cli import build_parser, main, read_image
from tinygrad_cnn.data import download, write_idx
from tinygrad_cnn.viz.png import encode_png, read_png_size, write_png

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
        big = np.kron(x[i, 0], np.ones((4, 4)))                    # (32, 32): resized back
        grey = np.rint(big * 255).astype(np.uint8)
        # Floats in [0, 1] as they are; integers (like PNG pixels) as 0..255.
        variants = {f"{k}.npy": x[i, 0].astype(np.float64),
                    f"{k}-hw1.npy": x[i, 0][:, :, None].astype(np.float32),   # channels last
                    f"{k}-int.npy": np.rint(x[i, 0] * 255).astype(np.int64), f"{k}.png": grey,
                    f"{k}-rgb.png": np.repeat(grey[:, :, None], 3, axis=2),
                    # Colour arrays, as PIL or imageio give them, read as the PNGs are.
                    f"{k}-rgb.npy": np.repeat(grey[:, :, None], 3, axis=2),
                    f"{k}-rgba.npy": np.dstack([grey] * 3 + [np.full_like(grey, 255)])}
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

    # scikit-learn's raw digits (0..16) need their scale said explicitly.
    np.save(tmp_path / "raw.npy", np.rint(x[right[0], 0] * 16))  # float64 in 0..16
    status, _, err = cli("predict", "--checkpoint", d / "c.npz", tmp_path / "raw.npy")
    assert status == 1 and "--max-value" in err
    status, text, _ = cli("predict", "--max-value", 16, "--checkpoint", d / "c.npz",
                          tmp_path / "raw.npy")
    assert status == 0 and text.split()[1] == labels[0]


def _npy_bytes(shape, descr, data):
    """A .npy file of a raw header (``shape``, ``descr``) and ``data`` as given."""
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(f, {"descr": descr, "fortran_order": False,
                                             "shape": shape})
    return f.getvalue() + data


@pytest.mark.parametrize("array, message", [
    # A float image a little over 1 used to be divided by 16 without a word.
    (np.full((8, 8), 1.1), r"float64 values range from 1.1 to 1.1; expected floating-point "
                           r"values in \[0, 1\]; give --max-value"),
    (np.full((8, 8), -0.5, np.float32), r"float32 values range from -0.5 to -0.5"),
    (np.full((8, 8), 300), r"int64 values range from 300 to 300; expected integer values in "
                           r"0\.\.255"),
    (np.full((8, 8), np.nan), "contains NaN or infinite values"),
    (np.zeros((0, 8)), r"the array is empty \(shape \(0, 8\)\)"),
    (np.array([None, 1], dtype=object), r"holds Python objects \(dtype object\)"),
    (np.array(["a", "b"]), "expected a numeric image array, got dtype <U1"),
    (b"not numpy", r"not a \.npy file"),
    # Shapes that are no image: named, with what was expected and how to convert.
    (np.zeros((3, 8, 8)), r"an array of shape \(3, 8, 8\) is not an image; expected \(H, W\) "
                          r"grey or \(H, W, C\) with C = 2, 3 or 4 channels last \(grey\+alpha, "
                          r"RGB, RGBA, as in PNGs\).*; if its channels come first, save "
                          r"np\.moveaxis\(image, -3, -1\)"),
    (np.zeros((1, 3, 8, 8)), r"shape \(1, 3, 8, 8\) is not an image; .*if its channels come "
                             r"first, save np\.moveaxis\(image, -3, -1\)"),
    (np.zeros((5, 1, 8, 8)), r"shape \(5, 1, 8, 8\) is not an image; .*if it is a batch of "
                             r"images, save one image per file"),
    (np.zeros(64), r"shape \(64,\) is not an image; .*if it is a flattened square image, "
                   r"save image\.reshape\(8, 8\)"),
    # One axis of a square length beside size-1 ones is flat too: refused before its
    # values (0..16, as load_digits().data[:1], would fail the range) are looked at.
    (np.arange(64.0).reshape(1, 64) % 17, r"shape \(1, 64\) is not an image; .*if it is a "
                                          r"flattened square image, save image\.reshape\(8, 8\)$"),
    (np.zeros((64, 1)), r"shape \(64, 1\) is not an image; .*save image\.reshape\(8, 8\)$"),
    (np.zeros((1, 1, 64)), r"shape \(1, 1, 64\) is not an image; .*save image\.reshape\(8, 8\)$"),
    (np.zeros((1, 64, 3)), r"shape \(1, 64, 3\) is not an image; .*save "
                           r"image\.reshape\(8, 8, 3\)$"),
    (np.zeros((8, 8, 5)), r"shape \(8, 8, 5\) is not an image"),
    # The shape is checked first: no warning about the values of a non-image.
    (np.array(3, np.uint8), r"shape \(\) is not an image"),
    ({"a": np.zeros(2)}, r"a \.npz archive, not a \.npy array"),
    # Headers that declare what the file does not hold: refused before allocating.
    (_npy_bytes((10**6, 10**6), "<f8", bytes(64)),
     r"the file claims shape \(1000000, 1000000\) of float64 \(8000000000000 bytes\) but "
     r"holds 64 bytes of data"),
    (_npy_bytes((True, 8), "|u1", bytes(8)),
     r"the file has shape \(True, 8\) in its \.npy header, which is not valid"),
    (_npy_bytes((8, 8), "|u1", bytes(64 + 5)),
     r"the file claims shape \(8, 8\) of uint8 \(64 bytes\) but holds 69 bytes"),
    # Sizes whose product has more digits than str() converts (4300): a ValueError
    # without the file's name escaped.
    (_npy_bytes((10**1500,) * 4, "<f4", bytes(8)),
     r"the file claims shape \(1000000000.{,100}\.\.\. of float32 \(40000000000000000000\.\.\. "
     r"\(6001 digits\) bytes\) but holds 8 bytes of data"),
    # A header cut short: NumPy's retry with the tokenizer raised a raw TokenError.
    (b"\x93NUMPY\x01\x00\x36\x00{'descr': '<f8', 'fortran_order': False, 'shape': (1,\n"
     + bytes(8), r"the file is not a readable \.npy array .*EOF in multi-line statement"),
    # NumPy's dtype parser raised a raw SyntaxError, its header check a raw TypeError.
    (_npy_bytes((8, 8), ",f4", bytes(256)), r"the file is not a readable \.npy array "
                                            r"\(file damaged or edited\): invalid syntax"),
    (_npy_bytes((8, 8), ">02", bytes(256)), r"the file is not a readable \.npy array .*leading "
                                            r"zeros"),
    (_npy_bytes((8, 8), "<f4", bytes(256)).replace(b"'shape': (8, 8), }", b"b'shape': (8, 8),}"),
     r"the file is not a readable \.npy array .*'<' not supported between"),
])
def test_predict_refuses_npy_images_it_would_have_to_guess_at(trained, tmp_path, array,
                                                              message):
    path = tmp_path / "img.npy"
    if isinstance(array, bytes):
        path.write_bytes(array)
    elif isinstance(array, dict):
        with open(path, "wb") as f:
            np.savez(f, **array)
    else:
        np.save(path, array, allow_pickle=array.dtype == object)
    status, out, err = cli("predict", "--checkpoint", trained[0] / "c.npz", path)
    assert status == 1 and out == ""
    assert err.startswith(f"tinygrad-cnn predict: error: {path}: ") and err.count("\n") == 1
    assert re.search(message, err), err


@pytest.mark.parametrize("data, message", [
    (_npy_bytes((2**15, 2**15), "<f8", bytes(64)), r"claims shape \(32768, 32768\) of float64"),
    # Version 2.0 has a 4-byte header length: here 2 GiB, in a file of 69 bytes.
    (b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**31) + b"{'descr': '|u1', " + bytes(40),
     "the header runs past the end of the 69 bytes of data"),
], ids=["8 GiB shape", "2 GiB header"])
def test_npy_sizes_the_file_cannot_hold_are_refused_before_allocating(tmp_path, data, message):
    path = tmp_path / "img.npy"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=re.escape(str(path)) + ": .*" + message):
            read_image(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_predict_warns_of_a_faint_integer_image_read_as_0_to_255(trained, tmp_path):
    # 0..16 integers (scikit-learn's raw digits) read as 0..255 are nearly black: read as
    # the rule says, but with a one-line warning that names the fix.
    np.save(tmp_path / "raw.npy", RAMP % 17)
    status, out, err = cli("predict", "--checkpoint", trained[0] / "c.npz", tmp_path / "raw.npy")
    assert status == 0 and out.startswith(f"{tmp_path / 'raw.npy'}: ")
    assert err == (f"tinygrad-cnn predict: warning: {tmp_path / 'raw.npy'}: int64 values range "
                   f"from 0 to 16, read as 0..255 (a nearly black image); if its white is 16, "
                   f"give --max-value 16\n")
    status, _, err = cli("predict", "--max-value", 16, "--checkpoint", trained[0] / "c.npz",
                         tmp_path / "raw.npy")
    assert status == 0 and err == ""


def test_predict_max_value_bounds_the_values(trained, tmp_path):
    np.save(tmp_path / "img.npy", np.full((8, 8), 17))
    status, _, err = cli("predict", "--max-value", 16, "--checkpoint", trained[0] / "c.npz",
                         tmp_path / "img.npy")
    assert status == 1 and "values range from 17 to 17; expected in [0, 16]" in err


RAMP = np.arange(64).reshape(8, 8)
CHECKER = (np.indices((16, 16)).sum(0) % 2).astype(np.uint8) * 255   # alternating 0 / 255
BIN_MEANS = [0.5, 2, 3.5, 5, 6.5, 8, 9.5, 11]
GROWN = [0, 0, 0, 1, 1, 1, 2, 2]
PRIMARIES = np.array([[[1.0, 0, 0], [0, 1, 0]], [[0, 0, 1], [1, 1, 1]]])  # red green / blue white
IMAGES = {   # name -> (file suffix, content, options, the (8, 8) image read, worked out by hand)
    "uint8 .npy as 0..255": (".npy", RAMP.astype(np.uint8) * 4, {}, RAMP * 4 / 255),
    "bool .npy as 0/1": (".npy", RAMP % 3 == 0, {}, (RAMP % 3 == 0) * 1.0),
    "--max-value 16": (".npy", RAMP % 17, {"max_value": 16}, (RAMP % 17) / 16),
    "PNG as 0..255": (".png", RAMP.astype(np.uint8) * 4, {}, RAMP * 4 / 255),
    "shrunk by area averaging": (".png", CHECKER, {}, np.full((8, 8), 0.5)),
    "grown by repeating pixels": (".npy", RAMP[::2, ::2] / 63, {},
                                  np.kron(RAMP[::2, ::2] / 63, np.ones((2, 2)))),
    # Not whole factors: source row i goes to bin i * 8 // 12, so the bins hold rows
    # {0, 1}, {2}, {3, 4}, {5}, {6, 7}, {8}, {9, 10}, {11} (their means below), and
    # output row j repeats source row j * 3 // 8: 0, 0, 0, 1, 1, 1, 2, 2.
    "shrunk 12 -> 8": (".npy", np.add.outer(np.arange(12) * 12, np.arange(12)) / 143, {},
                       np.add.outer(np.array(BIN_MEANS) * 12, BIN_MEANS) / 143),
    "grown 3 -> 8": (".npy", np.arange(9).reshape(3, 3) / 8, {},
                     np.arange(9).reshape(3, 3)[np.ix_(GROWN, GROWN)] / 8),
    # Each axis on its own: rows 16 -> 8 are averaged in pairs (4 * (2j) and 4 * (2j + 1),
    # mean 8j + 2), columns 4 -> 8 are repeated (0, 0, 1, 1, 2, 2, 3, 3).
    "rows shrunk, columns grown": (".npy", np.add.outer(np.arange(16) * 4, np.arange(4)) / 63,
                                   {}, np.add.outer(np.arange(8) * 8 + 2,
                                                    np.arange(8) // 2) / 63),
    # Colour .npy arrays follow the PNG rule: BT.601 luma, alpha blended onto the background.
    "RGB .npy as luma": (".npy", np.tile(PRIMARIES, (4, 4, 1)), {},
                         np.tile([[0.299, 0.587], [0.114, 1.0]], (4, 4))),
    "(1, H, W, 3) .npy": (".npy", np.tile(PRIMARIES, (4, 4, 1))[None], {},
                          np.tile([[0.299, 0.587], [0.114, 1.0]], (4, 4))),
    "RGBA .npy onto black": (".npy", np.dstack([np.full((8, 8, 3), 255), RAMP * 4]).astype(
        np.uint8), {}, RAMP * 4 / 255),
    "RGBA .npy onto white": (".npy", np.dstack([np.zeros((8, 8, 3)), RAMP * 4]).astype(np.uint8),
                             {"background": 255}, 1 - RAMP * 4 / 255),
    "grey+alpha float .npy": (".npy", np.dstack([np.full((8, 8), 0.5), RAMP / 63]), {},
                              0.5 * RAMP / 63),
}


@pytest.mark.parametrize("name", list(IMAGES))
def test_load_image_scales_and_resizes_as_documented(tmp_path, name):
    from tinygrad_cnn.cli import load_image
    suffix, content, options, expected = IMAGES[name]
    path = tmp_path / f"img{suffix}"
    (np.save if suffix == ".npy" else write_png)(path, content)
    image = load_image(path, (1, 8, 8), **options)
    assert image.shape == (1, 8, 8) and image.dtype == np.float32
    np.testing.assert_allclose(image[0], expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("array, version", [
    (RAMP.astype(np.float32) / 63, (2, 0)),
    # NumPy writes 3.0 for non-ASCII field names only, but reads it for any array.
    (RAMP.astype(np.float32) / 63, (3, 0)),
    (np.asfortranarray(RAMP / 63), None),
    (np.asfortranarray(np.tile(PRIMARIES, (4, 4, 1))), None),         # (H, W, 3) column-major
    ((RAMP / 63).astype(">f4"), None),                               # big-endian
    ((RAMP * 4).astype(">u2"), None),
    (RAMP % 3 == 0, (2, 0)),
], ids=["version 2.0", "version 3.0", "Fortran order", "Fortran order RGB", "big-endian float",
        "big-endian uint16", "bool, version 2.0"])
def test_npy_layouts_numpy_writes_read_as_the_same_image(tmp_path, array, version):
    """Header versions, column-major data and byte orders NumPy writes (and np.load
    reads) are read as the same image as a plain np.save of the same values."""
    with open(tmp_path / "img.npy", "wb") as f:
        np.lib.format.write_array(f, array, version=version, allow_pickle=False)
    np.save(tmp_path / "plain.npy", np.ascontiguousarray(array, array.dtype.newbyteorder("=")))
    np.testing.assert_array_equal(read_image(tmp_path / "img.npy"),
                                  read_image(tmp_path / "plain.npy"))


def area_average(img, h, w):
    """resize by its definition, as the CLI has always shrunk images: every pixel added
    in row-major order, in float64, into the output pixel it falls into (np.add.at),
    each sum divided by its count; a growing axis first repeats pixels."""
    H, W = img.shape
    img = img[(np.arange(max(h, H)) * H) // max(h, H)][:, (np.arange(max(w, W)) * W) // max(w, W)]
    rows = (np.arange(img.shape[0]) * h) // img.shape[0]
    cols = (np.arange(img.shape[1]) * w) // img.shape[1]
    total, count = np.zeros((h, w)), np.zeros((h, w))
    np.add.at(total, (rows[:, None], cols[None, :]), img)
    np.add.at(count, (rows[:, None], cols[None, :]), 1)
    return total / count


@pytest.mark.parametrize("size, resized", [
    ((28, 28), (8, 8)), ((37, 23), (8, 8)), ((9, 64), (8, 8)), ((100, 3), (7, 2)),
    ((8, 8), (8, 8)), ((30, 5), (8, 8)), ((3, 30), (8, 8)), ((3, 5), (8, 8)),
])
def test_resize_equals_the_area_average_bit_for_bit(size, resized):
    """A prediction must not move by a rounding step because the averaging was
    reorganised: each output pixel is the float64 sum, in row-major order, over
    its count."""
    from tinygrad_cnn.cli import resize
    img = np.random.default_rng(sum(size)).random(size).astype(np.float32)
    img[0, 0] = 1e-30                      # a sum of these rounds in any other order
    out = resize(img, *resized)
    assert out.shape == resized and out.dtype == np.float64
    np.testing.assert_array_equal(out, area_average(img, *resized))


@pytest.mark.parametrize("size", [(8, 8), (28, 28), (37, 5)])
@pytest.mark.parametrize("invert", [False, True])
def test_predict_normalises_the_float32_image_that_load_image_gives(tmp_path, size, invert):
    """predict's input is load_image's float32 image (inverted if asked), normalised by
    data.normalize as the training images were: the same numbers, bit for bit."""
    import argparse

    from tinygrad_cnn.cli import _model_input, load_image
    from tinygrad_cnn.data import normalize
    np.save(tmp_path / "img.npy", np.random.default_rng(size[1]).random(size).astype(np.float32))
    state = {"image_shape": (1, 8, 8), "mean": np.float32([0.13]), "std": np.float32([0.31])}
    args = argparse.Namespace(command="predict", invert=invert, max_value=None)
    x = _model_input(tmp_path / "img.npy", state, args)
    image = load_image(tmp_path / "img.npy", (1, 8, 8), background=255 if invert else 0)
    expected = normalize((1 - image if invert else image)[None], state["mean"], state["std"])
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, expected)


@pytest.mark.parametrize("channels", [2, 3, 4])
@pytest.mark.parametrize("background", [0, 255])
def test_a_colour_npy_reads_as_the_png_of_the_same_pixels(tmp_path, channels, background):
    """One conversion rule for both formats; the PNG's grey is rounded to 8 bits."""
    from tinygrad_cnn.cli import load_image
    pixels = np.random.default_rng(channels).integers(0, 256, (12, 12, channels), np.uint8)
    np.save(tmp_path / "img.npy", pixels)
    write_png(tmp_path / "img.png", pixels)
    from_npy, from_png = (load_image(tmp_path / f"img.{kind}", (1, 12, 12), background)
                          for kind in ("npy", "png"))
    np.testing.assert_allclose(from_npy, from_png, rtol=0, atol=0.5 / 255 + 1e-6)
    assert np.abs(from_npy - from_png).max() > 0   # the .npy's grey is not rounded


@pytest.mark.parametrize("command, size, suffix", [
    ("predict", (28, 28), ".npy"), ("predict", (16, 24), ".png"), ("predict", (8, 8), ".npy"),
    ("show", (28, 28), ".png"), ("show", (8, 8), ".png"),
    # A row of pixels whose length is no square is no flat square image: resized.
    ("predict", (1, 28), ".npy"), ("predict", (64, 1), ".png"),
])
def test_a_resized_image_is_noted_on_stderr(trained, tmp_path, command, size, suffix):
    """Resizing is documented, but a 28x28 image given to an 8x8 model usually means the
    wrong image or checkpoint: one note on stderr says so; stdout keeps only results."""
    path = tmp_path / f"img{suffix}"
    (np.save if suffix == ".npy" else write_png)(path, np.zeros(size, np.uint8))
    argv = [command, "--checkpoint", trained[0] / "c.npz"]
    argv += [path] if command == "predict" else ["--feature-maps", path, tmp_path / "m.png"]
    status, out, err = cli(*argv)
    assert status == 0, err
    if command == "predict":
        assert re.fullmatch(rf"{re.escape(str(path))}: \d \(p=[\d.]+; .*\)\n", out)
    else:
        assert out == f"wrote {tmp_path / 'm.png'}\n"
    if size == (8, 8):
        assert err == ""
    else:
        assert err == (f"tinygrad-cnn {command}: note: {path}: resized from {size[0]}x{size[1]} "
                       f"to 8x8 (height x width), the model's input size\n")


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
    status, out, err = cli("show", "--checkpoint", d / "c.npz")
    assert status == 2 and out == "" and "error: nothing to show" in err
    # An image that cannot be read fails the command before anything is written.
    np.save(tmp_path / "bad.npy", -np.eye(8))
    status, out, err = cli("show", "--checkpoint", d / "c.npz", "--filters", tmp_path / "g.png",
                           "--feature-maps", tmp_path / "bad.npy", tmp_path / "m.png")
    assert status == 1 and out == "" and "bad.npy: float64 values range from -1" in err
    assert not (tmp_path / "g.png").exists() and not (tmp_path / "m.png").exists()


@pytest.mark.parametrize("argv, titles", [
    # The cnn's convolutions have 32 and 64 output channels; 16 are drawn by default.
    ((), ["0 (Conv2d) 32x8x8: first 16 of 32 maps", "3 (Conv2d) 64x4x4: first 16 of 64 maps"]),
    (("--max-maps", 40), ["0 (Conv2d) 32x8x8", "3 (Conv2d) 64x4x4: first 40 of 64 maps"]),
    (("--max-maps", 64), ["0 (Conv2d) 32x8x8", "3 (Conv2d) 64x4x4"]),
])
def test_feature_map_titles_say_how_many_maps_are_drawn(trained, tmp_path, monkeypatch, argv,
                                                        titles):
    pytest.importorskip("matplotlib")
    from tinygrad_cnn.viz import images
    figures = []
    monkeypatch.setattr(images, "_save_figure", lambda fig, path: figures.append(fig) or path)
    np.save(tmp_path / "digit.npy", np.eye(8))
    status, _, err = cli("show", "--checkpoint", trained[0] / "c.npz", "--feature-maps",
                         tmp_path / "digit.npy", tmp_path / "maps.png", *argv)
    assert status == 0, err
    (fig,) = figures
    rows = fig.axes[0].get_gridspec().nrows
    columns = len(fig.axes) // rows
    drawn = [sum(bool(ax.images) for ax in fig.axes[r * columns:(r + 1) * columns])
             for r in range(1, rows)]
    assert [fig.axes[r * columns].get_title(loc="left") for r in range(1, rows)] == titles
    assert drawn == [min(32, int(argv[1]) if argv else 16), min(64, int(argv[1]) if argv else 16)]


def test_show_inverts_its_image_as_predict_does(trained, tmp_path):
    d, _ = trained
    np.save(tmp_path / "dark.npy", 1 - np.eye(8))
    np.save(tmp_path / "light.npy", np.eye(8))
    for image, invert in (("dark.npy", ["--invert"]), ("light.npy", [])):
        status, _, err = cli("show", "--checkpoint", d / "c.npz", *invert, "--feature-maps",
                             tmp_path / image, tmp_path / f"{image}.png")
        assert status == 0, err
    assert (tmp_path / "dark.npy.png").read_bytes() == (tmp_path / "light.npy.png").read_bytes()


@pytest.mark.parametrize("argv", [("train", "--foo"), ("eval", "--checkpoint", "c.npz", "-x")])
def test_an_unknown_option_is_named_with_its_commands_usage(argv):
    status, out, err = cli(*argv)
    assert status == 2 and out == ""
    assert err.startswith(f"usage: tinygrad-cnn {argv[0]} ")
    assert f"tinygrad-cnn {argv[0]}: error: unrecognized arguments: {argv[-1]}" in err


def test_predict_names_the_formats_it_reads(trained):
    d, _ = trained
    status, _, err = cli("predict", "--checkpoint", d / "c.npz", d / "c.npz")
    assert status == 1 and "is not a PNG file" in err and "expected a .png or .npy image" in err
    # A PNG that is damaged is a PNG: its own error, without the hint.
    data = bytearray(encode_png(np.full((8, 8), 128, np.uint8)))
    data[data.index(b"IDAT") + 6] ^= 0xFF
    (d / "bad.png").write_bytes(bytes(data))
    status, _, err = cli("predict", "--checkpoint", d / "c.npz", d / "bad.png")
    assert status == 1 and "bad.png" in err and "expected a .png or .npy" not in err


@pytest.fixture(scope="module")
def no_conv_checkpoints(tmp_path_factory):
    """Checkpoints of the two models without convolutions, after one step."""
    pytest.importorskip("sklearn")
    d = tmp_path_factory.mktemp("noconv")
    for model in ("mlp", "local"):
        status, _, err = cli("train", "--model", model, "--max-steps", 1, "--no-progress",
                             "--checkpoint", d / f"{model}.npz")
        assert status == 0, err
    return d


@pytest.mark.parametrize("model, option, message", [
    ("mlp", "--filters", "holds the mlp model, which has no convolution, so no filters to "
                         "draw; models with convolutions: cnn, lenet5, nielsen"),
    ("local", "--filters", "holds the local model, which has no convolution"),
    ("mlp", "--feature-maps", "holds the mlp model, which has no convolution or "
                              "locally-connected layer, so no feature maps to draw; models "
                              "with them: cnn, lenet5, nielsen, local"),
])
def test_show_says_which_models_have_what_it_draws(no_conv_checkpoints, tmp_path, model,
                                                   option, message):
    np.save(tmp_path / "digit.npy", np.eye(8))
    values = [tmp_path / "out.png"] if option == "--filters" else \
        [tmp_path / "digit.npy", tmp_path / "out.png"]
    status, out, err = cli("show", "--checkpoint", no_conv_checkpoints / f"{model}.npz",
                           option, *values)
    assert status == 2 and out == "" and err.count("\n") == 1
    assert message in err and "pass the weight" not in err
    assert not (tmp_path / "out.png").exists()
    if model == "local" and option == "--filters":  # its feature maps can be drawn
        status, _, err = cli("show", "--checkpoint", no_conv_checkpoints / "local.npz",
                             "--feature-maps", tmp_path / "digit.npy", tmp_path / "out.png")
        assert status == 0, err


def test_plot_draws_the_metrics(trained, tmp_path):
    d, _ = trained
    status, out, _ = cli("plot", d / "m.jsonl", "-o", tmp_path / "curves.png")
    assert status == 0 and out == f"wrote {tmp_path / 'curves.png'}\n"
    assert min(read_png_size(tmp_path / "curves.png")) > 100


@pytest.mark.parametrize("argv, status, message", [
    (("plot", "{m}", "-o", "{tmp}/out.txt"), 2, "out.txt: pictures are written as PNG; give a "
                                                "name ending in .png"),
    (("plot", "{m}", "-o", "{tmp}/new/x.png"), 2, "the directory {tmp}/new does not exist"),
    (("show", "--checkpoint", "{c}", "--filters", "{tmp}/f.jpg"), 2, "f.jpg: pictures are "
                                                                     "written as PNG"),
    (("show", "--checkpoint", "{c}", "--filters", "{tmp}/new/f.png"), 2,
     "the directory {tmp}/new does not exist"),
    (("show", "--checkpoint", "{c}", "--feature-maps", "{tmp}/d.npy", "{tmp}/maps"), 2,
     "maps: pictures are written as PNG"),
])
def test_pictures_need_a_png_name_in_an_existing_directory(trained, tmp_path, argv, status,
                                                           message):
    d, _ = trained
    np.save(tmp_path / "d.npy", np.eye(8))
    fill = dict(m=d / "m.jsonl", c=d / "c.npz", tmp=tmp_path)
    code, out, err = cli(*[a.format(**fill) for a in argv])
    assert code == status and out == "" and err.count("\n") == 1
    assert message.format(**fill) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npy"]  # nothing written or made


# ---- summary, gradcheck, info, help ---------------------------------------------------------
@pytest.mark.parametrize("model", list(models.MODELS))
@pytest.mark.parametrize("dataset, shape", [("digits", (1, 8, 8)), ("mnist", (1, 28, 28))])
def test_summary(model, dataset, shape):
    status, out, _ = cli("summary", "--model", model, "--dataset", dataset)
    assert status == 0
    n = sum(p.size for p in models.build(model, shape).parameters())
    assert out.startswith(f"{model} for {dataset} images {shape}")
    assert f"Total params: {n:,}" in out
    # A receptive field larger than the image is explained where it occurs.
    field = re.search(r"^Receptive field of one output unit: (\d+)x(\d+)(.*)$", out, re.M)
    size = shape[1]
    if int(field.group(1)) > size:
        assert field.group(3) == f" (larger than the {size}x{size} input: it counts the padding)"
    else:
        assert field.group(3) == ""
    if (model, dataset) == ("cnn", "digits"):
        assert field.group(0).startswith("Receptive field of one output unit: 14x14 (larger")


@pytest.mark.parametrize("model", sorted(set(models.MODELS) - {"mlp"}))
def test_models_name_the_smallest_image_they_accept(model):
    # Two 2x2 poolings: a 3x3 image used to surface as "in_features must be >= 1, got 0".
    for shape in [(1, 4, 4), (3, 4, 9)]:
        assert models.build(model, shape)(tg.zeros(2, *shape)).shape == (2, 10)
    for shape, features in [((1, 3, 3), "0x0"), ((1, 8, 3), "2x0")]:
        with pytest.raises(ValueError, match=re.escape(
                f"model {model!r} needs images of at least 4x4, got image shape {shape}: its "
                f"convolutions and poolings shrink an image of {shape[1]}x{shape[2]} to "
                f"feature maps of {features}")):
            models.build(model, shape)
    with pytest.raises(ValueError, match=re.escape("got image shape (1, 3, 3)")):
        getattr(models, model)((1, 3, 3))       # the builder itself checks too


@pytest.mark.parametrize("shape", [(1, 0, 8), (8, 8), (1, 8, 8.0), (True, 8, 8)])
@pytest.mark.parametrize("function", [models.build, models.parameter_count])
def test_build_refuses_an_image_shape_that_is_not_three_sizes(shape, function):
    assert models.build("mlp", (1, 1, 1))(tg.zeros(2, 1, 1, 1)).shape == (2, 10)
    with pytest.raises(ValueError, match=re.escape(
            f"model 'mlp': image_shape must be (C, H, W), three positive ints, got {shape}")):
        function("mlp", shape)


@pytest.mark.parametrize("model", list(models.MODELS))
def test_parameter_count_is_that_of_the_built_model(model):
    """Worked out apart from the builders, so checked against them on many shapes."""
    # Both sides of the 28-pixel switch from "same" to "valid" padding, odd sizes, and
    # sides that differ.
    for shape in [(1, 4, 4), (1, 8, 8), (3, 9, 5), (1, 27, 27), (1, 28, 28), (2, 31, 40),
                  (1, 27, 40), (1, 40, 28)]:
        for num_classes in (1, 10, 37):
            built = models.build(model, shape, num_classes)
            assert models.parameter_count(model, shape, num_classes) == sum(
                p.size for p in built.parameters()), (shape, num_classes)
    if model != "mlp":
        with pytest.raises(ValueError, match="needs images of at least 4x4"):
            models.parameter_count(model, (1, 3, 3))
    with pytest.raises(ValueError, match="Linear: out_features must be an int >= 1, got 0"):
        models.parameter_count(model, (1, 8, 8), 0)


def test_parameter_count_refuses_a_model_it_has_no_formula_for(monkeypatch):
    """A model added to MODELS alone was counted with another model's formula."""
    monkeypatch.setitem(models.MODELS, "wide", lambda shape, k: tg.nn.Linear(1, k))
    with pytest.raises(NotImplementedError, match="parameter_count has no formula for model "
                                                  "'wide'; add one beside its builder"):
        models.parameter_count("wide", (1, 28, 28))


@pytest.mark.parametrize("model", ["mlp", "cnn", "local"])
def test_gradcheck_passes_on_the_models(model):
    status, out, _ = cli("gradcheck", "--model", model, "--elements", 6)
    assert status == 0
    assert out.rstrip().endswith("all gradients agree with finite differences")
    assert re.search(r"^model \(end to end\) .* ok$", out, re.M)


def test_gradcheck_catches_a_wrong_backward(monkeypatch):
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
    assert re.search(r"^(scikit-learn [\d.]+|scikit-learn: not installed)$", out, re.M)


def test_info_reads_versions_without_importing_the_packages():
    """Importing torch and scikit-learn just for their versions took seconds."""
    code = ("import sys, contextlib, io\n"
            "from tinygrad_cnn.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    status = main(['info'])\n"
            "print(status, sorted(m for m in ('torch', 'sklearn', 'matplotlib', 'tqdm') "
            "if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env=command_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "0 []\n"


def subcommands():
    parser = build_parser()
    return next(a for a in parser._actions if a.dest == "command").choices


def all_options():
    """(command, option or positional name) for every argument of every command."""
    return [(name, a.option_strings[-1] if a.option_strings else a.metavar)
            for name, p in subcommands().items() for a in p._actions
            if a.option_strings != ["-h", "--help"]]


@pytest.mark.parametrize("command", list(subcommands()))
def test_every_command_has_a_description(command):
    status, out, _ = cli(command, "--help")
    assert status == 0
    # The paragraph between the usage lines and the argument lists.
    description = out.split("\n\n")[1]
    assert not description.startswith(("positional arguments", "options")), out
    assert len(description.split()) >= 10


@pytest.mark.parametrize("command, option", all_options())
def test_help_explains_every_option(command, option):
    status, out, _ = cli(command, "--help")
    assert status == 0
    # The option's line in the help text, then its explanation.
    m = re.search(rf"^  (?:-\w(?: \S+)?, )?{re.escape(option)}(?![\w-]).*?(?=^  \S|^\S|\Z)", out,
                  re.M | re.S)
    assert m, f"{option} missing from the help"
    text = " ".join(m.group(0).split()[1:])
    assert len(re.sub(r"[A-Z_{}\[\],.-]+", "", text).split()) >= 2, m.group(0)


def test_plot_help_states_the_default_output():
    _, out, _ = cli("plot", "--help")
    assert "(default: curves.png)" in " ".join(out.split())


def test_predict_help_states_the_scale_rule():
    _, out, _ = cli("predict", "--help")
    out = " ".join(out.split())
    assert "integer .npy arrays are read as 0..255" in out
    assert "floating-point .npy arrays must already lie in [0, 1]" in out
    assert "--max-value" in out


def test_train_help_shows_the_choices_and_defaults():
    _, out, _ = cli("train", "--help")
    out = " ".join(out.split())
    for text in ("{digits,mnist,fashion-mnist}", "{" + ",".join(models.MODELS) + "}",
                 "(default: digits)", "(default: cnn)", "(default: 15)", "(default: 32)",
                 "(default: adam)", "adam 0.002", "Exit status: 0 when done (or stopped by "
                 "--max-steps), 1 on an error (a bad file, missing data, an unusable device), "
                 "2 on a usage error (an invalid option value, or options that contradict each "
                 "other or the checkpoint), 130 when stopped by Ctrl-C."):
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


@pytest.mark.parametrize("argv, message", [
    (("train", "--lr", "nan"), "argument --lr: must be a finite number > 0, got 'nan'"),
    (("train", "--lr", "inf"), "argument --lr: must be a finite number > 0, got 'inf'"),
    (("train", "--lr", "0"), "argument --lr: must be a finite number > 0, got '0'"),
    (("train", "--weight-decay", "nan"), "argument --weight-decay: must be a finite number >= 0"),
    (("train", "--weight-decay", "-1"), "argument --weight-decay: must be a finite number >= 0"),
    (("train", "--seed", "-1"), "argument --seed: must be an integer >= 0, got -1"),
    (("train", "--epochs", "0"), "argument --epochs: must be an integer >= 1, got 0"),
    (("train", "--max-steps", "0"), "argument --max-steps: must be an integer >= 1, got 0"),
    (("train", "--batch-size", "0"), "argument --batch-size: must be an integer >= 1, got 0"),
    (("train", "--log-every", "0"), "argument --log-every: must be an integer >= 1, got 0"),
    (("train", "--batch-size", "1.5"), "argument --batch-size: must be an integer >= 1, "
                                       "got '1.5'"),
    (("gradcheck", "--elements", "0"), "argument --elements: must be an integer >= 1, got 0"),
    (("gradcheck", "--seed", "-2"), "argument --seed: must be an integer >= 0, got -2"),
    (("predict", "--max-value", "0", "--checkpoint", "c.npz", "x.npy"),
     "argument --max-value: must be a finite number > 0"),
    (("show", "--checkpoint", "c.npz", "--max-maps", "0"),
     "argument --max-maps: must be an integer >= 1, got 0"),
])
def test_bad_values_are_usage_errors_naming_the_option(argv, message):
    status, out, err = cli(*argv)
    assert status == 2 and out == ""
    assert err.startswith("usage: tinygrad-cnn") and "Traceback" not in err
    assert err.splitlines()[-1].startswith(f"tinygrad-cnn {argv[0]}: error: {message}")


def test_a_bad_im2col_limit_in_the_environment_is_a_usage_error(monkeypatch):
    from tinygrad_cnn import conv_arrays
    monkeypatch.setattr(conv_arrays, "_im2col_limit", None)
    monkeypatch.setenv("TINYGRAD_CNN_IM2COL_LIMIT", "abc")
    status, out, err = cli("train", "--no-progress")
    assert status == 2 and out == "" and err.count("\n") == 1
    assert "TINYGRAD_CNN_IM2COL_LIMIT='abc' (environment variable)" in err
    status, out, _ = cli("info")                 # what a user runs to find out what is wrong
    assert status == 0 and "numpy" in out


@pytest.mark.parametrize("env, argv, message", [
    # In the words of the library's check (data_root), which meets it at the download.
    ("{file}", ("train", "--dataset", "mnist"),
     "TINYGRAD_CNN_DATA='{file}' (environment variable): expected a directory for the data "
     "files (it is created if missing), but {file} is a file"),
    ("{file}/mnist", ("train", "--dataset", "mnist"),
     "TINYGRAD_CNN_DATA='{file}/mnist' (environment variable): expected a directory for the "
     "data files (it is created if missing), but {file}/mnist is under {file}, a file"),
    ("{file}", ("eval", "--checkpoint", "{mnist}"),
     "TINYGRAD_CNN_DATA='{file}' (environment variable): expected a directory"),
    (None, ("train", "--dataset", "mnist", "--data-dir", "{file}/mnist"),
     "--data-dir '{file}/mnist': expected a directory for the data files (it is created if "
     "missing), but {file}/mnist is under {file}, a file"),
    (None, ("train", "--data-dir", ""), "--data-dir '': expected a directory (it is created "
                                        "if missing)"),
])
def test_a_data_directory_that_is_a_file_is_a_usage_error(trained, tmp_path, monkeypatch, env,
                                                          argv, message):
    """Named as --data-dir is, with where it came from, not "[Errno 20] Not a directory"."""
    fill = dict(file=tmp_path / "digit.npy", mnist=tmp_path / "mnist.npz")
    np.save(fill["file"], np.eye(8))
    state = checkpoint.load(trained[0] / "c.npz")   # as if trained on mnist
    state["config"].update(dataset="mnist", data_dir=None)
    checkpoint.save(fill["mnist"], state)
    if env is None:
        monkeypatch.delenv("TINYGRAD_CNN_DATA", raising=False)
    else:
        monkeypatch.setenv("TINYGRAD_CNN_DATA", env.format(**fill))
    status, out, err = cli(*[str(a).format(**fill) for a in argv])
    assert status == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith(f"tinygrad-cnn {argv[0]}: error: {message.format(**fill)}")


@pytest.mark.parametrize("argv", [
    ("train", "--model", "mlp", "--max-steps", 1, "--no-progress"),
    ("eval", "--checkpoint", "{good}"),
], ids=["train", "eval"])
def test_the_digits_do_not_read_the_data_directory_variable(trained, tmp_path, monkeypatch,
                                                            argv):
    """The bundled digits are never downloaded: a TINYGRAD_CNN_DATA that is a file does
    not stop their runs."""
    file = tmp_path / "notes.txt"
    file.write_text("my notes\n")
    monkeypatch.setenv("TINYGRAD_CNN_DATA", str(file))
    status, out, err = cli(*[str(a).format(good=trained[0] / "c.npz") for a in argv])
    assert status == 0 and "accuracy" in out, err


@pytest.mark.parametrize("value, tuned", [
    ("1", True), ("0", False), ("", True), (" 0 ", False),   # unset-like and spaced values
    ("maybe", "'maybe'"), ("2", "'2'"), ("off", "'off'"), ("00", "'00'"),
])
def test_malloc_tuning_takes_0_or_1(monkeypatch, value, tuned):
    from tinygrad_cnn import backend
    pytest.importorskip("sklearn")
    calls = []
    monkeypatch.setattr(backend, "reduce_malloc_churn", lambda: calls.append(1))
    monkeypatch.setenv("TINYGRAD_CNN_MALLOC_TUNING", value)
    status, out, err = cli("train", "--model", "mlp", "--max-steps", 1, "--no-progress")
    if isinstance(tuned, bool):
        assert status == 0 and calls == ([1] if tuned else []), err
        return
    assert status == 2 and out == "" and calls == []
    assert err == (f"tinygrad-cnn train: error: TINYGRAD_CNN_MALLOC_TUNING={tuned} (environment "
                   f"variable): expected 1 (raise glibc's malloc thresholds; the default) or 0 "
                   f"(leave them)\n")


@pytest.mark.parametrize("argv, env, message", [
    (("train", "--resume"), None, "--resume needs --checkpoint PATH"),
    (("train", "--checkpoint", "{good}", "--resume", "--overwrite"), None,
     "pass only one of them"),
    (("train", "--checkpoint", "{good}", "--resume", "--epochs", 9, "--seed", 1), None,
     "continues a run with other settings: --epochs 9 (the run has 4); drop these options"),
    (("train", "--checkpoint", "{good}"), None,
     "--checkpoint {good} exists: pass --resume to continue its run, or --overwrite to "
     "start a new run there"),
    # output paths are checked before any work, not at the first save an epoch in
    (("train", "--checkpoint", ""), None, "--checkpoint is empty; give a file path"),
    (("train", "--checkpoint", "{dir}", "--overwrite"), None,
     "--checkpoint {dir} is a directory; give a file path"),
    (("train", "--metrics", "{good}/m.jsonl"), None,
     "--metrics {good}/m.jsonl: the directory {good} does not exist"),
    (("train", "--metrics", "{good}"), None, "--metrics {good} exists: pass --resume"),
    (("train", "--checkpoint", "{dir}/x.npz", "--metrics", "{dir}/x.npz"), None,
     "--checkpoint and --metrics are the same file"),
    (("train", "--data-dir", "{good}"), None, "--data-dir '{good}': expected a directory"),
    (("train", "--device", "gpu"), None,
     "--device 'gpu' is not a device; expected one of: auto, cpu, cuda, cuda:N"),
    (("train",), "gpu", "TINYGRAD_CNN_DEVICE='gpu' (environment variable) is not a device; "
                        "expected one of: auto, cpu, cuda, cuda:N"),
    (("eval", "--checkpoint", "{good}", "--device", "tpu"), None,
     "--device 'tpu' is not a device; expected one of: auto, cpu, cuda, cuda:N"),
    # Options of the --feature-maps image, given without it, would be ignored.
    (("show", "--checkpoint", "{good}", "--filters", "{dir}/f.png", "--max-maps", 32), None,
     "--max-maps applies to the image of --feature-maps IMAGE OUT.png, which is not given"),
    (("show", "--checkpoint", "{good}", "--filters", "{dir}/f.png", "--max-value", 16), None,
     "--max-value applies to the image of --feature-maps"),
    (("show", "--checkpoint", "{good}", "--filters", "{dir}/f.png", "--invert"), None,
     "--invert applies to the image of --feature-maps"),
])
def test_conflicting_options_are_usage_errors(trained, monkeypatch, argv, env, message):
    if env is None:
        monkeypatch.delenv("TINYGRAD_CNN_DEVICE", raising=False)
    else:
        monkeypatch.setenv("TINYGRAD_CNN_DEVICE", env)
    good = trained[0] / "c.npz"
    before = good.read_bytes()
    argv = [str(a).format(good=good, dir=trained[0]) for a in argv]
    status, out, err = cli(*argv, "--no-progress") if argv[0] == "train" else cli(*argv)
    assert status == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"tinygrad-cnn {argv[0]}: error: ")
    assert message.format(good=good, dir=trained[0]) in err
    assert good.read_bytes() == before  # the finished run is untouched


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes (POSIX)")
@pytest.mark.parametrize("extra", [(), ("--overwrite",)], ids=["plain", "overwrite"])
def test_a_pipe_as_the_checkpoint_is_a_usage_error(tmp_path, extra):
    """Saved at every epoch end, a checkpoint sent into a pipe would wait forever at the
    second save for a reader that stopped at the end of the first."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    status, out, err = cli("train", "--checkpoint", fifo, *extra, "--no-progress")
    assert (status, out) == (2, "")
    assert err == (f"tinygrad-cnn train: error: --checkpoint {fifo} is a pipe; a checkpoint "
                   f"is saved again at every epoch end and read back by --resume: give a "
                   f"file path (or /dev/null to keep none)\n")


@pytest.mark.parametrize("link", ["--metrics", "--checkpoint"])
@pytest.mark.parametrize("exists", [False, True], ids=["new", "existing"])
def test_checkpoint_and_metrics_reaching_one_file_through_a_link_are_refused(
        tmp_path, link, exists):
    """A save writes through a symbolic link: each epoch end would replace the other file
    (new, the metrics were lost without a word)."""
    pytest.importorskip("sklearn")
    target, other = tmp_path / "run.npz", tmp_path / "run.link"
    other.symlink_to(target.name)
    if exists:
        target.write_bytes(b"")
    paths = {"--checkpoint": other, "--metrics": target} if link == "--checkpoint" else \
        {"--checkpoint": target, "--metrics": other}
    status, out, err = cli("train", "--model", "mlp", "--epochs", 1, "--batch-size", 256,
                           "--no-progress", "--overwrite", *itertools.chain(*paths.items()))
    assert status == 2 and out == "" and err.count("\n") == 1, err
    assert err == (f"tinygrad-cnn train: error: --checkpoint {paths['--checkpoint']} and "
                   f"--metrics {paths['--metrics']} lead to the same file ({target}) through a "
                   f"symbolic link; give two different files\n")
    assert target.exists() is exists and (not exists or target.read_bytes() == b"")


@pytest.mark.parametrize("option", ["--checkpoint", "--metrics"])
def test_an_unwritable_output_directory_is_reported_before_training(tmp_path, monkeypatch,
                                                                    option):
    # Creating any file in the directory fails (as in /proc, or a read-only mount):
    # reported before any work, naming the option and the file, not our temporary file.
    from tinygrad_cnn import fileio

    def refuse(directory, name, mode):
        raise PermissionError(13, "Permission denied", f"{directory}/.{name}.0123.tmp")
    monkeypatch.setattr(fileio, "_create_temp", refuse)
    path = tmp_path / "out.file"
    status, out, err = cli("train", option, path, "--no-progress")
    assert status == 1 and out == "" and err.count("\n") == 1
    assert err.startswith(f"tinygrad-cnn train: error: {option} {path} cannot be written: "
                          f"[Errno 13] Permission denied (cannot create a file in {tmp_path})")
    assert ".tmp" not in err and not path.exists()


def test_overwrite_starts_a_new_run_in_an_existing_checkpoint(tmp_path):
    pytest.importorskip("sklearn")
    ckpt = tmp_path / "keep.npz"
    argv = ("train", "--model", "mlp", "--epochs", 1, "--batch-size", 256, "--no-progress",
            "--checkpoint", ckpt)
    assert cli(*argv, "--seed", 1)[0] == 0
    status, _, err = cli(*argv, "--seed", 2)
    assert status == 2 and f"{ckpt} exists" in err
    assert checkpoint.load(ckpt)["config"]["seed"] == 1
    status, _, err = cli(*argv, "--seed", 2, "--overwrite")
    assert status == 0, err
    assert checkpoint.load(ckpt)["config"]["seed"] == 2


def test_resume_keeps_appending_to_the_runs_metrics_file(tmp_path):
    pytest.importorskip("sklearn")
    ckpt, metrics = tmp_path / "c.npz", tmp_path / "c.jsonl"
    status, _, _ = cli("train", "--model", "mlp", "--epochs", 3, "--batch-size", 256,
                       "--max-steps", 8, "--checkpoint", ckpt, "--metrics", metrics,
                       "--no-progress")  # 6 steps per epoch: stops in epoch 2
    assert status == 0
    assert [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()] == [1]
    status, _, err = cli("train", "--checkpoint", ckpt, "--resume", "--no-progress")
    assert status == 0, err
    assert [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()] == [1, 2, 3]


@pytest.fixture(scope="module")
def stopped_runs(tmp_path_factory):
    """Two mlp runs of 3 epochs stopped early, with their metrics: ``in-epoch-2.npz``
    (stopped in epoch 2: one epoch saved, one line of metrics) and ``in-epoch-1.npz``
    (stopped after one step: no epoch saved)."""
    pytest.importorskip("sklearn")
    d = tmp_path_factory.mktemp("stopped")
    for name, steps in (("in-epoch-2", 8), ("in-epoch-1", 1)):   # 6 steps per epoch
        status, _, err = cli("train", "--model", "mlp", "--epochs", 3, "--batch-size", 256,
                             "--max-steps", steps, "--checkpoint", d / f"{name}.npz",
                             "--metrics", d / f"{name}.jsonl", "--no-progress")
        assert status == 0, err
    return d


def _file_of(kind, tmp_path, trained):
    """The bytes of a file of ``kind`` that a user might have where a run writes."""
    path = tmp_path / "kind"
    if kind == "notes":
        return b"my notes\n"
    if kind in ("empty", "blank", "cut notes"):
        return {"empty": b"", "blank": b"\n \n", "cut notes": b"my notes"}[kind]
    if kind == "cut metrics":   # a write cut short after whole records
        return (trained[0] / "m.jsonl").read_bytes() + b'{"epoch": 5, "train_lo'
    if kind == "cut checkpoint":
        whole = (trained[0] / "c.npz").read_bytes()
        return whole[:len(whole) // 2]
    if kind == "image":
        np.save(path, np.eye(8))
        return path.with_suffix(".npy").read_bytes()
    if kind == "png":
        return encode_png(np.zeros((8, 8), np.uint8))
    if kind == "arrays":
        np.savez(path, x=np.zeros(3))
        return path.with_suffix(".npz").read_bytes()
    return (trained[0] / {"checkpoint": "c.npz", "metrics": "m.jsonl"}[kind]).read_bytes()


@pytest.mark.parametrize("run, kind, message", [
    ("in-epoch-2", "notes", "--metrics {path} is not a metrics file (line 1: not valid JSON "
                            "(Expecting value)); it is not replaced: give --metrics a new path, "
                            "or this run's metrics file"),
    ("in-epoch-2", "image", "--metrics {path} is not a metrics file (it is a .npy array)"),
    ("in-epoch-2", "checkpoint", "--metrics {path} is not a metrics file (it is a tinygrad_cnn "
                                 "checkpoint)"),
    # A complete record of another run (the cnn's 4 epochs) was cut down to this run's.
    ("in-epoch-2", "metrics", "--metrics {path} holds another run's metrics (its record 1, "
                              "epoch 1, differs from epoch 1 saved in {ckpt}); it is not "
                              "replaced"),
    ("in-epoch-1", "metrics", "--metrics {path} holds 4 epoch(s) of metrics, and the run in "
                              "{ckpt} has finished no epoch to compare them with"),
])
def test_resume_refuses_a_metrics_file_that_is_not_the_runs(stopped_runs, trained, tmp_path,
                                                            run, kind, message):
    """The metrics file is rewritten with the run's whole history at each epoch end:
    given with --resume, a file that is not this run's record is refused, unchanged."""
    ckpt = tmp_path / "c.npz"
    shutil.copy(stopped_runs / f"{run}.npz", ckpt)
    path = tmp_path / "given.txt"
    path.write_bytes(_file_of(kind, tmp_path, trained))
    before = path.read_bytes(), ckpt.read_bytes()
    status, out, err = cli("train", "--checkpoint", ckpt, "--resume", "--metrics", path,
                           "--no-progress")
    assert status == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith("tinygrad-cnn train: error: ")
    assert message.format(path=path, ckpt=ckpt) in err
    assert (path.read_bytes(), ckpt.read_bytes()) == before


def test_resume_rewrites_its_own_metrics_from_the_checkpoints_epoch(stopped_runs, tmp_path):
    """An older checkpoint of the run resumed with the run's later, longer metrics file:
    the epochs beyond the checkpoint are redone and written again, with a note."""
    old, ckpt, metrics = tmp_path / "old.npz", tmp_path / "c.npz", tmp_path / "m.jsonl"
    for path in (old, ckpt):
        shutil.copy(stopped_runs / "in-epoch-2.npz", path)
    shutil.copy(stopped_runs / "in-epoch-2.jsonl", metrics)
    status, _, err = cli("train", "--checkpoint", ckpt, "--resume", "--metrics", metrics,
                         "--no-progress")
    assert status == 0, err
    finished = metrics.read_text()
    assert [json.loads(line)["epoch"] for line in finished.splitlines()] == [1, 2, 3]
    status, out, err = cli("train", "--checkpoint", old, "--resume", "--metrics", metrics,
                           "--no-progress")
    assert status == 0, err
    assert out.startswith(f"{metrics}: its last 2 epoch(s) go beyond the 1 saved in {old}; "
                          f"they are dropped at the next epoch end, and the resumed run writes "
                          f"its own\nresumed from {old} at epoch 2, batch 2\n")
    # The same epochs again: on the CPU, bit for bit, but for the time they took.
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [dict(r, seconds=None) for r in rows] == \
        [dict(json.loads(line), seconds=None) for line in finished.splitlines()]


def test_resume_takes_its_metrics_file_cut_short_in_a_write(stopped_runs, tmp_path):
    """Whole records of the run, then a line cut short (no line break): the run's file,
    rewritten whole at the next epoch end."""
    ckpt, metrics = tmp_path / "c.npz", tmp_path / "m.jsonl"
    shutil.copy(stopped_runs / "in-epoch-2.npz", ckpt)
    metrics.write_bytes((stopped_runs / "in-epoch-2.jsonl").read_bytes() + b'{"epoch": 2, "tr')
    status, _, err = cli("train", "--checkpoint", ckpt, "--resume", "--metrics", metrics,
                         "--no-progress")
    assert status == 0 and err == "", err
    assert [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()] == [1, 2, 3]


@pytest.mark.parametrize("option, kind, message", [
    # The paths swapped: a checkpoint would become JSON lines, and the other way round.
    ("--metrics", "checkpoint", "--metrics {path} is not a metrics file (it is a tinygrad_cnn "
                                "checkpoint); --overwrite replaces only a metrics file of an "
                                "earlier run: give another path, or remove the file first if "
                                "it should go"),
    ("--checkpoint", "metrics", "--checkpoint {path} is not a checkpoint (it is a metrics "
                                "file); --overwrite replaces only a checkpoint of an earlier "
                                "run"),
    ("--metrics", "image", "--metrics {path} is not a metrics file (it is a .npy array)"),
    ("--metrics", "png", "--metrics {path} is not a metrics file (it is a PNG image)"),
    ("--metrics", "notes", "--metrics {path} is not a metrics file (line 1: not valid JSON"),
    ("--checkpoint", "image", "--checkpoint {path} is not a checkpoint (it is a .npy array)"),
    ("--checkpoint", "arrays", "--checkpoint {path} is not a checkpoint (it is an .npz (zip) "
                               "archive)"),
    ("--checkpoint", "notes", "--checkpoint {path} is not a checkpoint (it is not an .npz "
                              "file)"),
    ("--metrics", "cut notes", "--metrics {path} is not a metrics file (its last line is cut "
                               "short and not JSON)"),
    # Cut short, a zip archive's member list is lost: whose it was cannot be told.
    ("--checkpoint", "cut checkpoint", "--checkpoint {path} is not a checkpoint (it is an "
                                       "unreadable zip archive, damaged or cut short)"),
    ("--metrics", "metrics", None),   # an earlier run's record: replaced, as asked
    ("--metrics", "cut metrics", None),   # one whose last write was cut short
    ("--checkpoint", "checkpoint", None),
    ("--checkpoint", "empty", None), ("--checkpoint", "blank", None),   # nothing to lose
])
def test_overwrite_replaces_only_the_kind_of_file_a_run_writes(trained, tmp_path, option, kind,
                                                               message):
    path = tmp_path / "out.file"
    path.write_bytes(_file_of(kind, tmp_path, trained))
    before = path.read_bytes()
    status, out, err = cli("train", "--model", "mlp", "--epochs", 1, "--batch-size", 256,
                           option, path, "--overwrite", "--no-progress")
    if message is None:
        assert status == 0, err
        epochs = ([r["epoch"] for r in checkpoint.load(path)["history"]]
                  if option == "--checkpoint" else
                  [json.loads(line)["epoch"] for line in path.read_text().splitlines()])
        assert epochs == [1]
        return
    assert status == 2 and out == "" and err.count("\n") == 1, err
    assert message.format(path=path) in err and path.read_bytes() == before


def test_progress_without_tqdm_warns_on_stderr(monkeypatch):
    pytest.importorskip("sklearn")
    monkeypatch.setitem(sys.modules, "tqdm", None)   # import tqdm fails, as when missing
    status, out, err = cli("train", "--model", "mlp", "--max-steps", 1, "--progress")
    assert status == 0 and "tqdm" not in out
    assert err == ("tinygrad-cnn train: warning: no progress bar: training draws it with tqdm, "
                   "which is not installed (pip install tqdm, or the [examples] extra)\n")


@pytest.mark.parametrize("flag, shown", [(None, False), ("--progress", True),
                                         ("--no-progress", False)])
def test_progress_bar_only_on_a_terminal_unless_asked(flag, shown):
    """stderr here is a StringIO, as a log file would be: no carriage-return frames."""
    pytest.importorskip("tqdm")
    pytest.importorskip("sklearn")
    argv = ["train", "--model", "mlp", "--epochs", 1, "--max-steps", 3, "--log-every", 1]
    status, _, err = cli(*argv, *([flag] if flag else []))
    assert status == 0
    assert ("epoch 1/1" in err and "\r" in err) == shown
    if shown:  # the running loss, accuracy and speed
        assert re.search(r"epoch 1/1: .*loss=[\d.]+, acc=[\d.]+, samples/s=\d+", err)
    else:
        assert err == ""


def test_progress_options_exclude_each_other():
    status, _, err = cli("train", "--progress", "--no-progress")
    assert status == 2 and "not allowed with argument" in err


def test_a_closed_pipe_ends_the_command_quietly():
    """`tinygrad-cnn train | head -1`: no "Broken pipe" error, no traceback."""
    pytest.importorskip("sklearn")
    proc = subprocess.Popen([sys.executable, "-m", "tinygrad_cnn", "train", "--model", "mlp",
                             "--max-steps", "2", "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
                            env=command_env())
    proc.stdout.close()  # the reader is gone before the first line is written
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 1
    assert err == ""


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
    status, text, err = cli("eval", "--checkpoint", tmp_path / "c.npz")   # the run's data
    assert status == 0, err
    assert text.startswith(f"lenet5 on {name} test set (40 images): accuracy "
                           f"{final_accuracy(out):.2f}%")
    moved = fake_idx_data.rename(tmp_path / "moved")      # --data-dir wins over the run's
    assert cli("eval", "--checkpoint", tmp_path / "c.npz", "--data-dir", moved) == (0, text, "")
    if dataset == "fashion-mnist":  # class names, not numbers
        np.save(tmp_path / "x.npy", np.zeros((28, 28)))
        _, text, _ = cli("predict", "--checkpoint", tmp_path / "c.npz", tmp_path / "x.npy")
        from tinygrad_cnn.data import FASHION_MNIST_CLASSES
        assert text.split(": ")[1].split(" (p=")[0] in FASHION_MNIST_CLASSES


def test_offline_every_missing_file_is_listed_at_once(fake_idx_data, tmp_path):
    """The test split's files used to be asked for only once the training files were in."""
    for name in ("train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (fake_idx_data / "mnist" / name).unlink()
    status, _, err = cli("train", "--dataset", "mnist", "--data-dir", fake_idx_data,
                         "--no-progress")
    assert status == 1 and "Traceback" not in err
    listed = re.findall(r"^    (\S+-ubyte\.gz)\s+sha256 ", err, re.M)
    assert listed == ["train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    # A data directory that did not exist is not left behind, empty, by the attempt.
    fresh = tmp_path / "fresh"
    status, _, err = cli("train", "--dataset", "fashion-mnist", "--data-dir", fresh / "cache",
                         "--no-progress")
    assert status == 1
    assert len(re.findall(r"^    \S+-ubyte\.gz\s+sha256 ", err, re.M)) == 4
    assert str(fresh / "cache" / "fashion_mnist") in err
    assert not fresh.exists()


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


@pytest.mark.parametrize("command", ["eval", "predict", "show"])
@pytest.mark.parametrize("change, message", [
    # Declared sizes whose model would not fit in memory: refused before it is built.
    (lambda s: s.update(image_shape=[1, 10**6, 10**6]),
     "declares a cnn model for images (1, 1000000, 1000000) and 10 classes, which has "
     "512,000,000,020,234 parameters, but holds 53,002 weight values"),
    (lambda s: s.update(num_classes=10**12),
     "declares a cnn model for images (1, 8, 8) and 1000000000000 classes, which has "),
    (lambda s: s.update(image_shape=[True, 8, 8]),
     "the checkpoint's 'image_shape' entry is damaged: expected three positive ints (C, H, W) "
     "below 2**63, got [True, 8, 8]"),
    # Sizes whose product has more digits than str() converts: a bare ValueError escaped.
    (lambda s: s.update(image_shape=[1, 10**3000, 10**3000]),
     f"the checkpoint's 'image_shape' entry is damaged: expected three positive ints (C, H, "
     f"W) below 2**63, got [1, {'1' + '0' * 95}..."),
    (lambda s: s.update(num_classes=10**4000),
     f"the checkpoint's 'num_classes' entry is damaged: expected a positive int below 2**63, "
     f"got {'1' + '0' * 99}...\n"),
    (lambda s: s.update(image_shape=8), "the checkpoint's 'image_shape' entry is damaged"),
    (lambda s: s.update(num_classes=[10]), "the checkpoint's 'num_classes' entry is damaged: "
                                           "expected a positive int below 2**63, got [10]"),
    (lambda s: s.update(std=np.zeros(1, np.float32)),
     "the checkpoint's 'std' entry is damaged: expected positive finite numbers, one or one "
     "per channel (1), got [0.]"),
    (lambda s: s.update(mean="dark"), "the checkpoint's 'mean' entry is damaged"),
    (lambda s: s.update(mean=np.zeros(3, np.float32)), "the checkpoint's 'mean' entry is "
                                                       "damaged"),
    (lambda s: s["config"].update(dataset=["digits"]),
     "the checkpoint's 'config' entry is damaged (expected a dict naming"),
    (lambda s: s["config"].update(data_dir=[1]), "the checkpoint's 'config' entry is damaged "
                                                 "(its data_dir [1] is not a path)"),
], ids=["huge image", "huge class count", "bool channels", "image of 3001 digits",
        "classes of 4001 digits", "shape 8", "classes list", "std 0", "mean text",
        "mean per channel of 3", "dataset list", "data_dir list"])
def test_declarations_the_model_is_built_from_are_checked(trained, tmp_path, command, change,
                                                          message):
    """What a checkpoint declares about its model and its inputs, checked before use."""
    state = checkpoint.load(trained[0] / "c.npz")
    change(state)
    path = tmp_path / "damaged.npz"
    checkpoint.save(path, state)
    np.save(tmp_path / "img.npy", np.zeros((8, 8)))
    argv = {"eval": ("eval", "--checkpoint", path),
            "predict": ("predict", "--checkpoint", path, tmp_path / "img.npy"),
            "show": ("show", "--checkpoint", path, "--filters", tmp_path / "f.png")}[command]
    status, out, err = cli(*argv)
    assert status == 1 and out == "" and err.count("\n") == 1, err
    assert message in err and str(path) in err


@pytest.mark.parametrize("change, message", [
    (lambda s: s["config"].update(epochs="many"),
     "the saved configuration is damaged: epochs must be an integer >= 1, got 'many'"),
    (lambda s: s["config"].update(lr="fast"),
     "the saved configuration is damaged: lr must be a finite number > 0, got 'fast'"),
    (lambda s: s.update(history=5), "the saved history is damaged"),
    (lambda s: s.update(scheduler={"optimizer": 1}),
     "cannot restore the learning-rate schedule"),
    (lambda s: s.update(scheduler={"x": 1}), "unexpected keys ['x']"),
    (lambda s: s["optimizer"]["param_groups"][0].update(lr=-5),
     "cannot restore the optimizer (checkpoint damaged or from another model?): "
     "param_groups[0]: lr must be >= 0.0, got -5"),
    (lambda s: s["optimizer"].update(param_groups=[5]), "param_groups[0] of the state_dict "
                                                        "must be a dict, got 5"),
    (lambda s: s["optimizer"]["param_groups"][0].update(foo=1), "unknown setting(s) ['foo']"),
    (lambda s: s["scheduler"].update(total_steps=0),
     "cannot restore the learning-rate schedule (checkpoint damaged or from another model?): "
     "OneCycleLR.load_state_dict: total_steps must be an int >= 1, got 0"),
    (lambda s: s.update(loader=5), "cannot restore the data loader position"),
    (lambda s: s.update(partial=[1]), "the checkpoint's 'partial' entry is damaged: expected "
                                      "None or a dict of epoch, loss_sum, correct_sum, seen, "
                                      "seconds: numbers >= 0 (the loss sum may be NaN or "
                                      "infinite), got [1]"),
    (lambda s: s.update(partial={"epoch": 0}), "the checkpoint's 'partial' entry is damaged"),
    (lambda s: s.update(partial={"epoch": 0, "loss_sum": np.zeros((9, 9)), "correct_sum": 0,
                                 "seen": 0, "seconds": 0.0}),
     "the checkpoint's 'partial' entry is damaged"),
    (lambda s: s.update(partial={"epoch": 0, "loss_sum": 1.0, "correct_sum": 1.0, "seen": -64,
                                 "seconds": 0.0}),
     "the checkpoint's 'partial' entry is damaged"),
    (lambda s: s.update(partial={"epoch": 0, "loss_sum": -np.inf, "correct_sum": 1.0,
                                 "seen": 64, "seconds": 0.0}),
     "the checkpoint's 'partial' entry is damaged"),
    *[(lambda s, k=k, v=v: s.update(partial={"epoch": 0, "loss_sum": 1.0, "correct_sum": 1.0,
                                             "seen": 64, "seconds": 0.0, k: v}),
       "the checkpoint's 'partial' entry is damaged")
      for k, v in (("seen", -1), ("correct_sum", -1.0), ("seconds", True),
                   ("seconds", np.zeros(1)))],
    (lambda s: s.update(image_shape=8), "the checkpoint's 'image_shape' entry is damaged: "
                                        "expected three positive ints (C, H, W) below 2**63, "
                                        "got 8"),
    (lambda s: s.update(mean="dark"), "the checkpoint's 'mean' entry is damaged"),
    (lambda s: s.update(std=np.zeros(1, np.float32)), "the checkpoint's 'std' entry is damaged"),
    (lambda s: s.update(image_shape=[1, 8, 8, 1]), "the checkpoint's 'image_shape' entry is "
                                                   "damaged"),
    (lambda s: s.update(image_shape=[0, 8, 8]), "the checkpoint's 'image_shape' entry is damaged"),
    (lambda s: s.update(num_classes=0), "the checkpoint's 'num_classes' entry is damaged"),
    (lambda s: s.update(mean=True), "the checkpoint's 'mean' entry is damaged"),
    (lambda s: s.update(mean=np.float32([np.nan])), "the checkpoint's 'mean' entry is damaged"),
    (lambda s: s["rng"]["state"].update(state=10**40),
     "cannot restore the random generator (checkpoint damaged or from another model?)"),
], ids=["epochs", "lr", "history", "scheduler-optimizer", "scheduler-unknown", "optimizer-lr",
        "optimizer-groups", "optimizer-unknown", "scheduler-total-steps", "loader",
        "partial-list", "partial-keys", "partial-array", "partial-negative",
        "partial-loss-minus-inf", "partial-seen-minus-1", "partial-correct-negative",
        "partial-seconds-bool", "partial-seconds-1d", "image-shape", "mean", "std",
        "image-shape-4d", "image-shape-0", "classes-0", "mean-bool", "mean-nan", "rng-overflow"])
def test_resume_refuses_a_damaged_run_state(trained, tmp_path, change, message):
    """Values a crafted or damaged checkpoint holds get the checks typed options get."""
    state = checkpoint.load(trained[0] / "c.npz")
    change(state)
    path = tmp_path / "damaged.npz"
    checkpoint.save(path, state)
    status, out, err = cli("train", "--checkpoint", path, "--resume", "--no-progress")
    assert status == 1 and out == "" and err.count("\n") == 1, err
    assert message in err and str(path) in err


@pytest.mark.parametrize("config", [["lr"], "lr"])
def test_resume_with_options_and_a_damaged_config(trained, tmp_path, config):
    """Options given on resuming are compared with the saved settings: a config that
    is no dict is named as damaged, not a raw TypeError from that comparison."""
    state = checkpoint.load(trained[0] / "c.npz")
    state["config"] = config
    path = tmp_path / "damaged.npz"
    checkpoint.save(path, state)
    status, out, err = cli("train", "--checkpoint", path, "--resume", "--lr", 0.1,
                           "--no-progress")
    assert status == 1 and out == "" and err.count("\n") == 1, err
    assert f"{path}: the checkpoint's 'config' entry is damaged" in err


@pytest.mark.parametrize("content, problem", [
    (b"my notes\n", "which is not one (line 1: not valid JSON (Expecting value))"),
    (b"\x00\x01binary", "which is not one (its last line is cut short and not JSON)"),
    (b'{"a": 1}\n[1]\n', "which is not one (line 2: expected a JSON object, got list)"),
    # Another run's metrics: the run resumed has saved no epoch to compare them with.
    (b'{"epoch": 1, "train_loss": 0.5}\n', "but it holds 1 epoch(s) of metrics, and the run "
                                           "in {path} has finished no epoch"),
], ids=["text", "binary", "JSON lines not all objects", "another run's"])
def test_resume_does_not_replace_a_file_the_checkpoint_names_as_its_metrics(tmp_path, content,
                                                                            problem):
    """The metrics path a resumed run keeps comes from the checkpoint: an edited one
    could name any file of the user's, which the next epoch would replace."""
    victim = tmp_path / "notes.txt"
    victim.write_bytes(content)
    path = tmp_path / "c.npz"
    status, _, err = cli("train", "--epochs", 1, "--batch-size", 256, "--seed", 1,
                         "--checkpoint", path, "--max-steps", 1, "--no-progress")
    assert status == 0, err
    state = checkpoint.load(path)   # a run stopped after one step: resuming finishes it
    state["config"].update(metrics=str(victim))
    checkpoint.save(path, state)
    status, out, err = cli("train", "--checkpoint", path, "--resume", "--no-progress")
    assert status == 1 and out == "" and err.count("\n") == 1, err
    assert f"{path} names {victim} as its metrics file, {problem.format(path=path)}" in err
    assert "give --metrics PATH" in err and victim.read_bytes() == content
    # Named on the command line, the file is the user's choice, as for a new run.
    status, out, err = cli("train", "--checkpoint", path, "--resume", "--no-progress",
                           "--metrics", tmp_path / "m.jsonl")
    assert status == 0, err
    assert victim.read_bytes() == content and (tmp_path / "m.jsonl").read_text().count("\n") == 1


@pytest.mark.parametrize("argv, message", [
    (("predict", "--checkpoint", "{good}", "{tmp}/nothing.png"), "No such file"),
    (("predict", "--checkpoint", "{good}", "{tmp}/text.png"), "is not a PNG file"),
    (("predict", "--checkpoint", "{good}", "{tmp}/cube.npy"),
     "cube.npy: an array of shape (3, 4, 5) is not an image; expected (H, W) grey"),
    (("plot", "{good}"), "not a metrics file (JSON lines of text; this file is binary"),
    (("plot", "{tmp}/no-losses.jsonl"), "has no loss or accuracy values"),
    # A last line with its line break is whole: not valid JSON, not cut short.
    (("plot", "{tmp}/bad-line.jsonl"), "bad-line.jsonl, line 2: not valid JSON (Expecting "
                                       "value)"),
])
def test_other_errors_give_a_message_and_status_1(trained, tmp_path, argv, message):
    (tmp_path / "text.png").write_text("not a picture\n")
    (tmp_path / "no-losses.jsonl").write_text('{"epoch": 1}\n')
    (tmp_path / "bad-line.jsonl").write_text('{"epoch": 1, "train_loss": 0.5}\nnot json\n')
    np.save(tmp_path / "cube.npy", np.zeros((3, 4, 5)))
    argv = [str(a).format(good=trained[0] / "c.npz", tmp=tmp_path) for a in argv]
    status, out, err = cli(*argv)
    assert status == 1, (out, err)
    assert err.startswith(f"tinygrad-cnn {argv[0]}: error: ") and message in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("argv, env, named", [
    (("--device", "cuda"), None, "device 'cuda' (cuda:0) is not available: "),
    (("--device", "CUDA"), None, "device 'CUDA' (cuda:0) is not available: "),
    (("--device", "cuda:1"), None, "device 'cuda:1' is not available: "),
    ((), "cuda", "TINYGRAD_CNN_DEVICE='cuda' (environment variable): device 'cuda' (cuda:0) "
                 "is not available: "),
])
@pytest.mark.parametrize("command", ["train", "eval", "predict"])
def test_unusable_cuda_is_named_as_given_before_any_work(trained, tmp_path, monkeypatch,
                                                         argv, env, named, command):
    """One line, status 1, naming the device as typed (and where it came from), as the
    library does, not only the canonical cuda:0; nothing read, trained or printed first."""
    from tinygrad_cnn.backend import cuda_status
    if cuda_status()[0]:
        pytest.skip("a GPU is usable here")
    if env is None:
        monkeypatch.delenv("TINYGRAD_CNN_DEVICE", raising=False)
    else:
        monkeypatch.setenv("TINYGRAD_CNN_DEVICE", env)
    np.save(tmp_path / "img.npy", np.zeros((8, 8)))
    rest = {"train": ["--no-progress"], "eval": ["--checkpoint", trained[0] / "c.npz"],
            "predict": ["--checkpoint", trained[0] / "c.npz", tmp_path / "img.npy"]}[command]
    status, out, err = cli(command, *argv, *rest)
    assert status == 1 and out == "" and err.count("\n") == 1
    assert err.startswith(f"tinygrad-cnn {command}: error: {named}"), err
    assert cuda_status()[1] in err   # the reason


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
    # The run the docs show (docs/images/metrics-cnn-digits.jsonl, drawn by
    # docs/make_images.py) is this one; when this fails, run that script again.
    shown = [json.loads(line) for line in
             (ROOT / "docs" / "images" / "metrics-cnn-digits.jsonl").read_text().splitlines()]
    assert [line.split("  (")[0] for line in epochs] == [
        f"epoch {r['epoch']:3d}/15  train loss {r['train_loss']:.4f} acc {r['train_acc']:.4f}  "
        f"test loss {r['test_loss']:.4f} acc {r['test_acc']:.4f}" for r in shown]
    # stderr is a pipe, not a terminal: no progress bar frames in it.
    assert err == ""
    # No files unless asked for, so the command can run again and again.
    assert list(tmp_path.iterdir()) == []
