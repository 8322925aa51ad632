"""The package's architecture, checked statically: layers that only point down, public names across packages,
and notebook imports that resolve.

Units are the top-level modules and sub-packages of ``helpers`` (``util``, ``catalog``, ``gguf``, ``merge``...).
Every import counts, inside functions too; only ``if TYPE_CHECKING:`` blocks are left out.
"""
from __future__ import annotations

import ast
import importlib
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "helpers"

# Lower layers first. A unit may import from its own layer's units only if that makes no cycle, and from lower
# layers freely; never from a higher layer. docs/ARCHITECTURE.md shows the same picture.
LAYERS = [
    ["util", "disk"],
    ["env", "device", "catalog"],
    ["hub", "tokens"],
    ["checkpoint", "publish"],
    ["gguf"],
    ["merge", "chat"],
    ["train", "evaluate", "imatrix"],
    ["demo", "colab"],
    ["stages"],
    ["pipeline"],
    ["__main__", "__init__"],
]
LAYER_OF = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def _unit(module: str) -> str | None:
    """``helpers.gguf.sink`` -> ``gguf``; ``helpers`` -> ``__init__``; other packages -> None."""
    parts = module.split(".")
    if parts[0] != "helpers":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """Every ``(absolute module, imported names, line)`` of a source file, TYPE_CHECKING blocks left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, list[str], int]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.append((alias.name, [], child.lineno))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                names = [a.name for a in child.names]
                if not child.module and child.level:  # `from . import x`: x may be a module of the package
                    for n in names:
                        found.append((f"{target}.{n}", [], child.lineno))
                else:
                    found.append((target, names, child.lineno))
            visit(child)

    visit(tree)
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


def _edges() -> list[tuple[str, str, str, int]]:
    """(from unit, to unit, file, line) for every import between two different units."""
    edges = []
    for path in SOURCES:
        src = _unit(_module_name(path))
        for target, _, line in _imports(path):
            dst = _unit(target)
            if dst is not None and dst != src:
                edges.append((src, dst, str(path.relative_to(ROOT)), line))
    return edges


def test_every_unit_has_a_layer():
    units = {_unit(_module_name(p)) for p in SOURCES}
    assert units - set(LAYER_OF) == set(), "add new modules / sub-packages to LAYERS (and docs/ARCHITECTURE.md)"


def test_imports_only_point_down():
    upward = [f"{f}:{line}: {src} (layer {LAYER_OF[src]}) imports {dst} (layer {LAYER_OF[dst]})"
              for src, dst, f, line in _edges() if LAYER_OF[dst] > LAYER_OF[src]]
    assert upward == []


def test_no_import_cycle_between_units():
    graph: dict[str, set[str]] = {}
    for src, dst, _, _ in _edges():
        graph.setdefault(src, set()).add(dst)
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (``[a, b, ..., a]``), or None."""
    state: dict[str, int] = {}
    path: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := dfs(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := dfs(node)):
            return cycle
    return None


def _module_edges() -> dict[str, set[str]]:
    """Module -> the modules of its own unit it imports (``helpers.tokens.tokenizer`` -> ``helpers.tokens.files``)."""
    modules = {_module_name(p) for p in SOURCES}
    graph: dict[str, set[str]] = {}
    for path in SOURCES:
        src = _module_name(path)
        for target, names, _ in _imports(path):
            if _unit(target) != _unit(src) or target == src:
                continue
            found = {f"{target}.{n}" for n in names if f"{target}.{n}" in modules}
            found = found or ({target} if target in modules else set())
            graph.setdefault(src, set()).update(found - {src})
    return graph


def test_no_import_cycle_between_modules_of_a_unit():
    """Inside a sub-package too, imports form no loop (a module importing its package's ``__init__``, which imports
    it back, is one)."""
    assert _find_cycle(_module_edges()) is None, "import cycle: " + " -> ".join(_find_cycle(_module_edges()) or [])


def test_the_cycle_finder_finds_cycles():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": {"c"}}) is None


def test_no_private_name_crosses_a_unit():
    leaks = []
    for path in SOURCES:
        src = _unit(_module_name(path))
        for target, names, line in _imports(path):
            dst = _unit(target)
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if dst is not None and dst != src and private:
                leaks.append(f"{path.relative_to(ROOT)}:{line}: {', '.join(private)} from {target}")
    assert leaks == [], "names used by another unit must be public"


def test_layout_checks_can_fail(tmp_path):
    """The checks above see imports inside functions and skip TYPE_CHECKING blocks."""
    f = tmp_path / "helpers" / "util.py"
    f.parent.mkdir()
    f.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .merge import x\n"
                 "def g():\n    from .gguf import _private\n", encoding="utf-8")
    global ROOT
    saved = ROOT
    ROOT = tmp_path
    try:
        found = _imports(f)
    finally:
        ROOT = saved
    assert [(t, n) for t, n, _ in found] == [("typing", ["TYPE_CHECKING"]), ("helpers.gguf", ["_private"])]


# ------------------------------------------------------------------------------------------- notebooks and scripts
def _notebook_imports() -> list[tuple[str, str, list[str]]]:
    """``(where, module, names)`` of every ``from helpers... import ...`` / ``import helpers...`` in the notebooks,
    their sources, the scripts and the benchmarks."""
    found = []
    sources = [*sorted((ROOT / "notebooks" / "src").glob("*.py")), *sorted((ROOT / "scripts").glob("*.py")),
               *sorted((ROOT / "benchmarks").glob("*.py"))]
    texts = [(str(p.relative_to(ROOT)), p.read_text(encoding="utf-8")) for p in sources]
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        code = "\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!")))
        texts.append((str(nb.relative_to(ROOT)), code))
    for where, text in texts:
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "helpers":
                found.append((where, node.module, [a.name for a in node.names]))
            elif isinstance(node, ast.Import):
                found += [(where, a.name, []) for a in node.names if a.name.split(".")[0] == "helpers"]
    return found


def test_notebook_and_script_imports_resolve():
    imports = _notebook_imports()
    assert len(imports) > 20, "the scan found the notebooks' imports"
    missing = []
    for where, module, names in imports:
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            missing.append(f"{where}: {module} ({exc})")
            continue
        for name in names:
            if not hasattr(mod, name):
                try:
                    importlib.import_module(f"{module}.{name}")
                except ImportError:
                    missing.append(f"{where}: {module}.{name}")
    assert missing == []


def test_notebooks_use_public_names():
    private = [f"{where}: {module} {n}" for where, module, names in _notebook_imports() for n in names
               if n.startswith("_")]
    assert private == []


@pytest.mark.parametrize("limit", [500])
def test_no_module_over_the_size_limit(limit):
    big = {str(p.relative_to(ROOT)): n for p in SOURCES if (n := len(p.read_text(encoding="utf-8").splitlines())) > limit}
    assert big == {}


def test_no_function_over_the_length_limit():
    """Functions (and methods) stay short enough to read at once: 60 lines, docstring included."""
    long = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})")
    assert long == []


def _tracked_text_files() -> list[Path]:
    import subprocess

    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    return [ROOT / n.decode() for n in names if n and (ROOT / n.decode()).is_file()]


def _merge_markers(text: str) -> list[int]:
    return [i for i, line in enumerate(text.splitlines(), 1)
            if line.startswith(("<<<<<<< ", ">>>>>>> ")) or line == "======="]


def test_no_merge_conflict_left_in_a_tracked_file():
    """A conflict marker committed by mistake (a Makefile that no longer parses) is caught here, not by CI."""
    left = {}
    for path in _tracked_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if lines := _merge_markers(text):
            left[str(path.relative_to(ROOT))] = lines
    assert left == {}
    assert _merge_markers("a\n<<<<<<< HEAD\nb\n=======\nc\n>>>>>>> other\n") == [2, 4, 6]
