"""plan = run over notebook 05's form (:mod:`choices`): every model (HF and GGUF) and both shot counts."""
from __future__ import annotations

import pytest

from choices import check_plan_equals_run, combinations, ids
from helpers.stages import EvalStage

CASES = combinations(EvalStage)
pytestmark = [pytest.mark.slow, pytest.mark.hub]


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_eval_plan_equals_run(case, twin_env, demo, tmp_path):
    data = demo / "data"
    stage = EvalStage(**{"output_dir": str(tmp_path), "eval_text": str(data / "heldout_zh.txt"),
                         "mc_csv": str(data / "ceval_sample.csv"), "chinese_sp_model": str(data / "chinese_sp.model"),
                         **case})

    def cells(plan, session) -> None:
        assert session.perplexity() > 1
        assert 0 <= session.multiple_choice().accuracy <= 1

    check_plan_equals_run(stage, cells)
