"""The demo's data files: Alpaca-format instructions, plain text, held-out text and a C-Eval-style CSV."""
from __future__ import annotations

import json
import random
from pathlib import Path

from ..util import atomic_path
from .tokenizers import corpus


def write_data(d: Path) -> None:
    """Instruction data (Alpaca JSON), held-out text and a C-Eval-style CSV for the notebooks."""
    import csv

    d.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    digits = "零一二三四五六七八九十"
    sft = []
    for _ in range(64):
        a, b = rng.randint(1, 9), rng.randint(0, 9)
        sft.append({"instruction": f"请计算{digits[a]}加{digits[b]}等于多少？", "input": "",
                    "output": f"{digits[a]}加{digits[b]}等于{a + b}。"})
    lines = corpus("zh")
    sft += [{"instruction": "请把下面这句话复述一遍。", "input": s, "output": s} for s in lines[:32]]
    (d / "sft_zh.json").write_text(json.dumps(sft, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    (d / "pt_zh.txt").write_text("\n".join(lines[:60]) + "\n", encoding="utf-8")
    (d / "heldout_zh.txt").write_text("\n".join(lines[60:]) + "\n", encoding="utf-8")
    with (d / "ceval_sample.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "question", "A", "B", "C", "D", "answer"])
        for i in range(8):
            a, b = rng.randint(1, 9), rng.randint(1, 9)
            options = [a + b, a + b + 1, abs(a - b), a * b + 2]
            order = rng.sample(range(4), 4)
            opts = [str(options[j]) for j in order]
            w.writerow([i, f"{a}加{b}等于多少？", *opts, "ABCD"[order.index(0)]])


def sample_data(out_dir: str | Path, *, mode: str = "sft") -> Path:
    """Write a small Chinese sample (96 Alpaca records, or plain text for ``pt``) and return its path."""
    folder = Path(out_dir) / "sample_data"
    target = folder / ("pt_zh.txt" if mode == "pt" else "sft_zh.json")
    if not target.is_file():
        with atomic_path(folder, is_dir=True) as tmp:
            write_data(tmp)
    return target
