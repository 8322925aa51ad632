"""Keeping a session's work: outputs saved to a workspace folder (Google Drive) and pushed to the hub.

- :mod:`.workspace`: :func:`copy_to_workspace` copies a file or folder with a progress bar, verified by SHA256,
  atomically, skipping what is already saved; returns :class:`Saved`.
- :mod:`.card`: :class:`ReleaseCard` and :func:`model_card`, the ``README.md`` of a pushed model.
- :mod:`.push`: :func:`push_to_hub` uploads adapters, merged folders and GGUFs to the user's account.
- :mod:`.cli`: ``python -m helpers push`` and ``python -m helpers save``.
"""
from __future__ import annotations

from .card import CARD_KINDS, ReleaseCard, model_card
from .push import NO_TOKEN, PushResult, push_to_hub, upload_layout
from .workspace import Saved, SavedFile, copy_to_workspace, saved_job

__all__ = ["CARD_KINDS", "NO_TOKEN", "PushResult", "ReleaseCard", "Saved", "SavedFile", "copy_to_workspace", "saved_job", "model_card",
           "push_to_hub", "upload_layout"]
