"""Every name the notebooks give their outputs, and the way back from a name to the notebook (and form values) that
makes it (:func:`output_maker`: a name that is nowhere is traced back to its maker).

**Releases.** The one name a release's merge has, in every notebook: 01 writes it, 02 quantizes from and to it, 03
and 05 look it up in the workspace.

``chinese-alpaca-2-7b-lora`` merged into a Q4_K_M GGUF is ``chinese-alpaca-2-7b-q4_k_m.gguf`` (the catalog name
without ``-lora``), into an HF folder ``chinese-alpaca-2-7b-hf``; a patch release keeps its ``-patch``
(``open-chinese-llama-7b-patch-q4_k_m.gguf``), so the name never collides with a full model of the catalog.
:func:`parse_release_file` reads a name back (``tests/test_reruns.py`` checks the round trip for every release,
type and format). 02's quants of another float GGUF are ``<its stem>-<type>.gguf`` (:func:`quant_target`).

**Fine-tuning jobs** (notebook 04): every job gets its own names, so a run with other data or other settings never
lands on an earlier job's adapter or GGUF, and a rerun of the same job finds its own. A job's stem is
``<base>-<mode>-<data>-<key>``: the base's name, ``sft``/``pt``, the data's short name (the file's stem, the folder's
or hub data set's name, ``sample``) and the job's 8-hex key (:func:`helpers.train.jobs.planned_job_key`: the data by
content and every setting that changes what is trained). The adapter folder is ``<stem>-lora``, the GGUF
``<stem>-<outtype>.gguf``, the multi-GPU launch files ``<stem>-launch``. The data's short name keeps letters of any
script, digits, ``.`` and ``_`` (everything else becomes ``_``), so a name reads back unambiguously
(:meth:`FinetuneName.parse`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .. import catalog
from ..catalog import ModelEntry
from ..gguf import FLOAT_TYPES, WRITE_TYPES
from ..train import DATA_SUFFIXES
from .form import assignment

FOLDER_FORMATS = ("hf", "pth")  # merges written as folders: <stem>-hf, <stem>-pth
MODES = ("sft", "pt")
KEY_LENGTH = 8
DATA_NAME_LENGTH = 40
_NAME = re.compile(r"(?P<base>.+)-(?P<mode>" + "|".join(MODES) + r")-(?P<data>[\w.]+)-(?P<key>[0-9a-f]{"
                   + str(KEY_LENGTH) + r"})(?:-lora|-(?P<outtype>" + "|".join(WRITE_TYPES) + r")\.gguf)")


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


def float_stem(path: Path) -> str:
    """The name of a float GGUF without its type: ``chinese-alpaca-2-7b`` for ``chinese-alpaca-2-7b-f16.gguf``."""
    stem = path.name.removesuffix(".gguf")
    for t in FLOAT_TYPES:
        stem = stem.removesuffix(f"-{t}")
    return stem


def quant_target(source: Path, out_dir: str | Path, qtype: str) -> Path:
    """Where the ``qtype`` quant of the float GGUF ``source`` goes: ``<stem>-<qtype>.gguf`` in ``out_dir``."""
    return Path(out_dir).expanduser() / f"{float_stem(source)}-{qtype}.gguf"


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


def output_maker(name: str) -> str | None:
    """Which notebook, with which form values, makes an output called ``name`` (None: not a notebook output)."""
    finetuned = FinetuneName.parse(name)
    if finetuned is not None:
        names, kind = finetuned
        values = [assignment("base_model", names.base), assignment("mode", names.mode),
                  f"{'data'.upper()} naming your '{names.data}' data", f"the settings of job {names.key}"]
        return f"04_finetune_lora ({', '.join(values + ([assignment('outtype', kind)] if kind else []))})"
    parsed = parse_release_file(name)
    if parsed is None:
        return None
    release, fmt, kind = parsed
    model = assignment("model", release.name)
    if fmt == "gguf":
        also = "" if kind in FLOAT_TYPES else f", or 02_quantize_gguf ({model}, {assignment('quant_types', kind)})"
        return f"01_merge_lora ({model}, {assignment('outtype', kind)}){also}"
    return f"01_merge_lora ({model}, {assignment('output_format', fmt)})"
