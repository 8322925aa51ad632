"""plan = run over notebook 01's form (:mod:`choices`): every release, output format, type and low-disk choice."""
from __future__ import annotations

import pytest

from choices import check_plan_equals_run, combinations, ids
from helpers.stages import MergeStage

CASES = combinations(MergeStage)
pytestmark = [pytest.mark.slow, pytest.mark.hub]


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_merge_plan_equals_run(case, twin_env, tmp_path):
    stage = MergeStage(**{"output_dir": str(tmp_path), **case})
    result = check_plan_equals_run(stage)
    if result is not None:
        target = stage.plan().job.target  # planned again: the finished merge is recognised, same name
        assert target.exists() and (result.outputs[0] == target or target in result.outputs[0].parents)
