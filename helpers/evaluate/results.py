"""The result of one benchmark run, in the releases' file formats.

- ``summary.json`` (the scripts' ``eval.py``): per subject ``{"score": 100 * correct / num, "num",
  "correct": score * num / 100}``; ``grouped``: per category ``{"correct", "num", "score": correct / num}``
  (a fraction, not a percentage, as the scripts write it); ``All``: the same over every question. Only
  categories with an evaluated subject are listed (the scripts need all subjects).
- ``submission.json``: ``{subject: {row index: letter}}``, the C-Eval leaderboard's format.
- ``predictions.json`` (this package's): every question's answer, prediction and four letter scores, and
  how the run was made; :func:`load_result` reads it back, so runs can be compared later.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..util import UserError, atomic_path, read_json
from .subjects import benchmark

SUMMARY, SUBMISSION, PREDICTIONS = "summary.json", "submission.json", "predictions.json"


@dataclass(frozen=True)
class Answer:
    """One question: ``subject``, row ``index``, the key's ``answer`` ("" if unknown), the ``pred`` letter and
    the four processed letter ``scores``."""

    subject: str
    index: int
    answer: str
    pred: str
    scores: tuple[float, float, float, float]

    @property
    def correct(self) -> bool:
        return bool(self.answer) and self.pred == self.answer


@dataclass(frozen=True)
class ExamResult:
    """One run of a benchmark: what was run (``model``, ``backend``, ``style``...) and every :class:`Answer`."""

    benchmark: str
    split: str
    shots: int
    with_prompt: bool
    style: str
    model: str
    backend: str
    answers: tuple[Answer, ...] = field(repr=False)
    seconds: float = 0.0

    @property
    def has_answers(self) -> bool:
        return bool(self.answers) and all(a.answer for a in self.answers)

    @property
    def accuracy(self) -> float:
        """Accuracy over every question, in percent (the figure the releases publish)."""
        self._need_answers()
        return 100.0 * sum(a.correct for a in self.answers) / len(self.answers)

    def _need_answers(self) -> None:
        if not self.has_answers:
            raise UserError(f"this {self.benchmark} {self.split} run has no answers to score; it only has "
                            "predictions (submission.json)")

    def subjects(self) -> list[str]:
        """Subject keys in the order they were run."""
        return list(dict.fromkeys(a.subject for a in self.answers))

    def summary(self) -> dict:
        """``summary.json``, exactly as the scripts compute it (their float arithmetic included)."""
        self._need_answers()
        bench = benchmark(self.benchmark)
        out: dict = {}
        for subject in self.subjects():
            mine = [a for a in self.answers if a.subject == subject]
            score = 100 * sum(a.correct for a in mine) / len(mine)
            out[subject] = {"score": score, "num": len(mine), "correct": score * len(mine) / 100}
        grouped = {g: {"correct": 0.0, "num": 0} for g in bench.groups}
        for subject in (s for s in bench.subjects if s in out):  # the scripts add up in the mapping's order
            group = grouped[bench.subjects[subject].group]
            group["num"] += out[subject]["num"]
            group["correct"] += out[subject]["correct"]
        out["grouped"] = {g: {**v, "score": v["correct"] / v["num"]} for g, v in grouped.items() if v["num"]}
        total_num = sum(v["num"] for v in out["grouped"].values())
        total = sum(v["correct"] for v in out["grouped"].values())
        out["All"] = {"score": total / total_num, "num": total_num, "correct": total}
        return out

    def submission(self) -> dict:
        """``submission.json``: ``{subject: {"row index": letter}}``."""
        out: dict = {}
        for a in self.answers:
            out.setdefault(a.subject, {})[str(a.index)] = a.pred
        return out

    def table(self) -> list[dict]:
        """The category table: one row per category and ``All`` with ``accuracy`` (%), ``correct``, ``num``."""
        summary = self.summary()
        rows = [{"category": g, "accuracy": 100 * v["score"], "correct": round(v["correct"]), "num": v["num"]}
                for g, v in summary["grouped"].items()]
        every = summary["All"]
        return rows + [{"category": "All", "accuracy": 100 * every["score"], "correct": round(every["correct"]),
                        "num": every["num"]}]

    def write(self, out_dir: str | Path) -> list[Path]:
        """Write ``summary.json`` (when there are answers), ``submission.json`` and ``predictions.json``."""
        out = Path(out_dir)
        files = [(SUBMISSION, self.submission(), 4), (PREDICTIONS, self._record(), 1)]
        if self.has_answers:
            files.insert(0, (SUMMARY, self.summary(), 2))
        written = []
        for name, data, indent in files:
            with atomic_path(out / name) as tmp:
                tmp.write_text(json.dumps(data, ensure_ascii=False, indent=indent), encoding="utf-8")
            written.append(out / name)
        return written

    def _record(self) -> dict:
        head = {k: v for k, v in asdict(self).items() if k != "answers"}
        return {**head, "answers": [[a.subject, a.index, a.answer, a.pred, list(a.scores)] for a in self.answers]}


def load_result(path: str | Path) -> ExamResult:
    """An :class:`ExamResult` from a run's folder (or its ``predictions.json``).

    Raises:
        UserError: no readable ``predictions.json`` there.
    """
    path = Path(path)
    file = path / PREDICTIONS if path.is_dir() else path
    data = read_json(file)
    try:
        answers = tuple(Answer(s, int(i), a, p, tuple(float(x) for x in sc)) for s, i, a, p, sc in data.pop("answers"))
        return ExamResult(**data, answers=answers)
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{file} is not a predictions.json of this package ({exc})") from None
