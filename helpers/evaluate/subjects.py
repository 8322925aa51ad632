"""C-Eval and CMMLU as data: where their files are, what their columns are called, their subjects and categories.

The subject tables are package data (``helpers/data/ceval_subjects.json``, ``cmmlu_subjects.json``): C-Eval's
``subject_mapping.json`` (English and Chinese names, one of four categories) and CMMLU's categories as the
Chinese-LLaMA-Alpaca scripts count them in ``summary.json`` (five groups; a subject tagged *china specific*
counts only under "China specific").
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache

from ..util import UserError
from ..util.files import DATA_DIR
LETTERS = "ABCD"


@dataclass(frozen=True)
class Subject:
    """One subject: its file ``key`` (as in the file names), names and the category it counts under."""

    key: str
    zh: str
    group: str
    en: str = ""
    v3_name: str = ""  # the name the Llama-3 C-Eval script writes in its header (default: zh)


@dataclass(frozen=True)
class Benchmark:
    """Layout and columns of one benchmark.

    Attributes:
        name: ``ceval`` or ``cmmlu``.
        title: display name.
        hub_id: the data set on the Hugging Face hub.
        splits: the splits it has, in the official layout's folder names.
        default_split: the split the releases report (C-Eval ``val``, CMMLU ``test``).
        file_suffix: ``{subject}{file_suffix.format(split=...)}.csv`` in ``{split}/`` (C-Eval ``_val``, CMMLU none).
        question: the question column (``question`` / ``Question``); options are ``A``..``D``.
        answer: the answer column (``answer`` / ``Answer``).
        groups: the categories of ``summary.json``'s ``grouped``, in the authors' order.
        subjects: every subject by key.
        test_has_answers: whether the public test split carries answers (CMMLU yes, C-Eval no).
    """

    name: str
    title: str
    hub_id: str
    splits: tuple[str, ...]
    default_split: str
    file_suffix: str
    question: str
    answer: str
    groups: tuple[str, ...]
    subjects: dict[str, Subject] = field(hash=False)
    test_has_answers: bool

    def __post_init__(self) -> None:
        if self.default_split not in self.splits:
            raise ValueError(f"{self.name}: default split {self.default_split!r} is not one of {self.splits}")
        bad = sorted(s.key for s in self.subjects.values() if s.group not in self.groups)
        if bad:
            raise ValueError(f"{self.name}: subjects in no known group: {bad}")

    def file_name(self, subject: str, split: str) -> str:
        """The CSV's name in the official layout's ``{split}/`` folder."""
        return f"{subject}{self.file_suffix.format(split=split)}.csv"

    def subject_of(self, file_name: str, split: str) -> str | None:
        """The subject key of an official file name in ``{split}/`` (None for another file)."""
        tail = self.file_suffix.format(split=split) + ".csv"
        return file_name[: -len(tail)] if file_name.endswith(tail) and len(file_name) > len(tail) else None


def _subjects(file: str) -> tuple[tuple[str, ...], dict[str, Subject]]:
    data = json.loads((DATA_DIR / file).read_text(encoding="utf-8"))
    subjects = {key: Subject(key=key, **info) for key, info in data["subjects"].items()}
    return tuple(data["groups"]), subjects


@lru_cache(maxsize=None)
def benchmark(name: str) -> Benchmark:
    """The :class:`Benchmark` called ``name`` (``ceval`` or ``cmmlu``; ``c-eval`` is accepted)."""
    key = name.lower().replace("-", "").replace("_", "")
    if key == "ceval":
        groups, subjects = _subjects("ceval_subjects.json")
        return Benchmark(name="ceval", title="C-Eval", hub_id="ceval/ceval-exam", splits=("dev", "val", "test"),
                         default_split="val", file_suffix="_{split}", question="question", answer="answer",
                         groups=groups, subjects=subjects, test_has_answers=False)
    if key == "cmmlu":
        groups, subjects = _subjects("cmmlu_subjects.json")
        return Benchmark(name="cmmlu", title="CMMLU", hub_id="haonan-li/cmmlu", splits=("dev", "test"),
                         default_split="test", file_suffix="", question="Question", answer="Answer",
                         groups=groups, subjects=subjects, test_has_answers=True)
    raise UserError(f"unknown benchmark {name!r}; use ceval or cmmlu")

