"""The tokenizer class :func:`helpers.tokens.load_tokenizer` builds on transformers 4, which has no
``SentencePieceBackend`` (imports transformers)."""
from __future__ import annotations

from transformers import LlamaTokenizer

from .llama_folder import LlamaFolderMixin

__all__ = ["LegacyLlamaTokenizer"]


class LegacyLlamaTokenizer(LlamaFolderMixin, LlamaTokenizer):
    """transformers 4's slow ``LlamaTokenizer``, built with ``legacy=True`` (encodes with sentencepiece and wraps
    BOS/EOS itself), with the decoding, chat-template BOS and saving of
    :class:`~helpers.tokens.llama_folder.LlamaFolderMixin`."""
