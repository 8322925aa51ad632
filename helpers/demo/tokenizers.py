"""The demo's tokenizers: sentencepiece models trained on the shipped corpus, and a byte-level BPE like Llama-3's."""
from __future__ import annotations

import io
from pathlib import Path

from ..tokens import LLAMA3_PRE_PATTERN, jinja_chat_template
from ..tokens.sentencepiece import write_sp_tokenizer_files
from ..util import DATA_DIR, write_json

LLAMA3_SPECIAL = {0: "<|begin_of_text|>", 1: "<|end_of_text|>", 6: "<|start_header_id|>", 7: "<|end_header_id|>", 9: "<|eot_id|>"}


def corpus(lang: str) -> list[str]:
    """The shipped demo corpus lines (``zh`` or ``en``)."""
    return [line for line in (DATA_DIR / f"corpus_{lang}.txt").read_text(encoding="utf-8").splitlines() if line.strip()]


def train_sentencepiece(lines: list[str], *, vocab_size: int, model_type: str, llama_style: bool) -> bytes:
    """Train a sentencepiece model in memory (single thread, so the bytes are reproducible)."""
    import sentencepiece as spm

    buf = io.BytesIO()
    opts = dict(sentence_iterator=iter(lines), model_writer=buf, vocab_size=vocab_size, model_type=model_type,
                num_threads=1, hard_vocab_limit=False, character_coverage=1.0, minloglevel=2,
                unk_id=0, bos_id=1, eos_id=2, pad_id=-1)
    if llama_style:  # LLaMA's settings: BPE with byte fallback, digits split, no normalisation
        opts.update(byte_fallback=True, split_digits=True, normalization_rule_name="identity",
                    remove_extra_whitespaces=False, allow_whitespace_only_pieces=True)
    spm.SentencePieceTrainer.train(**opts)
    return buf.getvalue()


def sp_tokenizer_folder(d: Path, model: bytes, *, pad: bool) -> int:
    """Write tokenizer.model + LlamaTokenizer configs (v1 Alpaca adds ``[PAD]``) into ``d``; return vocab size."""
    d.mkdir(parents=True, exist_ok=True)
    return write_sp_tokenizer_files(d, model, pad=pad)


def llama3_tokenizer(d: Path) -> tuple[int, dict[str, int]]:
    """Train a byte-level BPE like Llama-3's (its regex, byte-level, 256 special tokens at the end)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PRE_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=768, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus("en") + corpus("zh"), trainer=trainer)
    n_regular = tok.get_vocab_size()
    specials = [LLAMA3_SPECIAL.get(i, f"<|reserved_special_token_{i - sum(1 for k in LLAMA3_SPECIAL if k < i)}|>")
                for i in range(256)]
    tok.add_special_tokens(specials)
    ids = {s: n_regular + i for i, s in enumerate(specials)}
    bos = ids["<|begin_of_text|>"]
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
                                      special_tokens=[("<|begin_of_text|>", bos)]),
    ])
    d.mkdir(parents=True, exist_ok=True)
    tok.save(str(d / "tokenizer.json"))
    added = {str(ids[s]): {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                           "single_word": False, "special": True} for s in specials}
    write_json(d / "tokenizer_config.json", {
        "added_tokens_decoder": added, "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
        "clean_up_tokenization_spaces": True, "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 8192, "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": jinja_chat_template("llama3"),
    })
    write_json(d / "special_tokens_map.json", {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"})
    return n_regular + 256, ids
