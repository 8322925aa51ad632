"""``python -m helpers merge --base BASE --lora L [--lora L2] --out OUT --format hf|pth|gguf``: the recipe's flags,
then one flag per :class:`MergeOptions` field, made from its declaration."""
from __future__ import annotations

import argparse

from ..util.params import add_arguments as option_arguments, from_arguments
from .core import merge
from .options import MergeOptions, Recipe


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m helpers merge``."""
    parser.add_argument("--base", required=True, help="base model: folder or hub id (HF or Meta .pth layout)")
    parser.add_argument("--lora", action="append", default=[], metavar="LORA",
                        help="LoRA folder or hub id; repeat to apply several, in order (Plus: LLaMA-Plus first)")
    parser.add_argument("--patch", help="full-weight delta to add (Open-Chinese-LLaMA patch)")
    parser.add_argument("--out", required=True, help="output folder (hf, pth) or .gguf file")
    option_arguments(parser, MergeOptions)


def run(args: argparse.Namespace) -> int:
    """Run ``python -m helpers merge``."""
    if not args.lora and not args.patch:
        print("note: no --lora or --patch given; the base model is converted unchanged")
    merge(Recipe(args.base, args.lora, args.patch), args.out, from_arguments(MergeOptions, args))
    return 0
