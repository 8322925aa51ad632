"""Shared helpers behind the Chinese LLaMA/Alpaca notebooks.

The notebooks stay thin and call these modules; ``python -m helpers --help`` lists the same
operations as command-line tools. Heavy libraries (torch, transformers) are imported lazily inside
the functions that need them.
"""
from __future__ import annotations

__version__ = "0.1.0"

from .util import UserError  # noqa: E402

__all__ = ["UserError", "load_tokenizer", "__version__"]


def load_tokenizer(path, **kwargs):
    """Load a tokenizer whose ids equal sentencepiece's (see :func:`helpers.tokens.load_tokenizer`)."""
    from .tokens import load_tokenizer as load

    return load(path, **kwargs)
