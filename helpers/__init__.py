"""Shared helpers behind the Chinese LLaMA/Alpaca notebooks, in sub-packages by concern.

From the base checkpoint to a GGUF: :mod:`helpers.checkpoint` reads the base and the LoRAs tensor by tensor,
:mod:`helpers.merge` merges them in one streaming pass, :mod:`helpers.gguf` writes (and quantizes) the GGUF,
with the tokenizer and prompt template from :mod:`helpers.tokens`. :mod:`helpers.chat`, :mod:`helpers.train` and
:mod:`helpers.evaluate` use the result; :mod:`helpers.catalog` knows every release, :mod:`helpers.hub` finds it,
:mod:`helpers.demo` builds offline stand-ins. ``python -m helpers --help`` lists the command-line tools.
Heavy libraries (torch, transformers, llama_cpp) are imported lazily inside the functions that need them.
"""
from __future__ import annotations

__version__ = "0.2.0"
