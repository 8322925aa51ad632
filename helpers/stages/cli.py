"""``python -m helpers colab-check NOTEBOOK [--set NAME=VALUE]... [--colab t4|cpu] [--json]``: before any download,
what a notebook's parameters need against this runtime (or free Colab's), and whether it fits; and
``python -m helpers run NOTEBOOK [--set NAME=VALUE]...``: the same check, then every step of the notebook, headless,
ending with a readable summary of what it made."""
from __future__ import annotations

import argparse
import dataclasses
import json

from ..colab import Runtime
from ..util import UserError
from . import STAGES
from .base import Stage, run_summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``colab-check`` and ``run``."""
    parser.add_argument("notebook", help="a notebook's name or number (01_merge_lora, 01, merge) or its .ipynb")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="NAME=VALUE",
                        help="change a parameter from the notebook's default (repeatable): --set NAME=VALUE")
    parser.add_argument("--colab", choices=("t4", "cpu"), help="check against free Colab's T4 or CPU runtime "
                                                               "(nothing downloaded yet) instead of this machine")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def find_stage(ref: str) -> type[Stage]:
    """The stage of the notebook ``ref`` names: its name, number, a word of it, or its ``.ipynb`` path.

    Raises:
        UserError: none or several match.
    """
    key = ref.rsplit("/", 1)[-1].removesuffix(".ipynb").lower()
    found = [s for name, s in STAGES.items() if name == key or name.startswith(key) or key in name.split("_")]
    if len(found) == 1:
        return found[0]
    names = ", ".join(STAGES)
    raise UserError(f"{ref!r} {'matches several notebooks' if found else 'is no notebook'}; the notebooks are: {names}")


def report_json(plan) -> str:
    """The plan as JSON: notebook, settings, verdict, runtime, needs, notes and fixes (by form name)."""
    return json.dumps({"notebook": plan.stage.NOTEBOOK, "settings": plan.stage.settings(), "fits": plan.fits,
                       "runtime": dataclasses.asdict(plan.runtime),
                       "needs": [dataclasses.asdict(n) for n in plan.needs], "notes": plan.notes,
                       "fixes": [{k.upper(): v for k, v in fix.items()} for fix in plan.fixes]},
                      indent=2, ensure_ascii=False, default=str)


def run(args: argparse.Namespace) -> int:
    """Print the plan; exit non-zero with one ``error:`` line when the notebook will not fit (``colab-check``), or
    carry it out (``run``)."""
    cls = find_stage(args.notebook)
    stage = cls.from_sets(args.sets)
    runtime = Runtime.free_colab(gpu=args.colab == "t4", setup=cls.SETUP) if args.colab else None
    plan = stage.plan(runtime)
    print(report_json(plan) if args.json else plan.summary())
    plan.check()
    if getattr(args, "execute", False):
        print(run_summary(stage.headless(plan, plan.run())))
    return 0
