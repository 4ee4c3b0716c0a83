"""Tests of the learning tools: graph pictures, backward traces, PNG, images, curves."""
import importlib
import json
import os
import re
import shutil
import struct
import subprocess
import threading
import tracemalloc
import warnings
import zlib

import numpy as np
import pytest

import tinygrad_cnn as tg
from tinygrad_cnn import autograd
from tinygrad_cnn.viz import curves, images, png
from tinygrad_cnn.viz import Graph, GraphvizNotFoundError, graph, record_modules, trace

graph_mod = importlib.import_module("tinygrad_cnn.viz.graph")  # viz.graph is the function
HAVE_DOT = shutil.which("dot") is not None


# ==== a small DOT parser (nodes, edges, attributes, clusters) ==========================
_TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<arrow>->)|(?P<punct>[{}\[\]=;,])'
                    r'|(?P<id>[A-Za-z0-9_.#]+))', re.S)


def _unquote(s):
    escapes = {"n": "\n", '"': '"', "\\": "\\"}
    return re.sub(r"\\(.)", lambda m: escapes.get(m.group(1), "\\" + m.group(1)), s[1:-1])


def _tokens(text):
    pos, out = 0, []
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        assert m and m.end() > pos, f"cannot tokenise DOT at {text[pos:pos + 30]!r}"
        kind = m.lastgroup
        value = m.group(kind)
        out.append(("id", _unquote(value)) if kind == "str" else
                   ("id", value) if kind == "id" else (value, value))
        pos = m.end()
    return out


class Dot:
    """Parse the DOT subset a graph uses; any syntax error fails the test."""

    def __init__(self, text):
        self.toks, self.i = _tokens(text), 0
        self.nodes, self.edges, self.clusters, self.graph_attrs = {}, [], {}, {}
        self.expect_id("digraph")
        if self.peek() == "id":
            self.i += 1
        self.block(None)
        assert self.i == len(self.toks), "text after the closing brace"

    def peek(self):
        return self.toks[self.i][0] if self.i < len(self.toks) else None

    def take(self, kind):
        assert self.peek() == kind, f"expected {kind!r}, got {self.toks[self.i:self.i + 3]}"
        self.i += 1
        return self.toks[self.i - 1][1]

    def expect_id(self, value):
        assert self.take("id") == value

    def attr_list(self):
        attrs = {}
        if self.peek() != "[":
            return attrs
        self.take("[")
        while self.peek() != "]":
            key = self.take("id")
            self.take("=")
            attrs[key] = self.take("id")
            if self.peek() in (",", ";"):
                self.i += 1
        self.take("]")
        return attrs

    def block(self, cluster):
        self.take("{")
        while self.peek() != "}":
            word = self.take("id")
            if word in ("graph", "node", "edge") and self.peek() == "[":
                attrs = self.attr_list()
                if word == "graph" and cluster is not None:
                    self.clusters[cluster]["attrs"].update(attrs)
            elif word == "subgraph":
                name = self.take("id")
                self.clusters[name] = {"nodes": [], "attrs": {}}
                self.block(name)
            elif self.peek() == "=":
                self.take("=")
                value = self.take("id")
                target = self.clusters[cluster]["attrs"] if cluster else self.graph_attrs
                target[word] = value
            else:
                chain = [word]
                while self.peek() == "->":
                    self.take("->")
                    chain.append(self.take("id"))
                attrs = self.attr_list()
                if len(chain) == 1:
                    self.nodes.setdefault(word, {}).update(attrs)
                    if cluster is not None:
                        self.clusters[cluster]["nodes"].append(word)
                else:
                    for a, b in zip(chain, chain[1:]):
                        assert a in self.nodes and b in self.nodes, f"edge {a}->{b} to unknown node"
                        self.edges.append((a, b, attrs))
            if self.peek() == ";":
                self.take(";")
        self.take("}")

    # helpers for tests
    def title(self, nid):
        return self.nodes[nid]["label"].split("\n")[0]

    def find(self, title):
        found = [n for n in self.nodes if self.title(n) == title]
        assert len(found) == 1, f"{len(found)} nodes titled {title!r} in {self.nodes}"
        return found[0]

    def count(self, a, b):
        return sum(1 for s, d, _ in self.edges if (s, d) == (a, b))


def parse(g):
    assert isinstance(g, Graph) and str(g) == g.source
    return Dot(g.source)


def _render_check(g):
    out = subprocess.run(["dot", "-Tsvg"], input=g.source.encode(), capture_output=True)
    assert out.returncode == 0, out.stderr.decode()
    assert b"<svg" in out.stdout


def named(t, name):
    t.name = name
    return t


def norm(a):
    return float(np.sqrt(np.sum(np.asarray(a, dtype=np.float64) ** 2)))


# ==== graph ==========================================================================
def test_graph_of_x_plus_x_times_x():
    x = named(tg.tensor([1.0, 2.0, 3.0], requires_grad=True), "x")
    y = (x + x) * x
    d = parse(graph(y))
    nx, add, mul = d.find("x"), d.find("Add"), d.find("Mul")
    assert len(d.nodes) == 3
    assert d.count(nx, add) == 2 and d.count(add, mul) == 1 and d.count(nx, mul) == 1
    assert len(d.edges) == 4
    assert "(3,) float32" in d.nodes[nx]["label"] and "(3,) float32" in d.nodes[mul]["label"]
    assert d.nodes[mul].get("peripheries") == "2"        # the output
    assert d.nodes[nx]["fillcolor"] == graph_mod._STYLE["param"]["fillcolor"]


def test_graph_intermediates_draws_tensor_nodes():
    x = named(tg.tensor([1.0, 2.0], requires_grad=True), "x")
    d = parse(graph((x + x) * x, intermediates=True))
    add, mul = d.find("Add"), d.find("Mul")
    tensors = [n for n in d.nodes if d.nodes[n]["shape"] == "ellipse"]
    assert len(tensors) == 2
    mid = next(t for t in tensors if d.count(add, t))
    assert d.count(mid, mul) == 1
    out = next(t for t in tensors if d.count(mul, t))
    assert d.nodes[out].get("peripheries") == "2"


def test_graph_marks_parameters_leaves_and_constants():
    w = named(tg.tensor([[1.0, 2.0]], requires_grad=True), "w")
    v = tg.tensor([3.0], requires_grad=True)            # unnamed leaf
    data = tg.tensor([[1.0], [2.0]])                    # constant
    d = parse(graph((w @ data) * v * 2.0))
    consts = [n for n in d.nodes if d.nodes[n].get("style") == "dashed"]
    assert len(consts) == 2                             # data and the scalar 2.0
    assert d.nodes[d.find("w")]["fillcolor"] == graph_mod._STYLE["param"]["fillcolor"]
    green = graph_mod._STYLE["leaf"]["fillcolor"]
    leaf = next(n for n in d.nodes if d.nodes[n].get("fillcolor") == green)
    assert d.title(leaf) == "(1,) float32"


@pytest.mark.parametrize("names_of", [lambda v: {v: "vee"}, lambda v: {"vee": v}])
def test_graph_names_mapping_either_direction(names_of):
    v = tg.tensor([3.0], requires_grad=True)
    d = parse(graph(v.exp(), names=names_of(v)))
    assert d.find("vee")


def test_graph_shows_gradient_norms_after_retained_backward():
    x = named(tg.tensor([1.0, -2.0, 0.5], requires_grad=True), "x")
    y = (x * x).sum()
    y.backward(retain_graph=True)
    label = parse(graph(y)).nodes["t0"]["label"]
    assert f"|grad| {norm(2 * np.array([1.0, -2.0, 0.5])):.4g}" in label


def test_graph_after_backward_without_retain_is_a_clear_error():
    x = tg.tensor([1.0], requires_grad=True)
    y = (x * 3.0).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        graph(y)
    with pytest.raises(TypeError, match="Tensor"):
        graph(np.ones(3))


def test_graph_quotes_awkward_names():
    x = named(tg.tensor([1.0], requires_grad=True), 'a "quoted" \\ name')
    d = parse(graph(x.exp()))
    assert d.find('a "quoted" \\ name')


# ---- collapse ------------------------------------------------------------------------
class FakeModule:
    """A duck-typed module: named_modules / named_parameters / __call__ -> forward."""

    def __init__(self, **children):
        self.children, self.params = children, {}
        self.training = True

    def __call__(self, *args):
        return self.forward(*args)

    def named_modules(self, prefix=""):
        yield prefix, self
        for n, c in self.children.items():
            yield from c.named_modules(f"{prefix}.{n}" if prefix else n)

    def named_parameters(self, prefix=""):
        for n, p in self.params.items():
            yield (f"{prefix}.{n}" if prefix else n), p
        for n, c in self.children.items():
            yield from c.named_parameters(f"{prefix}.{n}" if prefix else n)

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def train(self, mode=True):
        for _, m in self.named_modules():
            m.training = mode
        return self

    def eval(self):
        return self.train(False)


class Linear(FakeModule):
    def __init__(self, n_in, n_out):
        super().__init__()
        self.params = {"weight": tg.randn(n_out, n_in, requires_grad=True),
                       "bias": tg.zeros(n_out, requires_grad=True)}

    def forward(self, x):
        return x @ self.params["weight"].T + self.params["bias"]


class ReLU(FakeModule):
    def forward(self, x):
        return x.relu()


class Seq(FakeModule):
    def forward(self, x):
        for m in self.children.values():
            x = m(x)
        return x


def mlp():
    tg.manual_seed(0)
    return Seq(fc1=Linear(4, 5), act=ReLU(), fc2=Linear(5, 3))


def test_record_modules_merges_each_layer_into_one_node():
    model = mlp()
    with record_modules(model) as rec:
        loss = (model(tg.randn(2, 4)) ** 2).mean()
    d = parse(graph(loss, collapse=rec))
    fc1, act, fc2 = d.find("fc1 (Linear)"), d.find("act (ReLU)"), d.find("fc2 (Linear)")
    assert d.count(fc1, act) == 1 and d.count(act, fc2) == 1
    assert d.edges[[(s, t) for s, t, _ in d.edges].index((fc1, act))][2]["label"] == "(2, 5)"
    label = d.nodes[fc1]["label"]
    assert "weight (5, 4) float32" in label and "bias (5,) float32" in label
    assert "MatMul" in label and "Add" in label
    # the loss ops were computed outside the model: separate nodes after fc2
    powc = d.find("PowConst")
    assert d.count(fc2, powc) == 1
    assert sorted(d.title(n) for n in d.nodes) == sorted([
        "(2, 4) float32", "fc1 (Linear)", "act (ReLU)", "fc2 (Linear)",   # x and the layers
        "PowConst", "Sum", "Div", "() float32"])                         # the loss, its constant
    kinds = [d.nodes[n].get("fillcolor") for n in d.nodes]
    assert graph_mod._STYLE["param"]["fillcolor"] not in kinds  # folded into their layers
    # every module's forward is restored
    assert all("forward" not in vars(m) for _, m in model.named_modules())


def test_record_modules_clusters_keep_every_op():
    model = mlp()
    with record_modules(model) as rec:
        loss = model(tg.randn(2, 4)).sum()
    d = parse(graph(loss, collapse=rec, clusters=True))
    assert len(d.clusters) == 3
    by_label = {c["attrs"]["label"]: c["nodes"] for c in d.clusters.values()}
    assert {d.title(n) for n in by_label["act (ReLU)"]} == {"ReLU"}
    fc1 = {d.title(n) for n in by_label["fc1 (Linear)"]}
    assert {"fc1.weight", "fc1.bias", "Permute", "MatMul", "Add"} <= fc1
    assert d.title(next(n for n in d.nodes if d.nodes[n].get("peripheries"))) == "Sum"
    if HAVE_DOT:
        _render_check(graph(loss, collapse=rec, clusters=True))


def test_record_modules_innermost_module_and_depth():
    tg.manual_seed(1)
    inner = Seq(fc=Linear(3, 3), act=ReLU())
    model = Seq(block=inner, head=Linear(3, 2))
    x = tg.randn(1, 3)
    with record_modules(model) as rec:
        out = model(x)
    d = parse(graph(out, collapse=rec))
    titles = {d.title(n) for n in d.nodes}
    assert {"block.fc (Linear)", "block.act (ReLU)", "head (Linear)"} <= titles
    with record_modules(model, depth=1) as rec1:
        out = model(x)
    d = parse(graph(out, collapse=rec1))
    assert {d.title(n) for n in d.nodes} >= {"block (Seq)", "head (Linear)"}
    assert "block.fc.weight" not in {d.title(n) for n in d.nodes}
    assert "fc.weight (3, 3)" in d.nodes[d.find("block (Seq)")]["label"]


class Dropoutish(FakeModule):
    def forward(self, x):
        return x * tg.tensor(np.array([1.0, 0.0, 2.0, 2.0, 0.0], np.float32))  # a made-up mask


def test_record_modules_absorbs_constants_made_inside_a_module():
    model = Seq(fc=Linear(4, 5), drop=Dropoutish())
    x = tg.randn(2, 4)
    with record_modules(model) as rec:
        out = model(x)
    d = parse(graph(out, collapse=rec))
    assert sorted(d.title(n) for n in d.nodes) == ["(2, 4) float32", "drop (Dropoutish)",
                                                   "fc (Linear)"]  # the input stays, the mask goes
    clusters = parse(graph(out, collapse=rec, clusters=True)).clusters
    drop = next(c for c in clusters.values() if c["attrs"]["label"] == "drop (Dropoutish)")
    assert len(drop["nodes"]) == 2                     # Mul and the mask


def test_collapse_by_model_parameters():
    model = mlp()
    loss = model(tg.randn(2, 4)).sum()
    d = parse(graph(loss, collapse=model, clusters=True))
    by_label = {c["attrs"]["label"]: {d.title(n) for n in c["nodes"]} for c in d.clusters.values()}
    # MatMul lies between w.T and + b, so it joins fc1 too; ReLU touches no parameter
    assert by_label["fc1 (Linear)"] == {"fc1.weight", "fc1.bias", "Permute", "MatMul", "Add"}
    assert set(by_label) == {"fc1 (Linear)", "fc2 (Linear)"}
    merged = parse(graph(loss, collapse=model))
    relu = merged.find("ReLU")
    assert merged.count(merged.find("fc1 (Linear)"), relu) == 1
    assert merged.count(relu, merged.find("fc2 (Linear)")) == 1


def test_collapse_by_mapping():
    x = named(tg.tensor([1.0, 2.0], requires_grad=True), "x")
    a = x.exp()
    b = a * 2.0
    c = b.sin()
    d = parse(graph(c, collapse={a: "front", b: "front", c.grad_fn: "back"}))
    front, back = d.find("front"), d.find("back")
    assert d.count(d.find("x"), front) == 1 and d.count(front, back) == 1
    with pytest.raises(TypeError, match="collapse"):
        graph(c, collapse=42)


def test_graph_of_a_real_nn_model_if_available():
    try:
        from tinygrad_cnn import nn
    except ImportError as e:  # nn is optional for this test file
        pytest.skip(f"tinygrad_cnn.nn is not importable: {e}")
    if not all(hasattr(nn, k) for k in ("Sequential", "Conv2d", "ReLU", "Flatten", "Linear")):
        pytest.skip("tinygrad_cnn.nn has no conv layers yet")
    tg.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    with record_modules(model) as rec:
        loss = model(tg.randn(2, 1, 6, 6)).sum()
    d = parse(graph(loss, collapse=rec))
    for title in ("0 (Conv2d)", "1 (ReLU)", "2 (Flatten)", "3 (Linear)"):
        d.find(title)
    assert all("forward" not in vars(m) for _, m in model.named_modules())
    maps = images.feature_maps(model, np.ones((1, 6, 6)))
    assert [(m.name, m.layer, m.maps.shape) for m in maps] == [("0", "Conv2d", (2, 4, 4))]
    assert images.first_conv_weight(model)[0] == "0.weight"


# ---- saving and rendering ------------------------------------------------------------------
def small_graph():
    x = named(tg.tensor([1.0, 2.0], requires_grad=True), "x")
    return graph((x + x) * x)


def test_save_dot(tmp_path):
    g = small_graph()
    path = g.save(tmp_path / "g.dot")
    assert path.read_text() == g.source
    with pytest.raises(ValueError, match=r"\.svg"):
        g.save(tmp_path / "g.jpeg")


def test_save_svg_without_graphviz_explains_and_writes_dot(tmp_path, monkeypatch):
    monkeypatch.setattr(graph_mod.shutil, "which", lambda name: None)
    g = small_graph()
    with pytest.raises(GraphvizNotFoundError, match="apt-get install graphviz") as info:
        g.save(tmp_path / "g.svg")
    assert "brew install graphviz" in str(info.value)
    assert "conda install graphviz" in str(info.value)
    assert (tmp_path / "g.dot").read_text() == g.source
    assert not (tmp_path / "g.svg").exists()
    assert g._repr_svg_() is None


@pytest.mark.skipif(not HAVE_DOT, reason="Graphviz dot is not installed")
@pytest.mark.parametrize("suffix, magic", [(".svg", b"<svg"), (".png", png.SIGNATURE)])
def test_save_renders_with_graphviz(tmp_path, suffix, magic):
    path = small_graph().save(tmp_path / f"g{suffix}")
    assert magic in path.read_bytes()[:400]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"g{suffix}"]


# ==== trace ==========================================================================
def test_trace_of_x_plus_x_times_x():
    xv = np.array([1.0, 2.0, 3.0])
    x = named(tg.tensor(xv, requires_grad=True), "x")
    y = (x + x) * x
    with trace() as t:
        y.backward(tg.ones(3))
    assert [(s.kind, s.op) for s in t.steps] == [
        ("backward", "Mul"), ("backward", "Add"), ("accumulate", None)]
    mul, add, acc = t.steps
    assert mul.input_shapes == ((3,), (3,)) and mul.output_shape == (3,)
    assert mul.grad_norm == pytest.approx(np.sqrt(3))
    assert mul.sent_norms == pytest.approx((norm(xv), norm(2 * xv)))   # to x + x, to x
    assert add.grad_norm == pytest.approx(norm(xv))
    assert add.sent_norms == pytest.approx((norm(xv), norm(xv)))
    assert acc.tensor == "x" and acc.contributions == 3
    assert acc.parts == pytest.approx((norm(2 * xv), norm(xv), norm(xv)))
    assert acc.grad_norm == pytest.approx(norm(4 * xv)) == pytest.approx(norm(x.grad.numpy()))
    text = str(t)
    assert "x: 3 contributions summed" in text
    assert text.index("Mul") < text.index("Add") < text.index("contributions")


def test_trace_of_a_diamond():
    x = named(tg.tensor([0.3, -0.7], dtype="float64", requires_grad=True), "x")
    a = named(x.sin(), "a")
    b = named(a * 2.0, "b")
    c = named(a.exp(), "c")
    d = named((b * c).sum(), "d")
    with trace() as t:
        d.backward()
    order = [(s.kind, s.op, s.tensor) for s in t.steps]
    assert len(order) == 6
    assert order[0] == ("backward", "Sum", "d") and order[1][:2] == ("backward", "Mul")
    assert set(order[2:4]) == {("backward", "Mul", "b"), ("backward", "Exp", "c")}
    assert order[4:] == [("accumulate", "Sin", "a"), ("backward", "Sin", "a")]
    acc = t.steps[4]
    assert acc.contributions == 2 and acc.output_shape == (2,)
    a_ = np.sin([0.3, -0.7])
    grad_a = 2 * np.exp(a_) * (1 + a_)                   # d(2a e^a)/da
    assert acc.grad_norm == pytest.approx(norm(grad_a))
    sent_to_a = [s.sent_norms[0] for s in t.steps if s.tensor in ("b", "c")]
    assert sorted(acc.parts) == pytest.approx(sorted(sent_to_a))
    # the scalar constant 2.0 gets no gradient
    assert next(s for s in t.steps if s.tensor == "b").sent_norms[1] is None
    assert "a: 2 contributions summed" in str(t)


def test_trace_names_argument_and_restores_the_hook():
    w = tg.tensor([1.0, 2.0], requires_grad=True)
    y = (w * w).sum()
    with pytest.raises(KeyError):
        with trace(names={"w": w}) as t:
            assert autograd._tracer() is t
            y.backward(retain_graph=True)
            raise KeyError("boom")
    assert autograd._tracer() is None
    assert t.accumulations[0].tensor == "w" and t.accumulations[0].contributions == 2
    n = len(t.steps)
    y.backward()                 # outside the block: not recorded
    assert len(t.steps) == n


def test_trace_graph_and_filters_on_the_strict_device():
    """The strict CuPy stand-in (tests/strict_backend.py) refuses implicit host copies."""
    pytest.importorskip("strict_backend")
    x = named(tg.tensor([1.0, 2.0, 3.0], requires_grad=True, device="strict"), "x")
    y = ((x + x) * x).sum()
    with trace() as t:
        y.backward(retain_graph=True)
    assert t.accumulations[0].grad_norm == pytest.approx(norm(4 * np.array([1.0, 2.0, 3.0])))
    assert "|grad|" in parse(graph(y)).nodes["t0"]["label"]
    w = tg.randn(4, 1, 3, 3, device="strict")
    np.testing.assert_array_equal(images.filter_grid(w), images.filter_grid(w.numpy()))


def test_nested_traces_both_record():
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    with trace() as outer:
        with trace() as inner:
            (x * x).sum().backward()
            with pytest.raises(RuntimeError, match="already active"):
                inner.__enter__()
        assert autograd._tracer() is outer
    assert outer.steps == inner.steps and len(inner.steps) == 3


def test_trace_works_with_tg_grad():
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    with trace() as t:
        (gx,) = tg.grad((x * x + x).sum(), x)
    assert [s.op for s in t.backward_steps] == ["Sum", "Add", "Mul"]
    assert t.accumulations[0].contributions == 3
    assert t.accumulations[0].grad_norm == pytest.approx(norm(gx.numpy()))


def _backward_in_thread(before=None, after=None):
    """Run ``(x * x).exp().sum().backward()`` in a new thread, between the events
    ``before`` (waited for) and ``after`` (set)."""
    def run():
        if before is not None:
            before.wait(10)
        x = tg.tensor([1.0, 2.0], requires_grad=True)
        (x * x).exp().sum().backward()
        if after is not None:
            after.set()
    worker = threading.Thread(target=run)
    worker.start()
    return worker


def test_trace_records_only_the_passes_of_its_own_thread():
    # Grad mode is per thread, and so is the trace: another thread's backward,
    # run while this trace is active, is not among its steps.
    started, done = threading.Event(), threading.Event()
    worker = _backward_in_thread(started, done)
    y = tg.tensor([3.0], requires_grad=True)
    with trace() as t:
        started.set()
        assert done.wait(10)
        (y * 2).sum().backward()
    worker.join()
    assert [s.op for s in t.steps] == ["Sum", "Mul"]


@pytest.mark.parametrize("first_to_exit", ["the first entered", "the last entered"])
def test_traces_of_two_threads_end_in_any_order(first_to_exit):
    # Each thread's trace ends with its own block, whatever the other thread
    # does: none stays installed to record (and keep growing) ever after.
    entered, exited = [threading.Event() for _ in range(2)], [threading.Event() for _ in range(2)]
    traces, after = [trace(), trace()], {}
    order = [0, 1] if first_to_exit == "the first entered" else [1, 0]

    def run(k):
        if k == 1:
            entered[0].wait(10)
        with traces[k]:
            entered[k].set()
            entered[1 - k].wait(10)
            if k == order[1]:
                exited[order[0]].wait(10)
            x = tg.tensor([1.0], requires_grad=True)
            (x * 3).sum().backward()
        exited[k].set()
        after[k] = autograd._tracer()

    workers = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert after == {0: None, 1: None}
    assert [[s.op for s in t.steps] for t in traces] == [["Sum", "Mul"]] * 2
    _backward_in_thread().join()            # after both blocks: recorded nowhere
    assert autograd._tracer() is None
    assert [len(t.steps) for t in traces] == [2, 2]


def _leaves_until_an_id_comes_back(make, tries=200):
    """Call ``make()`` for a new leaf, dropping the last one each time, until a leaf
    gets the id of a dead one (CPython reuses a freed object's memory at once);
    returns the leaves' ids in order."""
    ids = []
    for _ in range(tries):
        x = make()
        ids.append(id(x))
        del x
        if ids[-1] in ids[:-1]:
            return ids
    pytest.skip("no id was reused")


def test_trace_labels_a_leaf_that_reuses_a_dead_ones_id_as_a_new_leaf():
    # The trace keeps no tensor alive, so a dead leaf's id may come back for a
    # new one: that one is a new leaf, not the old one again.
    labels = []

    def make():
        x = tg.tensor([1.0, 2.0], requires_grad=True)
        (x * x).sum().backward()           # x gets two gradients: an accumulate row
        labels.append(t.accumulations[-1].tensor)
        return x

    with trace() as t:
        ids = _leaves_until_an_id_comes_back(make)
    assert labels == [f"leaf#{k}" for k in range(1, len(ids) + 1)]


def test_trace_names_only_the_tensor_given_not_one_that_reuses_its_id():
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    named_id = id(x)
    with trace(names={"x": x}) as t:
        (x * x).sum().backward()
        del x
        labels = []

        def make():
            y = tg.tensor([1.0, 2.0], requires_grad=True)
            (y * y).sum().backward()
            labels.append((id(y), t.accumulations[-1].tensor))
            return y

        _leaves_until_an_id_comes_back(make)
    assert t.accumulations[0].tensor == "x"
    reused = [label for i, label in labels if i == named_id]
    if not reused:
        pytest.skip("no new leaf got the named tensor's id")
    assert "x" not in reused


def test_trace_refuses_names_for_what_is_not_a_tensor():
    with pytest.raises(TypeError, match=r"names maps tensors .* got a ndarray named 'x'"):
        trace(names={"x": np.ones(2)})


@pytest.mark.parametrize("names, message", [
    ([1], "got a list"),                       # a list of tensors: no names to read
    ({"w": 3.0}, "got a float named 'w'"),     # else silently never matched
])
def test_graph_and_trace_refuse_names_that_name_no_tensor(names, message):
    x = tg.tensor([1.0], requires_grad=True)
    names = [x] if isinstance(names, list) else names
    with pytest.raises(TypeError, match=f"names maps tensors .* {message}"):
        graph(x * 2, names=names)
    if isinstance(names, list):   # (trace's check of the entries is tested above)
        with pytest.raises(TypeError, match=f"names maps tensors .* {message}"):
            trace(names=names)


def test_a_trace_active_in_one_thread_cannot_be_entered_in_another():
    t, seen = trace(), []

    def enter_again():
        try:
            t.__enter__()
        except RuntimeError as e:
            seen.append(str(e))
        else:
            seen.append(autograd._tracer() is t)
            t.__exit__(None, None, None)

    with t:
        worker = threading.Thread(target=enter_again)
        worker.start()
        worker.join()
        assert autograd._tracer() is t
    assert len(seen) == 1 and "already active" in str(seen[0])
    assert autograd._tracer() is None


# ==== PNG =============================================================================
def parse_png(data):
    """Independent validation: chunk CRCs, header, IDAT rows (8-bit, filter 0 expected)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind}"
        chunks.append((kind, body))
        pos += 12 + n
    assert chunks[0][0] == b"IHDR" and chunks[-1] == (b"IEND", b"")
    w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[ctype]
    raw = zlib.decompress(b"".join(b for k, b in chunks if k == b"IDAT"))
    assert depth == 8 and interlace == 0 and len(raw) == h * (1 + w * channels)
    rows = np.frombuffer(raw, np.uint8).reshape(h, 1 + w * channels)
    return {"width": w, "height": h, "channels": channels, "filters": rows[:, 0],
            "pixels": rows[:, 1:].reshape((h, w, channels))}


def png_size(path):
    info = parse_png(open(path, "rb").read())
    return info["height"], info["width"], info["channels"]


@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 2), (3, 4, 3), (2, 9, 4), (1, 1)])
def test_write_png_is_valid_and_round_trips(tmp_path, shape):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, shape, dtype=np.uint8)
    path = png.write_png(tmp_path / "a.png", a)
    info = parse_png(path.read_bytes())
    assert (info["height"], info["width"]) == shape[:2]
    np.testing.assert_array_equal(info["pixels"].reshape(a.shape), a)
    np.testing.assert_array_equal(png.read_png(path), a)
    assert png.read_png_size(path) == shape[:2]
    assert os.listdir(tmp_path) == ["a.png"]   # no temporary file left behind


def test_write_png_rejects_bad_arrays(tmp_path):
    with pytest.raises(TypeError, match="uint8"):
        png.write_png(tmp_path / "f.png", np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        png.write_png(tmp_path / "f.png", np.zeros((2, 2, 5), np.uint8))
    with pytest.raises(ValueError, match="pixel"):
        png.write_png(tmp_path / "f.png", np.zeros((0, 2), np.uint8))
    assert not os.listdir(tmp_path)


def _filter_row(kind, line, prev, bpp):
    """Encode one row with PNG filter ``kind`` (the test's own encoder)."""
    line, prev = line.astype(int), prev.astype(int)
    left = np.concatenate([np.zeros(bpp, int), line[:-bpp]])
    upleft = np.concatenate([np.zeros(bpp, int), prev[:-bpp]])
    if kind == 0:
        pred = np.zeros_like(line)
    elif kind == 1:
        pred = left
    elif kind == 2:
        pred = prev
    elif kind == 3:
        pred = (left + prev) // 2
    else:
        p = left + prev - upleft
        pa, pb, pc = abs(p - left), abs(p - prev), abs(p - upleft)
        pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, upleft))
    return ((line - pred) % 256).astype(np.uint8)


def _png_bytes(rows, w, h, depth, ctype, filters, extra=()):
    bpp = max(1, depth * {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[ctype] // 8)
    prev, raw = np.zeros(rows.shape[1], np.uint8), b""
    for y in range(h):
        raw += bytes([filters[y]]) + _filter_row(filters[y], rows[y], prev, bpp).tobytes()
        prev = rows[y]

    def chunk(kind, body):
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    return (png.SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 0))
            + b"".join(chunk(k, b) for k, b in extra)
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_read_png_undoes_all_five_filters(tmp_path, channels):
    rng = np.random.default_rng(channels)
    h, w = 10, 6
    img = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
    ctype = {1: 0, 3: 2, 4: 6}[channels]
    data = _png_bytes(img.reshape(h, -1), w, h, 8, ctype, [y % 5 for y in range(h)])
    (tmp_path / "f.png").write_bytes(data)
    expected = img[:, :, 0] if channels == 1 else img
    np.testing.assert_array_equal(png.read_png(tmp_path / "f.png"), expected)


def test_read_png_palette_low_bit_depth_and_16_bit(tmp_path):
    # a 2-bit palette image with transparency
    idx = np.array([[0, 1, 2, 3, 1], [3, 2, 1, 0, 0]], np.uint8)
    packed = np.packbits(np.unpackbits(idx[:, :, None], axis=2)[:, :, 6:].reshape(2, -1), axis=1)
    pal = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    data = _png_bytes(packed, 5, 2, 2, 3, [1, 4], extra=[(b"PLTE", pal.tobytes()),
                                                         (b"tRNS", bytes([0, 255]))])
    (tmp_path / "p.png").write_bytes(data)
    out = png.read_png(tmp_path / "p.png")
    assert out.shape == (2, 5, 4)
    np.testing.assert_array_equal(out[:, :, :3], pal[idx])
    np.testing.assert_array_equal(out[:, :, 3], np.where(idx == 0, 0, 255))
    # 16-bit grayscale keeps the high byte
    g16 = np.array([[0x1234, 0xFFFF, 0x00FF]], ">u2")
    (tmp_path / "g.png").write_bytes(_png_bytes(g16.view(np.uint8).reshape(1, 6), 3, 1, 16, 0, [2]))
    np.testing.assert_array_equal(png.read_png(tmp_path / "g.png"), [[0x12, 0xFF, 0x00]])
    # mode conversions
    rgba = np.array([[[255, 0, 0, 255], [0, 0, 0, 0], [0, 255, 0, 255]]], np.uint8)
    png.write_png(tmp_path / "c.png", rgba)
    # BT.601 luma: 0.299 * 255 = 76.2 and 0.587 * 255 = 149.7, rounded to the nearest level
    np.testing.assert_array_equal(png.read_png(tmp_path / "c.png", mode="L"), [[76, 255, 150]])
    np.testing.assert_array_equal(png.read_png(tmp_path / "c.png", mode="RGB", background=0),
                                  [[[255, 0, 0], [0, 0, 0], [0, 255, 0]]])


def test_read_png_paeth_breaks_a_tie_towards_the_left_byte(tmp_path):
    # left a=80, up b=110, upper-left c=100: p = a + b - c = 90 is as near a as c, and
    # the PNG spec (like the test's encoder) then predicts from a
    img = np.array([[100, 110], [80, 7]], np.uint8)
    data = _png_bytes(img, 2, 2, 8, 0, [0, 4])
    # the encoder's filtered bytes, worked out by hand: row 1 starts with 80 - 100 (its
    # only neighbour is up), then 7 - 80 = 183 (mod 256) from the tie's winner, the left
    idat = data.index(b"IDAT") + 4
    length = struct.unpack(">I", data[idat - 8:idat - 4])[0]
    assert zlib.decompress(data[idat:idat + length]) == bytes([0, 100, 110, 4, 236, 183])
    (tmp_path / "t.png").write_bytes(data)
    np.testing.assert_array_equal(png.read_png(tmp_path / "t.png"), img)


def test_read_png_errors(tmp_path):
    good = png.encode_png(np.zeros((3, 3), np.uint8))
    palette = _png_bytes(np.zeros((1, 1), np.uint8), 1, 1, 8, 3, [0],
                         extra=[(b"PLTE", bytes([10, 20, 30]))])
    at = palette.index(b"PLTE") + 4            # a palette byte: only the CRC can tell
    cases = {"notpng": (b"GIF89a" + good[6:], "is not a PNG file"),
             "short": (good[:40], "truncated"),
             "crc": (good[:-20] + bytes([good[-20] ^ 1]) + good[-19:],   # a flipped IDAT bit
                     r"chunk b'IDAT' at byte \d+ fails its CRC check"),
             "palette": (palette[:at] + bytes([palette[at] ^ 1]) + palette[at + 1:],
                         r"chunk b'PLTE' at byte \d+ fails its CRC check")}
    for name, (data, match) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(png.PngError, match=match):
            png.read_png(tmp_path / name)
    interlaced = bytearray(_png_bytes(np.zeros((2, 2), np.uint8), 2, 2, 8, 0, [0, 0]))
    interlaced[28] = 1
    interlaced[29:33] = struct.pack(">I", zlib.crc32(bytes(interlaced[12:29])))
    (tmp_path / "i.png").write_bytes(bytes(interlaced))
    with pytest.raises(png.PngError, match="interlaced"):
        png.read_png(tmp_path / "i.png")


def _gray_png(w, h, idat, extra=()):
    """A PNG of 8-bit gray with the IDAT data given as is (compressed bytes)."""
    def chunk(kind, body):
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc
    return (png.SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + b"".join(chunk(k, b) for k, b in extra) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))


def test_read_png_inflates_no_further_than_the_header_declares(tmp_path):
    """A 1x1 image whose IDAT inflates to 32 MB (about 32 KB of file) is refused
    one byte past the 2 bytes the header allows, without expanding the rest."""
    z = zlib.compressobj(9)
    bomb = b"".join(z.compress(bytes(1 << 20)) for _ in range(32)) + z.flush()
    (tmp_path / "bomb.png").write_bytes(_gray_png(1, 1, bomb))
    tracemalloc.start()
    try:
        with pytest.raises(png.PngError, match="bomb.png: image data holds more than the 2 "
                                               "bytes its header declares"):
            png.read_png(tmp_path / "bomb.png")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * len(bomb) + (1 << 20)   # the expansion would be 32 MB
    (tmp_path / "extra.png").write_bytes(_gray_png(2, 1, zlib.compress(b"\0\7\7\7")))
    with pytest.raises(png.PngError, match="more than the 3 bytes"):
        png.read_png(tmp_path / "extra.png")
    (tmp_path / "short.png").write_bytes(_gray_png(2, 2, zlib.compress(b"\0\7\7")))
    with pytest.raises(png.PngError, match=r"too short \(3 bytes for 6 declared"):
        png.read_png(tmp_path / "short.png")
    (tmp_path / "cut.png").write_bytes(_gray_png(2, 1, zlib.compress(b"\0\7\7")[:-4]))
    with pytest.raises(png.PngError, match="truncated stream"):
        png.read_png(tmp_path / "cut.png")
    (tmp_path / "ok.png").write_bytes(_gray_png(2, 1, zlib.compress(b"\0\7\5")))
    np.testing.assert_array_equal(png.read_png(tmp_path / "ok.png"), [[7, 5]])


def _one_bit_png(w, h):
    """A w x h 1-bit grey PNG of zeros, compressed as far as zlib goes."""
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(bytes(1 + -(-w // 8))) for _ in range(h)) + z.flush()
    data = bytearray(_gray_png(w, h, idat))
    data[24] = 1   # the IHDR's bit depth, then its CRC
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@pytest.mark.parametrize("w, h, data", [
    (40000, 40000, None),
    # A 1-bit image of 5000 x 5000 zeros is 3 MB of data in a 4 KB file: it passed a
    # cap on the decoded bytes, then took 40 bytes per pixel (0.5 GB here) to decode.
    (5000, 5000, _one_bit_png(5000, 5000)),
], ids=["8-bit", "1-bit"])
def test_read_png_refuses_images_over_the_size_cap_before_decompressing(tmp_path, w, h, data):
    path = tmp_path / "huge.png"
    path.write_bytes(data or _gray_png(w, h, zlib.compress(b"\0")))
    tracemalloc.start()
    try:
        with pytest.raises(png.PngError, match=rf"huge.png: IHDR says {w}x{h} pixels "
                                               rf"\({w * h}\), more than the 16777216 read_png "
                                               rf"accepts; scale the image down"):
            png.read_png(path, mode="L")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_read_png_takes_an_image_of_exactly_the_size_cap(tmp_path, monkeypatch):
    """The cap is the largest size read, not the first one refused (a small cap here)."""
    monkeypatch.setattr(png, "MAX_PIXELS", 8 * 8)
    rows = np.arange(64, dtype=np.uint8).reshape(8, 8)
    path = tmp_path / "cap.png"
    path.write_bytes(_png_bytes(rows, 8, 8, 8, 0, [0] * 8))
    np.testing.assert_array_equal(png.read_png(path, mode="L"), rows)
    path.write_bytes(_png_bytes(np.zeros((9, 8), np.uint8), 8, 9, 8, 0, [0] * 9))
    with pytest.raises(png.PngError, match=r"IHDR says 8x9 pixels \(72\), more than the 64 "):
        png.read_png(path, mode="L")


def test_read_png_refuses_a_second_header_or_palette(tmp_path):
    """read_png_header reads the first IHDR; decoding by another would describe another image."""
    second = struct.pack(">IIBBBBB", 3000, 3000, 8, 0, 0, 0, 0)
    path = tmp_path / "two.png"
    path.write_bytes(_gray_png(2, 1, zlib.compress(b"\0\7\5"), [(b"IHDR", second)]))
    assert png.read_png_size(path) == (1, 2)
    with pytest.raises(png.PngError, match="two.png has a second IHDR chunk; a PNG has one"):
        png.read_png(path)
    palettes = [(b"PLTE", bytes([10, 20, 30])), (b"PLTE", bytes([40, 50, 60]))]
    path.write_bytes(_png_bytes(np.zeros((1, 1), np.uint8), 1, 1, 8, 3, [0], extra=palettes))
    with pytest.raises(png.PngError, match="two.png has a second PLTE chunk"):
        png.read_png(path)


@pytest.mark.parametrize("w, h, extra, match", [
    (0, 0, (), "IHDR says 0x0 pixels; width and height must be between 1 and 2147483647"),
    (3, 0, (), "IHDR says 3x0 pixels"),
    (2**31, 1, (), "IHDR says 2147483648x1 pixels"),
    (1, 1, ((b"PLTE", b"\1\2\3\4"),), "PLTE chunk has 4 bytes; expected a multiple of 3"),
    (1, 1, ((b"PLTE", bytes(3 * 257)),), "PLTE chunk has 771 bytes; .* 1 to 256 entries"),
    (1, 1, ((b"PLTE", b""),), "PLTE chunk has 0 bytes"),
])
def test_read_png_refuses_empty_images_and_bad_palettes(tmp_path, w, h, extra, match):
    path = tmp_path / "bad.png"
    path.write_bytes(_gray_png(w, h, zlib.compress(b"\0\0"), extra))
    with pytest.raises(png.PngError, match="bad.png: " + match):
        png.read_png(path)


def test_read_png_written_by_pillow(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(3)
    smooth = (np.add.outer(np.arange(20), np.arange(30)) * 4 % 256).astype(np.uint8)
    noisy = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    for mode, arr in [("L", smooth), ("RGB", noisy), ("RGB", np.stack([smooth] * 3, -1)),
                      ("RGBA", np.dstack([noisy, smooth]))]:
        path = tmp_path / f"{mode}.png"
        Image.fromarray(arr, mode).save(path, optimize=True)
        np.testing.assert_array_equal(png.read_png(path), arr)
    bw = smooth > 128                                    # 1-bit
    Image.fromarray(bw).save(tmp_path / "bw.png")
    np.testing.assert_array_equal(png.read_png(tmp_path / "bw.png"), bw.astype(np.uint8) * 255)
    Image.fromarray(noisy).convert("P").save(tmp_path / "p.png")
    expected = np.asarray(Image.open(tmp_path / "p.png").convert("RGB"))
    np.testing.assert_array_equal(png.read_png(tmp_path / "p.png"), expected)


def test_read_png_written_by_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib.image as mpimg
    data = np.linspace(0, 1, 48).reshape(6, 8)
    mpimg.imsave(tmp_path / "m.png", data, cmap="gray")
    out = png.read_png(tmp_path / "m.png")
    assert out.shape == (6, 8, 4)
    np.testing.assert_allclose(out[:, :, 0] / 255, data, atol=1 / 255 + 1e-9)


# ==== filters and feature maps ===================================================================
def test_filter_grid_layouts():
    w = np.arange(8 * 9, dtype=np.float64).reshape(8, 1, 3, 3)
    w[3] = 7.0                                           # a constant kernel
    grid = images.filter_grid(w, scale=4, pad=2)
    assert grid.dtype == np.uint8 and grid.shape == (3 * 14 - 2, 3 * 14 - 2)
    tile = grid[:12, :12]
    assert tile.min() == 0 and tile.max() == 255 and tile[0, 0] == 0 and tile[-1, -1] == 255
    assert (grid[14:26, 0:12] == 128).all()              # kernel 3: row 1, column 0
    assert (grid[12:14, :] == 0).all()                   # padding
    rgb = images.filter_grid(tg.randn(5, 3, 5, 5))
    assert rgb.shape == (2 * 25 + 2, 3 * 25 + 2 * 2, 3)   # default scale 5 -> 25 px tiles
    multi = images.filter_grid(np.random.default_rng(0).normal(size=(4, 2, 3, 3)), scale=1, pad=1)
    assert multi.shape == (4 * 4 - 1, 2 * 4 - 1)
    with pytest.raises(ValueError, match=r"\(OC, C, KH, KW\)"):
        images.filter_grid(np.zeros((3, 3)))


def recorded_warnings(action):
    """Run ``action``; return what it gave and every warning it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = action()
    return out, [(w.category, str(w.message)) for w in caught]


def test_non_finite_values_are_drawn_black_with_a_warning():
    """A diverged model must not look like a constant kernel (NaN used to give a
    flat 128 tile) or a black one (inf made the whole kernel 0)."""
    w = np.arange(3 * 4, dtype=np.float64).reshape(3, 1, 2, 2)
    w[1, 0, 0, 0], w[2, 0, 1, 1], w[2, 0, 0, 1] = np.nan, np.inf, -np.inf
    grid, caught = recorded_warnings(lambda: images.filter_grid(w, scale=1, pad=0))
    assert caught == [(RuntimeWarning, "the weight (3, 1, 2, 2) holds 3 non-finite value(s) "
                       "(NaN or infinity) of 12; they are drawn black, the rest scaled over "
                       "the finite values (did training diverge?)")]
    np.testing.assert_array_equal(grid[:2, 2:4], [[0, 0], [128, 255]])  # NaN: black, rest 5..7
    np.testing.assert_array_equal(grid[2:4, :2], [[0, 0], [255, 0]])    # infinities black
    np.testing.assert_array_equal(grid[:2, :2], [[0, 85], [170, 255]])  # a finite kernel as ever
    maps = [images.FeatureMaps("conv1", "Conv2d", np.full((2, 3, 3), np.nan))]
    img, caught = recorded_warnings(lambda: images.feature_map_image(maps, size=3, pad=0))
    assert caught == [(RuntimeWarning, "the output of conv1 (Conv2d) holds 18 non-finite "
                       "value(s) (NaN or infinity) of 18; they are drawn black, the rest scaled "
                       "over the finite values (did training diverge?)")]
    assert (img == 0).all()


@pytest.mark.parametrize("use_matplotlib", [False, True])
def test_save_feature_maps_of_a_nan_input_warns_once_per_picture_part(tmp_path, use_matplotlib):
    if use_matplotlib:
        pytest.importorskip("matplotlib")
    tg.manual_seed(0)
    model = ConvNet(conv1=Conv2d(1, 2), act=ReLU(), conv2=Conv2d(2, 2))
    x = np.ones((1, 6, 6))
    x[0, 2, 2] = np.nan
    path, caught = recorded_warnings(lambda: images.save_feature_maps(
        model, x, tmp_path / "fm.png", use_matplotlib=use_matplotlib))
    assert png_size(path)[0] > 0
    assert [c for c, _ in caught] == [RuntimeWarning] * 3   # nothing from NumPy or matplotlib
    assert [m.split(" holds ")[0] for _, m in caught] == [
        "the input image", "the output of conv1 (Conv2d)", "the output of conv2 (Conv2d)"]


class Conv2d(FakeModule):
    """A naive 'valid' 3x3 convolution, named like the real layer class."""

    def __init__(self, c_in, c_out):
        super().__init__()
        self.params = {"weight": tg.randn(c_out, c_in, 3, 3, requires_grad=True)}

    def forward(self, x):
        w = self.params["weight"]
        n, c, h, wd = x.shape
        oh, ow = h - 2, wd - 2
        out = 0
        for i in range(3):
            for j in range(3):
                patch = x[:, :, i:i + oh, j:j + ow].reshape(n, 1, c, oh, ow)
                out = out + (patch * w[:, :, i, j].reshape(1, -1, c, 1, 1)).sum(axis=2)
        return out


class ConvNet(Seq):
    def forward(self, x):
        for name in ("conv1", "act", "conv2"):
            x = self.children[name](x)
        return x


def test_first_conv_weight_and_save_filters(tmp_path, monkeypatch):
    tg.manual_seed(0)
    model = ConvNet(fc_first=Linear(2, 2), conv1=Conv2d(1, 8), act=ReLU(), conv2=Conv2d(8, 2))
    name, w = images.first_conv_weight(model)
    assert name == "conv1.weight" and w.shape == (8, 1, 3, 3)
    path = images.save_filters(model, tmp_path / "f.png", scale=2, use_matplotlib=False)
    grid = images.filter_grid(w, scale=2)
    assert png_size(path) == grid.shape[:2] + (1,)
    np.testing.assert_array_equal(png.read_png(path), grid)
    with pytest.raises(ValueError, match="no 4-D parameter"):
        images.first_conv_weight(mlp())
    # a missing matplotlib means the fallback, whatever use_matplotlib=None finds
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    path = images.save_filters(w, tmp_path / "g.png", scale=2)
    assert png_size(path) == grid.shape[:2] + (1,)


def test_save_filters_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    tg.manual_seed(0)
    path = images.save_filters(tg.randn(6, 3, 3, 3), tmp_path / "f.png", use_matplotlib=True)
    h, w, c = png_size(path)
    assert h > 50 and w > 50 and c in (3, 4)


def test_feature_maps_and_their_picture(tmp_path):
    tg.manual_seed(0)
    model = ConvNet(conv1=Conv2d(1, 3), act=ReLU(), conv2=Conv2d(3, 2))
    model.train()
    x = tg.randn(1, 7, 7)
    maps = images.feature_maps(model, x)
    assert [(m.name, m.layer, m.maps.shape) for m in maps] == [
        ("conv1", "Conv2d", (3, 5, 5)), ("conv2", "Conv2d", (2, 3, 3))]
    expected = model.children["conv1"](x.reshape(1, 1, 7, 7)).numpy()[0]
    np.testing.assert_allclose(maps[0].maps, expected, rtol=1e-6)
    assert model.training is True                      # mode restored
    assert all("forward" not in vars(m) for _, m in model.named_modules())
    path = images.save_feature_maps(model, x, tmp_path / "fm.png", use_matplotlib=False)
    expected_img = images.feature_map_image(maps, image=x.numpy())
    assert png_size(path) == expected_img.shape + (1,)
    # blocks: input (7*7 -> scale 7), conv1 3 maps of 5*10=50 px, conv2 2 maps of 3*16=48 px
    assert expected_img.shape == (49 + 12 + 50 + 12 + 48, max(49, 3 * 50 + 2 * 3, 2 * 48 + 3))
    with pytest.raises(ValueError, match="no layer of type"):
        images.feature_maps(mlp(), tg.randn(1, 4))


@pytest.mark.parametrize("name", ["f.jpg", "f.svg", "f", "f.png.txt"])
@pytest.mark.parametrize("write", [
    lambda path: images.save_filters(tg.randn(4, 1, 3, 3), path, use_matplotlib=False),
    lambda path: images.save_feature_maps(
        ConvNet(conv1=Conv2d(1, 2), act=ReLU(), conv2=Conv2d(2, 2)), tg.randn(1, 7, 7), path,
        use_matplotlib=False),
    lambda path: curves.plot_curves(write_metrics(path.parent / "m.jsonl", METRICS), path,
                                    use_matplotlib=False),
], ids=["save_filters", "save_feature_maps", "plot_curves"])
def test_pictures_are_written_only_under_a_png_name(tmp_path, name, write):
    """PNG bytes in a file called .jpg or .svg would lie about its content."""
    with pytest.raises(ValueError, match=r"written as PNG; give a file name ending in \.png"):
        write(tmp_path / name)
    assert not (tmp_path / name).exists()
    assert png_size(write(tmp_path / "ok.PNG")) is not None    # the suffix in any case


@pytest.mark.parametrize("use_matplotlib", [False, True])
@pytest.mark.parametrize("max_channels, error", [(0, ValueError), (-1, ValueError),
                                                 (2.5, TypeError), (True, TypeError)])
def test_feature_maps_need_a_positive_number_of_channels(tmp_path, use_matplotlib,
                                                         max_channels, error):
    if use_matplotlib:
        pytest.importorskip("matplotlib")
    model = ConvNet(conv1=Conv2d(1, 2), act=ReLU(), conv2=Conv2d(2, 2))
    with pytest.raises(error, match=r"max_channels must be an integer >= 1, got "):
        images.save_feature_maps(model, tg.randn(1, 7, 7), tmp_path / "fm.png",
                                 max_channels=max_channels, use_matplotlib=use_matplotlib)
    maps = images.feature_maps(model, tg.randn(1, 7, 7))
    for option in ("max_channels", "columns", "size"):
        with pytest.raises(error, match=f"{option} must be an integer >= 1"):
            images.feature_map_image(maps, **{option: max_channels})


@pytest.mark.parametrize("option, value, error, message", [
    ("scale", 2.5, TypeError, r"scale must be an integer >= 1, got 2.5"),
    ("scale", 2.0, TypeError, r"scale must be an integer >= 1, got 2.0"),
    ("scale", 0, ValueError, r"scale must be an integer >= 1, got 0"),
    ("scale", True, TypeError, r"scale must be an integer >= 1, got True"),
    ("pad", -1, ValueError, r"pad must be an integer >= 0, got -1"),
    ("pad", 1.5, TypeError, r"pad must be an integer >= 0, got 1.5"),
])
def test_filter_grid_refuses_a_scale_or_pad_it_cannot_draw(option, value, error, message):
    # A fractional scale was once drawn at its integer part without a word; a float
    # is refused as everywhere here, where an int is expected.
    w = np.random.default_rng(0).normal(size=(2, 1, 3, 3))
    with pytest.raises(error, match=rf"filter_grid: {message}"):
        images.filter_grid(w, **{option: value})


def test_a_filter_picture_too_large_to_be_of_use_is_refused():
    """A grid past png.MAX_PIXELS (a deep layer's weight, or a large scale) would take
    gigabytes; the error says how to draw less."""
    side = int(np.sqrt(png.MAX_PIXELS)) + 1                     # one kernel, scaled up
    with pytest.raises(ValueError, match=rf"picture of {side}x{side} pixels, .*\(weight\[:16\]\)"):
        images.filter_grid(np.ones((1, 1, 1, 1)), scale=side)
    assert images.filter_grid(np.ones((1, 1, 1, 1)), scale=side - 1).shape == (side - 1,) * 2


def test_save_feature_maps_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    tg.manual_seed(0)
    model = ConvNet(conv1=Conv2d(3, 4), act=ReLU(), conv2=Conv2d(4, 2))
    path = images.save_feature_maps(model, np.random.default_rng(0).random((3, 8, 8)),
                                    tmp_path / "fm.png", use_matplotlib=True)
    h, w, c = png_size(path)
    assert h > 100 and w > 100


# ==== curves ===========================================================================
METRICS = [
    {"epoch": 1, "train_loss": 1.2, "train_acc": 0.55, "test_loss": 0.9, "test_acc": 0.7},
    {"epoch": 2, "train_loss": 0.7, "test_loss": 0.6, "test_acc": 0.8, "lr": 0.1},
    {"epoch": 3, "train_loss": 0.4, "train_acc": 0.9, "test_loss": None, "test_acc": 0.85},
]


def write_metrics(path, records, tail=""):
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n\n" + tail)
    return path


def test_metric_series_is_tolerant():
    panels = curves.metric_series(METRICS + [{"val_accuracy": 0.5}])
    assert panels["loss"] == {"train": [(1, 1.2), (2, 0.7), (3, 0.4)],
                              "test": [(1, 0.9), (2, 0.6)]}
    assert panels["accuracy"]["train"] == [(1, 0.55), (3, 0.9)]
    assert panels["accuracy"]["val"] == [(4, 0.5)]            # no epoch: its line number
    assert list(panels) == ["loss", "accuracy"]
    # lines out of epoch order are drawn in order; a bool is not a number to plot
    panels = curves.metric_series([{"epoch": 2, "train_loss": 0.5},
                                   {"epoch": 1, "train_loss": 0.9, "train_acc": True}])
    assert panels == {"loss": {"train": [(1, 0.9), (2, 0.5)]}}


def test_plot_curves_fallback_png(tmp_path):
    path = write_metrics(tmp_path / "m.jsonl", METRICS, tail='{"epoch": 4, "train_lo')
    with pytest.warns(UserWarning, match="unfinished last line"):
        out = curves.plot_curves(path, tmp_path / "c.png", use_matplotlib=False)
    assert png_size(out) == (300, 2 * 440, 3)
    img = png.read_png(out)
    blue, orange = np.array(curves._COLORS[0]), np.array(curves._COLORS[1])
    assert (img == blue).all(-1).sum() > 100 and (img == orange).all(-1).sum() > 100
    only_loss = write_metrics(tmp_path / "l.jsonl", [{"loss": 3.0}, {"loss": 2.0}])
    out = curves.plot_curves(only_loss, tmp_path / "l.png", use_matplotlib=False)
    assert png_size(out) == (300, 440, 3)


@pytest.mark.parametrize("title, values, expected", [
    ("loss", [0.05, 2.05], (0.0, 2.15)),          # not below 0
    ("accuracy", [0.5, 1.0], (0.475, 1.0)),       # not above 1
    ("loss", [-1.0, 1.0], (-1.1, 1.1)),           # negative values keep their margin
    ("accuracy", [50.0, 90.0], (48.0, 92.0)),     # percentages are not capped at 1
])
def test_the_value_axis_stays_within_possible_values(title, values, expected):
    assert curves._y_range(title, values) == pytest.approx(expected)


def test_plot_curves_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"epoch": 1}\nnot json\n{"epoch": 2}\n')
    with pytest.raises(ValueError, match="line 2"):
        curves.plot_curves(bad, tmp_path / "x.png")
    empty = write_metrics(tmp_path / "e.jsonl", [{"epoch": 1, "lr": 0.1}])
    with pytest.raises(ValueError, match="no loss or accuracy"):
        curves.plot_curves(empty, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_a_device_is_no_metrics_file(tmp_path):
    """/dev/null reads as empty, /dev/zero never ends: both refused, the latter at once
    (tests/test_fileio.py checks it on a clone of /dev/zero); a pipe is read."""
    with pytest.raises(ValueError, match="not a metrics file .*a device"):
        curves.read_metrics(os.devnull)
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "pipe"
        os.mkfifo(fifo)
        writer = threading.Thread(target=lambda: fifo.write_text('{"train_loss": 1.5}\n'))
        writer.start()
        assert curves.read_metrics(fifo) == [{"train_loss": 1.5}]
        writer.join()


def test_values_too_large_for_a_float_are_skipped(tmp_path):
    """JSON integers have no size limit; float() of a huge one raises OverflowError."""
    huge = 10 ** 400
    panels = curves.metric_series([{"epoch": 1, "train_loss": huge, "test_loss": 2.0},
                                   {"epoch": huge, "train_loss": 0.5}])
    assert panels["loss"] == {"test": [(1.0, 2.0)], "train": [(2.0, 0.5)]}
    path = tmp_path / "m.jsonl"
    path.write_text('{"epoch": 1, "train_loss": 1' + "0" * 400 + '}\n'
                    '{"epoch": 2, "train_loss": 0.5}\n{"epoch": 3, "train_loss": 0.25}\n')
    out = curves.plot_curves(path, tmp_path / "c.png", use_matplotlib=False)
    assert png_size(out) == (300, 440, 3)


DEEP = '{"epoch": 1, "x": ' + "[" * 10**5 + "]" * 10**5 + "}"


@pytest.mark.parametrize("text, expected", [
    # More digits than Python converts to an int (4300): too large for a float, skipped.
    ('{"epoch": 1, "train_loss": 1' + "0" * 5000 + '}\n{"epoch": 2, "train_loss": 0.5}\n',
     {"loss": {"train": [(2.0, 0.5)]}}),
    ('{"epoch": 1, "train_loss": -1' + "0" * 5000 + '}\n', {}),
    ("\ufeff" + '{"epoch": 1, "train_loss": 0.5}\n', {"loss": {"train": [(1.0, 0.5)]}}),
    (DEEP + '\n{"epoch": 2, "train_loss": 0.5}\n', r"m.jsonl, line 1: nested too deeply"),
    ('{"epoch": 2, "train_loss": 0.5}\n' + DEEP + "\n", r"m.jsonl, line 2: nested too deeply"),
    # A last line with its line break was written whole: a bad one is an error, as elsewhere.
    ('{"epoch": 1, "train_loss": 0.5}\nnot json\n', r"m.jsonl, line 2: not valid JSON "
                                                    r"\(Expecting value\)"),
    ('{"epoch": 1, "train_loss": 0.5}\r\nnot json\r\n\r\n', r"m.jsonl, line 2: not valid JSON"),
    ('{"epoch": 1, "train_loss": 0.5}\n{"epoch": 2,\n', r"m.jsonl, line 2: not valid JSON"),
    # Without it, the last line is a write cut short: skipped, with a warning.
    ('{"epoch": 1, "train_loss": 0.5}\n{"epoch": 2, "train_lo', {"loss": {"train": [(1.0, 0.5)]}}),
], ids=["huge integer", "huge negative integer", "byte-order mark", "deep", "deep last line",
        "bad last line", "bad last line, CRLF", "cut last line with a line break",
        "unfinished last line"])
def test_metrics_files_no_training_run_writes(tmp_path, text, expected):
    path = tmp_path / "m.jsonl"
    path.write_text(text, encoding="utf-8")
    if isinstance(expected, str):
        with pytest.raises(ValueError, match=expected):
            curves.read_metrics(path)
    elif text.endswith("\n"):
        assert curves.metric_series(curves.read_metrics(path)) == expected
    else:
        with pytest.warns(UserWarning, match=r"m\.jsonl: skipping the unfinished last line 2 "
                                             r"\(not valid JSON, and no line break at its end"):
            assert curves.metric_series(curves.read_metrics(path)) == expected


@pytest.mark.parametrize("points", [
    [(1.0, 1e17)], [(1e17, 0.5)],                     # one value: +-0.5 is lost in rounding
    [(1.0, 1e308), (2.0, -1e308)],                    # a span beyond the largest float
    [(1.0, 1.7976931348623157e308)], [(-1.7976931348623157e308, 1.0), (1e308, 2.0)],
], ids=["one huge value", "one huge epoch", "huge span", "largest float", "huge epochs"])
@pytest.mark.parametrize("use_matplotlib", [False, True])
def test_curves_of_any_finite_values_are_drawn(tmp_path, points, use_matplotlib):
    if use_matplotlib:
        pytest.importorskip("matplotlib")
    path = write_metrics(tmp_path / "m.jsonl", [{"epoch": x, "train_loss": y}
                                                for x, y in points])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # matplotlib's overflows, and its fallback's notice
        out = curves.plot_curves(path, tmp_path / "c.png", use_matplotlib=use_matplotlib)
    img = png.read_png(out)
    if not use_matplotlib:
        blue = np.array(curves._COLORS[0])
        assert (img == blue).all(-1).sum() >= 25 * len(points)   # every point's 5x5 mark


def test_plot_curves_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    path = write_metrics(tmp_path / "m.jsonl", METRICS)
    h, w, c = png_size(curves.plot_curves(path, tmp_path / "c.png", use_matplotlib=True))
    assert w > h > 100
