"""A notebook's parameters and setup, read from its cells without running anything (the checks that the
notebooks say what their stages say)."""
from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

from ..util import UserError, read_utf8


def _cells(path: Path) -> list[dict]:
    try:
        return json.loads(read_utf8(path, what="a notebook"))["cells"]
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path} is not a Jupyter notebook ({exc})") from None


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def assignments(source: str) -> dict[str, Any]:
    """The top-level ``NAME = literal`` assignments of ``source`` (upper-case names only, in order); what is set
    inside ``if`` blocks (the notebooks' smoke-mode overrides) is left out."""
    out: dict[str, Any] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name.isupper():
                try:
                    out[name] = ast.literal_eval(node.value)
                except ValueError:
                    continue
    return out


def notebook_params(path: str | Path) -> dict[str, Any]:
    """The defaults of a notebook's cell tagged ``parameters`` (papermill's convention).

    Raises:
        UserError: not a notebook, or no cell tagged ``parameters``.
    """
    path = Path(path)
    for cell in _cells(path):
        if cell.get("cell_type") == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            return assignments(_source(cell))
    raise UserError(f"{path} has no code cell tagged 'parameters'")


def notebook_setup(path: str | Path) -> frozenset[str]:
    """What the notebook's setup cell installs on Colab: ``llama_cpp`` (llama-cpp-python), ``gpu`` (its CUDA wheel
    when one fits), ``server`` (its ``[server]`` extra)."""
    for cell in _cells(Path(path)):
        src = _source(cell)
        if cell.get("cell_type") == "code" and "colab_install_llama_cpp(" in src:
            return frozenset({"llama_cpp"} | {k for k in ("gpu", "server") if f"{k}=True" in src})
    return frozenset()
