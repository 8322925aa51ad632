"""The one name a release's merge has, in every notebook: 01 writes it, 02 quantizes from and to it, 03 and 05 look
it up in the workspace, and a name that is nowhere is traced back to the notebook (and form values) that make it.

``chinese-alpaca-2-7b-lora`` merged into a Q4_K_M GGUF is ``chinese-alpaca-2-7b-q4_k_m.gguf`` (the catalog name
without ``-lora``), into an HF folder ``chinese-alpaca-2-7b-hf``; a patch release keeps its ``-patch``
(``open-chinese-llama-7b-patch-q4_k_m.gguf``), so the name never collides with a full model of the catalog.
:func:`parse_release_file` reads a name back (``tests/test_reruns.py`` checks the round trip for every release,
type and format).
"""
from __future__ import annotations

import re
from pathlib import Path

from .. import catalog
from ..catalog import ModelEntry
from ..gguf import WRITE_TYPES

FOLDER_FORMATS = ("hf", "pth")  # merges written as folders: <stem>-hf, <stem>-pth


def release_stem(entry: ModelEntry) -> str:
    """The release's merge without its type: the catalog name without ``-lora`` (a patch keeps ``-patch``)."""
    return entry.name.removesuffix("-lora")


def release_file_name(entry: ModelEntry, fmt: str, outtype: str) -> str:
    """The merge's file (``gguf``: ``<stem>-<outtype>.gguf``) or folder (``hf``/``pth``: ``<stem>-<fmt>``) name."""
    return f"{release_stem(entry)}-{outtype}.gguf" if fmt == "gguf" else f"{release_stem(entry)}-{fmt}"


def release_target(entry: ModelEntry, out_dir: str | Path, fmt: str, outtype: str) -> Path:
    """Where a release's merge goes in ``out_dir`` (:func:`release_file_name`)."""
    return Path(out_dir).expanduser() / release_file_name(entry, fmt, outtype)


def parse_release_file(name: str) -> tuple[ModelEntry, str, str] | None:
    """``(release, format, type)`` of a name :func:`release_file_name` gives (the type is ``""`` for a folder);
    None when ``name`` is not one."""
    m = re.fullmatch(r"(.+)-(" + "|".join(WRITE_TYPES) + r")\.gguf", name)
    stem, fmt, kind = (m.group(1), "gguf", m.group(2)) if m else (*(name.rsplit("-", 1) + [""])[:2], "")
    if not m and fmt not in FOLDER_FORMATS:
        return None
    release = next((e for e in (catalog.find(f"{stem}{s}") for s in ("-lora", ""))
                    if e is not None and e.kind in ("lora", "patch") and release_stem(e) == stem), None)
    return (release, fmt, kind) if release is not None else None
