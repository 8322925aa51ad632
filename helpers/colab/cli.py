"""``python -m helpers colab-check NOTEBOOK [--set NAME=VALUE]... [--colab t4|cpu] [--json]``: before any
download, what the notebook's parameters need against this runtime (or free Colab's), and whether it fits."""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from ..util import UserError
from . import check_notebook
from .params import apply_overrides, notebook_params, notebook_setup
from .runtime import Runtime

NOTEBOOK_DIRS = (Path("notebooks"), Path(__file__).resolve().parents[2] / "notebooks")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m helpers colab-check``."""
    parser.add_argument("notebook", help="a notebook file, or its name or number (01_merge_lora, 01, merge)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="NAME=VALUE",
                        help="change a parameter from the notebook's default (repeatable): --set MODEL=...")
    parser.add_argument("--colab", choices=("t4", "cpu"), help="check against free Colab's T4 or CPU runtime "
                                                               "(nothing downloaded yet) instead of this machine")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def find_notebook(ref: str) -> Path:
    """The notebook ``ref`` names: a path, or a name, number or word of one in ``./notebooks`` or the project's.

    Raises:
        UserError: none or several match.
    """
    path = Path(ref).expanduser()
    if path.is_file():
        return path
    for folder in NOTEBOOK_DIRS:
        found = sorted(p for p in folder.glob("*.ipynb") if p.stem == ref or p.stem.startswith(ref)
                       or ref.lower() in p.stem.split("_"))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise UserError(f"{ref!r} matches {', '.join(p.name for p in found)}: give one of them")
    raise UserError(f"no notebook {ref!r}: give the path of the .ipynb, or a name such as 01_merge_lora "
                    "(run from the project's folder)")


def run(args: argparse.Namespace) -> int:
    """Print the report; exit non-zero with one ``error:`` line when the notebook will not fit."""
    path = find_notebook(args.notebook)
    params = apply_overrides(notebook_params(path), args.sets)
    if args.colab:
        runtime = Runtime.free_colab(gpu=args.colab == "t4", setup=notebook_setup(path))
    else:
        runtime = Runtime.detect(params.get("OUTPUT_DIR") or ".")
    report = check_notebook(path.stem, params, runtime)
    if args.json:
        print(json.dumps({"notebook": report.notebook, "settings": report.settings, "fits": report.fits,
                          "runtime": dataclasses.asdict(runtime),
                          "needs": [dataclasses.asdict(n) for n in report.needs],
                          "notes": report.notes}, indent=2, ensure_ascii=False))
    else:
        print(report.summary())
    report.check()
    return 0
