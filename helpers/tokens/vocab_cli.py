"""``python -m helpers expand-vocab --base TOKENIZER --add CHINESE_SP --out DIR [--init-model DIR --model-out DIR]``."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..util import UserError
from .vocab import expand_vocab, init_new_embeddings

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base", required=True, help="base tokenizer.model (or a folder holding one), e.g. LLaMA's 32k")
    parser.add_argument("--add", required=True, help="sentencepiece model whose pieces are added (e.g. chinese_sp.model)")
    parser.add_argument("--out", required=True, help="folder for the expanded tokenizer")
    parser.add_argument("--sample", type=Path, help="UTF-8 text file to measure tokens per character on")
    parser.add_argument("--init-model", metavar="MODEL_DIR",
                        help="also resize this HF model to the new vocabulary (new rows = mean of old sub-pieces)")
    parser.add_argument("--model-out", metavar="DIR", help="where to write the resized model (with --init-model)")


def run(args: argparse.Namespace) -> int:
    if args.init_model and not args.model_out:
        raise UserError("--init-model needs --model-out DIR for the resized model")
    report = expand_vocab(args.base, args.add, args.out, sample_text=args.sample)
    print(f"vocabulary: {report.base_size} -> {report.new_size} pieces (+{report.added}), written to {report.out_dir}")
    print(f"sample ({report.sample_chars} chars): {report.tokens_before} -> {report.tokens_after} tokens, "
          f"{report.tokens_per_char_before:.3f} -> {report.tokens_per_char_after:.3f} tokens/char "
          f"({report.ratio:.2f}x fewer)")
    if args.init_model:
        r = init_new_embeddings(args.init_model, args.out, args.model_out)
        print(f"model: {r.old_size} -> {r.new_size} embedding rows, written to {r.out_dir}")
    return 0
