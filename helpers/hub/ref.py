"""A model reference classified once, where the user's text enters: :class:`ModelRef`.

The text a user gives (a folder, a file, ``owner/name``, a catalog name, a repo's former id) is asked "local
folder, mirror folder or hub id?" once, by :meth:`ModelRef.of`; the value carries the answer down to where files
are read or downloaded, so no layer asks again. Functions of :mod:`helpers.hub` take either the text or the value.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..catalog import ModelEntry, find
from ..util import UserError
from .environment import LOCAL_MODELS_ENV


def looks_like_hub_id(ref: str) -> bool:
    """True for ``owner/name`` references (not a path such as ``./x/y`` or ``/x``)."""
    parts = ref.split("/")
    return len(parts) == 2 and all(parts) and not ref.startswith((".", "/", "~"))


def current_hub_id(ref: str | ModelRef) -> str:
    """The id to download ``ref`` from: a catalog repo's current hub id when ``ref`` is its former id,
    a catalog name's hub id, else ``ref`` unchanged (the catalog only: no file is looked at)."""
    if isinstance(ref, ModelRef):
        return ref.hub_id or ref.text
    entry = find(ref)
    return ref if entry is None else entry.hub_id


@dataclass(frozen=True)
class ModelRef:
    """What a model reference names.

    Attributes:
        text: the reference as the user gave it (``str(ref)`` gives it back).
        kind: ``local`` (an existing file or folder), ``mirror`` (the copy in ``$HELPERS_LOCAL_MODELS``), ``hub``
            (a hub id to download) or ``unknown`` (none of these: an error where it is used).
        path: the file or folder on this machine (``local`` and ``mirror``), else None.
        hub_id: the repo's current hub id (a catalog name's, or a moved repo's new one); None for a local path.
        entry: the catalog entry the reference names (None for a local path).
        is_local: the files are on this machine (a path, or the offline mirror's copy).
        moved: the text is a repo's former hub id (the v1 LoRAs moved from ``ziqingyang/`` to ``hfl/``).

    Made by :meth:`of`, which decides every field at once.
    """

    text: str
    kind: str
    path: Path | None = None
    hub_id: str | None = None
    entry: ModelEntry | None = field(default=None, compare=False, repr=False)
    is_local: bool = field(default=False, compare=False, repr=False)
    moved: bool = field(default=False, compare=False, repr=False)

    @classmethod
    def of(cls, ref: str | Path | ModelRef) -> ModelRef:
        """Classify ``ref`` (a :class:`ModelRef` is returned as it is)."""
        if isinstance(ref, ModelRef):
            return ref
        text = str(ref)
        path = Path(text).expanduser()
        if path.exists():
            return cls(text, "local", path, is_local=True)
        name = text.strip()
        is_id = looks_like_hub_id(name)
        entry = find(name)  # current_hub_id, with the entry kept (a catalog hub id is always an id)
        hub_id = entry.hub_id if entry is not None else name if is_id else None
        moved = hub_id is not None and is_id and hub_id.lower() != name.lower()
        mirror = os.environ.get(LOCAL_MODELS_ENV)
        if mirror and hub_id and (Path(mirror) / hub_id.split("/")[-1]).exists():
            return cls(text, "mirror", Path(mirror) / hub_id.split("/")[-1], hub_id, entry, True, moved)
        return cls(text, "hub" if hub_id else "unknown", None, hub_id, entry, False, moved)

    def __str__(self) -> str:
        return self.text

    def require_hub_id(self, what: str) -> str:
        """The hub id to download from.

        Raises:
            UserError: the reference is neither a folder here nor a hub id.
        """
        if self.hub_id is None:
            raise UserError(f"{what} {self.text!r} not found: give an existing folder or a hub id like "
                            "'hfl/chinese-alpaca-2-lora-7b'")
        return self.hub_id
