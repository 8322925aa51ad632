"""What a runtime offers and what a notebook step needs of it, before any download:

- :mod:`.runtime`: :class:`Runtime`, this machine measured or free Colab described (T4 or CPU);
- :mod:`.report`: :class:`Need`, one requirement against what the runtime has, with its verdict;
- :mod:`.sizing`: model files, weights at each precision, KV cache, GGUF sizes;
- :mod:`.params`: a notebook's ``parameters`` cell and setup cell read without running them.

The notebook steps themselves, and their plans, are :mod:`helpers.stages`.
"""
from __future__ import annotations

from .params import notebook_params, notebook_setup
from .report import NO, OK, SLOW, Need, bytes_need, wheel_need
from .runtime import FREE_COLAB_DISK, FREE_COLAB_RAM, GIB, T4_VRAM, Runtime

__all__ = ["FREE_COLAB_DISK", "FREE_COLAB_RAM", "GIB", "NO", "OK", "SLOW", "T4_VRAM", "Need", "Runtime", "bytes_need",
           "notebook_params", "notebook_setup", "wheel_need"]
