"""What notebook 04's outputs are called: every fine-tuning job gets its own names, so a run with other data or other
settings never lands on an earlier job's adapter or GGUF, and a rerun of the same job finds its own.

A job's stem is ``<base>-<mode>-<data>-<key>``: the base's name, ``sft``/``pt``, the data's short name (the file's
stem, the folder's or hub data set's name, ``sample``) and the job's 8-hex key (:func:`helpers.train.jobs
.planned_job_key`: the data by content and every setting that changes what is trained). The adapter folder is
``<stem>-lora``, the GGUF ``<stem>-<outtype>.gguf``, the multi-GPU launch files ``<stem>-launch``. The data's short
name keeps letters of any script, digits, ``.`` and ``_`` (everything else becomes ``_``), so a name reads back
unambiguously (:meth:`FinetuneName.parse`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..gguf import WRITE_TYPES
from ..train import DATA_SUFFIXES

MODES = ("sft", "pt")
KEY_LENGTH = 8
DATA_NAME_LENGTH = 40
_NAME = re.compile(r"(?P<base>.+)-(?P<mode>" + "|".join(MODES) + r")-(?P<data>[\w.]+)-(?P<key>[0-9a-f]{"
                   + str(KEY_LENGTH) + r"})(?:-lora|-(?P<outtype>" + "|".join(WRITE_TYPES) + r")\.gguf)")


def data_name(data: str) -> str:
    """The data's short name in an output name: ``mine`` for ``/content/mine.json``, ``alpaca_zh`` for the hub data
    set ``org/alpaca-zh``, the folder's name for a folder."""
    name = Path(str(data).rstrip("/")).name
    if Path(name).suffix.lower() in DATA_SUFFIXES:
        name = Path(name).stem
    short = re.sub(r"[^\w.]+", "_", name).strip("._")[:DATA_NAME_LENGTH].strip("._")
    return short or "data"


@dataclass(frozen=True)
class FinetuneName:
    """The names of one fine-tuning job's outputs."""

    base: str
    mode: str
    data: str
    key: str

    @classmethod
    def of(cls, base: str, mode: str, data: str, key: str) -> FinetuneName:
        """The names of the job training ``base`` (a catalog name, hub id or folder) on ``data`` in ``mode``."""
        return cls(Path(str(base).rstrip("/")).name, mode, data_name(data), key)

    @property
    def stem(self) -> str:
        return f"{self.base}-{self.mode}-{self.data}-{self.key}"

    @property
    def adapter(self) -> str:
        """The adapter folder: ``chinese-alpaca-2-7b-sft-mine-1a2b3c4d-lora``."""
        return f"{self.stem}-lora"

    def gguf(self, outtype: str) -> str:
        """The GGUF the adapter is merged into: ``chinese-alpaca-2-7b-sft-mine-1a2b3c4d-q4_k_m.gguf``."""
        return f"{self.stem}-{outtype}.gguf"

    @property
    def launch(self) -> str:
        """The folder of the multi-GPU launch files."""
        return f"{self.stem}-launch"

    @classmethod
    def parse(cls, name: str) -> tuple[FinetuneName, str | None] | None:
        """``(names, GGUF type)`` of an adapter folder or GGUF name (the type None for the adapter); None when
        ``name`` is not a fine-tuning output."""
        m = _NAME.fullmatch(name)
        if m is None:
            return None
        return cls(m["base"], m["mode"], m["data"], m["key"]), m["outtype"]
