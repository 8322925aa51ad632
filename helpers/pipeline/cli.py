"""``python -m helpers pipeline [--out DIR] [--model NAME] [--type TYPE]``: the offline demo job."""
from __future__ import annotations

import argparse

from . import DEFAULT_MODEL, DEFAULT_PROMPT, run_pipeline


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m helpers pipeline``."""
    parser.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="catalog name of the LoRA release to merge")
    parser.add_argument("--type", dest="qtype", default="q4_k_m", help="quantization type (default q4_k_m)")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="question for the model")
    parser.add_argument("--max-new-tokens", type=int, default=32)


def run(args: argparse.Namespace) -> int:
    """Run the demo job."""
    run_pipeline(args.out, model=args.model, qtype=args.qtype, prompt=args.prompt, max_new_tokens=args.max_new_tokens)
    return 0
