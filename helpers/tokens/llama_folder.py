"""What both sentencepiece tokenizer classes add to their transformers base: sentencepiece-exact decoding with
added tokens spliced in, chat templates that start with BOS, and a ``save_pretrained`` that writes a folder any tool
loads with sentencepiece. The classes themselves are :mod:`.sp_backend` (transformers 5) and :mod:`.sp_legacy`
(transformers 4); :func:`helpers.tokens.load_tokenizer` picks one."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..util import UserError, atomic_path, write_json

__all__ = ["FLAGS", "LlamaFolderMixin"]

SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token")
FLAGS = ("lstrip", "rstrip", "single_word", "normalized", "special")  # an AddedToken's flags, as the files store them


class LlamaFolderMixin:
    """Behaviour both tokenizer classes add to their transformers base (which provides ``sp_model``).

    Decoding goes through sentencepiece for runs of ordinary ids (byte-fallback pieces become UTF-8 text)
    with added/special tokens spliced in; tokenized chat templates start with BOS as ``tokenizer(prompt)`` does;
    :meth:`save_pretrained` writes a slow-``LlamaTokenizer`` folder that any tool loads.
    """

    sp_model: Any

    def decode(self, token_ids: Any, skip_special_tokens: bool = False,
               clean_up_tokenization_spaces: bool | None = None, **kwargs: Any) -> str | list[str]:
        """Decode as sentencepiece does, splicing in added/special tokens (skipped with ``skip_special_tokens``);
        a batch (a list of sequences) gives a list of strings, as transformers' ``decode`` does."""
        ids = token_ids.tolist() if hasattr(token_ids, "tolist") else token_ids
        if isinstance(ids, (list, tuple)) and ids and isinstance(ids[0], (list, tuple)):
            return [self.decode(seq, skip_special_tokens, clean_up_tokenization_spaces) for seq in ids]
        ids = [int(ids)] if isinstance(ids, int) else [int(i) for i in ids]
        added = self.added_tokens_decoder
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        size = self.sp_model.get_piece_size()
        parts: list[str] = []
        run: list[int] = []
        for i in ids:
            if i in added:
                parts.append(self.sp_model.decode(run))
                run = []
                if i not in skip:
                    parts.append(added[i].content)
            elif 0 <= i < size:  # ids past the vocabulary (padded embedding rows) decode to nothing
                run.append(i)
        text = "".join(parts) + self.sp_model.decode(run)
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        return self.clean_up_tokenization(text) if clean_up_tokenization_spaces else text

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """Join tokens as :meth:`decode` joins their ids."""
        return self.decode(self.convert_tokens_to_ids(tokens))

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
        added = {i: t for i, t in sorted(self.added_tokens_decoder.items()) if i >= size}
        specials = {key: str(getattr(self, key)) for key in SPECIAL_KEYS if getattr(self, key, None) is not None}
        config: dict[str, Any] = {
            "add_bos_token": self.add_bos_token,
            "add_eos_token": self.add_eos_token,
            "added_tokens_decoder": {str(i): {k: getattr(t, k) for k in ("content", *FLAGS)}
                                     for i, t in added.items()},
            **{key: specials.get(key) for key in SPECIAL_KEYS},
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
