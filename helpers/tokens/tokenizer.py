"""Load a tokenizer that tokenizes exactly as the released models were trained.

transformers 5 turns a sentencepiece ``tokenizer.model`` into a fast BPE tokenizer whose ids differ from
sentencepiece on many Chinese lines of the Chinese-LLaMA tokenizers (e.g. 详细介绍一下). The models were trained
with sentencepiece (through transformers' slow ``LlamaTokenizer`` in legacy mode), and llama.cpp tokenizes the
same way, so :func:`load_tokenizer` returns a python tokenizer whose encoder *is*
``sentencepiece.SentencePieceProcessor`` for such folders: :class:`~helpers.tokens.sp_backend.SentencePieceTokenizer`
(transformers' ``SentencePieceBackend``) on transformers 5, the slow ``LlamaTokenizer(legacy=True)`` on
transformers 4 (see :func:`tokenizer_class`). Folders with only a ``tokenizer.json`` (Llama-3 BPE) get
transformers' own fast tokenizer.

Encoding rules (those of ``LlamaTokenizer(legacy=True)`` and llama.cpp): special and added tokens written in the
text (``<s>``, ``</s>``, ``[PAD]``...) become single ids; every text segment between them is encoded by
sentencepiece with its dummy-prefix space; BOS is prepended and EOS is not (``add_bos_token`` / ``add_eos_token``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..util import UserError, read_json
from .llama_folder import FLAGS
from .sentencepiece import is_sentencepiece

__all__ = ["load_tokenizer", "tokenizer_class"]

def tokenizer_class() -> type:
    """The class :func:`load_tokenizer` builds for sentencepiece folders, for the installed transformers.

    transformers 5: :class:`helpers.tokens.sp_backend.SentencePieceTokenizer` (on ``SentencePieceBackend``).
    transformers 4 (no ``SentencePieceBackend``): a ``LlamaTokenizer`` subclass used with ``legacy=True``, which
    also encodes with sentencepiece and wraps BOS/EOS itself.
    """
    try:
        from transformers.tokenization_utils_sentencepiece import SentencePieceBackend  # noqa: F401
    except ImportError:
        from .sp_legacy import LegacyLlamaTokenizer

        return LegacyLlamaTokenizer
    from .sp_backend import SentencePieceTokenizer

    return SentencePieceTokenizer


def _read_json(path: Path) -> dict:
    """An optional tokenizer JSON file as a dict (``{}`` when absent or not an object)."""
    data = read_json(path, default={})
    return data if isinstance(data, dict) else {}


def _content(value: Any) -> str | None:
    """The token string of a special-token entry (a string or an AddedToken-style dict)."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def _added_token(value: Any, *, special: bool):
    """An ``AddedToken`` from a string or dict entry, keeping its strip/normalize flags."""
    from transformers import AddedToken

    if isinstance(value, dict):
        flags = {k: bool(value[k]) for k in FLAGS if k in value}
        flags.setdefault("special", special)
        return AddedToken(value["content"], **flags)
    return AddedToken(value, lstrip=False, rstrip=False, normalized=not special, special=special)


def _load_sentencepiece(folder: Path, model_file: Path, kwargs: dict[str, Any]):
    import sentencepiece as spm

    config = _read_json(folder / "tokenizer_config.json")
    special_map = _read_json(folder / "special_tokens_map.json")
    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    size = sp.get_piece_size()

    added: dict[int, Any] = {}
    for key, entry in (config.get("added_tokens_decoder") or {}).items():
        if int(key) >= size:
            added[int(key)] = _added_token(entry, special=bool(entry.get("special", True)))
        elif _content(entry) != sp.id_to_piece(int(key)):
            raise UserError(
                f"{folder / 'tokenizer_config.json'} maps id {key} to {_content(entry)!r} but tokenizer.model "
                f"has {sp.id_to_piece(int(key))!r} there; the files come from different tokenizers: copy "
                "tokenizer.model and tokenizer_config.json from the same release"
            )
    for content, index in _read_json(folder / "added_tokens.json").items():
        if int(index) >= size and int(index) not in added:
            added[int(index)] = _added_token(content, special=True)
    known = {t.content for t in added.values()}

    def in_vocab(token: str | None) -> bool:
        return token is not None and (token in known or sp.id_to_piece(sp.piece_to_id(token)) == token)

    def pick(key: str, fallback_id: int) -> Any:
        for source in (special_map, config):  # HF: special_tokens_map.json overrides tokenizer_config.json
            if in_vocab(_content(source.get(key))):
                return _added_token(source[key], special=True)
        return sp.id_to_piece(fallback_id) if fallback_id >= 0 else None

    init: dict[str, Any] = {
        "bos_token": pick("bos_token", sp.bos_id()),
        "eos_token": pick("eos_token", sp.eos_id()),
        "unk_token": pick("unk_token", sp.unk_id()),
        "pad_token": pick("pad_token", sp.pad_id()),  # a pad that is not in the vocabulary stays unset
        "add_bos_token": bool(config.get("add_bos_token", True)),
        "add_eos_token": bool(config.get("add_eos_token", False)),
        "added_tokens_decoder": added,
        "clean_up_tokenization_spaces": False,
        "legacy": True,
    }
    for key in ("model_max_length", "padding_side", "truncation_side", "chat_template"):
        if config.get(key) is not None:
            init[key] = config[key]
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        init["chat_template"] = jinja.read_text(encoding="utf-8")
    init.update(kwargs)
    try:
        return tokenizer_class()(vocab_file=str(model_file), **init)
    except (ValueError, TypeError, KeyError) as exc:
        raise UserError(f"cannot build a tokenizer from {folder}: {exc}; check the settings passed to "
                        "load_tokenizer and the folder's tokenizer_config.json") from None


def load_tokenizer(path: str | Path, **kwargs: Any):
    """Load the tokenizer of a model folder so that its ids equal the ones the model was trained with.

    A folder with a sentencepiece ``tokenizer.model`` gives a python tokenizer that encodes with
    ``sentencepiece`` itself (class from :func:`tokenizer_class`; special tokens from tokenizer_config.json /
    special_tokens_map.json / added_tokens.json; a pad token is set only if the files name one that is in the
    vocabulary). A folder with only ``tokenizer.json`` (Llama-3 BPE) gives ``transformers.AutoTokenizer``'s fast
    tokenizer.

    Args:
        path: a tokenizer or model folder (or a ``tokenizer.model`` file).
        **kwargs: tokenizer settings such as ``padding_side``, ``pad_token``, ``add_bos_token``,
            ``model_max_length``; ``chat_template`` may be a Jinja template or a template id from
            :mod:`helpers.tokens.templates` (e.g. ``"llama2-zh"``).

    Raises:
        UserError: when the folder has no usable tokenizer files.
    """
    path = Path(path)
    folder = path.parent if path.is_file() else path
    if not folder.is_dir():
        raise UserError(f"tokenizer folder {folder} not found")
    template = kwargs.get("chat_template")
    if isinstance(template, str) and "{" not in template:
        from .templates import jinja_chat_template

        kwargs["chat_template"] = jinja_chat_template(template)

    model_file = path if path.is_file() else folder / "tokenizer.model"
    if model_file.is_file() and is_sentencepiece(model_file):
        return _load_sentencepiece(folder, model_file, kwargs)
    if (folder / "tokenizer.json").is_file():
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(str(folder), **kwargs)
        except (OSError, ValueError, TypeError, KeyError, json.JSONDecodeError) as exc:
            raise UserError(f"cannot load the tokenizer in {folder}: {exc}; re-download tokenizer.json") from None
    if model_file.is_file():
        raise UserError(
            f"{model_file} is not a sentencepiece model and there is no tokenizer.json beside it; "
            "copy the tokenizer files of the original model into this folder"
        )
    raise UserError(
        f"no tokenizer in {folder}: expected tokenizer.model (sentencepiece, LLaMA/Alpaca v1-v2) or "
        "tokenizer.json (Llama-3), plus tokenizer_config.json; copy them from the original model"
    )
