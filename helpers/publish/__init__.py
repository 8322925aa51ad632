"""Keeping a session's work: outputs saved to a workspace folder (Google Drive) and pushed to the hub.

- :mod:`.workspace`: :func:`copy_to_workspace` copies a file or folder with a progress bar, verified by SHA256,
  atomically, skipping what is already saved; returns :class:`Saved`.
- :mod:`.card`: :class:`ReleaseCard` and :func:`model_card`, the ``README.md`` of a pushed model.
- :mod:`.push`: :func:`push_to_hub` uploads adapters, merged folders and GGUFs to the user's account.
- :mod:`.push_command`, :mod:`.save_command`: ``python -m helpers push`` and ``python -m helpers save``.
"""
from __future__ import annotations

from .card import ReleaseCard
from .push import NO_TOKEN, push_to_hub
from .workspace import Saved, copy_to_workspace

__all__ = ["NO_TOKEN", "ReleaseCard", "Saved", "copy_to_workspace", "push_to_hub"]
