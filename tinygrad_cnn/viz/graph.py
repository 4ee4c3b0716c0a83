"""Pictures of the computation graph, as Graphviz DOT text.

::

    loss = ((x + x) * x).sum()
    g = tg.viz.graph(loss)        # draw BEFORE loss.backward() ...
    print(g)                      # the DOT text
    g.save("graph.svg")           # .dot always works; .svg/.png/.pdf run Graphviz's `dot`

What is drawn:

* one box per ``Function`` (op), labelled with its name and the shape and
  dtype of its output (``intermediates=True`` also draws each intermediate
  tensor as its own oval between the ops);
* one box per leaf tensor: parameters (named leaves that require grad) in
  orange, other leaves that require grad in green, constants (inputs that
  need no gradient) dashed; the output gets a double border;
* an arrow for each use of a tensor: ``x + x`` gives two arrows from x.

``backward()`` frees the graph as it goes (each ``Function`` drops its
inputs), so draw it first; or call ``backward(retain_graph=True)`` and
draw it afterwards to see each gradient's norm (``|grad|``) in the labels
of the tensors that have a ``.grad``.

Large graphs: ``collapse`` puts the ops of each layer together.  By
default each layer becomes ONE node (its ops, parameters and their
gradients listed inside); ``clusters=True`` keeps every node and draws a
box around each layer instead.  ``collapse`` can be

* a :class:`record_modules` recording of the forward pass (exact: an op
  belongs to the innermost module whose ``forward`` computed it, and so
  does a constant made inside it, such as a dropout mask)::

      with tg.viz.record_modules(model) as rec:
          loss = loss_fn(model(x), y)
      tg.viz.graph(loss, collapse=rec).save("model.svg")

* the model itself (anything with ``named_parameters()``): a heuristic on
  parameters alone.  An op that consumes a parameter belongs to that
  parameter's module, and so does every op lying on a path between two
  ops of that module (the ``x @ w.T`` between ``w.T`` and ``+ b``).  Ops
  that touch no parameter, such as an activation, stay separate nodes.
* a mapping ``{tensor_or_function: "group name"}``; a non-leaf tensor
  brings the op that produced it along.
"""
from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from ..autograd import Function
from ..tensor import Tensor
from .png import atomic_write
from .trace import _norm, tensor_name_pairs

__all__ = ["graph", "Graph", "record_modules", "GraphvizNotFoundError"]

RENDER_FORMATS = ("svg", "png", "pdf")
_INSTALL_HINT = ("install Graphviz: `apt-get install graphviz` (Debian/Ubuntu), "
                 "`brew install graphviz` (macOS) or `conda install graphviz`")

# Node look by kind (Graphviz attributes).
_STYLE = {
    "op": {"shape": "box", "style": "rounded,filled", "fillcolor": "#e8e8e8"},
    "param": {"shape": "box", "style": "filled", "fillcolor": "#f9cb9c"},
    "leaf": {"shape": "box", "style": "filled", "fillcolor": "#b6d7a8"},
    "const": {"shape": "box", "style": "dashed", "color": "#888888", "fontcolor": "#555555"},
    "tensor": {"shape": "ellipse"},
    "layer": {"shape": "box3d", "style": "filled", "fillcolor": "#cfe2f3"},
}


class GraphvizNotFoundError(RuntimeError):
    """Rendering needs Graphviz's ``dot`` program, which is not installed."""


class Graph:
    """A drawn computation graph: ``.source`` is the DOT text (also ``str(g)``)."""

    def __init__(self, source):
        self.source = source

    def __str__(self):
        return self.source

    def __repr__(self):
        return f"<Graph: {self.source.count(chr(10))} lines of DOT; .save(path) or print()>"

    def pipe(self, format="svg"):
        """Render with Graphviz's ``dot`` and return the bytes of the picture."""
        dot = shutil.which("dot")
        if dot is None:
            raise GraphvizNotFoundError(f"rendering needs the Graphviz `dot` program; "
                                        f"{_INSTALL_HINT}")
        result = subprocess.run([dot, f"-T{format}"], input=self.source.encode("utf-8"),
                                capture_output=True, timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"dot -T{format} failed: "
                               f"{result.stderr.decode(errors='replace').strip()}")
        return result.stdout

    def save(self, path):
        """Write ``path`` by its suffix: ``.dot``/``.gv`` text, or ``.svg``/``.png``/``.pdf``.

        Rendering runs Graphviz's ``dot``; without it, the DOT text is written
        beside (same name, ``.dot``) and :class:`GraphvizNotFoundError` says how
        to install Graphviz.  Returns the path written.
        """
        path = Path(path)
        fmt = path.suffix.lower().lstrip(".")
        if fmt in ("dot", "gv"):
            return atomic_write(path, self.source)
        if fmt not in RENDER_FORMATS:
            raise ValueError(f"cannot save a graph as {path.name!r}: use a .dot, .gv, "
                             f"{', '.join('.' + f for f in RENDER_FORMATS)} file name")
        if shutil.which("dot") is None:
            dot_path = atomic_write(path.with_suffix(".dot"), self.source)
            raise GraphvizNotFoundError(
                f"cannot write {path}: rendering needs the Graphviz `dot` program; "
                f"{_INSTALL_HINT}. The DOT text was written to {dot_path}; render it "
                f"later with: dot -T{fmt} {dot_path} -o {path}")
        return atomic_write(path, self.pipe(fmt))

    def _repr_svg_(self):  # inline pictures in Jupyter, when Graphviz is there
        try:
            return self.pipe("svg").decode("utf-8")
        except (GraphvizNotFoundError, RuntimeError, OSError):
            return None


def graph(tensor, collapse=None, names=None, clusters=False, intermediates=False):
    """Draw the computation graph that produced ``tensor``; returns a :class:`Graph`.

    ``names`` labels tensors: ``{tensor: "w"}`` or ``{"w": tensor}`` such as
    ``dict(model.named_parameters())`` (a tensor's ``name`` attribute is
    used otherwise).  ``collapse`` groups the ops of each layer (see the
    module docstring); ``clusters=True`` boxes each group instead of
    merging it into one node.  ``intermediates=True`` draws intermediate
    tensors as nodes of their own.
    """
    if not isinstance(tensor, Tensor):
        raise TypeError(f"graph() draws the graph behind a Tensor, got {type(tensor).__name__}")
    if tensor._ctx is not None and tensor._ctx.inputs is None:
        raise RuntimeError(
            f"the graph behind this {tensor.shape} tensor was freed by backward(): draw it "
            f"before calling backward(), or call backward(retain_graph=True) to keep it "
            f"(and to see the gradients in the picture)")
    order = _walk(tensor)
    fn_group, tensor_group, titles, param_names = _grouping(collapse, order)
    builder = _Builder(_name_map(names), param_names, intermediates)
    for t in order:
        builder.add(t, fn_group, tensor_group, root=t is tensor)
    nodes, edges = builder.nodes, builder.edges
    if titles and not clusters:
        nodes, edges = _merge_groups(nodes, edges, titles)
    return Graph(_to_dot(nodes, edges, titles if clusters else {}))


# ---- walking the graph ---------------------------------------------------------------
def _walk(root):
    """Every tensor behind ``root`` (constants included), inputs before their users.

    Iterative depth-first search, so deep graphs need no recursion.
    """
    order, seen = [], set()
    stack = [(root, False)]
    while stack:
        t, done = stack.pop()
        if done:
            order.append(t)
            continue
        if id(t) in seen:
            continue
        seen.add(id(t))
        stack.append((t, True))
        fn = t._ctx
        if fn is not None and fn.inputs:
            stack.extend((x, False) for x in reversed(fn.inputs) if id(x) not in seen)
    return order


class _Node:
    """One drawn node: ``kind`` picks its look (``_STYLE``); ``op`` is set for ops."""

    def __init__(self, nid, kind, lines, group=None, root=False, op=None):
        self.id, self.kind, self.lines, self.group = nid, kind, lines, group
        self.root, self.op = root, op


class _Builder:
    """Turns tensors (in order) into nodes and edges; groups are assigned, not drawn."""

    def __init__(self, names, param_names, intermediates):
        self.names, self.param_names, self.intermediates = names, param_names, intermediates
        self.nodes, self.edges = {}, []   # edges: (src id, dst id, tensor flowing)
        self.node_of = {}                 # id(tensor) -> node id

    def _new(self, prefix, *args, **kwargs):
        nid = f"{prefix}{len(self.nodes)}"
        self.nodes[nid] = _Node(nid, *args, **kwargs)
        return nid

    def name(self, t):
        """``names`` argument first, then ``tensor.name``, then the model's parameter name."""
        return self.names.get(id(t)) or t.name or self.param_names.get(id(t))

    def _tensor_lines(self, t):
        name = self.name(t)
        lines = ([str(name)] if name else []) + [_describe(t)]
        if t._grad is not None:   # not .grad, which warns for a non-leaf tensor
            lines.append(f"|grad| {_norm(t._grad):.4g}")
        return lines

    def add(self, t, fn_group, tensor_group, root):
        fn = t._ctx
        if fn is None:
            kind = "const" if not t.requires_grad else ("param" if self.name(t) else "leaf")
            self.node_of[id(t)] = self._new("t", kind, self._tensor_lines(t), root=root,
                                            group=tensor_group.get(id(t)))
            return
        group = fn_group.get(id(fn))
        if fn.inputs is None:
            lines = [fn.name, "(graph freed by backward)"]
        else:
            lines = [fn.name] + ([] if self.intermediates else self._tensor_lines(t))
        fid = self._new("f", "op", lines, group=group, root=root and not self.intermediates,
                        op=fn.name)
        for x in fn.inputs or ():
            self.edges.append((self.node_of[id(x)], fid, x))
        self.node_of[id(t)] = fid
        if self.intermediates:
            tid = self._new("t", "tensor", self._tensor_lines(t), group=group, root=root)
            self.edges.append((fid, tid, t))
            self.node_of[id(t)] = tid


def _merge_groups(nodes, edges, titles):
    """Replace the nodes of each group by one node listing its ops and parameters."""
    gid = {g: f"g{i}" for i, g in enumerate(titles)}
    members = {}
    for n in nodes.values():
        if n.group in gid:
            members.setdefault(n.group, []).append(n)
    merged = {}
    for n in nodes.values():
        g = n.group if n.group in gid else None
        if g is None:
            merged[n.id] = n
        elif gid[g] not in merged:
            merged[gid[g]] = _Node(gid[g], "layer", _layer_lines(g, titles[g], members[g]),
                                   root=any(m.root for m in members[g]))
    rep = {n.id: gid[n.group] for n in nodes.values() if n.group in gid}
    out, seen = [], set()
    for src, dst, t in edges:
        src, dst = rep.get(src, src), rep.get(dst, dst)
        if src == dst:
            continue  # inside one layer
        if src.startswith("g") or dst.startswith("g"):
            key = (src, dst, id(t))
            if key in seen:
                continue  # a tensor used by several ops of a layer: one arrow
            seen.add(key)
        out.append((src, dst, t))
    return merged, out


def _layer_lines(group, title, members):
    ops = [m.op for m in members if m.op is not None]
    distinct = list(dict.fromkeys(ops))
    shown = ", ".join(distinct[:4]) + (", ..." if len(distinct) > 4 else "")
    lines = [title, f"{len(ops)} op{'s' * (len(ops) != 1)}: {shown}" if ops else "no ops"]
    for m in members:
        if m.op is None and m.kind in ("param", "leaf"):
            name, rest = m.lines[0], m.lines[1:]
            if name.startswith(f"{group}."):
                name = name[len(group) + 1:]
            lines.append(" ".join([name] + rest))
    return lines


# ---- DOT text --------------------------------------------------------------------
def _to_dot(nodes, edges, clusters):
    out = ["digraph computation {",
           '  graph [rankdir=TB, fontname="Helvetica", fontsize=11];',
           '  node [fontname="Helvetica", fontsize=10];',
           '  edge [color="#555555", arrowsize=0.7, fontname="Helvetica", fontsize=9];']

    def node_stmt(n, indent="  "):
        attrs = {"label": "\n".join(n.lines), **_STYLE[n.kind]}
        if n.root:
            attrs["peripheries"] = 2
        return indent + n.id + " " + _attrs(attrs) + ";"

    grouped = {}
    for n in nodes.values():
        if n.group in clusters:
            grouped.setdefault(n.group, []).append(n)
        else:
            out.append(node_stmt(n))
    for i, (g, members) in enumerate(grouped.items()):
        out.append(f"  subgraph cluster_{i} {{")
        out.append("    graph " + _attrs({"label": clusters[g], "style": "rounded,filled",
                                          "fillcolor": "#f3f8fd", "color": "#6fa8dc"}) + ";")
        out.extend(node_stmt(n, "    ") for n in members)
        out.append("  }")
    for src, dst, t in edges:
        label = {"label": _shape(t.shape)} if src.startswith("g") else {}
        out.append(f"  {src} -> {dst}" + (" " + _attrs(label) if label else "") + ";")
    out.append("}")
    return "\n".join(out) + "\n"


def _attrs(attrs):
    return "[" + ", ".join(f"{k}={_quote(v)}" for k, v in attrs.items()) + "]"


def _quote(value):
    """A DOT string: quotes and backslashes escaped, newlines as Graphviz's \\n."""
    s = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return '"' + s.replace("\n", "\\n") + '"'


def _shape(shape):
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def _describe(t):
    return f"{_shape(t.shape)} {t.dtype}"


def _name_map(names):
    """``{tensor: name}`` or ``{name: tensor}`` -> ``{id(tensor): name}``."""
    return {id(k): str(v) for k, v in tensor_name_pairs(names, "graph")}


# ---- grouping ops into layers ---------------------------------------------------------
def _grouping(collapse, order):
    """``(fn_group, tensor_group, titles, param_names)`` for a ``collapse`` argument.

    ``fn_group`` maps ``id(function)`` and ``tensor_group`` ``id(leaf)`` to a
    group key; ``titles`` maps each key (in drawing order) to its caption;
    ``param_names`` labels the parameters of a model.
    """
    if collapse is None:
        return {}, {}, {}, {}
    if isinstance(collapse, record_modules):
        return collapse.grouping(order)
    if isinstance(collapse, Mapping):
        fn_group, tensor_group = {}, {}
        for key, g in collapse.items():
            if isinstance(key, Function):
                fn_group[id(key)] = str(g)
            elif isinstance(key, Tensor):
                tensor_group[id(key)] = str(g)
                if key._ctx is not None:
                    fn_group[id(key._ctx)] = str(g)
            else:
                raise TypeError(f"collapse mapping keys must be Tensors or Functions, "
                                f"got {type(key).__name__}")
        return fn_group, tensor_group, _titles_in_order(order, fn_group, tensor_group), {}
    if hasattr(collapse, "named_parameters"):
        return _group_by_parameters(collapse, order)
    raise TypeError(f"collapse must be None, a record_modules recording, a model with "
                    f"named_parameters(), or a mapping; got {type(collapse).__name__}")


def _titles_in_order(order, fn_group, tensor_group, captions=None):
    """Group keys in the order the graph first meets them -> caption."""
    titles = {}
    for t in order:
        g = fn_group.get(id(t._ctx)) if t._ctx is not None else tensor_group.get(id(t))
        if g is not None and g not in titles:
            titles[g] = (captions or {}).get(g, g)
    return titles


def _module_captions(model):
    """``{path: "path (ClassName)"}`` from ``named_modules()`` when the model has it."""
    if not hasattr(model, "named_modules"):
        return {}
    return {p: f"{p} ({type(m).__name__})" for p, m in model.named_modules() if p}


def _group_by_parameters(model, order):
    """The parameter heuristic: see the module docstring."""
    module_of, param_names = {}, {}
    for name, p in model.named_parameters():
        param_names[id(p)] = name
        if "." in name:
            module_of[id(p)] = name.rpartition(".")[0]
    fn_group = {}
    for t in order:  # an op that consumes a parameter belongs to its module
        fn = t._ctx
        if fn is not None and fn.inputs and id(fn) not in fn_group:
            owner = next((module_of[id(x)] for x in fn.inputs if id(x) in module_of), None)
            if owner is not None:
                fn_group[id(fn)] = owner
    for g in list(dict.fromkeys(fn_group.values())):
        seeds = {f for f, owner in fn_group.items() if owner == g}
        for f in _between(seeds, order):
            fn_group.setdefault(f, g)
    tensor_group = {i: m for i, m in module_of.items()}
    titles = _titles_in_order(order, fn_group, tensor_group, _module_captions(model))
    return fn_group, tensor_group, titles, param_names


def _between(seeds, order):
    """Ids of the Functions on some path from one of ``seeds`` to another."""
    down = set(seeds)  # at or after a seed
    for t in order:
        fn = t._ctx
        if fn is not None and fn.inputs and any(
                x._ctx is not None and id(x._ctx) in down for x in fn.inputs):
            down.add(id(fn))
    up = set(seeds)    # at or before a seed
    for t in reversed(order):
        fn = t._ctx
        if fn is not None and id(fn) in up and fn.inputs:
            up.update(id(x._ctx) for x in fn.inputs if x._ctx is not None)
    return down & up


class record_modules:
    """Record which module ran each op of a forward pass, for ``graph(collapse=...)``.

    ::

        with tg.viz.record_modules(model) as rec:
            loss = loss_fn(model(x), y)
        tg.viz.graph(loss, collapse=rec).save("model.svg")

    Inside the block every sub-module's ``forward`` is wrapped (on the
    instance; undone on exit) to note the tensors it received and returned,
    in ``rec.calls`` as ``(path, module, inputs, outputs)`` in the order the
    calls finished.  An op belongs to the innermost module whose forward
    computed it: walking back from a module's outputs, every op met before
    reaching its inputs is its own, unless a module nested in it (which
    finished earlier) claimed it.  ``depth`` records only modules at most
    that deep (1: the model's direct children), for coarser boxes.

    Needs ``named_modules()`` (or ``modules()``) on the model and a
    ``forward`` method on each module.  The recording keeps the recorded
    tensors, and so their graph, alive while it exists.
    """

    def __init__(self, model, depth=None):
        self.model = model
        self.modules = [(p, m) for p, m in _named_modules(model)
                        if p and (depth is None or p.count(".") < depth)]
        self.calls = []
        self._undo = []

    def __enter__(self):
        seen = set()
        for path, module in self.modules:
            if id(module) in seen or not callable(getattr(module, "forward", None)):
                continue
            seen.add(id(module))
            own = vars(module)
            previous = own.get("forward")
            own["forward"] = self._wrap(path, module, module.forward)
            self._undo.append((own, previous))
        return self

    def __exit__(self, *exc):
        for own, previous in reversed(self._undo):
            if previous is None:
                del own["forward"]
            else:
                own["forward"] = previous
        self._undo.clear()

    def _wrap(self, path, module, forward):
        def recorded_forward(*args, **kwargs):
            out = forward(*args, **kwargs)
            self.calls.append((path, module, list(_tensors_in((args, kwargs))),
                               list(_tensors_in(out))))
            return out
        return recorded_forward

    def owners(self):
        """``({id(function): path}, {id(constant): path})``: what each module computed.

        The constants are the leaves that need no gradient met inside a
        module's region without being its inputs: made by its forward
        (a dropout mask) or kept on it (running statistics).
        """
        fn_owner, const_owner = {}, {}
        for path, _, inputs, outputs in self.calls:  # inner modules finish first
            stop = {id(t) for t in inputs}
            stack, seen = list(outputs), set()
            while stack:
                t = stack.pop()
                if id(t) in stop or id(t) in seen:
                    continue
                seen.add(id(t))
                fn = t._ctx
                if fn is None:
                    if not t.requires_grad:
                        const_owner.setdefault(id(t), path)
                    continue
                if not fn.inputs:
                    continue
                mine = fn_owner.setdefault(id(fn), path)
                if mine == path or mine.startswith(path + "."):
                    stack.extend(fn.inputs)
                # else: another module's op, made before this call; stop here
        return fn_owner, const_owner

    def grouping(self, order):
        fn_group, tensor_group = self.owners()
        recorded = {path for path, *_ in self.calls}
        param_names = {}
        if hasattr(self.model, "named_parameters"):
            for name, p in self.model.named_parameters():
                param_names[id(p)] = name
                owner = name.rpartition(".")[0]
                while owner and owner not in recorded:  # nearest recorded ancestor
                    owner = owner.rpartition(".")[0]
                if owner:
                    tensor_group[id(p)] = owner
        captions = {path: f"{path} ({type(m).__name__})" for path, m, *_ in self.calls}
        titles = _titles_in_order(order, fn_group, tensor_group, captions)
        return fn_group, tensor_group, titles, param_names

    def outputs(self, path):
        """The outputs of every recorded call of the module at ``path``."""
        return [outs for p, _, _, outs in self.calls if p == path]


def _named_modules(model):
    if hasattr(model, "named_modules"):
        return list(model.named_modules())
    if hasattr(model, "modules"):
        mods = list(model.modules())
        return [("", mods[0])] + [(f"{type(m).__name__}{i}", m) for i, m in enumerate(mods[1:], 1)]
    raise TypeError(f"record_modules needs a model with named_modules() or modules(), "
                    f"got {type(model).__name__}")


def _tensors_in(obj):
    """The Tensors inside nested tuples, lists and dicts."""
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            yield from _tensors_in(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors_in(item)
