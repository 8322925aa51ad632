"""Tokens: sentencepiece-exact tokenizers, the releases' prompt templates, and vocabulary expansion.

- :mod:`.tokenizer`: :func:`load_tokenizer`, a transformers tokenizer whose ids equal sentencepiece's; it builds
  :mod:`.sp_backend`'s class on transformers 5 and :mod:`.sp_legacy`'s on transformers 4 (both import transformers,
  on first use), each a :class:`~.llama_folder.LlamaFolderMixin` over its transformers base;
- :mod:`.templates`: the prompt formats (render, Jinja and Ollama exports, sampling defaults);
- :mod:`.detect`: which template a model uses (catalog, GGUF metadata, tokenizer files);
- :mod:`.files`: the tokenizer files of a folder and how many ids they define;
- :mod:`.sentencepiece`: sentencepiece models as data (pieces, merging, writing tokenizer folders);
- :mod:`.vocab`: ``expand-vocab`` and the initialisation of new embedding rows.
"""
from __future__ import annotations

from .detect import template_for_model, template_from_chat_template
from .files import LLAMA3_PRE_PATTERN, tokenizer_files, tokenizer_vocab_size
from .sentencepiece import piece_count
from .templates import (TEMPLATES, Template, build_prompt, generation_defaults, get_template, gguf_chat_template,
                        jinja_chat_template, ollama_template)
from .tokenizer import load_tokenizer
from .vocab import expand_vocab

__all__ = ["LLAMA3_PRE_PATTERN", "TEMPLATES", "Template", "build_prompt", "expand_vocab", "generation_defaults",
           "get_template", "gguf_chat_template", "jinja_chat_template", "load_tokenizer", "ollama_template",
           "piece_count", "template_for_model", "template_from_chat_template", "tokenizer_files",
           "tokenizer_vocab_size"]
