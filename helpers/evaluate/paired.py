"""Did a quant (or a LoRA) change anything beyond noise? Two runs on the same questions, compared pair by pair.

Both runs answer the same questions, so the difference of their accuracies is judged from the questions
they disagree on: ``only_a`` (A right, B wrong) and ``only_b``. :func:`compare_results` reports

- each accuracy and the difference B - A in percentage points;
- a 95% interval for the difference from a paired bootstrap (questions resampled with replacement, both
  runs' answers kept together; the 2.5th and 97.5th percentiles);
- McNemar's exact test: the two-sided binomial p-value of ``only_b`` among the ``only_a + only_b``
  discordant questions, under "both are equally good" (p = 1 when they never disagree);
- the same difference per category.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..util import UserError
from .results import ExamResult
from .subjects import benchmark

BOOTSTRAP_SAMPLES = 10_000


@dataclass(frozen=True)
class PairedComparison:
    """Two runs on the same ``n`` questions (see the module docstring); accuracies and differences in %."""

    name_a: str
    name_b: str
    n: int
    accuracy_a: float
    accuracy_b: float
    only_a: int
    only_b: int
    ci_low: float
    ci_high: float
    p_value: float
    by_category: dict[str, tuple[float, float, int]] = field(default_factory=dict)  # category -> (acc A, acc B, n)

    @property
    def difference(self) -> float:
        """Accuracy of B minus accuracy of A, in percentage points."""
        return self.accuracy_b - self.accuracy_a

    @property
    def significant(self) -> bool:
        """The 95% interval leaves out zero."""
        return self.ci_low > 0 or self.ci_high < 0

    def text(self) -> str:
        """A few lines for a terminal or a notebook."""
        verdict = ("a real difference (the 95% interval leaves out 0)" if self.significant
                   else "within noise (the 95% interval includes 0)")
        return (f"A {self.name_a}: {self.accuracy_a:.2f}%   B {self.name_b}: {self.accuracy_b:.2f}%   ({self.n} questions)\n"
                f"B - A = {self.difference:+.2f} points, 95% CI [{self.ci_low:+.2f}, {self.ci_high:+.2f}] (paired "
                f"bootstrap); they disagree on {self.only_a + self.only_b} (A only right {self.only_a}, B only right "
                f"{self.only_b}); McNemar exact p = {self.p_value:.3g}: {verdict}")


def mcnemar_p(only_a: int, only_b: int) -> float:
    """McNemar's exact two-sided p-value: ``2 * P(X <= min)`` for ``X ~ Binomial(only_a + only_b, 1/2)``."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1))
    return min(1.0, 2 * tail / 2 ** n)


def bootstrap_interval(a: list[bool], b: list[bool], *, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of ``mean(b) - mean(a)`` (in percentage points) over paired resamples."""
    import numpy as np

    diff = np.asarray(b, dtype=np.int8) - np.asarray(a, dtype=np.int8)
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    for start in range(0, samples, 1000):  # a thousand resamples at a time: n x 1000 indices in memory
        stop = min(samples, start + 1000)
        idx = rng.integers(0, len(diff), size=(stop - start, len(diff)))
        means[start:stop] = diff[idx].mean(axis=1)
    lo, hi = np.percentile(means, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return 100 * float(lo), 100 * float(hi)


def _paired(a: ExamResult, b: ExamResult) -> list[tuple[str, bool, bool]]:
    """``(subject, A right, B right)`` per question, checking that both runs answered the same questions."""
    if (a.benchmark, a.split) != (b.benchmark, b.split):
        raise UserError(f"cannot compare {a.benchmark} {a.split} with {b.benchmark} {b.split}: not the same questions")
    if not (a.has_answers and b.has_answers):
        raise UserError("comparing needs answers; this split has none (C-Eval's test split): use --split val")
    keys_a = {(x.subject, x.index): x for x in a.answers}
    keys_b = {(x.subject, x.index): x for x in b.answers}
    if keys_a.keys() != keys_b.keys() or any(keys_a[k].answer != keys_b[k].answer for k in keys_a):
        raise UserError("the two runs did not answer the same questions (other subjects or data); run both on "
                        "the same --data and --subjects")
    return [(k[0], keys_a[k].correct, keys_b[k].correct) for k in keys_a]


def compare_results(a: ExamResult, b: ExamResult, *, name_a: str | None = None, name_b: str | None = None,
                    samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> PairedComparison:
    """Compare run ``b`` with run ``a`` question by question (see the module docstring).

    Raises:
        UserError: the runs are not on the same questions, or have no answers.
    """
    pairs = _paired(a, b)
    right_a, right_b = [p[1] for p in pairs], [p[2] for p in pairs]
    low, high = bootstrap_interval(right_a, right_b, samples=samples, seed=seed)
    only_a = sum(x and not y for x, y in zip(right_a, right_b))
    only_b = sum(y and not x for x, y in zip(right_a, right_b))
    groups = {s: g.group for s, g in benchmark(a.benchmark).subjects.items()}
    by: dict[str, list[tuple[bool, bool]]] = {}
    for subject, x, y in pairs:
        by.setdefault(groups[subject], []).append((x, y))
    n = len(pairs)
    return PairedComparison(
        name_a=name_a or a.model, name_b=name_b or b.model, n=n, accuracy_a=100 * sum(right_a) / n,
        accuracy_b=100 * sum(right_b) / n, only_a=only_a, only_b=only_b, ci_low=low, ci_high=high,
        p_value=mcnemar_p(only_a, only_b),
        by_category={g: (100 * sum(x for x, _ in v) / len(v), 100 * sum(y for _, y in v) / len(v), len(v))
                     for g, v in by.items()})
