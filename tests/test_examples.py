"""Every example runs, with --fast, as a learner would run it: a fresh Python process."""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from test_download import FILES, Server, make_archives, table_for

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

# example -> (needs scikit-learn's digits, patterns its output must contain)
EXPECTED = {
    "autograd_basics.py": (False, [
        r"1\. y = 10\.0, dy/dx = 7\.0",
        r"MatMul \(4, 2\)\n +x \(4, 3\)\n +w \(3, 2\)",  # the graph, printed as a tree
        r"backward trace: \d+ steps",
        r"f'\(1\) = 1\.381773 \(exact 1\.381773\), f''\(1\) = 0\.239134 \(exact 0\.239134\)",
        r"gradcheck: True, gradgradcheck \(second derivatives\): True",
    ]),
    "fc_vs_local_vs_conv.py": (True, [
        r"fully-connected +66,560 +76,810 +\d+\.\d%",
        r"locally-connected +10,240 +20,490 +\d+\.\d%",
        r"convolutional +160 +10,410 +\d+\.\d%",
        r"local / conv = 64x, fully / conv = 416x the weights",
        r"0 \(Conv2d\) +\[1, 16, 8, 8\] +160 +66,560 +10,240 +3x3",
    ]),
    "train_lenet.py": (True, [
        r"Total params: 21,386",
        r"epoch  1: last batch loss [\d.]+, test loss [\d.]+, test accuracy [\d.]+%",
        r"final test accuracy: [\d.]+%",
    ]),
    "custom_op.py": (False, [
        r"gradcheck\(Softplus\): +True",
        r"gradgradcheck\(Softplus\): +True",
        r"gradcheck\(WrongSoftplus\) fails, as it should:\n +gradcheck: analytic and "
        r"numerical gradients differ",
    ]),
}


def run_example(name, *args, **env_vars):
    env = dict(os.environ, **env_vars)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=300)


def test_every_example_is_tested():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_example_runs_fast(name):
    needs_digits, patterns = EXPECTED[name]
    if needs_digits:
        pytest.importorskip("sklearn")
    done = run_example(name, "--fast")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    for pattern in patterns:
        assert re.search(pattern, done.stdout), f"{pattern!r} not in:\n{done.stdout}"


def test_train_lenet_on_mnist_skips_cleanly_without_the_files(tmp_path):
    pytest.importorskip("sklearn")
    env_dir = tmp_path / "empty-cache"
    done = run_example("train_lenet.py", "--fast", "--dataset", "mnist",
                       TINYGRAD_CNN_DATA=str(env_dir))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "skipping: the mnist files are not downloaded (run without --fast)\n"
    assert not env_dir.exists()  # nothing was downloaded or created


def run_lenet_on_fake_mnist(table, *args, cache):
    """train_lenet.py in a fresh process, as a learner runs it, but with MNIST's checksum
    table (and mirrors) replaced by ``table`` and its data cache in ``cache``: neither the
    real files nor the network are needed, and the user's cache is never touched."""
    code = ("import runpy, sys\n"
            "from tinygrad_cnn.data import download\n"
            "from tinygrad_cnn.data.download import RemoteDataset, RemoteFile\n"
            f"download.DATASETS['mnist'] = {table!r}\n"
            f"sys.argv = [{str(EXAMPLES / 'train_lenet.py')!r}, *{list(map(str, args))!r}]\n"
            "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    env = dict(os.environ, TINYGRAD_CNN_DATA=str(cache))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)


EVERY_FILE = "".join(rf"    {name}\s+sha256 [0-9a-f]{{{{64}}}}\n" for name in FILES)
# A corrupt file in the download cache, or no way to download at all:
# case -> (serve the files?, corrupt cached file?, options, exit status, stderr patterns)
BROKEN_CACHE = {
    # As torchvision does: a cached file that fails its check is downloaded again.
    "corrupt, downloaded again": (True, True, ["--epochs", 1], 0, [
        r"cached file fails verification, downloading it again: sha256 of {path} is {actual}, "
        r"expected {expected}"]),
    # --fast never downloads: the error names the file and both digests, and what to do.
    "corrupt, --fast": (True, True, ["--fast"], 1, [
        r"^error: MNIST: 1 file\(s\) in the cache fail verification",
        r"sha256 of {path} is {actual}, expected {expected} \(corrupt or a different file\)",
        r"Run without --fast to download verified copies in their place\.$"]),
    "corrupt, offline": (False, True, [], 1, [
        r"The copy in the cache fails verification \(kept until a verified copy replaces it\): "
        r"sha256 of {path} is {actual}, expected {expected}"]),
    # Offline: one error names every file of both splits, and where to put them.
    "offline": (False, False, [], 1, [
        r"^error: MNIST: could not download train-images-idx3-ubyte\.gz; every mirror failed",
        r"\n    {directory}/   \(does not exist yet: create it first\)\n" + EVERY_FILE]),
}


@pytest.mark.parametrize("case", list(BROKEN_CACHE))
def test_train_lenet_with_a_corrupt_cache_or_no_network(case, tmp_path):
    """Clear messages and exit statuses, never a traceback; the example's --data-dir is
    the directory the messages tell the user to choose."""
    serve, corrupt, options, status, patterns = BROKEN_CACHE[case]
    archives, _ = make_archives()
    server = Server()
    mirror = server.mirror("m", archives)
    if not serve:
        server.close()   # nothing listens on its port any more: connections are refused
    try:
        data_dir = tmp_path / "data"
        path = data_dir / "mnist" / FILES[0]
        if corrupt:
            path.parent.mkdir(parents=True)
            path.write_bytes(archives[FILES[0]][:-1] + b"!")     # same size, another byte
        done = run_lenet_on_fake_mnist(table_for(archives, [mirror]), "--dataset", "mnist",
                                       "--data-dir", data_dir, *options,
                                       cache=tmp_path / "env-cache")
    finally:
        if serve:
            server.close()
    assert done.returncode == status, done.stderr
    assert "Traceback" not in done.stderr
    fill = {"path": re.escape(str(path)), "directory": re.escape(str(data_dir / "mnist")),
            "expected": hashlib.sha256(archives[FILES[0]]).hexdigest(),
            "actual": hashlib.sha256(archives[FILES[0]][:-1] + b"!").hexdigest()}
    err = done.stderr.replace("tinygrad_cnn: downloading", "")   # the announcements
    for pattern in patterns:
        assert re.search(pattern.format(**fill), err, re.M), f"{pattern}\n{done.stderr}"
    if status == 0:
        assert re.search(r"final test accuracy: [\d.]+%", done.stdout)
        assert path.read_bytes() == archives[FILES[0]]          # replaced by a verified copy
        assert server.log.count("/m/" + FILES[0]) == 1
    else:
        assert done.stdout == "" or "skipping" not in done.stdout
        assert not corrupt or path.read_bytes() != archives[FILES[0]]   # kept as it was
    if "--fast" in options:
        assert server.log == []                                     # --fast never downloads
    assert not (tmp_path / "env-cache").exists()                    # --data-dir was used


def test_examples_are_short():
    for path in EXAMPLES.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 85, path.name
