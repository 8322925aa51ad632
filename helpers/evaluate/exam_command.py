"""``python -m helpers ceval|cmmlu --model M [--data DIR|HUB_ID] [--split] [--shots] [--with-prompt] --out DIR``,
and ``--compare A B`` (two models, or two earlier output folders, on the same questions)."""
from __future__ import annotations

import json
from dataclasses import MISSING, dataclass
from pathlib import Path

from ..disk import claim_output
from ..util import UserError, atomic_path
from ..util.params import param
from .exam import run_exam
from .paired import compare_results
from .prompts import STYLES
from .published import published_row
from .results import PREDICTIONS, SUBMISSION, SUMMARY, ExamResult, load_result
from .subjects import benchmark


@dataclass(frozen=True, kw_only=True)
class ExamOptions:
    """A C-Eval / CMMLU run as the releases scored it (``benchmark``: the command's name), of one model or two."""

    model: str | None = param(None, "HF folder, .gguf file, hub id or catalog name")
    compare: tuple[str, str] | None = param(None, "score two models (or two earlier --out folders) on the same "
                                            "questions and compare them", nargs=2, metavar=("A", "B"))
    data: str | None = param(None, "folder of the data (official CSV layout, the hub's parquet layout or an archive "
                             "of it) or a hub data set id (default: ceval/ceval-exam, haonan-li/cmmlu)")
    split: str | None = param(None, "default: val for C-Eval, test for CMMLU", choices=("val", "test"))
    shots: int = param(5, "solved dev examples per prompt (the releases: 0, 5)", parse=int)
    with_prompt: bool = param(False, "wrap prompts in the instruction template (the releases did for Alpaca / "
                              "Instruct models)")
    style: str = param("auto", "whose scripts to follow: v1, v2, v3 (auto: from the model)", choices=("auto", *STYLES))
    backend: str = param("auto", "transformers or llama.cpp (auto: llama.cpp for a GGUF)",
                         choices=("auto", "transformers", "llama.cpp"))
    quant: str | None = param(None, "bitsandbytes quantization (transformers, GPU)", choices=("8bit", "4bit"))
    dtype: str | None = param(None, "transformers weights dtype (default: float16 on GPU, float32 on CPU)")
    gguf_quant: str = param("q4_k", "which GGUF of a catalog GGUF repo")
    subjects: str | None = param(None, "comma-separated subject keys (default: all)")
    n_ctx: int | None = param(None, "llama.cpp context (default: the model's, at most 4096)", parse=int)
    batch_size: int | None = param(None, "questions per forward pass (default 8 on GPU, 1 on CPU)", parse=int)
    submission_only: bool = param(False, "a split without answers (C-Eval test): write only submission.json")
    out: str = param(MISSING, "output folder (summary.json, submission.json, predictions.json)")
    benchmark: str = param("ceval", "ceval or cmmlu", cli=False)

    def __post_init__(self) -> None:
        benchmark(self.benchmark)
        if (self.model is None) == (self.compare is None):
            raise UserError("give --model MODEL, or --compare A B for two models")
        if self.compare is not None:
            object.__setattr__(self, "compare", tuple(self.compare))
        if self.compare is not None and self.compare[0] == self.compare[1]:
            raise UserError("--compare needs two different models or folders")


OPTIONS = (ExamOptions,)


def _run(args: ExamOptions, model: str, out: Path) -> ExamResult:
    """One model, or an earlier output folder holding predictions.json."""
    if Path(model).is_dir() and (Path(model) / PREDICTIONS).is_file():
        print(f"{model}: using its earlier run ({PREDICTIONS})")
        return load_result(model)
    subjects = [s.strip() for s in args.subjects.split(",") if s.strip()] if args.subjects else None
    with claim_output(out / SUMMARY, what="the results", sidecars=[out / SUBMISSION, out / PREDICTIONS]):
        result = run_exam(model, args.benchmark, data=args.data, split=args.split, shots=args.shots,
                          with_prompt=args.with_prompt, style=args.style, subjects=subjects, backend=args.backend,
                          quantization=args.quant, dtype=args.dtype, n_ctx=args.n_ctx, batch_size=args.batch_size,
                          gguf_quant=args.gguf_quant, submission_only=args.submission_only)
        written = result.write(out)
    _report(result, model)
    print("wrote " + ", ".join(str(p) for p in written))
    return result


def _report(result: ExamResult, model: str) -> None:
    spec = benchmark(result.benchmark)
    print(f"{spec.title} {result.split}, {result.shots}-shot, {result.style} prompts"
          f"{' with the instruction template' if result.with_prompt else ''}: {model} ({result.backend}), "
          f"{len(result.answers)} questions in {result.seconds:.0f} s")
    if not result.has_answers:
        return
    print(f"{'category':<16}{'accuracy':>9}  correct/num")
    for row in result.table():
        print(f"{row['category']:<16}{row['accuracy']:>9.2f}  {row['correct']}/{row['num']}")
    ref = published_row(model, result.benchmark, split=result.split)
    if ref is not None and result.shots in (0, 5):
        print(f"published for {ref.model} ({spec.title} {ref.split or 'split not stated'}, {result.shots}-shot): "
              f"{ref.accuracy(result.shots):.1f}")


def main(args: ExamOptions) -> int:
    """Score one model, or two and compare them; print the report; write the results."""
    out = Path(args.out)
    if args.model:
        _run(args, args.model, out)
        return 0
    a, b = args.compare
    first, second = _run(args, a, out / "a"), _run(args, b, out / "b")
    comparison = compare_results(first, second, name_a=a, name_b=b)
    print(comparison.text())
    for category, (acc_a, acc_b, n) in comparison.by_category.items():
        print(f"  {category:<16}{acc_a:>7.2f} -> {acc_b:6.2f}  ({acc_b - acc_a:+.2f}, {n} questions)")
    with atomic_path(out / "comparison.json") as tmp:
        record = {**comparison.__dict__, "difference": comparison.difference, "significant": comparison.significant}
        tmp.write_text(json.dumps(record, ensure_ascii=False, indent=2), encoding="utf-8")
    print(f"wrote {out / 'comparison.json'}")
    return 0
