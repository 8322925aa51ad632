"""``python -m helpers ceval|cmmlu --model M [--data DIR|HUB_ID] [--split] [--shots] [--with-prompt] --out DIR``,
and ``--compare A B`` (two models, or two earlier output folders, on the same questions)."""
from __future__ import annotations

import json
from dataclasses import MISSING, dataclass
from pathlib import Path

from ..disk import claim_output
from ..util import UserError, atomic_path
from ..util.params import param
from .exam import ExamOptions, run_exam
from .paired import compare_results
from .published import published_row
from .results import PREDICTIONS, SUBMISSION, SUMMARY, ExamResult, load_result
from .subjects import benchmark


@dataclass(frozen=True, kw_only=True)
class ExamModels:
    """The model scored (or two compared) and the results folder; how they are scored: :class:`~.exam.ExamOptions`."""

    model: str | None = param(None, "HF folder, .gguf file, hub id or catalog name")
    compare: tuple[str, str] | None = param(None, "score two models (or two earlier --out folders) on the same "
                                            "questions and compare them", nargs=2, metavar=("A", "B"))
    out: str = param(MISSING, "output folder (summary.json, submission.json, predictions.json)")

    def __post_init__(self) -> None:
        if (self.model is None) == (self.compare is None):
            raise UserError("give --model MODEL, or --compare A B for two models")
        if self.compare is not None:
            object.__setattr__(self, "compare", tuple(self.compare))
        if self.compare is not None and self.compare[0] == self.compare[1]:
            raise UserError("--compare needs two different models or folders")


OPTIONS = (ExamModels, ExamOptions)


def _run(options: ExamOptions, model: str, out: Path) -> ExamResult:
    """One model, or an earlier output folder holding predictions.json."""
    if Path(model).is_dir() and (Path(model) / PREDICTIONS).is_file():
        print(f"{model}: using its earlier run ({PREDICTIONS})")
        return load_result(model)
    with claim_output(out / SUMMARY, what="the results", sidecars=[out / SUBMISSION, out / PREDICTIONS]):
        result = run_exam(model, options)
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


def main(models: ExamModels, options: ExamOptions) -> int:
    """Score one model, or two and compare them; print the report; write the results."""
    out = Path(models.out)
    if models.model:
        _run(options, models.model, out)
        return 0
    a, b = models.compare
    first, second = _run(options, a, out / "a"), _run(options, b, out / "b")
    comparison = compare_results(first, second, name_a=a, name_b=b)
    print(comparison.text())
    for category, (acc_a, acc_b, n) in comparison.by_category.items():
        print(f"  {category:<16}{acc_a:>7.2f} -> {acc_b:6.2f}  ({acc_b - acc_a:+.2f}, {n} questions)")
    with atomic_path(out / "comparison.json") as tmp:
        record = {**comparison.__dict__, "difference": comparison.difference, "significant": comparison.significant}
        tmp.write_text(json.dumps(record, ensure_ascii=False, indent=2), encoding="utf-8")
    print(f"wrote {out / 'comparison.json'}")
    return 0
