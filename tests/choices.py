"""plan = run over the forms' choices: the combinations each stage's enumeration test tries, and the check itself.

Every dropdown and yes/no value of a form is tried (each with the form's other defaults), and every pair of values
of the small dropdowns (all pairs covered by a greedy pairwise set). For each combination, on the hub twin's
stand-ins (every catalog release the forms offer is served): where ``plan`` says it fits, ``run`` completes in
smoke mode; where it does not, the refusal names a parameter change that ``plan`` then accepts.
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Callable


SMALL = 12  # dropdowns with at most this many values are paired with each other


def pairwise(fields: dict[str, tuple]) -> list[dict[str, Any]]:
    """A small set of combinations of ``fields``' values that holds every pair of values of every two fields."""
    names = list(fields)
    todo = {((a, x), (b, y)) for a, b in itertools.combinations(names, 2) for x in fields[a] for y in fields[b]}
    cases: list[dict[str, Any]] = []
    while todo:
        best, best_new = None, -1
        (a, x), (b, y) = min(todo, key=repr)
        for rest in itertools.product(*(fields[n] for n in names if n not in (a, b))):
            case = dict(zip([n for n in names if n not in (a, b)], rest)) | {a: x, b: y}
            new = sum(((p, case[p]), (q, case[q])) in todo for p, q in itertools.combinations(names, 2))
            if new > best_new:
                best, best_new = case, new
        cases.append(best)
        todo -= {((p, best[p]), (q, best[q])) for p, q in itertools.combinations(names, 2)}
    return cases


def combinations(stage_cls) -> list[dict[str, Any]]:
    """Every single choice away from the defaults, then the pairwise set of the small dropdowns."""
    fields = stage_cls.form_fields()
    choices = {f.attr: f.entry.choices or ((True, False) if isinstance(f.default, bool) else ()) for f in fields}
    singles = [{attr: v} for attr, values in choices.items() for v in values
               if v != next(f.default for f in fields if f.attr == attr)]
    small = {a: v for a, v in choices.items() if 1 < len(v) <= SMALL and not isinstance(v[0], bool)}
    pairs = pairwise(small) if len(small) > 1 else []
    out: list[dict[str, Any]] = [{}]
    for case in singles + pairs:
        if case not in out:
            out.append(case)
    return out


def ids(cases: list[dict[str, Any]]) -> list[str]:
    return [",".join(f"{k}={v}" for k, v in c.items()) or "defaults" for c in cases]


def check_plan_equals_run(stage, after: Callable[[Any, Any], None] | None = None) -> Any:
    """The property: fits -> ``run`` completes (then ``after(plan, result)``, the notebook's later cells); does not
    fit -> its first fix is a change of the form's own fields that ``plan`` accepts."""
    plan = stage.plan()
    if plan.fits:
        result = plan.run()
        if after is not None:
            after(plan, result)
        return result
    assert plan.fixes, f"{stage}: refused without a fix: {plan.refusal()}"
    names = {f.attr for f in type(stage).form_fields()}
    fixed = dataclasses.replace(stage, **plan.fixes[0])
    assert set(plan.fixes[0]) <= names and fixed.plan().fits, (plan.refusal(), fixed.plan().summary())
    return None
