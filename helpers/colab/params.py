"""A notebook's parameters, read from its ``parameters`` cell without running anything, and ``--set`` overrides."""
from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any, Iterable

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


def _coerce(name: str, text: str, default: Any) -> Any:
    if isinstance(default, bool):
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise UserError(f"{name} is a yes/no parameter: give {name}=true or {name}=false, not {text!r}")
    if isinstance(default, (int, float)):
        try:
            return type(default)(text)
        except ValueError:
            kind = "a whole number" if isinstance(default, int) else "a number"
            raise UserError(f"{name} is {kind}: {text!r} is not one") from None
    return text


def apply_overrides(params: dict[str, Any], sets: Iterable[str]) -> dict[str, Any]:
    """``params`` with ``NAME=VALUE`` overrides, each converted to its default's type.

    Raises:
        UserError: a malformed override or a name the notebook does not have (the message lists its parameters).
    """
    out = dict(params)
    for item in sets:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise UserError(f"--set takes NAME=VALUE, not {item!r}")
        if name not in params:
            raise UserError(f"the notebook has no parameter {name}; its parameters are: {', '.join(params)}")
        out[name] = _coerce(name, value, params[name])
    return out
