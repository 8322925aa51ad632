"""``python -m helpers quantize --model GGUF_OR_HF --out FILE.gguf [--type TYPE] [--imatrix FILE]``."""
from __future__ import annotations

import argparse

from ..util import human_bytes
from .llama_quantize import quantize
from .types import DEFAULT_QUANT, FTYPES

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="input: a GGUF (F16/BF16/F32) or a Hugging Face model folder")
    parser.add_argument("--out", required=True, help="output .gguf")
    parser.add_argument("--type", default=DEFAULT_QUANT, help=f"llama.cpp type (default {DEFAULT_QUANT}): "
                                                             + ", ".join(FTYPES))
    parser.add_argument("--imatrix", default=None, help="importance matrix (python -m helpers imatrix, or "
                                                        "llama-imatrix; needed for the 1-3 bit iq types)")
    parser.add_argument("--allow-requantize", action="store_true", help="accept an already quantized GGUF (Q8_0)")
    parser.add_argument("--template", default=None, help="prompt template for the Modelfile (default: from the model)")
    parser.add_argument("--threads", type=int, default=None, help="threads (default: all cores)")
    parser.add_argument("--verbose", action="store_true", help="show llama.cpp's per-tensor log")


def run(args: argparse.Namespace) -> int:
    out = quantize(args.model, args.out, qtype=args.type, imatrix=args.imatrix, threads=args.threads,
                   template=args.template, verbose=args.verbose, requantize=args.allow_requantize)
    print(f"wrote {out} ({human_bytes(out.stat().st_size)}) with {out.stem}.Modelfile and {out.name}.sha256")
    return 0
