"""The house rules of issues 15 and 24, checked over ``vqlab/`` with ``ast`` so that they stay true.

- every top-level module or package has a floor (``FLOORS``, the map of ``ARCHITECTURE.md``),
  and no module imports from a floor above its own (at module level or inside a function);
- no import cycle between modules (imports at any level, ``TYPE_CHECKING`` blocks aside);
- no module over ``MAX_MODULE_LINES`` lines;
- no function over ``MAX_FUNCTION_LINES`` lines (decorators excluded, docstring included).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "vqlab"
TESTS = Path(__file__).resolve().parent
# test folders that cut across the package: 2-process (gloo) runs of the engine and of the
# quantizers, which share their spawned workers
CROSS_CUTTING = {"distributed"}
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 120

# The floors of ARCHITECTURE.md, bottom up: a module imports only from its own floor or below.
FLOORS = {
    # 1. leaves
    "errors": 1,
    "validation": 1,
    "memory": 1,
    "registry": 1,
    "outdir": 1,
    "devices": 1,
    # 2. components: know nothing of training, run folders or reports
    "config": 2,
    "data": 2,
    "quantizers": 2,
    "losses": 2,
    "diagnostics": 2,
    "models": 2,
    "priors": 2,
    "evaluation": 2,
    # 3. the engine, and the tokenizer for inference
    "training": 3,
    "tokenizer": 3,
    # 4. run-level code and reporting
    "runs": 4,
    "reports": 4,
    # 5. replications
    "experiments": 5,
    # 6. entry points: the CLI, and the package's public face (``from vqlab import train``)
    "cli": 6,
    "__main__": 6,
    "": 6,
}


def _modules() -> dict[str, Path]:
    """Dotted name -> path of every module of the package (a package is its ``__init__``)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _floor(module: str) -> tuple[str, int | None]:
    """(top-level name, floor) of a dotted module name (``""`` is the package itself)."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    return top, FLOORS.get(top)


def _upward(graph: dict[str, set[str]]) -> list[str]:
    """Every import from a lower floor to a higher one, as ``a (floor) -> b (floor)``."""
    out = []
    for module, targets in sorted(graph.items()):
        _, low = _floor(module)
        for target in sorted(targets):
            _, high = _floor(target)
            if low is not None and high is not None and high > low:
                out.append(f"{module} ({low}) -> {target} ({high})")
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(tree: ast.Module, name: str, is_package: bool, modules: dict) -> set[str]:
    """The package's modules that module ``name`` imports, at any depth of its code."""
    out: set[str] = set()
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for target in targets:
            # the deepest module of the package that the dotted name starts with
            parts = target.split(".")
            for i in range(len(parts), 0, -1):
                cand = ".".join(parts[:i])
                if cand in modules:
                    if cand != name:
                        out.add(cand)
                    break
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        graph[name] = _imported(tree, name, path.name == "__init__.py", modules)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm).

    A package's ``__init__`` importing its own submodules is not a cycle by itself: the edge
    from a submodule to its parent package is ignored (importing ``a.b`` imports ``a`` anyway).
    """
    edges = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_every_top_level_package_has_a_floor():
    tops = {_floor(m)[0] for m in _modules()}
    missing = sorted(t for t in tops if t not in FLOORS)
    assert not missing, f"top-level modules without a floor in FLOORS: {missing}"
    gone = sorted(t for t in FLOORS if t not in tops)
    assert not gone, f"FLOORS names modules that do not exist: {gone}"


def test_no_import_goes_up_a_floor():
    up = _upward(_graph())
    assert not up, "imports from a lower floor to a higher one: " + "; ".join(up)


def test_the_floor_check_sees_an_upward_import_inside_a_function():
    tree = ast.parse("def f():\n    from vqlab.training.engine import train\n")
    mods = {"vqlab.quantizers.vq": 0, "vqlab.training.engine": 0}
    graph = {"vqlab.quantizers.vq": _imported(tree, "vqlab.quantizers.vq", False, mods)}
    assert _upward(graph) == ["vqlab.quantizers.vq (2) -> vqlab.training.engine (3)"]
    assert _upward({"vqlab.training.engine": {"vqlab.quantizers.vq"}}) == []


def test_tests_mirror_the_package():
    """``tests/a/b/`` tests ``vqlab/a/b/`` or ``vqlab/a/b.py``; a file at the top of ``tests/``
    is ``test_<module>*.py`` for a top-level module (``test_cli_bad_input.py``: ``cli.py``) or a
    script of ``benchmarks/`` (``test_device_check.py``), or this file, which tests the house.
    ``CROSS_CUTTING`` folders are the exception."""
    loose = []
    for path in sorted(TESTS.rglob("test_*.py")):
        rel = path.relative_to(TESTS)
        if len(rel.parts) == 1:
            name = rel.stem.removeprefix("test_")
            tops = [p.stem for p in PACKAGE.glob("*.py")] + ["house"]
            tops += [p.stem for p in (PACKAGE.parent / "benchmarks").glob("*.*")]
            if not any(name == t or name.startswith(t + "_") for t in tops):
                loose.append(str(rel))
            continue
        if rel.parts[0] in CROSS_CUTTING:
            continue
        folder = PACKAGE.joinpath(*rel.parts[:-1])
        if not (folder.is_dir() or folder.with_suffix(".py").is_file()):
            loose.append(str(rel))
    assert not loose, f"test files whose folder or name mirrors nothing in vqlab/: {loose}"


def test_architecture_names_only_what_exists_and_every_floor():
    """ARCHITECTURE.md is the map: every path it names in backticks exists, and it places every
    top-level package of ``FLOORS`` (so a new package gets a line there too)."""
    root = PACKAGE.parent
    text = (root / "ARCHITECTURE.md").read_text()
    named = re.findall(r"`((?:vqlab|tests)/[\w/.*]*)`", text)
    assert len(named) > 20
    missing = [n for n in named if not (any(root.glob(n)) if "*" in n else (root / n).exists())]
    assert not missing, f"ARCHITECTURE.md names paths that do not exist: {missing}"
    for top in FLOORS:
        path = f"vqlab/{top or '__init__'}.py"
        if top and (PACKAGE / top).is_dir():
            path = f"vqlab/{top}/"
        assert f"`{path}" in text, f"ARCHITECTURE.md does not place {path} on a floor"


def test_no_import_cycles():
    cycles = _cycles(_graph())
    assert not cycles, "modules that import each other (directly or around a loop): " + "; ".join(
        " <-> ".join(c) for c in cycles
    )


def test_no_module_is_too_long():
    long = {
        str(path.relative_to(PACKAGE.parent)): n
        for path in _modules().values()
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_is_too_long():
    long = {}
    for path in _modules().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}"] = n
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_the_checks_see_a_cycle_and_a_long_function():
    """The rules themselves: a two-module loop is a cycle, a parent package is not."""
    assert _cycles({"a.x": {"a.y"}, "a.y": {"a.x"}, "a": {"a.x"}}) == [["a.x", "a.y"]]
    assert _cycles({"a": {"a.x"}, "a.x": {"a"}}) == []
    tree = ast.parse("from .y import f\nimport a.z.w\n")
    mods = {"a": 0, "a.x": 0, "a.y": 0, "a.z": 0}
    assert _imported(tree, "a.x", False, mods) == {"a.y", "a.z"}
