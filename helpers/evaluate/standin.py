"""Small stand-ins for C-Eval and CMMLU, in the layouts they are published in (tests, smoke runs, benchmarks).

The questions are made up (sentences of the package's Chinese corpus, and sums), deterministic for a seed; the
files follow the real data sets' names, columns and layouts:

- ``csv``: the official layout (C-Eval ``{split}/{subject}_{split}.csv`` with ``id,question,A,B,C,D,answer,
  explanation``, the test split without answers; CMMLU ``{split}/{subject}.csv`` with an unnamed index column
  and ``Question,A,B,C,D,Answer``);
- ``parquet``: ``ceval/ceval-exam`` on the hub today, ``{subject}/{split}-00000-of-00001.parquet`` (the test
  split's answers empty), with its README's configs;
- ``zip``: ``haonan-li/cmmlu`` on the hub, ``cmmlu_v1_0_1.zip`` of the CSV layout beside its loading script.
"""
from __future__ import annotations

import csv
import io
import random
import zipfile
import zlib
from pathlib import Path
from typing import Sequence

from ..util import UserError
from .subjects import DATA_DIR, LETTERS, Benchmark, benchmark

LAYOUTS = ("csv", "parquet", "zip")


def _question(rng: random.Random, lines: list[str], numeric: bool, long: bool) -> tuple[str, list[str], str]:
    """A question, its four options and the answer letter (``long``: about as long as C-Eval's)."""
    answer = rng.choice(LETTERS)
    if long:
        picked = rng.sample(lines, 7)
        return "".join(picked[:3]) + "根据上文，下列说法正确的是？", picked[3:], answer
    if numeric:  # a numbers-only option column: pandas types it, and prints 2 as 2.0 next to 0.5
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        right = str(a + b) if rng.random() < 0.7 else f"{(a + b) / 2:g}"
        wrong = {str(a + b + d) for d in (-3, -1, 1, 2, 4, 5)} - {right}
        options = rng.sample(sorted(wrong), 3)
        question = f"{a}加{b}{'等于多少' if '.' not in right else '的一半是多少'}？"
    else:
        line = rng.choice(lines)
        cut = rng.randint(4, max(5, len(line) // 2))
        question, right = f"“{line[:cut]}……”的下文是什么？", line[cut:cut + 8] or line[:8]
        options = [o[cut:cut + 8] or o[:8] for o in rng.sample(lines, 3)]
    options.insert(LETTERS.index(answer), right)
    return question, options, answer


def _rows(bench: Benchmark, subject: str, split: str, n: int, seed: int, long: bool = False) -> list[dict]:
    lines = [s for s in (DATA_DIR / "corpus_zh.txt").read_text(encoding="utf-8").splitlines() if len(s) > 12]
    rng = random.Random(zlib.crc32(f"{seed}/{bench.name}/{subject}/{split}".encode()))
    numeric = rng.random() < 0.4
    rows = []
    for i in range(n):
        question, options, answer = _question(rng, lines, numeric, long)
        rows.append({"id": i, "question": question, **dict(zip(LETTERS, options)), "answer": answer,
                     "explanation": f"解析{i}" if split == "dev" else ""})
    return rows


def _csv_text(bench: Benchmark, rows: list[dict], split: str) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if bench.name == "cmmlu":
        w.writerow(["", "Question", *LETTERS, "Answer"])
        w.writerows([r["id"], r["question"], *(r[c] for c in LETTERS), r["answer"]] for r in rows)
    else:
        cols = ["id", "question", *LETTERS] + ([] if split == "test" else ["answer", "explanation"])
        w.writerow(cols)
        w.writerows([r[c] for c in cols] for r in rows)
    return buf.getvalue()


def _csv_files(bench: Benchmark, subjects: Sequence[str], n: int, seed: int, long: bool) -> dict[str, str]:
    return {f"{split}/{bench.file_name(s, split)}":
            _csv_text(bench, _rows(bench, s, split, 5 if split == "dev" else n, seed, long), split)
            for split in bench.splits for s in subjects}


def _parquet(bench: Benchmark, subjects: Sequence[str], n: int, seed: int, out: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    for s in subjects:
        for split in bench.splits:
            rows = _rows(bench, s, split, 5 if split == "dev" else n, seed)
            table = pa.table({"id": pa.array([r["id"] for r in rows], pa.int32()),
                              **{c: [r[c] for r in rows] for c in ("question", *LETTERS)},
                              "answer": ["" if split == "test" else r["answer"] for r in rows],
                              "explanation": [r["explanation"] for r in rows]})
            (out / s).mkdir(parents=True, exist_ok=True)
            pq.write_table(table, out / s / f"{split}-00000-of-00001.parquet")
    configs = "".join(f"  - config_name: {s}\n    data_files:\n" + "".join(
        f"      - split: {sp}\n        path: {s}/{sp}-*\n" for sp in bench.splits) for s in subjects)
    (out / "README.md").write_text(f"---\nconfigs:\n{configs}---\n# {bench.title} stand-in\n", encoding="utf-8")


def write_standin(out: str | Path, bench: str = "ceval", *, subjects: Sequence[str] | None = None, questions: int = 6,
                  layout: str = "csv", seed: int = 0, long: bool = False) -> Path:
    """Write a stand-in of ``bench`` into the folder ``out`` and return it.

    Args:
        out: the folder (created).
        bench: ``ceval`` or ``cmmlu``.
        subjects: subject keys (default: the first three of the benchmark).
        questions: questions per subject in ``val`` / ``test`` (dev always has 5).
        layout: ``csv`` (official), ``parquet`` (C-Eval's hub repo) or ``zip`` (CMMLU's hub repo).
        seed: changes the questions.
        long: questions of three sentences and sentence-long options, about C-Eval's lengths (the speed
            benchmark); default: short ones.
    """
    spec = benchmark(bench)
    if layout not in LAYOUTS:
        raise UserError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    keys = list(subjects or list(spec.subjects)[:3])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if layout == "parquet":
        _parquet(spec, keys, questions, seed, out)
        return out
    files = _csv_files(spec, keys, questions, seed, long)
    if layout == "csv":
        for name, text in files.items():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_text(text, encoding="utf-8")
        return out
    with zipfile.ZipFile(out / f"{spec.name}_v1_0_1.zip", "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    (out / f"{spec.name}.py").write_text("raise SystemExit('a loading script: never run, never downloaded')\n")
    (out / "README.md").write_text(f"# {spec.title} stand-in\n", encoding="utf-8")
    return out
