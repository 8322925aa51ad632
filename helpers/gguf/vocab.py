"""The tokenizer part of a GGUF: vocabulary, token scores and types, special token ids, chat template.

Laid out as llama.cpp's ``convert_hf_to_gguf.py`` does for ``LlamaForCausalLM``: a sentencepiece
``tokenizer.model`` becomes the ``llama`` tokenizer model (scores and token types from the model, added tokens
such as v1 Alpaca's ``[PAD]``, ``[PAD{i}]`` rows up to ``vocab_size``); Llama-3's byte-level BPE
``tokenizer.json`` becomes the ``gpt2`` model with the ``llama-bpe`` pre-tokenizer and its merges. Special token
ids go through :class:`gguf.SpecialVocab`, completed from the config, the token strings and generation_config.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..tokens import LLAMA3_PRE_PATTERN, gguf_chat_template
from ..tokens.sentencepiece import is_sentencepiece
from ..util import UserError, read_json


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def sentencepiece_vocab(tokenizer_dir: Path, vocab_size: int) -> tuple[list[bytes], list[float], list[int]]:
    """Tokens, scores and token types of a sentencepiece tokenizer, laid out as llama.cpp's converter does."""
    import gguf
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor()
    try:
        sp.LoadFromFile(str(tokenizer_dir / "tokenizer.model"))
    except (OSError, RuntimeError) as exc:
        raise UserError(f"{tokenizer_dir / 'tokenizer.model'} is not a sentencepiece model ({exc})") from None
    TT = gguf.TokenType
    tokens = [f"[PAD{i}]".encode() for i in range(vocab_size)]
    scores = [-10000.0] * vocab_size
    types = [int(TT.UNUSED)] * vocab_size
    n_sp = sp.vocab_size()
    if n_sp > vocab_size:
        raise UserError(f"the tokenizer has {n_sp} pieces but the model only {vocab_size} embedding rows: "
                        "tokenizer and weights do not belong together (v1 LLaMA 49953 vs Alpaca 49954?)")
    for i in range(n_sp):
        kind = TT.NORMAL
        if sp.IsUnknown(i):
            kind = TT.UNKNOWN
        elif sp.IsControl(i):
            kind = TT.CONTROL
        elif sp.IsUnused(i):
            kind = TT.UNUSED
        elif sp.IsByte(i):
            kind = TT.BYTE
        tokens[i], scores[i], types[i] = sp.IdToPiece(i).encode("utf-8"), float(sp.GetScore(i)), int(kind)
    for text, idx in read_json(tokenizer_dir / "added_tokens.json", default={}).items():
        if not isinstance(idx, int) or idx >= vocab_size:
            raise UserError(f"added token {text!r} has id {idx}, beyond the model's {vocab_size} rows")
        tokens[idx], scores[idx], types[idx] = text.encode("utf-8"), -1000.0, int(TT.USER_DEFINED)
    decoder = read_json(tokenizer_dir / "tokenizer_config.json", default={}).get("added_tokens_decoder") or {}
    for key, data in decoder.items():
        idx, text = int(key), data.get("content", "")
        if idx >= vocab_size:
            continue
        if data.get("special") or (text.startswith("<|") and text.endswith("|>")):
            types[idx] = int(TT.CONTROL)
        else:
            text = text.replace("\u2581", " ")
            types[idx] = int(TT.USER_DEFINED)
        tokens[idx], scores[idx] = text.encode("utf-8"), -1000.0
    return tokens, scores, types


def bpe_vocab(tokenizer_dir: Path, vocab_size: int) -> tuple[list[str], list[int], str]:
    """Tokens, token types and pre-tokenizer name of a byte-level BPE ``tokenizer.json`` (Llama-3)."""
    import gguf

    data = read_json(tokenizer_dir / "tokenizer.json", default={})
    model = data.get("model") or {}
    if model.get("type") != "BPE":
        raise UserError(f"{tokenizer_dir}/tokenizer.json is a {model.get('type')} tokenizer; only byte-level BPE "
                        "(Llama-3) or a sentencepiece tokenizer.model can be exported")
    pre = json.dumps(data.get("pre_tokenizer") or {})
    if json.dumps(LLAMA3_PRE_PATTERN)[1:-1] not in pre:
        raise UserError(f"{tokenizer_dir}/tokenizer.json does not use Llama-3's pre-tokenizer; use llama.cpp's "
                        "convert_hf_to_gguf.py for this model")
    reverse = {i: t for t, i in model.get("vocab", {}).items()}
    added = {a["id"]: a for a in data.get("added_tokens", [])}
    for i, a in added.items():
        reverse[i] = a["content"]
    if reverse and max(reverse) >= vocab_size:
        raise UserError(f"tokenizer.json has ids up to {max(reverse)} but the model only {vocab_size} rows")
    tokens, types = [], []
    for i in range(vocab_size):
        text = reverse.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]")
            types.append(int(gguf.TokenType.UNUSED))
        elif i in added:
            special = added[i].get("special") or (text.startswith("<|") and text.endswith("|>"))
            tokens.append(text if special else text.replace("\u2581", " "))
            types.append(int(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED))
        else:
            tokens.append(text)
            types.append(int(gguf.TokenType.NORMAL))
    return tokens, types, "llama-bpe"


def add_tokenizer(w, tokenizer_dir: Path, *, vocab_size: int, config: dict | None = None,
                  template: str | None = None, template_explicit: bool = False) -> None:
    """Add the vocabulary, special tokens and chat template of ``tokenizer_dir`` to a GGUFWriter."""
    import gguf

    config = config or {}
    sp_model = tokenizer_dir / "tokenizer.model"
    use_sp = sp_model.is_file() and is_sentencepiece(sp_model)
    if use_sp:
        tokens, scores, types = sentencepiece_vocab(tokenizer_dir, vocab_size)
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        special = gguf.SpecialVocab(tokenizer_dir, n_vocab=len(tokens))
        texts = [t.decode("utf-8", "replace") for t in tokens]
    elif (tokenizer_dir / "tokenizer.json").is_file():
        texts, types, pre = bpe_vocab(tokenizer_dir, vocab_size)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(pre)
        w.add_token_list(texts)
        w.add_token_types(types)
        special = gguf.SpecialVocab(tokenizer_dir, load_merges=True, n_vocab=len(texts))
        special.add_special_token.setdefault("eos", False)  # byte-level BPE post-processors never append EOS
    else:
        raise UserError(f"no tokenizer in {tokenizer_dir}: need tokenizer.model (sentencepiece) or tokenizer.json")
    _fill_special_ids(special, tokenizer_dir, texts, config)
    if template is not None and (template != "raw" or template_explicit):
        special.chat_template = gguf_chat_template(template)
    special.add_to_gguf(w, quiet=True)
    if "<|eot_id|>" in texts:
        w.add_eot_token_id(texts.index("<|eot_id|>"))


def _fill_special_ids(special, tokenizer_dir: Path, texts: list[str], config: dict) -> None:
    """Special ids SpecialVocab could not resolve: from the config, the token strings, generation_config."""
    ids = special.special_token_ids
    for typ in ("bos", "eos", "unk", "pad"):
        if typ not in ids and isinstance(config.get(f"{typ}_token_id"), int):
            special._set_special_token(typ, config[f"{typ}_token_id"])
    strings = {**read_json(tokenizer_dir / "special_tokens_map.json", default={}),
               **read_json(tokenizer_dir / "tokenizer_config.json", default={})}
    index = {t: i for i, t in reversed(list(enumerate(texts)))}
    for typ in ("bos", "eos", "unk", "pad"):
        text = _token_text(strings.get(f"{typ}_token"))
        if typ not in ids and text in index:
            special._set_special_token(typ, index[text])
    gen_eos = read_json(tokenizer_dir / "generation_config.json", default={}).get("eos_token_id")
    if "eos" not in ids and gen_eos is not None:
        special._set_special_token("eos", gen_eos[0] if isinstance(gen_eos, list) else gen_eos)
