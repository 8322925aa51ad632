"""What a runtime offers and what a notebook step needs of it, before any download:

- :mod:`.runtime`: :class:`Runtime`, this machine measured or free Colab described (T4 or CPU);
- :mod:`.report`: :class:`Need`, one requirement against what the runtime has, with its verdict;
- :mod:`.sizing`: model files, weights at each precision, KV cache, GGUF sizes;
- :mod:`.params`: a notebook's ``parameters`` cell and setup cell read without running them.

The notebook steps themselves, and their plans, are :mod:`helpers.stages`.
"""
from __future__ import annotations

from .report import NO, OK, SLOW, Need, bytes_need, wheel_need
from .runtime import FREE_COLAB_DISK, FREE_COLAB_RAM, Runtime

__all__ = ["FREE_COLAB_DISK", "FREE_COLAB_RAM", "NO", "OK", "SLOW", "Need", "Runtime", "bytes_need", "wheel_need"]
