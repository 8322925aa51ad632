"""C-Eval / CMMLU-style multiple choice, scored the way the releases did: the most probable option letter.

The prompt: question, ``\\nA. ...`` lines, ``\\n答案：``; few-shot under the header
``以下是中国关于{subject}考试的单项选择题，...``.
"""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..tokens import build_prompt
from ..util import UserError, progress, read_utf8
from .perplexity import log_softmax
from .scorers import scoring

LETTERS = "ABCD"
MC_HEADER = "以下是中国关于{subject}考试的单项选择题，请选出其中的正确答案。\n\n"
ANSWER_CUE = "\n答案："
MC_WINDOW = 2048  # context the questions (and their shots) are scored in


@dataclass(frozen=True)
class MCReport:
    """Multiple-choice result: ``accuracy`` over the ``n`` items that have an answer, and one dict per item
    (``id``, ``answer``, ``pred``, ``correct``, ``probs`` over the four letters)."""

    accuracy: float
    n: int
    per_item: list[dict] = field(default_factory=list)

    @property
    def correct(self) -> int:
        return sum(1 for item in self.per_item if item.get("correct"))


def read_mc_csv(path: str | Path) -> list[dict]:
    """Rows of a CSV in the C-Eval layout (``id,question,A,B,C,D,answer``; ``answer`` may be absent)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found; pass a CSV with columns id,question,A,B,C,D,answer")
    text = read_utf8(path, what="a UTF-8 CSV with columns id,question,A,B,C,D,answer")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    missing = {"question", *LETTERS} - set(rows[0] if rows else {})
    if not rows or missing:
        raise UserError(f"{path} lacks the C-Eval columns {sorted(missing) or 'and rows'}; "
                        "expected id,question,A,B,C,D,answer")
    for i, row in enumerate(rows):
        row.setdefault("id", str(i))
        row["answer"] = (row.get("answer") or "").strip().upper()
    return rows


def format_item(row: dict, *, with_answer: bool) -> str:
    """``question\\nA. ...\\nB. ...\\nC. ...\\nD. ...\\n答案：`` (+ ``X\\n\\n`` with the answer)."""
    text = row["question"] + "".join(f"\n{c}. {row[c]}" for c in LETTERS) + ANSWER_CUE
    return text + f"{row['answer']}\n\n" if with_answer else text


def mc_prompt(row: dict, *, shots: Sequence[dict] = (), subject: str = "", template: str | None = None) -> str:
    """The prompt for one item: zero-shot item, or header + solved examples + item; optionally chat-wrapped.

    With a chat ``template`` each solved example becomes an earlier turn (question -> letter) and the
    header opens the first turn.
    """
    header = MC_HEADER.format(subject=subject) if shots else ""
    if template in (None, "", "raw"):
        return header + "".join(format_item(s, with_answer=True) for s in shots) + format_item(row, with_answer=False)
    turns = [(format_item(s, with_answer=False), s["answer"]) for s in shots]
    if turns:
        turns[0] = (header + turns[0][0], turns[0][1])
    user = format_item(row, with_answer=False)
    return build_prompt(template, user, history=turns)


def letter_ids(scorer) -> dict[str, list[int]]:
    """Token ids that stand for each option letter at the answer position.

    Sentencepiece gives a letter right after ``：`` without a space (``A``) but a letter at the start of
    a text with the dummy prefix (``▁A``); byte-level BPE has ``A`` and ``ĠA``. All single-token
    variants that decode to the bare letter are kept; their probabilities are summed.
    """
    cue = scorer.encode(ANSWER_CUE, bos=False)
    out = {}
    for letter in LETTERS:
        cands = []
        full = scorer.encode(ANSWER_CUE + letter, bos=False)
        if len(full) == len(cue) + 1 and full[:len(cue)] == cue:
            cands.append(full[-1])
        for text in (letter, " " + letter):
            ids = scorer.encode(text, bos=False)
            if ids:
                cands.append(ids[-1])
        keep = sorted({c for c in cands if scorer.token_text(c).strip() == letter})
        if not keep:
            raise UserError(f"the tokenizer has no single token for the letter {letter}; cannot score options")
        out[letter] = keep
    return out


def multiple_choice(model: Any, csv_path: str | Path, *, shots: int = 0, dev_csv: str | Path | None = None,
                    subject: str | None = None, template: str | None = None, backend: str = "auto",
                    n_ctx: int = MC_WINDOW, limit: int | None = None) -> MCReport:
    """Score a C-Eval-layout CSV the way the releases did: answer = most probable option letter.

    Args:
        model: anything :func:`open_model` accepts.
        csv_path: items (``id,question,A,B,C,D,answer``).
        shots: solved examples before each item (0 or 5 in the releases).
        dev_csv: where the examples come from (C-Eval's ``*_dev.csv``); default: the other items of ``csv_path``.
        subject: subject name for the few-shot header (default: the CSV name without ``_val``/``_dev``/``_test``).
        template: chat template id for instruct models (``alpaca``, ``llama2-zh``, ``llama3``); None = plain text.
        backend: ``auto``, ``transformers`` or ``llama.cpp``.
        n_ctx: context limit; examples are dropped from the end until the prompt fits.
        limit: score only the first ``limit`` items.
    """
    import numpy as np

    if shots < 0:
        raise UserError("shots must be 0 or more")
    all_rows = read_mc_csv(csv_path)
    rows = all_rows[: limit or None]
    dev = read_mc_csv(dev_csv) if dev_csv else None
    subject = subject or re.sub(r"_(val|dev|test)$", "", Path(csv_path).stem).replace("_", " ")
    with scoring(model, backend=backend, n_ctx=n_ctx) as scorer:
        n_ctx = min(n_ctx, scorer.max_ctx)
        cands = letter_ids(scorer)
        items = []
        for row in progress(rows, desc="multiple choice", unit="item"):
            pool = dev if dev is not None else [r for r in all_rows if r["id"] != row["id"] and r["answer"]]
            examples = pool[:shots]
            while True:
                ids = scorer.encode(mc_prompt(row, shots=examples, subject=subject, template=template), bos=True)
                if len(ids) <= n_ctx or not examples:
                    break
                examples = examples[:-1]
            logp = log_softmax(scorer.logits(ids[-n_ctx:], last_only=True)[-1])
            scores = np.array([np.logaddexp.reduce(logp[cands[c]]) for c in LETTERS])
            probs = np.exp(scores - scores.max())
            probs /= probs.sum()
            pred = LETTERS[int(scores.argmax())]
            items.append({"id": row["id"], "answer": row["answer"], "pred": pred,
                          "correct": bool(row["answer"]) and pred == row["answer"],
                          "probs": {c: round(float(p), 4) for c, p in zip(LETTERS, probs)}, "shots": len(examples)})
    answered = [it for it in items if it["answer"]]
    acc = sum(it["correct"] for it in answered) / len(answered) if answered else float("nan")
    return MCReport(accuracy=acc, n=len(answered), per_item=items)
