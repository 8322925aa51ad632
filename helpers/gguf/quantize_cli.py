"""``python -m helpers quantize --model GGUF_OR_HF --out FILE.gguf [--type TYPE] [--imatrix FILE]``: one flag per
:class:`~.llama_quantize.QuantizeOptions` field, made from its declaration."""
from __future__ import annotations

import argparse

from ..util import human_bytes
from ..util.params import add_arguments as option_arguments, from_arguments
from .llama_quantize import QuantizeOptions, quantize


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="input: a GGUF (F16/BF16/F32) or a Hugging Face model folder")
    parser.add_argument("--out", required=True, help="output .gguf")
    option_arguments(parser, QuantizeOptions)


def run(args: argparse.Namespace) -> int:
    options = from_arguments(QuantizeOptions, args)
    out = quantize(args.model, args.out, options)
    beside = f" with {out.stem}.Modelfile and {out.name}.sha256" if options.modelfile else ""
    print(f"wrote {out} ({human_bytes(out.stat().st_size)}){beside}")
    return 0
