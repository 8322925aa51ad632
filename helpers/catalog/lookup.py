"""Name and hub-id lookup over the catalog: :func:`find`, :func:`get`, :func:`names`, :func:`release_recipe`."""
from __future__ import annotations

import difflib

from ..util import UserError
from .entry import GENERATIONS, KINDS, ModelEntry
from .releases import CATALOG


def _lookup_table() -> dict[str, str]:
    """Lowercase name / hub id / former hub id / unambiguous hub repo name -> catalog name."""
    table: dict[str, str] = {}
    for e in CATALOG.values():
        table[e.name] = e.name
        for hub_id in (e.hub_id, *e.aliases):
            table[hub_id.lower()] = e.name
    repos: dict[str, set[str]] = {}
    for e in CATALOG.values():
        repos.setdefault(e.hub_id.split("/")[1].lower(), set()).add(e.name)
    for repo, owners in repos.items():
        if len(owners) == 1 and repo not in table:
            table[repo] = next(iter(owners))
    return table


_LOOKUP = _lookup_table()
_HUB_PREFIXES = ("https://huggingface.co/", "http://huggingface.co/", "huggingface.co/", "hf.co/")


def _normalize(query: str) -> str:
    q = str(query).strip().lower()
    for prefix in _HUB_PREFIXES:
        if q.startswith(prefix):
            q = q[len(prefix):]
    return q.rstrip("/")


def find(name_or_hub_id: str) -> ModelEntry | None:
    """Return the entry for a catalog name or hub id (case-insensitive), or ``None``.

    The repo part of a hub id alone (``chinese-alpaca-2-lora-7b``) also works when it is unambiguous, and so
    does a repo's former hub id (``ziqingyang/chinese-alpaca-plus-lora-7b``, now ``hfl/...``).
    """
    key = _LOOKUP.get(_normalize(name_or_hub_id))
    return CATALOG[key] if key else None


def get(name_or_hub_id: str) -> ModelEntry:
    """Return the entry for a catalog name or hub id (case-insensitive).

    Raises:
        UserError: unknown name; the message lists up to 3 close matches.
    """
    entry = find(name_or_hub_id)
    if entry is not None:
        return entry
    q = _normalize(name_or_hub_id)
    close: list[str] = []
    for match in difflib.get_close_matches(q, list(_LOOKUP), n=12, cutoff=0.6):
        if _LOOKUP[match] not in close:
            close.append(_LOOKUP[match])
    hint = f"did you mean {', '.join(close[:3])}? " if close else ""
    raise UserError(f"unknown model {name_or_hub_id!r}; {hint}run `python -m helpers catalog` to list the names")


def names(*, kind: str | None = None, generation: str | None = None) -> list[str]:
    """Catalog names in catalog order, optionally only one ``kind`` and/or ``generation``."""
    if kind is not None and kind not in KINDS:
        raise UserError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    if generation is not None and generation not in GENERATIONS:
        raise UserError(f"unknown generation {generation!r}; use one of {', '.join(GENERATIONS)}")
    return [e.name for e in CATALOG.values()
            if (kind is None or e.kind == kind) and (generation is None or e.generation == generation)]


def release_recipe(name: str) -> tuple[str, list[str]]:
    """Return ``(original base hub id, [hub ids to apply in order, ending with this one])``.

    Example: ``release_recipe("chinese-alpaca-plus-7b-lora")`` ->
    ``("huggyllama/llama-7b", ["hfl/chinese-llama-plus-lora-7b", "hfl/chinese-alpaca-plus-lora-7b"])``
    (current hub ids, the ones to download).

    Raises:
        UserError: unknown name, or a full/GGUF model (nothing to merge).
    """
    entry = get(name)
    if entry.kind not in ("lora", "patch"):
        raise UserError(f"{entry.name} is a {entry.kind} model ({entry.hub_id}); no merge is needed, "
                        "download and load it directly")
    base, *earlier = (CATALOG[b] for b in entry.base)
    return base.hub_id, [e.hub_id for e in earlier] + [entry.hub_id]

