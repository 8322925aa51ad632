"""Load a tokenizer that tokenizes exactly as the released models were trained.

transformers 5 turns a sentencepiece ``tokenizer.model`` into a fast BPE tokenizer whose ids differ from
sentencepiece on many Chinese lines of the Chinese-LLaMA tokenizers (e.g. 详细介绍一下). The models were trained
with sentencepiece (through transformers' slow ``LlamaTokenizer`` in legacy mode), and llama.cpp tokenizes the
same way, so :func:`load_tokenizer` returns a python tokenizer whose encoder *is*
``sentencepiece.SentencePieceProcessor`` for such folders: :class:`~helpers.tokens.sp_tokenizer.SentencePieceTokenizer`
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

from ..util import UserError, atomic_path, read_json, write_json
from .sentencepiece import is_sentencepiece

__all__ = ["LlamaFolderMixin", "load_tokenizer", "tokenizer_class"]

_SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token")
_FLAGS = ("lstrip", "rstrip", "single_word", "normalized", "special")


class LlamaFolderMixin:
    """Behaviour both tokenizer classes add to their transformers base (which provides ``sp_model``).

    Decoding goes through sentencepiece for runs of ordinary ids (byte-fallback pieces become UTF-8 text)
    with added/special tokens spliced in; tokenized chat templates start with BOS as ``tokenizer(prompt)`` does;
    :meth:`save_pretrained` writes a slow-``LlamaTokenizer`` folder that any tool loads.
    """

    sp_model: Any

    def _decode(self, token_ids: Any, skip_special_tokens: bool = False,
                clean_up_tokenization_spaces: bool | None = None, **kwargs: Any) -> str:
        """Decode as sentencepiece does, splicing in added/special tokens (skipped with ``skip_special_tokens``)."""
        ids = [int(token_ids)] if isinstance(token_ids, int) else [int(i) for i in token_ids]
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        size = self.sp_model.get_piece_size()
        parts: list[str] = []
        run: list[int] = []
        for i in ids:
            if i in self._added_tokens_decoder:
                parts.append(self.sp_model.decode(run))
                run = []
                if i not in skip:
                    parts.append(self._added_tokens_decoder[i].content)
            elif 0 <= i < size:  # ids past the vocabulary (padded embedding rows) decode to nothing
                run.append(i)
        text = "".join(parts) + self.sp_model.decode(run)
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        return self.clean_up_tokenization(text) if clean_up_tokenization_spaces else text

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """Join tokens as :meth:`decode` joins their ids."""
        return self._decode(self.convert_tokens_to_ids(tokens))

    def apply_chat_template(self, conversation: Any, tools: Any = None, documents: Any = None,
                            chat_template: str | None = None, **kwargs: Any) -> Any:
        """transformers' ``apply_chat_template``, but a tokenized chat starts with BOS as ``tokenizer(prompt)`` does.

        transformers tokenizes the rendered chat without special tokens, so a template that does not write
        ``bos_token`` itself gets one put in front when tokenizing (not when rendering text).
        """
        if kwargs.get("tokenize", True) and self.add_bos_token and self.bos_token:
            template = self.get_chat_template(chat_template, tools)
            if "bos_token" not in template:
                chat_template = "{{ bos_token }}" + template
        return super().apply_chat_template(conversation, tools, documents, chat_template, **kwargs)

    def save_pretrained(self, save_directory: str | Path, filename_prefix: str | None = None,
                        **kwargs: Any) -> tuple[str, ...]:
        """Write tokenizer.model, tokenizer_config.json, special_tokens_map.json (and added_tokens.json).

        Every file is written under a temporary name and renamed when complete. The config names
        ``LlamaTokenizer`` with ``use_fast: false`` and ``legacy: true``, so other tools load the folder with
        sentencepiece too.
        """
        if kwargs.get("push_to_hub"):
            raise UserError("save_pretrained(push_to_hub=True) is not supported here: save to a folder, then upload "
                            "it with huggingface_hub.upload_folder")
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        prefix = filename_prefix + "-" if filename_prefix else ""
        with atomic_path(folder / f"{prefix}tokenizer.model") as tmp:
            tmp.write_bytes(self.sp_model.serialized_model_proto())
        size = self.sp_model.get_piece_size()
        added = {i: t for i, t in sorted(self._added_tokens_decoder.items()) if i >= size}
        specials = {key: str(getattr(self, key)) for key in _SPECIAL_KEYS if getattr(self, key, None) is not None}
        config: dict[str, Any] = {
            "add_bos_token": self.add_bos_token,
            "add_eos_token": self.add_eos_token,
            "added_tokens_decoder": {str(i): {k: getattr(t, k) for k in ("content", *_FLAGS)}
                                     for i, t in added.items()},
            **{key: specials.get(key) for key in _SPECIAL_KEYS},
            "clean_up_tokenization_spaces": bool(self.clean_up_tokenization_spaces),
            "legacy": True,
            "model_max_length": self.model_max_length,
            "padding_side": self.padding_side,
            "sp_model_kwargs": {},
            "tokenizer_class": "LlamaTokenizer",
            "use_fast": False,
        }
        if isinstance(self.chat_template, str):
            config["chat_template"] = self.chat_template
        plain = {"lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
        files = {
            "tokenizer_config.json": config,
            "special_tokens_map.json": {key: {"content": value, **plain} for key, value in specials.items()},
        }
        if added:
            files["added_tokens.json"] = {t.content: i for i, t in added.items()}
        for name, data in files.items():
            write_json(folder / (prefix + name), data)
        return tuple(str(folder / (prefix + name)) for name in ("tokenizer.model", *files))


def tokenizer_class() -> type:
    """The class :func:`load_tokenizer` builds for sentencepiece folders, for the installed transformers.

    transformers 5: :class:`helpers.tokens.sp_tokenizer.SentencePieceTokenizer` (on ``SentencePieceBackend``).
    transformers 4 (no ``SentencePieceBackend``): a ``LlamaTokenizer`` subclass used with ``legacy=True``, which
    also encodes with sentencepiece and wraps BOS/EOS itself.
    """
    try:
        from transformers.tokenization_utils_sentencepiece import SentencePieceBackend  # noqa: F401
    except ImportError:
        from .sp_tokenizer_v4 import LegacyLlamaTokenizer

        return LegacyLlamaTokenizer
    from .sp_tokenizer import SentencePieceTokenizer

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
        flags = {k: bool(value[k]) for k in _FLAGS if k in value}
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
