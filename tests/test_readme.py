"""The README's code runs as printed, and its test command is the one CI runs."""
from __future__ import annotations

import fnmatch
import inspect
import pathlib
import re

import numpy as np
import pytest

import tinygrad_cnn as tg

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_python_blocks_run(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)   # where the saving example writes its file
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert blocks, "the README should show code"
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md python block {i}", "exec"), {})
    out = capsys.readouterr().out
    assert "tensor([ 6., 12., 18.])" in out  # the second derivative of x**3 is 6x
    assert "\nTrue\n" in out                # gradcheck passed
    # the CNN in twenty lines learns (its comment says about 92 %)
    assert int(re.search(r"^test accuracy (\d+)%$", out, re.M).group(1)) >= 88
    assert "\n3\n" in out and (tmp_path / "runs" / "digits.npz").is_file()   # saved, loaded


def _bash_block_after(heading):
    part = README.split(heading, 1)[1]
    return re.search(r"```bash\n(.*?)```", part, re.S).group(1)


def test_ci_runs_exactly_the_readme_test_commands():
    block = _bash_block_after("Run the tests:")
    readme = [line.split("#")[0].strip() for line in block.splitlines()]
    readme = [line for line in readme if line and not line.startswith(("python -m venv", "."))]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    marker = "# --- the README's \"Run the tests\" block, line for line ---\n"
    ci_lines = [line.strip() for line in ci.split(marker, 1)[1].splitlines() if line.strip()]
    assert ci_lines == readme


def test_the_flag_examples_of_the_conventions_raise_as_stated():
    # The README's examples of refused flags, each run: a TypeError, as the bullet says.
    bullet = re.search(r"^- flags take .*?(?=^- |^\n)", README, re.S | re.M)
    assert bullet, "the conventions should state the flag rule"
    examples = re.findall(r"`([^`]*=[01]\))`", bullet.group(0))
    assert examples == ["Linear(3, 2, bias=0)", "x.sum(1, keepdims=1)"]
    for code in examples:
        with pytest.raises(TypeError, match=r"must be True or False, got [01] \(int\)"):
            eval(code, {"Linear": tg.nn.Linear, "x": tg.ones(2, 3)})


def test_the_pytorch_name_examples_of_the_conventions_raise_as_stated():
    # The bullet's missing PyTorch names, each run: an AttributeError that names the
    # equivalent here (x.size for x.numel(), which the bullet shows).
    bullet = re.search(r"^- `x\.size` is the number of elements.*?(?=^- )", README, re.S | re.M)
    assert bullet, "the conventions should say what x.size is"
    x = tg.ones(2, 3)
    assert x.size == 6 and x.shape == (2, 3)
    with pytest.raises(TypeError, match=r"not PyTorch's method: use x.shape for x.size\(\)"):
        x.size()
    examples = re.findall(r"`((?:x|tg|nn)\.\w+(?:\(\))?)`",
                          bullet.group(0).split("equivalent")[1])
    assert examples == ["x.numel()", "x.size", "tg.randint", "x.masked_fill", "x.long()",
                        "nn.functional", "x.rsqrt()", "x.clamp_min",
                        "x.register_post_accumulate_grad_hook",
                        "x.gather"]
    for code in examples[:-1]:
        if code != "x.size":
            with pytest.raises(AttributeError, match=r"\(a PyTorch name.*\): (use|not provided)"):
                eval(code, {"x": x, "tg": tg, "nn": tg.nn})
    # "any other": the bullet's example of a name without a hint
    with pytest.raises(AttributeError) as info:
        x.gather
    assert str(info.value) == "'Tensor' object has no attribute 'gather'"
    with pytest.raises(AttributeError, match=r": use x\.size$"):
        x.numel()


def test_the_init_functions_of_the_conventions_are_all_there_without_a_generator():
    # The bullet lists every initialiser of nn.init, each with PyTorch's name, and says
    # none takes PyTorch's generator=; and each refuses an integer tensor, as it says.
    bullet = re.search(r"^- the `nn\.init` functions.*?(?=^- |^\n)", README, re.S | re.M)
    assert bullet, "the conventions should list the init functions"
    names = set(re.findall(r"`(\w+_)`", bullet.group(0)))
    assert names == {n for n in tg.nn.init.__all__ if n.endswith("_")}
    for name in sorted(names):
        args = (1.0,) if name == "constant_" else ()
        with pytest.raises(TypeError, match=r"expected a floating-point tensor, got dtype "
                                            r"int64"):
            getattr(tg.nn.init, name)(tg.zeros(2, 2, 3, dtype="int64"), *args)
    torch = pytest.importorskip("torch")
    for name in sorted(names):
        ours = inspect.signature(getattr(tg.nn.init, name)).parameters
        theirs = inspect.signature(getattr(torch.nn.init, name)).parameters
        assert "generator" not in ours
        # PyTorch's arguments, in its order (fan= is this project's own, after them)
        assert [p for p in theirs if p != "generator"] == [p for p in ours if p != "fan"], name


def test_the_containers_and_nn_utils_of_the_conventions_are_there():
    # The bullet's containers are nn's modules, and it names every function of nn.utils,
    # the clipping ones being optim's own.
    bullet = re.search(r"^- the containers are PyTorch's.*?(?=^- |^\n)", README, re.S | re.M)
    assert bullet, "the conventions should list the containers"
    names = re.findall(r"`(\w+)`", bullet.group(0))
    containers = {n for n in names if n[0].isupper()}
    assert containers == {"Sequential", "ModuleList", "ModuleDict", "ParameterList",
                          "ParameterDict"}
    for name in containers:
        assert issubclass(getattr(tg.nn, name), tg.nn.Module), name
    functions = {n for n in names if n.endswith(("_", "vector", "parameters"))}
    assert functions == set(tg.nn.utils.__all__)
    for name in ("clip_grad_norm_", "clip_grad_value_"):
        assert getattr(tg.nn.utils, name) is getattr(tg.optim, name)


# Each layer the conventions name as taking one unbatched sample: how to make it, and
# the sample's shape.
UNBATCHED_LAYERS = {
    "Conv1d": (lambda nn: nn.Conv1d(2, 3, 3, padding=1, padding_mode="reflect"), (2, 7)),
    "Conv2d": (lambda nn: nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular"), (2, 5, 6)),
    "ConvTranspose2d": (lambda nn: nn.ConvTranspose2d(2, 3, 3, stride=2), (2, 5, 6)),
    "LocallyConnected2d": (lambda nn: nn.LocallyConnected2d(2, 3, (5, 6), 3), (2, 5, 6)),
    "MaxPool1d": (lambda nn: nn.MaxPool1d(2), (2, 7)),
    "MaxPool2d": (lambda nn: nn.MaxPool2d(2), (2, 5, 6)),
    "AvgPool1d": (lambda nn: nn.AvgPool1d(2), (2, 7)),
    "AvgPool2d": (lambda nn: nn.AvgPool2d(2), (2, 5, 6)),
    "AdaptiveAvgPool2d": (lambda nn: nn.AdaptiveAvgPool2d((2, 3)), (2, 5, 6)),
    "AdaptiveMaxPool2d": (lambda nn: nn.AdaptiveMaxPool2d((2, 3)), (2, 5, 6)),
    "InstanceNorm1d": (lambda nn: nn.InstanceNorm1d(2, affine=True), (2, 7)),
    "InstanceNorm2d": (lambda nn: nn.InstanceNorm2d(2, affine=True), (2, 5, 6)),
    "Unfold": (lambda nn: nn.Unfold(2, padding=1), (2, 5, 6)),
    "Fold": (lambda nn: nn.Fold((4, 5), 2), (2 * 4, 12)),      # columns (C*KH*KW, L)
}


def test_the_layers_and_ops_said_to_take_an_unbatched_sample_do():
    # The conventions' parenthesis names the ops and (as patterns such as `Conv*`) the
    # layers: each exists, and the layers give for one sample the batch of one's result.
    said = re.search(r"NCHW images \((.*?)\)", README, re.S)
    assert said and "unbatched" in said.group(1), "the conventions should say which"
    names = re.findall(r"`([\w*]+)`", said.group(1))
    ops = [n for n in names if n.islower()]
    assert ops == ["unfold", "fold", "local2d"]
    assert all(callable(getattr(tg.functional, op)) for op in ops)
    layers = {n for pattern in names if not pattern.islower()
              for n in fnmatch.filter(tg.nn.__all__, pattern)}
    assert layers == set(UNBATCHED_LAYERS)
    for name, (make, shape) in UNBATCHED_LAYERS.items():
        tg.manual_seed(0)
        layer, x = make(tg.nn), tg.randn(*shape)
        one, batch = layer(x), layer(x[None])
        assert one.shape == batch.shape[1:], name
        np.testing.assert_allclose(one.numpy(), batch.numpy()[0], rtol=1e-6, atol=1e-6)
