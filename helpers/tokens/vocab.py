"""Vocabulary expansion: merge a Chinese sentencepiece model into a LLaMA tokenizer.

The Chinese-LLaMA recipe keeps every piece and id of the base tokenizer and appends each piece of
the Chinese model that the base lacks, with score 0. With LLaMA's 32,000-piece tokenizer and the
20,000-piece Chinese model this yields the 49,953-piece Chinese-LLaMA tokenizer.

:func:`expand_vocab` writes the merged tokenizer as an HF folder and measures tokens per character;
:func:`init_new_embeddings` resizes a model to it, each new row being the mean of the old rows of
the pieces the old tokenizer splits the new piece into (the starting point for PT fine-tuning).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..device import dtype_kwarg
from ..util import DATA_DIR, UserError, atomic_path
from .files import tokenizer_vocab_size
from .sentencepiece import (count_tokens, load_proto, merge_sentencepiece, model_bytes, piece_count, sp_model_path,
                            sp_processor, write_tokenizer_dir)


# ---------------------------------------------------------------------------------------------
# expand a tokenizer on disk
@dataclass(frozen=True)
class VocabReport:
    """What :func:`expand_vocab` did.

    Attributes:
        base_size: pieces in the base tokenizer.
        new_size: pieces in the expanded tokenizer.
        added: pieces appended (``new_size - base_size``).
        sample_chars: characters (whitespace excluded) of the sample text.
        tokens_before: tokens of the sample text with the base tokenizer.
        tokens_after: tokens of the sample text with the expanded tokenizer.
        out_dir: the folder written.
    """

    base_size: int
    new_size: int
    added: int
    sample_chars: int
    tokens_before: int
    tokens_after: int
    out_dir: str

    def __post_init__(self) -> None:
        if self.new_size != self.base_size + self.added:
            raise ValueError("new_size must equal base_size + added")

    @property
    def tokens_per_char_before(self) -> float:
        return self.tokens_before / max(self.sample_chars, 1)

    @property
    def tokens_per_char_after(self) -> float:
        return self.tokens_after / max(self.sample_chars, 1)

    @property
    def ratio(self) -> float:
        """How many times fewer tokens the expanded tokenizer needs on the sample."""
        return self.tokens_before / max(self.tokens_after, 1)


def expand_vocab(base: str | Path, add_model: str | Path, out_dir: str | Path, *,
                 sample_text: str | Path | None = None) -> VocabReport:
    """Merge a Chinese sentencepiece vocabulary into a LLaMA tokenizer and write an HF tokenizer folder.

    The base keeps every piece, id, score and type; the missing pieces of ``add_model`` are appended
    with score 0 (LLaMA 32,000 + Chinese 20,000 gives Chinese-LLaMA's 49,953).

    Args:
        base: the base ``tokenizer.model`` or a folder holding one.
        add_model: the sentencepiece model whose pieces are added.
        out_dir: folder to write (``tokenizer.model``, ``tokenizer_config.json``, ``special_tokens_map.json``).
        sample_text: text (or a :class:`~pathlib.Path` to a UTF-8 file) to measure tokens per character on;
            defaults to the shipped Chinese demo corpus.
    """
    base_path, add_path = sp_model_path(base), sp_model_path(add_model)
    merged = merge_sentencepiece(base_path, add_path)
    if isinstance(sample_text, Path):
        if not sample_text.is_file():
            raise UserError(f"sample text {sample_text} not found")
        sample_text = sample_text.read_text(encoding="utf-8")
    if sample_text is None:
        sample_text = (DATA_DIR / "corpus_zh.txt").read_text(encoding="utf-8")
    chars = sum(1 for ch in sample_text if not ch.isspace())
    if not chars:
        raise UserError("the sample text is empty; pass a file with some Chinese text")
    before, after = count_tokens(base_path, sample_text), count_tokens(merged, sample_text)
    write_tokenizer_dir(out_dir, merged)
    n0, n1 = piece_count(base_path), piece_count(merged)
    return VocabReport(base_size=n0, new_size=n1, added=n1 - n0, sample_chars=chars, tokens_before=before,
                       tokens_after=after, out_dir=str(out_dir))


# ---------------------------------------------------------------------------------------------
# new embedding rows
def split_new_pieces(old_model: str | Path | bytes, new_model: str | Path | bytes) -> dict[int, list[int]]:
    """For every id the new tokenizer adds, the old tokenizer's ids for exactly that piece's text.

    The old model is run without its dummy prefix so that ``中国`` and ``▁中国`` split as the pieces
    themselves (the ``▁`` stays a leading-space marker), never with an extra ``▁`` in front.

    Raises:
        UserError: when the new tokenizer does not start with the old one's pieces.
    """
    old, new = load_proto(model_bytes(old_model)), load_proto(model_bytes(new_model))
    n_old = len(old.pieces)
    if len(new.pieces) < n_old or any(a.piece != b.piece for a, b in zip(old.pieces, new.pieces)):
        raise UserError("the new tokenizer does not extend the model's tokenizer (its first pieces differ); "
                        "expand the model's own tokenizer.model with expand-vocab first")
    sp = sp_processor(old.SerializeToString(), dummy_prefix=False)
    return {i: (sp.encode(new.pieces[i].piece) or [sp.unk_id()]) for i in range(n_old, len(new.pieces))}


def init_embeddings_(model, splits: dict[int, list[int]], new_size: int) -> None:
    """Resize an HF causal LM to ``new_size`` rows and set each new row to the mean of its pieces' old rows.

    Rows without an entry in ``splits`` (e.g. an added ``[PAD]``) get the mean of all old rows.
    ``lm_head`` is treated the same way unless it is tied to the input embeddings.
    """
    import torch

    emb = model.get_input_embeddings()
    n_old = emb.weight.shape[0]
    if new_size < n_old:
        raise UserError(f"the new vocabulary ({new_size}) is smaller than the model's ({n_old})")
    olds = [emb.weight.detach().float().clone()]
    out = model.get_output_embeddings()
    tied = out is None or out.weight.data_ptr() == emb.weight.data_ptr()
    if not tied:
        olds.append(out.weight.detach().float().clone())
    model.resize_token_embeddings(new_size, mean_resizing=False)
    targets = [model.get_input_embeddings().weight] + ([] if tied else [model.get_output_embeddings().weight])
    with torch.no_grad():
        for weight, old in zip(targets, olds):
            fallback = old.mean(0)
            for start in range(n_old, new_size, 4096):
                ids = range(start, min(start + 4096, new_size))
                rows = torch.stack([old[splits[i]].mean(0) if i in splits else fallback for i in ids])
                weight[start:start + len(rows)] = rows.to(weight.dtype)


@dataclass(frozen=True)
class EmbeddingInitReport:
    """Result of :func:`init_new_embeddings`: old/new vocabulary size and the folder written."""

    old_size: int
    new_size: int
    out_dir: str


def init_new_embeddings(model_dir: str | Path, new_tokenizer_dir: str | Path, out_dir: str | Path, *,
                        dtype: str = "auto") -> EmbeddingInitReport:
    """Give an HF LLaMA folder the expanded vocabulary, ready for PT (pre-training) fine-tuning.

    Each new row of ``embed_tokens`` and ``lm_head`` becomes the mean of the old rows of the pieces
    the model's OLD tokenizer splits the new piece into. The result (weights, config with the new
    ``vocab_size``, the new tokenizer files) is written to ``out_dir`` atomically.

    Args:
        model_dir: HF model folder with its own sentencepiece ``tokenizer.model``.
        new_tokenizer_dir: folder written by :func:`expand_vocab` (may also hold ``added_tokens.json``).
        out_dir: destination folder.
        dtype: torch dtype name to load/save in (``auto`` keeps the checkpoint's).
    """
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    model_dir, new_dir = Path(model_dir), Path(new_tokenizer_dir)
    if not (model_dir / "config.json").is_file():
        raise UserError(f"{model_dir} is not a Hugging Face model folder (no config.json)")
    splits = split_new_pieces(model_dir, sp_model_path(new_dir))
    new_size = tokenizer_vocab_size(new_dir)  # pieces + added tokens (added_tokens.json or tokenizer_config.json)
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, low_cpu_mem_usage=True, **{dtype_kwarg(): dtype if dtype == "auto" else getattr(torch, dtype)})
    old_size = model.get_input_embeddings().weight.shape[0]
    old_pieces = piece_count(model_dir / "tokenizer.model")
    if old_size != old_pieces:
        raise UserError(f"{model_dir} has {old_size} embedding rows but its tokenizer.model has "
                        f"{old_pieces} pieces; pass the base model, not an expanded one")
    init_embeddings_(model, splits, new_size)
    with atomic_path(out_dir, is_dir=True) as tmp:
        model.save_pretrained(tmp)
        for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"):
            if (new_dir / name).is_file():
                shutil.copyfile(new_dir / name, tmp / name)
    return EmbeddingInitReport(old_size=old_size, new_size=new_size, out_dir=str(out_dir))
