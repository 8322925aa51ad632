"""Load a tokenizer that tokenizes exactly as the released models were trained.

transformers 5 turns a sentencepiece ``tokenizer.model`` into a fast BPE tokenizer whose ids differ from
sentencepiece on many Chinese lines of the Chinese-LLaMA tokenizers (e.g. 详细介绍一下). The models were trained
with sentencepiece (through transformers' slow ``LlamaTokenizer`` in legacy mode), and llama.cpp tokenizes the
same way, so :func:`load_tokenizer` returns :class:`SentencePieceTokenizer` for such folders: a transformers
python tokenizer whose encoder *is* ``sentencepiece.SentencePieceProcessor``. Folders with only a
``tokenizer.json`` (Llama-3 BPE) get transformers' own fast tokenizer.

Encoding rules of :class:`SentencePieceTokenizer` (those of ``LlamaTokenizer(legacy=True)`` and llama.cpp):
special and added tokens written in the text (``<s>``, ``</s>``, ``[PAD]``...) become single ids; every text
segment between them is encoded by sentencepiece with its dummy-prefix space; BOS is prepended and EOS is not
(``add_bos_token`` / ``add_eos_token``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..util import UserError, atomic_path, read_json, write_json
from .sentencepiece import is_sentencepiece

__all__ = ["load_tokenizer", "SentencePieceTokenizer"]

_SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token")
_FLAGS = ("lstrip", "rstrip", "single_word", "normalized", "special")


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


def _sp_tokenizer_class():
    from transformers import PreTrainedTokenizer

    class SentencePieceTokenizer(PreTrainedTokenizer):
        """A transformers python tokenizer that encodes with sentencepiece itself (ids equal ``sp.encode``)."""

        vocab_files_names = {"vocab_file": "tokenizer.model"}
        model_input_names = ["input_ids", "attention_mask"]

        def __init__(
            self,
            vocab_file: str,
            unk_token: Any = "<unk>",
            bos_token: Any = "<s>",
            eos_token: Any = "</s>",
            pad_token: Any = None,
            add_bos_token: bool = True,
            add_eos_token: bool = False,
            **kwargs: Any,
        ) -> None:
            import sentencepiece as spm

            self.vocab_file = str(vocab_file)
            self.sp_model = spm.SentencePieceProcessor(model_file=self.vocab_file)
            self._base_vocab: dict[str, int] | None = None
            self.add_bos_token = add_bos_token
            self.add_eos_token = add_eos_token
            kwargs.setdefault("clean_up_tokenization_spaces", False)
            kwargs.pop("backend", None)
            super().__init__(
                unk_token=unk_token,
                bos_token=bos_token,
                eos_token=eos_token,
                pad_token=pad_token,
                add_bos_token=add_bos_token,
                add_eos_token=add_eos_token,
                **kwargs,
            )

        # -- pickling (datasets.map and DataLoader workers copy the tokenizer)
        def __getstate__(self) -> dict:
            state = self.__dict__.copy()
            state["sp_model"] = None
            state["_sp_proto"] = self.sp_model.serialized_model_proto()
            return state

        def __setstate__(self, state: dict) -> None:
            import sentencepiece as spm

            proto = state.pop("_sp_proto")
            self.__dict__.update(state)
            self.sp_model = spm.SentencePieceProcessor()
            self.sp_model.LoadFromSerializedProto(proto)

        # -- vocabulary
        @property
        def vocab_size(self) -> int:
            return self.sp_model.get_piece_size()

        def get_vocab(self) -> dict[str, int]:
            if self._base_vocab is None:
                sp = self.sp_model
                self._base_vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
            vocab = dict(self._base_vocab)
            vocab.update(self._added_tokens_encoder)
            return vocab

        def _tokenize(self, text: str, **kwargs: Any) -> list[str]:
            sp = self.sp_model
            return [sp.id_to_piece(i) for i in sp.encode(text)]

        def _convert_token_to_id(self, token: str) -> int:
            return self.sp_model.piece_to_id(token)

        def _convert_id_to_token(self, index: int) -> str:
            if 0 <= index < self.sp_model.get_piece_size():
                return self.sp_model.id_to_piece(index)
            return str(self.unk_token)

        # -- special tokens around sequences (LlamaTokenizer's rule)
        def _wrap(self, ids: list) -> list:
            bos = [self.bos_token_id] if self.add_bos_token and self.bos_token_id is not None else []
            eos = [self.eos_token_id] if self.add_eos_token and self.eos_token_id is not None else []
            return bos + list(ids) + eos

        def build_inputs_with_special_tokens(self, token_ids_0: list[int], token_ids_1: list[int] | None = None):
            out = self._wrap(token_ids_0)
            return out if token_ids_1 is None else out + self._wrap(token_ids_1)

        def get_special_tokens_mask(self, token_ids_0, token_ids_1=None, already_has_special_tokens=False):
            if already_has_special_tokens:
                return super().get_special_tokens_mask(token_ids_0, token_ids_1, already_has_special_tokens=True)
            mask = self._wrap_mask(token_ids_0)
            return mask if token_ids_1 is None else mask + self._wrap_mask(token_ids_1)

        def _wrap_mask(self, ids: list) -> list[int]:
            bos = [1] if self.add_bos_token and self.bos_token_id is not None else []
            eos = [1] if self.add_eos_token and self.eos_token_id is not None else []
            return bos + [0] * len(ids) + eos

        def create_token_type_ids_from_sequences(self, token_ids_0, token_ids_1=None):
            return [0] * len(self.build_inputs_with_special_tokens(token_ids_0, token_ids_1))

        # -- decoding: runs of ordinary ids go through sentencepiece, added/special tokens are spliced in
        def _decode(self, token_ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces=None, **kwargs):
            if isinstance(token_ids, int):
                token_ids = [token_ids]
            special = set(self.all_special_ids) if skip_special_tokens else set()
            size = self.sp_model.get_piece_size()
            parts: list[str] = []
            run: list[int] = []
            for raw in token_ids:
                i = int(raw)
                if i in self._added_tokens_decoder:
                    if run:
                        parts.append(self.sp_model.decode(run))
                        run = []
                    if i not in special:
                        parts.append(self._added_tokens_decoder[i].content)
                elif 0 <= i < size:
                    run.append(i)
                # ids past the vocabulary (padded embedding rows) decode to nothing
            if run:
                parts.append(self.sp_model.decode(run))
            text = "".join(parts)
            if clean_up_tokenization_spaces is None:
                clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
            if clean_up_tokenization_spaces:
                text = self.clean_up_tokenization(text)
            return text

        def convert_tokens_to_string(self, tokens: list[str]) -> str:
            return self._decode(self.convert_tokens_to_ids(tokens))

        # -- chat templates: HF tokenizes the rendered chat without special tokens, so put the BOS in the text
        def apply_chat_template(self, conversation, tools=None, documents=None, chat_template=None, **kwargs):
            if kwargs.get("tokenize", True) and self.add_bos_token and self.bos_token:
                template = self.get_chat_template(chat_template, tools)
                if "bos_token" not in template:
                    chat_template = "{{ bos_token }}" + template
            return super().apply_chat_template(conversation, tools, documents, chat_template, **kwargs)

        # -- saving
        def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str]:
            name = (filename_prefix + "-" if filename_prefix else "") + "tokenizer.model"
            out = Path(save_directory) / name
            with atomic_path(out) as tmp:
                tmp.write_bytes(self.sp_model.serialized_model_proto())
            return (str(out),)

        def save_pretrained(self, save_directory, filename_prefix: str | None = None, **kwargs) -> tuple[str, ...]:
            """Write tokenizer.model, tokenizer_config.json, special_tokens_map.json (and added_tokens.json).

            The config names ``LlamaTokenizer`` with ``use_fast: false`` so other tools still load the folder.
            """
            folder = Path(save_directory)
            folder.mkdir(parents=True, exist_ok=True)
            prefix = filename_prefix + "-" if filename_prefix else ""
            files = list(self.save_vocabulary(str(folder), filename_prefix))
            size = self.sp_model.get_piece_size()
            added = {i: t for i, t in self._added_tokens_decoder.items() if i >= size}
            specials = {}
            for key in _SPECIAL_KEYS:
                token = getattr(self, key, None)
                if token is not None:
                    specials[key] = {"content": str(token), "lstrip": False, "normalized": False,
                                     "rstrip": False, "single_word": False}
            config: dict[str, Any] = {
                "add_bos_token": self.add_bos_token,
                "add_eos_token": self.add_eos_token,
                "added_tokens_decoder": {
                    str(i): {"content": t.content, "lstrip": t.lstrip, "normalized": t.normalized,
                             "rstrip": t.rstrip, "single_word": t.single_word, "special": t.special}
                    for i, t in sorted(added.items())
                },
                **{key: specials[key]["content"] if key in specials else None for key in _SPECIAL_KEYS},
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
            for name, data in (
                ("tokenizer_config.json", config),
                ("special_tokens_map.json", specials),
                ("added_tokens.json", {t.content: i for i, t in sorted(added.items())}),
            ):
                if name == "added_tokens.json" and not added:
                    continue
                write_json(folder / (prefix + name), data)
                files.append(str(folder / (prefix + name)))
            return tuple(files)

    SentencePieceTokenizer.__module__ = __name__
    SentencePieceTokenizer.__qualname__ = "SentencePieceTokenizer"
    return SentencePieceTokenizer


def __getattr__(name: str):
    # The class derives from transformers, which is imported only on first use; pickle finds it here.
    if name == "SentencePieceTokenizer":
        cls = globals().get(name)
        if cls is None:
            cls = globals()[name] = _sp_tokenizer_class()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
                f"has {sp.id_to_piece(int(key))!r} there; the files come from different tokenizers"
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

    tokens = {
        "bos_token": pick("bos_token", sp.bos_id()),
        "eos_token": pick("eos_token", sp.eos_id()),
        "unk_token": pick("unk_token", sp.unk_id()),
        "pad_token": pick("pad_token", sp.pad_id()),  # a pad that is not in the vocabulary stays unset
    }
    init: dict[str, Any] = {
        **tokens,
        "add_bos_token": bool(config.get("add_bos_token", True)),
        "add_eos_token": bool(config.get("add_eos_token", False)),
        "added_tokens_decoder": added,
    }
    for key in ("model_max_length", "padding_side", "truncation_side", "chat_template"):
        if config.get(key) is not None:
            init[key] = config[key]
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        init["chat_template"] = jinja.read_text(encoding="utf-8")
    init.update(kwargs)
    cls = __getattr__("SentencePieceTokenizer")
    try:
        return cls(vocab_file=str(model_file), **init)
    except (ValueError, TypeError, KeyError) as exc:
        raise UserError(f"cannot build a tokenizer from {folder}: {exc}") from None


def load_tokenizer(path: str | Path, **kwargs: Any):
    """Load the tokenizer of a model folder so that its ids equal the ones the model was trained with.

    A folder with a sentencepiece ``tokenizer.model`` gives a :class:`SentencePieceTokenizer` (ids equal
    ``sentencepiece``'s; special tokens from tokenizer_config.json / special_tokens_map.json / added_tokens.json;
    a pad token is set only if the files name one that is in the vocabulary). A folder with only
    ``tokenizer.json`` (Llama-3 BPE) gives ``transformers.AutoTokenizer``'s fast tokenizer.

    Args:
        path: a tokenizer or model folder (or a ``tokenizer.model`` file).
        **kwargs: tokenizer settings such as ``padding_side``, ``pad_token``, ``add_bos_token``,
            ``model_max_length``; ``chat_template`` may be a Jinja template or a template id from
            :mod:`helpers.templates` (e.g. ``"llama2-zh"``).

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
