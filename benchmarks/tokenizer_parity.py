"""How often transformers' automatic conversion of a released sentencepiece tokenizer disagrees
with sentencepiece, and whether ``helpers.tokens.load_tokenizer`` does.

    .venv/bin/python benchmarks/tokenizer_parity.py [TOKENIZER_DIR] [ALPACA_JSON]

Defaults: the Chinese-LLaMA-2 tokenizer vendored in tests/data and the instruction set in ../shared/fixtures.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import sentencepiece as spm
from transformers import AutoTokenizer

from helpers.tokens import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"


def main() -> None:
    tok_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "tests" / "data" / "chinese-llama-2-tokenizer"
    data = Path(sys.argv[2]) if len(sys.argv) > 2 else FIXTURES / "ruozhiba_qa2449_gpt4o.json"
    sp = spm.SentencePieceProcessor(model_file=str(tok_dir / "tokenizer.model"))
    auto, ours = AutoTokenizer.from_pretrained(tok_dir), load_tokenizer(tok_dir)
    lines = [t for r in json.loads(data.read_text(encoding="utf-8")) for t in (r["instruction"], r["output"]) if t]
    ref = [sp.encode(t) for t in lines]
    a = sum(auto.encode(t, add_special_tokens=False) != r for t, r in zip(lines, ref))
    o = sum(ours.encode(t, add_special_tokens=False) != r for t, r in zip(lines, ref))
    print(f"{len(lines)} lines; AutoTokenizer ({type(auto).__name__}) differs from sentencepiece on {a} "
          f"({a / len(lines):.1%}); helpers.tokens.load_tokenizer ({type(ours).__name__}) differs on {o}")


if __name__ == "__main__":
    main()
