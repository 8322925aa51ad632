"""``python -m helpers merge --base BASE --lora L [--lora L2] --out OUT --format hf|pth|gguf``."""
from __future__ import annotations

import argparse

from .core import merge
from .inputs import parse_sha256_file
from ..gguf import WRITE_TYPES
from .options import FORMATS

_QUANTS = ", ".join(t for t in WRITE_TYPES if t not in ("f16", "bf16", "f32"))


def _size(text: str) -> int:
    """A size such as ``2GB`` or ``500MB`` in bytes (argparse type)."""
    units = {"": 1, "B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper()
    num = t.rstrip("KMGB")
    try:
        return int(float(num) * units[t[len(num):]])
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 2GB, 500MB)") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m helpers merge``."""
    parser.add_argument("--base", required=True, help="base model: folder or hub id (HF or Meta .pth layout)")
    parser.add_argument("--lora", action="append", default=[], metavar="LORA",
                        help="LoRA folder or hub id; repeat to apply several, in order (Plus: LLaMA-Plus first)")
    parser.add_argument("--patch", help="full-weight delta to add (Open-Chinese-LLaMA patch)")
    parser.add_argument("--out", required=True, help="output folder (hf, pth) or .gguf file")
    parser.add_argument("--format", choices=FORMATS, default="hf", help="output format (default: hf)")
    parser.add_argument("--outtype", default="f16", type=str.lower, metavar="TYPE",
                        help="f16 (default), bf16 or f32; with --format gguf also a llama.cpp quantization type, "
                             f"quantized in the same pass (no F16 file): {_QUANTS}")
    parser.add_argument("--imatrix", metavar="FILE", help="importance matrix from llama-imatrix for a quantized GGUF "
                                                          "(needed for the iq* types and q2_k_s)")
    disk = parser.add_mutually_exclusive_group()
    disk.add_argument("--low-disk", dest="low_disk", action="store_true", default=None,
                      help="fetch a hub base one shard at a time, deleting each once merged (peak disk: the largest "
                           "shard + the LoRAs + the output); default: only when the full download would not fit")
    disk.add_argument("--no-low-disk", dest="low_disk", action="store_false", help="download the base whole")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--sha256", metavar="FILE", help="verify input files against this sha256sum listing")
    parser.add_argument("--no-sha256", action="store_true", help="do not write a SHA256SUMS listing of the outputs")
    parser.add_argument("--shard-size", type=_size, default=None, help="HF shard size limit (default 2GB)")
    parser.add_argument("--pth-shards", type=int, default=None, help="number of consolidated.NN.pth shards")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Run ``python -m helpers merge``."""
    if not args.lora and not args.patch:
        print("note: no --lora or --patch given; the base model is converted unchanged")
    expected = parse_sha256_file(args.sha256) if args.sha256 else None
    merge(args.base, args.lora, patch=args.patch, out=args.out, fmt=args.format, outtype=args.outtype,
          overwrite=args.overwrite, verify_sha256=expected, write_sha256=not args.no_sha256,
          progress=not args.no_progress, max_shard_bytes=args.shard_size, pth_shards=args.pth_shards,
          imatrix=args.imatrix, low_disk=args.low_disk)
    return 0
