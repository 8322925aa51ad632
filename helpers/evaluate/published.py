"""The C-Eval / CMMLU figures the releases published (package data ``helpers/data/published_scores.json``).

From the READMEs of ymcui/Chinese-LLaMA-Alpaca-2 (C-Eval valid/test and CMMLU test of the LLaMA-2/Alpaca-2
and Plus models, the RLHF table, and Chinese-LLaMA-2-7B at FP16 / 8-bit / 4-bit) and ymcui/Chinese-LLaMA-Alpaca-3
(the Llama-3 models); all measured with the authors' scripts, zero-shot and 5-shot.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .subjects import DATA_DIR, benchmark


@dataclass(frozen=True)
class PublishedRow:
    """One published figure pair: ``zero_shot`` and ``five_shot`` accuracy (%) of ``model`` on ``benchmark``
    ``split`` (None: the README does not say which), at ``quant`` (None: the release as published, fp16)."""

    model: str
    benchmark: str
    split: str | None
    quant: str | None
    zero_shot: float
    five_shot: float
    source: str

    def accuracy(self, shots: int) -> float:
        """The figure for ``shots`` (0 or 5)."""
        return self.zero_shot if shots == 0 else self.five_shot


@lru_cache(maxsize=None)
def published_rows() -> tuple[PublishedRow, ...]:
    """Every published row."""
    data = json.loads((DATA_DIR / "published_scores.json").read_text(encoding="utf-8"))
    return tuple(PublishedRow(**row) for row in data["rows"])


_SUFFIXES = re.compile(r"(-gguf|-lora|-hf|-f16|-fp16|-q\d.*|-im)$")


def release_name(model: str | Path) -> str:
    """The release a model reference stands for: a catalog name, hub id, folder or file name, without the
    ``-lora`` / ``-gguf`` / quant suffixes (``hfl/chinese-alpaca-2-lora-7b`` -> ``chinese-alpaca-2-7b``)."""
    from ..catalog import find

    ref = str(model)
    entry = find(ref) or find(Path(ref).name)
    name = entry.name if entry is not None else Path(ref).stem.lower()
    name = name.replace("ggml-model-", "")
    while _SUFFIXES.search(name):
        name = _SUFFIXES.sub("", name)
    return re.sub(r"^chinese-(llama|alpaca)-lora-", r"chinese-\1-", name)


def published_row(model: str | Path, bench: str = "ceval", *, split: str | None = None,
                  quant: str | None = None) -> PublishedRow | None:
    """The release's published row for ``bench`` (default split: the one the releases report first, C-Eval
    ``val``, CMMLU ``test``), or None when the release published none.

    Args:
        model: a catalog name, hub id, folder or GGUF path of a release (or of a merge named after it).
        bench: ``ceval`` or ``cmmlu``.
        split: ``val`` or ``test``; a row whose split the README does not state is returned for any split.
        quant: ``f16``, ``8bit`` or ``4bit`` for the quantization table (Chinese-LLaMA-2-7B only).
    """
    spec = benchmark(bench)
    name, split = release_name(model), split or spec.default_split
    rows = [r for r in published_rows() if r.model == name and r.benchmark == spec.name and r.quant == quant]
    exact = [r for r in rows if r.split == split]
    return (exact or [r for r in rows if r.split is None] or [None])[0]
