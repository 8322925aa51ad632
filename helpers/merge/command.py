"""``python -m helpers merge --base BASE --lora L [--lora L2] --out OUT --format hf|pth|gguf``: the
:class:`~.options.Recipe`'s flags, ``--out``, then one flag per :class:`~.options.MergeOptions` field."""
from __future__ import annotations

from dataclasses import MISSING, dataclass

from ..util.params import param
from .core import merge
from .options import MergeOptions, Recipe


@dataclass(frozen=True)
class MergeOutput:
    """Where the merge goes."""

    out: str = param(MISSING, "output folder (hf, pth) or .gguf file")


OPTIONS = (Recipe, MergeOutput, MergeOptions)


def main(recipe: Recipe, output: MergeOutput, options: MergeOptions) -> int:
    """Merge ``recipe`` into ``output.out``."""
    if not recipe.loras and not recipe.patch:
        print("note: no --lora or --patch given; the base model is converted unchanged")
    merge(recipe, output.out, options)
    return 0
