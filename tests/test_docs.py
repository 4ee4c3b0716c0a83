"""The tour in docs/ runs, prints what it says it prints, and quotes the code as it is.

The chapters are tested like doctests, through their fenced code blocks:

* a ```` ```python ```` block is run.  The blocks of one file run in order in
  one namespace (as if typed into one Python session), in a temporary
  working directory;
* an ```` ```output ```` block right after a python block (nothing but blank
  lines between) is what that block prints.  Lines are compared after
  stripping trailing spaces; ``...`` matches any text (doctest's ELLIPSIS).
  A python block with no output block after it must print nothing, so
  every printed value in the docs is checked;
* a ```` ```python excerpt PATH ```` block quotes the project's source: it is
  not run, but its lines must appear, in order and consecutively, in PATH
  (relative to the repository root; indentation may differ as a whole);
* code named in the text (```` `Conv2d.backward` ````, ```` `autograd.backprop` ````,
  ```` `_correlate` ````) must exist: a ``Class.member`` of a class of the
  package, a ``module.name`` of one of its modules, a ``_private`` name
  defined in it;
* relative links and images must point at files that exist, and every
  chapter must be linked from docs/README.md;
* the DOT text of each graph picture in docs/images/ is what
  ``docs/make_images.py`` draws today (so the rendered SVG is not stale).

A failing snippet's traceback names the markdown file and line.
"""
from __future__ import annotations

import ast
import contextlib
import doctest
import importlib.util
import io
import json
import re
import textwrap
from collections import namedtuple
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
# benchmarks.md reports timings of one machine: numbers, not runnable claims.
NOT_RUN = {"benchmarks.md"}
CHAPTERS = sorted(DOCS.glob("[0-9][0-9]-*.md"))
RUN = [p for p in sorted(DOCS.glob("*.md")) if p.name not in NOT_RUN]

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>```+|~~~+)(?P<info>[^`]*)$")


Block = namedtuple("Block", "kind text line follows")
Block.__doc__ = """A fenced block: ``kind`` "python", "output", "excerpt PATH" or "other";
``line`` is the 1-based line of its first text line; ``follows`` is True when only
blank lines separate it from the block before."""


def blocks(path):
    """The fenced code blocks of a markdown file, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found, i, last_close = [], 0, None
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, info = m.group("fence"), m.group("info").split()
        follows = last_close is not None and not any(s.strip() for s in lines[last_close + 1:i])
        start = i + 1
        i = start
        while i < len(lines) and not lines[i].strip().startswith(fence):
            i += 1
        assert i < len(lines), f"{path.name}:{start}: code block never closed"
        if info[:2] == ["python", "excerpt"]:
            assert len(info) == 3, f"{path.name}:{start}: write ```python excerpt PATH"
            kind = "excerpt " + info[2]
        elif info[:1] in (["python"], ["output"]):
            kind = info[0]
        else:
            kind = "other"
        found.append(Block(kind, "\n".join(lines[start:i]) + "\n", start + 1, follows))
        last_close = i
        i += 1
    return found


def snippets(path):
    """``(code, first_line, expected_output_or_None)`` for each python block."""
    found = blocks(path)
    result = []
    for k, b in enumerate(found):
        if b.kind == "output":
            assert k > 0 and found[k - 1].kind == "python" and b.follows, \
                f"{path.name}:{b.line}: an output block must directly follow a python block"
        if b.kind != "python":
            continue
        nxt = found[k + 1] if k + 1 < len(found) else None
        want = nxt.text if nxt is not None and nxt.kind == "output" and nxt.follows else None
        result.append((b.text, b.line, want))
    return result


def _normalise(text):
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines()) + "\n"


def run_snippets(path):
    """Run the python blocks of ``path`` in one namespace; AssertionError on a mismatch."""
    namespace = {"__name__": "__docs__"}
    checker = doctest.OutputChecker()
    for code, line, want in snippets(path):
        # Pad with newlines so tracebacks point at the markdown line.
        compiled = compile("\n" * (line - 1) + code, str(path), "exec")
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            exec(compiled, namespace)
        got = _normalise(buf.getvalue()) if buf.getvalue().strip() else ""
        if want is None:
            assert got == "", (f"{path.name}:{line}: the block printed output but has no "
                               f"```output block after it:\n{got}")
            continue
        want = _normalise(want)
        assert checker.check_output(want, got, doctest.ELLIPSIS), (
            f"{path.name}:{line}: printed output differs from the docs\n"
            f"--- expected (docs) ---\n{want}--- got ---\n{got}")


def check_excerpts(path, root=ROOT):
    """Every ```python excerpt PATH block of ``path`` appears verbatim in root/PATH."""
    for kind, text, line, _ in blocks(path):
        if not kind.startswith("excerpt "):
            continue
        source = root / kind.split(" ", 1)[1]
        assert source.is_file(), f"{path.name}:{line}: no file {kind.split(' ', 1)[1]}"
        quoted = textwrap.dedent(text).strip("\n").splitlines()
        code = source.read_text(encoding="utf-8").splitlines()
        n = len(quoted)
        ok = any(textwrap.dedent("\n".join(code[i:i + n])).splitlines() == quoted
                 for i in range(len(code) - n + 1))
        assert ok, (f"{path.name}:{line}: this excerpt no longer appears verbatim in "
                    f"{kind.split(' ', 1)[1]}; update the quote (and the text around "
                    f"it):\n" + "\n".join(quoted))


_CODE_SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
_NAMED = re.compile(r"^(?:(?P<owner>[A-Za-z]\w*)\.(?P<member>\w+)|(?P<private>_[A-Za-z]\w*))"
                    r"(?:\(\))?$")


_FILE_SUFFIXES = {"py", "md", "json", "jsonl", "npz", "npy", "png", "svg", "dot", "txt"}


def _definitions(sources):
    """What ``sources`` (Python files) define: ``(names, classes, modules)`` with every
    def, class and assigned name; each class's members and bases; each module's
    top-level names (a package's under its directory's name)."""
    names, classes, modules = set(), {}, {}
    for source in sources:
        tree = ast.parse(source.read_text(encoding="utf-8"))
        module = source.parent.name if source.stem == "__init__" else source.stem
        top = modules.setdefault(module, set())
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                top.update((a.asname or a.name).split(".")[0] for a in node.names)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            if isinstance(node, ast.ClassDef):
                members, bases = classes.setdefault(node.name, (set(), set()))
                bases.update(b.id for b in node.bases if isinstance(b, ast.Name))
                members.update(_defined_in(node.body))
        top.update(_defined_in(tree.body))
    return names, classes, modules


def _defined_in(body):
    """The names the statements ``body`` define directly: defs, classes, assignments."""
    for item in body:
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield item.name
        for target in getattr(item, "targets", [getattr(item, "target", None)]):
            if isinstance(target, ast.Name):
                yield target.id


def _has_member(classes, cls, member, seen=()):
    members, bases = classes[cls]
    return member in members or any(
        _has_member(classes, b, member, seen + (cls,))
        for b in bases if b in classes and b not in seen)


def check_code_names(path, sources=None):
    """The code that the text of ``path`` names exists in ``sources`` (default: the
    package): ``Class.member``, ``module.name`` and ``_private`` spans; other spans
    (``x.grad``, expressions) are not checked."""
    if sources is None:
        sources = sorted((ROOT / "tinygrad_cnn").rglob("*.py"))
    names, classes, modules = _definitions(sources)
    text = re.sub(r"^ {0,3}```.*?^ {0,3}```", "", path.read_text(encoding="utf-8"),
                  flags=re.S | re.M)
    for span in _CODE_SPAN.findall(text):
        m = _NAMED.match(span.strip())
        if not m or m.group("member") in _FILE_SUFFIXES:   # autograd.py is a file
            continue
        owner, member = m.group("owner"), m.group("member")
        if m.group("private"):
            ok = m.group("private") in names
        elif owner in classes:
            ok = _has_member(classes, owner, member)
        elif owner in modules:
            ok = member in modules[owner]
        else:
            continue   # a variable's attribute (x.grad, out._ctx): not a name of the code
        assert ok, f"{path.name}: `{span}` names code that does not exist (renamed or moved?)"


_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|<img [^>]*src=\"([^\"]+)\"")


def check_links(path):
    """Relative links and images of ``path`` point at files that exist."""
    text = path.read_text(encoding="utf-8")
    # Links inside code blocks are code, not links.
    text = re.sub(r"^ {0,3}```.*?^ {0,3}```", "", text, flags=re.S | re.M)
    for groups in _LINK.findall(text):
        target = groups[0] or groups[1]
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # http:, mailto:, in-page anchors
        file_part = target.split("#", 1)[0]
        assert (path.parent / file_part).exists(), f"{path.name}: broken link {target}"


@pytest.mark.parametrize("path", RUN, ids=lambda p: p.name)
def test_snippets_run_and_print_what_the_docs_show(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_snippets(path)


@pytest.mark.parametrize("path", sorted(DOCS.glob("*.md")), ids=lambda p: p.name)
def test_excerpts_quote_the_current_source(path):
    check_excerpts(path)


@pytest.mark.parametrize("path", sorted(DOCS.glob("*.md")), ids=lambda p: p.name)
def test_code_named_in_the_text_exists(path):
    check_code_names(path)


@pytest.mark.parametrize("path", sorted(DOCS.glob("*.md")), ids=lambda p: p.name)
def test_relative_links_point_at_existing_files(path):
    check_links(path)


# A chapter in miniature, then the same with one thing wrong: the checks must notice.
_GOOD = """Text.

```python
x = 2 + 3
print(x, "apples")
```

```output
5 apples
```

```python
y = x * 10                    # the namespace carries over
print([y] * 20)
```

```output
[50, 50, ...]
```

```python
z = y + 1                     # prints nothing, so needs no output block
```

```python excerpt code.py
def f(a):
    return a + 1
```

![picture](pic.png) and <img src="pic.png" width="10">

`f` adds one, `code.f` too, `Box.open` opens, `Lid.open` is inherited, `_helper` helps;
`x.grad` and `y + 1` are not names of the code.
"""

_BROKEN = {
    "wrong output": ("5 apples", "6 apples"),
    "unshown print": ("z = y + 1  ", "print(y)\nz = y + 1  "),
    "error in a block": ("y = x * 10  ", "y = z * 10  "),
    "stale excerpt": ("return a + 1", "return a + 2"),
    "broken link": ("![picture](pic.png)", "![picture](gone.png)"),
    "broken img": ('src="pic.png"', 'src="gone.png"'),
    "renamed function": ("`code.f` too", "`code.g` too"),
    "renamed method": ("`Box.open` opens", "`Box.shut` opens"),
    "renamed private helper": ("`_helper` helps", "`_helpers` helps"),
    "orphan output block": ("```python\nx = 2 + 3\nprint(x, \"apples\")\n```\n", ""),
}


def _check_all(path):
    run_snippets(path)
    check_excerpts(path, root=path.parent)
    check_code_names(path, [path.parent / "code.py"])
    check_links(path)


@pytest.mark.parametrize("broken", [None] + list(_BROKEN))
def test_the_checks_catch_a_rotten_chapter(broken, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "code.py").write_text("def f(a):\n    return a + 1\n\n\n"
                                      "class Box:\n    def open(self):\n        pass\n\n\n"
                                      "class Lid(Box):\n    pass\n\n\n"
                                      "def _helper():\n    pass\n")
    (tmp_path / "pic.png").write_bytes(b"")
    text = _GOOD
    if broken is not None:
        old, new = _BROKEN[broken]
        assert old in text
        text = text.replace(old, new, 1)
    md = tmp_path / "chapter.md"
    md.write_text(text)
    if broken is None:
        _check_all(md)
    else:
        with pytest.raises((AssertionError, NameError)):
            _check_all(md)


def test_autograd_py_reads_in_the_order_chapter_1_gives(source=None):
    """Chapter 1 (and the README) send the reader to autograd.py first and say what it
    holds in order: Function, then topological_order and backprop, with the grad-mode
    switches last, out of the way."""
    if source is None:
        source = (ROOT / "tinygrad_cnn" / "autograd.py").read_text(encoding="utf-8")
    order = [n.name for n in ast.parse(source).body
             if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert order[0] == "Function", f"autograd.py opens with {order[0]}, not Function"
    engine = [order.index(n) for n in ("Function", "topological_order", "backprop")]
    assert engine == sorted(engine), order
    switches = [order.index(n) for n in ("is_grad_enabled", "set_grad_enabled", "no_grad",
                                         "enable_grad")]
    assert min(switches) > order.index("_conform"), order


def test_readme_links_every_chapter():
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    missing = [p.name for p in CHAPTERS if f"({p.name}" not in index]
    assert not missing, f"docs/README.md does not link {missing}"


def _make_images():
    spec = importlib.util.spec_from_file_location("docs_make_images", DOCS / "make_images.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_graph_pictures_are_up_to_date():
    make_images = _make_images()
    for name, g in make_images.graphs().items():
        dot = DOCS / "images" / f"{name}.dot"
        assert dot.is_file(), f"docs/images/{name}.dot is missing; run python docs/make_images.py"
        assert dot.read_text(encoding="utf-8") == g.source, (
            f"docs/images/{name}.dot differs from what tg.viz.graph draws now; run "
            f"python docs/make_images.py --graphs and commit docs/images/")
        assert (DOCS / "images" / f"{name}.svg").is_file(), f"docs/images/{name}.svg is missing"


def test_numbers_quoted_from_the_training_run_match_its_metrics():
    """Chapter 3 quotes the run in docs/images/metrics-cnn-digits.jsonl (whether that run
    is still what training gives today is checked by the slow test of the default command
    in tests/test_cli.py)."""
    rows = [json.loads(line) for line in
            (DOCS / "images" / "metrics-cnn-digits.jsonl").read_text().splitlines()]
    text = " ".join((DOCS / "03-weight-sharing.md").read_text(encoding="utf-8").split())
    assert len(rows) == 15 and [r["epoch"] for r in rows] == list(range(1, 16))
    assert f"15 epochs, seed 0; {rows[-1]['test_acc'] * 100:.2f} % test accuracy" in text
    under = next(r["epoch"] for r in rows if r["train_loss"] < 0.1)
    acc = rows[-1]["test_acc"] * 100
    assert f"loss falls from {rows[0]['train_loss']:.1f} to under 0.1 in {under} epochs; test " \
           f"accuracy levels at {acc:.0f} %" in text
