"""Multiple choice on one CSV in C-Eval's layout, scored exactly as the releases scored C-Eval.

The same prompts (:mod:`.prompts`), constrained decoding on processed first-step scores and fast path
(:mod:`.engine`) as ``python -m helpers ceval``, for a single file of your own questions. For the benchmarks
themselves, use :func:`helpers.evaluate.run_exam`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..util import UserError
from .cells import render_column
from .engine import LetterIds, letter_scores, predict
from .exam import open_scorer
from .examdata import Item, read_csv_table
from .prompts import CUE, PromptStyle, body
from .subjects import LETTERS, Subject, benchmark

MC_WINDOW = 2048  # llama.cpp context the questions (and their shots) are scored in
_TEMPLATE_STYLE = {"alpaca": "v1", "llama2-zh": "v2", "llama3": "v3"}


@dataclass(frozen=True)
class MCReport:
    """Multiple-choice result: ``accuracy`` (a fraction) over the ``n`` items that have an answer, and one dict
    per item (``id``, ``answer``, ``pred``, ``correct``, ``scores``: the four processed letter scores, ``probs``:
    their softmax, ``shots``)."""

    accuracy: float
    n: int
    per_item: list[dict] = field(default_factory=list)

    @property
    def correct(self) -> int:
        return sum(1 for item in self.per_item if item.get("correct"))


def read_mc_csv(path: str | Path) -> list[dict]:
    """Rows of a CSV in the C-Eval layout (``id,question,A,B,C,D,answer``; ``answer`` may be absent), each cell
    as ``pandas.read_csv`` types and prints it (:mod:`.cells`).

    Raises:
        UserError: missing file or columns, an answer outside A-D.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found; pass a CSV with columns id,question,A,B,C,D,answer")
    header, rows = read_csv_table(path)
    missing = sorted({"question", *LETTERS} - set(header))
    if not rows or missing:
        raise UserError(f"{path} lacks the C-Eval columns {missing or 'and rows'}; expected id,question,A,B,C,D,answer")
    cols = {c: render_column([r[header.index(c)] for r in rows]) for c in ("question", *LETTERS)}
    out = []
    for i, r in enumerate(rows):
        answer = (r[header.index("answer")] or "").strip().upper() if "answer" in header else ""
        if answer and answer not in LETTERS:
            raise UserError(f"{path} row {i + 1}: the answer {answer!r} is not one of A, B, C, D")
        ident = r[header.index("id")] if "id" in header and r[header.index("id")] else str(i)
        out.append({"id": ident, **{c: cols[c][i] for c in cols}, "answer": answer})
    return out


def _item(row: dict, index: int = 0) -> Item:
    return Item(index, row["question"], tuple(row[c] for c in LETTERS), row.get("answer", ""))


def format_item(row: dict, *, with_answer: bool) -> str:
    """``question\\nA. ...\\nB. ...\\nC. ...\\nD. ...\\n答案：`` (+ ``X\\n\\n`` with the answer)."""
    text = body(_item(row)) + CUE
    return text + f"{row['answer']}\n\n" if with_answer else text


def _style(template: str | None) -> PromptStyle:
    if template in (None, "", "raw"):
        return PromptStyle("v2", benchmark("ceval"), with_prompt=False)
    if template not in _TEMPLATE_STYLE:
        raise UserError(f"unknown template {template!r}; use raw, {', '.join(_TEMPLATE_STYLE)}")
    return PromptStyle(_TEMPLATE_STYLE[template], benchmark("ceval"), with_prompt=True)


def mc_prompt(row: dict, *, shots: Sequence[dict] = (), subject: str = "", template: str | None = None) -> str:
    """The prompt of one item as the releases' C-Eval scripts build it: plain (``template`` None/``raw``: the
    header and solved ``shots`` before the item, no header zero-shot), or with the instruction template of the
    generation that uses ``template`` (``alpaca`` v1, ``llama2-zh`` v2, ``llama3`` v3; see :mod:`.prompts`)."""
    style = _style(template)
    name = subject or "考试"
    return style.prompt(Subject(key=name, zh=name, group="Other"), tuple(_item(s) for s in shots), _item(row))


def letter_ids(scorer: Any) -> LetterIds:
    """The letters' token ids the releases' scripts read (``encode("A")[0]`` and ``encode("：A")[-1]``)."""
    return scorer.letter_ids()


def multiple_choice(model: Any, csv_path: str | Path, *, shots: int = 0, dev_csv: str | Path | None = None,
                    subject: str | None = None, template: str | None = None, backend: str = "auto",
                    n_ctx: int = MC_WINDOW, limit: int | None = None, quantization: str | None = None) -> MCReport:
    """Score a C-Eval-layout CSV the way the releases scored C-Eval (constrained decoding, see :mod:`.engine`).

    Args:
        model: an HF folder, ``.gguf``, hub id or catalog name, or a loaded model (see
            :func:`helpers.evaluate.exam.open_scorer`).
        csv_path: items (``id,question,A,B,C,D,answer``).
        shots: solved examples before each item (0 or 5 in the releases): the first ``shots`` rows of ``dev_csv``,
            default the first other rows of ``csv_path`` that have an answer.
        dev_csv: where the examples come from (C-Eval's ``*_dev.csv``).
        subject: the subject's name in the header (default: the CSV name without ``_val``/``_dev``/``_test``).
        template: ``alpaca``, ``llama2-zh`` or ``llama3`` for the instruction template; None = plain prompts.
        backend: ``auto``, ``transformers`` or ``llama.cpp``.
        n_ctx: llama.cpp context.
        limit: score only the first ``limit`` items.
        quantization: transformers on a GPU: ``None``, ``"8bit"`` or ``"4bit"`` (bitsandbytes).
    """
    if shots < 0:
        raise UserError("shots must be 0 or more")
    all_rows = read_mc_csv(csv_path)
    rows = all_rows[: limit or None]
    dev = read_mc_csv(dev_csv) if dev_csv else None
    name = subject or re.sub(r"_(val|dev|test)$", "", Path(csv_path).stem)
    style = _style(template)
    with open_scorer(model, backend=backend, n_ctx=n_ctx, quantization=quantization) as (scorer, _template, _name):
        ids = scorer.letter_ids()
        prompts, used = [], []
        for row in rows:
            pool = dev if dev is not None else [r for r in all_rows if r["id"] != row["id"] and r["answer"]]
            examples = tuple(_item(s) for s in pool[:shots])
            if len(examples) < shots:
                raise UserError(f"{shots} shots asked for, but only {len(examples)} solved examples are available")
            used.append(len(examples))
            prompts.append(scorer.prompt_ids(style.prompt(Subject(key=name, zh=name, group="Other"), examples,
                                                          _item(row))))
        raw = scorer.letter_logits(prompts, ids.all)
    return _report(rows, prompts, raw, ids, used)


def _report(rows: list[dict], prompts: list[list[int]], raw: Any, ids: LetterIds, used: list[int]) -> MCReport:
    import numpy as np

    items = []
    for row, prompt, logits, n_shots in zip(rows, prompts, raw, used):
        scores = letter_scores(logits, ids, prompt)
        probs = np.exp(np.array(scores) - max(scores))
        probs /= probs.sum()
        pred = predict(scores)
        items.append({"id": row["id"], "answer": row["answer"], "pred": pred,
                      "correct": bool(row["answer"]) and pred == row["answer"],
                      "scores": [round(s, 4) for s in scores],
                      "probs": {c: round(float(p), 4) for c, p in zip(LETTERS, probs)}, "shots": n_shots})
    answered = [it for it in items if it["answer"]]
    acc = sum(it["correct"] for it in answered) / len(answered) if answered else float("nan")
    return MCReport(accuracy=acc, n=len(answered), per_item=items)
