"""Every example runs, with --fast, as a learner would run it: a fresh Python process."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_examples_are_short():
    for path in EXAMPLES.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 85, path.name
