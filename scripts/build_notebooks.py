#!/usr/bin/env python3
"""Build ``notebooks/*.ipynb`` from their readable sources in ``notebooks/src/*.py``.

Sources use the percent format (``# %%`` code cells, ``# %% [markdown]`` text cells, optional
``tags=[...]``). The builder adds what every notebook shares, so the conventions live in one place:

* ``{{BADGE}}`` in a markdown cell becomes the Open-in-Colab badge for that notebook's path;
* ``{{NEEDS}}`` becomes the notebook's needs table, planned by its stage on free Colab
  (:mod:`helpers.stages.header`): the header says what the check cell says, and ``--check`` fails when it drifts;
* a code cell whose first line is ``# %% setup`` becomes the standard Setup cell: on Colab it installs this
  repository (and llama.cpp, as the notebook's stage's ``SETUP`` says); elsewhere it only checks that ``helpers``
  is importable;
* a code cell whose first line is ``# %% parameters`` becomes the parameters form, rendered from the notebook's
  stage (:data:`helpers.stages.STAGES`: one ``NAME = default  # @param ...`` per field, its help above it), tagged
  ``parameters``. It holds the users' form only: smoke mode's stand-in settings are the stage's
  (:mod:`helpers.stages.smoke`), applied to the entries left at their defaults.

Outputs are never written, so the notebooks are committed clean.

    python scripts/build_notebooks.py          # rebuild
    python scripts/build_notebooks.py --check  # exit 1 when a notebook is out of date
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "notebooks" / "src"
OUT = ROOT / "notebooks"
# Change this in a fork: badges and the Colab install point here.
GITHUB_REPO = "cllama-notebooks/chinese-llama-notebooks"


def revision() -> str:
    """The release tag the notebooks and the package they install come from (``v`` + the package version):
    a notebook opened from a tag installs exactly the code it was written for, never a later ``main``."""
    sys.path.insert(0, str(ROOT))
    import helpers

    return f"v{helpers.__version__}"

SETUP = '''# @title Setup: on Colab, install this project{extra_title}; elsewhere use your `pip install -e .`
import subprocess
import sys

if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "chinese-llama-notebooks-helpers[colab] @ git+https://github.com/{repo}@{branch}"],
                   check=True)
{extra}
import helpers

print("helpers", helpers.__version__)'''

LLAMA_CPP = '''    from helpers.gguf import colab_install_llama_cpp

    colab_install_llama_cpp({args})  # {comment}'''
LLAMA_CPP_VARIANTS = {  # what a stage's SETUP asks for -> the install call and its comment
    frozenset({"llama_cpp"}): ("", "the prebuilt CPU wheel: conversion and quantization need no GPU"),
    frozenset({"llama_cpp", "gpu"}): ("gpu=True", "a CUDA wheel when one fits this runtime (the importance matrix runs "
                                      "there), else the CPU wheel, which is all a merge needs; never a slow build"),
    frozenset({"llama_cpp", "gpu", "server"}): ("gpu=True, server=True", "a CUDA wheel when one fits this runtime, "
                                                "else the CPU wheel; never a slow build; with the OpenAI-compatible "
                                                "server's modules"),
}


def badge(name: str) -> str:
    url = f"https://colab.research.google.com/github/{GITHUB_REPO}/blob/{revision()}/notebooks/{name}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"


def stage_of(name: str):
    """The stage class of the notebook ``name`` (``01_merge_lora.ipynb``)."""
    sys.path.insert(0, str(ROOT))
    from helpers.stages import STAGES

    return STAGES[name.removesuffix(".ipynb")]


def parse(text: str) -> list[dict]:
    """Split a percent-format source into cells: dicts with kind, tags, source and the special cell kinds."""
    cells: list[dict] = []
    for block in re.split(r"^(?=# %%)", text, flags=re.M):
        if not block.strip():
            continue
        header, _, body = block.partition("\n")
        kind = "markdown" if "[markdown]" in header else "code"
        tags = re.findall(r'"([^"]+)"', header.split("tags=", 1)[1]) if "tags=" in header else []
        body = body.strip("\n")
        if kind == "markdown":
            body = "\n".join(re.sub(r"^# ?", "", line) for line in body.splitlines())
        cells.append({"kind": kind, "tags": tags, "source": body, "setup": header.startswith("# %% setup"),
                      "parameters": header.startswith("# %% parameters")})
    return cells


def literal(value: object) -> str:
    """A default as Python source (strings in double quotes, Chinese kept readable)."""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)


def parameters_cell(name: str, tail: str) -> str:
    """The form of notebook ``name``'s stage (a source's own lines in that cell are refused: the form is the
    stage's)."""
    if tail.strip():
        raise SystemExit(f"{name}: the parameters cell is the stage's form only; move {tail.splitlines()[0]!r} into "
                         "the stage (smoke settings: its smoke_values)")
    lines: list[str] = []
    for f in stage_of(name).form_fields():
        lines += [f"# {f.entry.help}", f"{f.name} = {literal(f.default)}  {f.annotation()}"]
    return "\n".join(lines)


def needs_table(name: str) -> str:
    """The header's needs table of notebook ``name``, from its stage's plan (:func:`helpers.stages.header.needs_table`)."""
    from helpers.stages.header import needs_table as table

    return table(stage_of(name))


def setup_cell(name: str) -> str:
    """The Setup cell for what notebook ``name``'s stage installs."""
    wanted = stage_of(name).SETUP
    variant = LLAMA_CPP_VARIANTS.get(frozenset(wanted)) if wanted else None
    if wanted and variant is None:
        raise SystemExit(f"{name}: no setup cell for SETUP={sorted(wanted)}; add it to LLAMA_CPP_VARIANTS")
    extra = LLAMA_CPP.format(args=variant[0], comment=variant[1]) if variant else ""
    src = SETUP.format(repo=GITHUB_REPO, branch=revision(), extra=extra, extra_title=" and llama.cpp" if extra else "")
    return src.replace("\n\nimport helpers", "\nimport helpers") if not extra else src


def render_cell(cell: dict, name: str) -> dict:
    src = cell["source"]
    if cell["setup"]:
        src = setup_cell(name)
    if cell["parameters"]:
        src = parameters_cell(name, src)
        cell = {**cell, "tags": sorted({*cell["tags"], "parameters"})}
    src = src.replace("{{BADGE}}", badge(name))
    if "{{NEEDS}}" in src:
        src = src.replace("{{NEEDS}}", needs_table(name))
    meta: dict = {}
    if cell["tags"]:
        meta["tags"] = cell["tags"]
    if cell["kind"] == "code" and src.lstrip().startswith("# @title"):
        meta["cellView"] = "form"
    out = {"cell_type": cell["kind"], "metadata": meta, "source": src.splitlines(keepends=True)}
    if cell["kind"] == "code":
        out.update(execution_count=None, outputs=[])
    return out


def build(src_path: Path) -> str:
    name = src_path.stem + ".ipynb"
    cells = [render_cell(c, name) for c in parse(src_path.read_text(encoding="utf-8"))]
    for i, c in enumerate(cells):
        c["id"] = f"{src_path.stem[:2]}-{i:02d}"
    nb = {
        "cells": cells,
        "metadata": {
            **({"accelerator": "GPU"} if stage_of(name).GPU else {}),
            "colab": {**({"gpuType": "T4"} if stage_of(name).GPU else {}), "provenance": [], "name": name},
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    return json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a notebook differs from its source")
    args = parser.parse_args(argv)
    stale = []
    for src in sorted(SRC.glob("*.py")):
        target = OUT / (src.stem + ".ipynb")
        text = build(src)
        if target.exists() and target.read_text(encoding="utf-8") == text:
            continue
        stale.append(target.name)
        if not args.check:
            target.write_text(text, encoding="utf-8")
    if args.check and stale:
        print("out of date (run python scripts/build_notebooks.py):", ", ".join(stale))
        return 1
    if not args.check:
        print("rebuilt:", ", ".join(stale) or "nothing (all up to date)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
