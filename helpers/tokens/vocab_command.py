"""``python -m helpers expand-vocab --base TOKENIZER --add CHINESE_SP --out DIR [--init-model DIR --model-out DIR]``."""
from __future__ import annotations

from dataclasses import MISSING, dataclass
from pathlib import Path

from ..util import UserError
from ..util.params import param
from .vocab import expand_vocab, init_new_embeddings


@dataclass(frozen=True)
class VocabOptions:
    """A vocabulary expansion (and, optionally, a model resized to it)."""

    base: str = param(MISSING, "base tokenizer.model (or a folder holding one), e.g. LLaMA's 32k")
    add: str = param(MISSING, "sentencepiece model whose pieces are added (e.g. chinese_sp.model)")
    out: str = param(MISSING, "folder for the expanded tokenizer")
    sample: Path | None = param(None, "UTF-8 text file to measure tokens per character on", parse=Path)
    init_model: str | None = param(None, "also resize this HF model to the new vocabulary (new rows = mean of old "
                                   "sub-pieces)", metavar="MODEL_DIR")
    model_out: str | None = param(None, "where to write the resized model (with --init-model)", metavar="DIR")

    def __post_init__(self) -> None:
        if self.init_model and not self.model_out:
            raise UserError("--init-model needs --model-out DIR for the resized model")


OPTIONS = (VocabOptions,)


def main(o: VocabOptions) -> int:
    """Expand the vocabulary (and resize the model); print what changed."""
    report = expand_vocab(o.base, o.add, o.out, sample_text=o.sample)
    print(f"vocabulary: {report.base_size} -> {report.new_size} pieces (+{report.added}), written to {report.out_dir}")
    print(f"sample ({report.sample_chars} chars): {report.tokens_before} -> {report.tokens_after} tokens, "
          f"{report.tokens_per_char_before:.3f} -> {report.tokens_per_char_after:.3f} tokens/char "
          f"({report.ratio:.2f}x fewer)")
    if o.init_model:
        r = init_new_embeddings(o.init_model, o.out, o.model_out)
        print(f"model: {r.old_size} -> {r.new_size} embedding rows, written to {r.out_dir}")
    return 0
