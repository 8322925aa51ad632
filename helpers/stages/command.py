"""``python -m helpers colab-check NOTEBOOK [--set NAME=VALUE]... [--colab t4|cpu] [--json]``: before any download,
what a notebook's parameters need against this runtime (or free Colab's), and whether it fits; and
``python -m helpers run NOTEBOOK [--set NAME=VALUE]...``: the same check, then every step of the notebook, headless,
ending with a readable summary of what it made."""
from __future__ import annotations

from dataclasses import MISSING, dataclass

from ..colab import Runtime
from ..util import UserError
from ..util.params import param
from . import find_stage
from .base import run_summary


@dataclass(frozen=True)
class NotebookRun:
    """Which notebook, its parameters changed from the defaults, where it is checked, and whether it runs."""

    notebook: str = param(MISSING, "a notebook's name or number (01_merge_lora, 01, merge) or its .ipynb",
                          flag="notebook")
    sets: list[str] = param([], "change a parameter from the notebook's default (repeatable): --set NAME=VALUE",
                            flag="--set", many=True, metavar="NAME=VALUE")
    colab: str | None = param(None, "check against free Colab's T4 or CPU runtime (nothing downloaded yet) instead of "
                              "this machine", choices=("t4", "cpu"))
    json: bool = param(False, "print the report as JSON")
    execute: bool = param(False, "carry the plan out (python -m helpers run)", cli=False)

    def __post_init__(self) -> None:
        if self.execute and self.colab:
            raise UserError("run executes here: drop --colab (colab-check --colab plans for free Colab)")


OPTIONS = (NotebookRun,)


def main(options: NotebookRun) -> int:
    """Print the plan; exit non-zero with one ``error:`` line when the notebook will not fit (``colab-check``), or
    carry it out (``run``)."""
    cls = find_stage(options.notebook)
    stage = cls.from_sets(options.sets)
    runtime = Runtime.free_colab(gpu=options.colab == "t4", setup=cls.SETUP) if options.colab else None
    plan = stage.plan(runtime)
    print(plan.to_json() if options.json else plan.summary())
    plan.check()
    if options.execute:
        print(run_summary(stage.headless(plan, plan.run())))
    return 0
