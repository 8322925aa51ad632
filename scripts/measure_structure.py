"""Print the structure measures of issue 29 for ``helpers/`` (run from the repository root).

    python scripts/measure_structure.py [--names]

- lines and files: every ``helpers/**/*.py`` (as ``find helpers -name '*.py' | xargs cat | wc -l``);
- exported names: the sum of the ``__all__`` lengths of ``helpers/**/__init__.py``, and how many of them are used
  outside their own package only by tests or benchmarks, or nowhere (a word match in the other packages,
  notebooks/src, scripts, tests and benchmarks; ``--names`` lists them);
- hand-written CLI lines: the source lines of hand-written argparse calls (``ArgumentParser``, ``add_argument``,
  ``add_parser``, ``add_subparsers``, ``add_mutually_exclusive_group``, ``add_argument_group``, ``set_defaults``)
  outside ``util/params.py`` (which generates the flags from the options dataclasses); and, beside it, the modules
  named ``cli.py`` / ``*_cli.py`` and the command modules (a module-level ``OPTIONS``) with their lines;
- places that spell ``.partial``: string literals (not docstrings) that contain ``.partial``;
- "Plan" names: classes whose name contains ``Plan``, functions whose name contains ``plan``;
- module-level assignments of the same upper-case name in more than one module (``OUTTYPES`` and the like).
"""
from __future__ import annotations

import ast
import re
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "helpers"


ARGPARSE = {"ArgumentParser", "add_argument", "add_parser", "add_subparsers", "add_mutually_exclusive_group",
            "add_argument_group", "set_defaults"}


def _modules() -> list[Path]:
    return sorted(PKG.rglob("*.py"))


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _exports() -> dict[str, list[str]]:
    out = {}
    for init in sorted(PKG.rglob("__init__.py")):
        for node in ast.parse(init.read_text()).body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets):
                out[init.parent.relative_to(ROOT).as_posix().replace("/", ".")] = list(ast.literal_eval(node.value))
    return out


def _texts(paths: list[Path]) -> dict[Path, str]:
    return {p: p.read_text(errors="replace") for p in paths}


def _usage(exports: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    """(names used only by tests/benchmarks outside their package, names used nowhere outside it)."""
    code = _texts([p for p in ROOT.glob("helpers/**/*.py")] + list(ROOT.glob("notebooks/src/*.py"))
                  + list(ROOT.glob("scripts/*.py")))
    tests = _texts(list(ROOT.glob("tests/*.py")) + list(ROOT.glob("benchmarks/*.py")))
    only_tests, unused = [], []
    for pkg, names in exports.items():
        own = ROOT / pkg.replace(".", "/")
        for name in names:
            word = re.compile(rf"\b{re.escape(name)}\b")
            in_code = any(word.search(t) for p, t in code.items() if own not in p.parents
                          and p.name != "measure_structure.py")
            if in_code:
                continue
            (only_tests if any(word.search(t) for t in tests.values()) else unused).append(f"{pkg}.{name}")
    return only_tests, unused


def measures() -> dict[str, object]:
    mods = _modules()
    lines = sum(len(p.read_text().splitlines()) for p in mods)
    cli = [p for p in mods if p.name == "cli.py" or p.name.endswith("_cli.py")]
    commands = [p for p in mods if re.search(r"^OPTIONS\b", p.read_text(), re.M)]
    argparse_lines: set[tuple[str, int]] = set()
    partial, plan_classes, plan_functions = [], [], []
    constants: dict[str, list[str]] = defaultdict(list)
    for p in mods:
        tree = ast.parse(p.read_text())
        docs = _docstrings(tree)
        rel = p.relative_to(ROOT).as_posix()
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs \
                    and ".partial" in node.value:
                partial.append(f"{rel}:{node.lineno}")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ARGPARSE \
                    and p.name != "params.py":
                argparse_lines.update((rel, n) for n in range(node.lineno, node.end_lineno + 1))
            elif isinstance(node, ast.ClassDef) and "Plan" in node.name:
                plan_classes.append(f"{rel}:{node.name}")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and "plan" in node.name.lower() \
                    and not node.name.startswith("_"):
                plan_functions.append(f"{rel}:{node.name}")
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
                if isinstance(node, ast.AnnAssign) and node.value is not None else []
            for t in targets:
                if isinstance(t, ast.Name) and t.id.isupper() and len(t.id) > 3 and t.id != "OPTIONS":  # protocol
                    constants[t.id].append(rel)
    exports = _exports()
    only_tests, unused = _usage(exports)
    return {
        "lines": lines,
        "files": len(mods),
        "exported names": sum(len(v) for v in exports.values()),
        "exported, used outside their package only by tests/benchmarks": only_tests,
        "exported, used nowhere outside their package": unused,
        "hand-written CLI lines": len(argparse_lines),
        "cli.py modules (lines)": f"{len(cli)} ({sum(len(p.read_text().splitlines()) for p in cli)})",
        "command modules with OPTIONS (lines)": f"{len(commands)} ({sum(len(p.read_text().splitlines()) for p in commands)})",
        "places that spell .partial": partial,
        "classes named *Plan*": plan_classes,
        "public functions named *plan*": plan_functions,
        "upper-case names assigned in several modules": {k: v for k, v in sorted(constants.items()) if len(v) > 1},
    }


def main(argv: list[str]) -> int:
    show = "--names" in argv
    for key, value in measures().items():
        if isinstance(value, (list, dict)):
            print(f"{key}: {len(value)}")
            if show or key in ("places that spell .partial", "classes named *Plan*",
                               "upper-case names assigned in several modules"):
                for item in (value.items() if isinstance(value, dict) else value):
                    print(f"    {item[0]}: {', '.join(item[1])}" if isinstance(item, tuple) else f"    {item}")
        else:
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
