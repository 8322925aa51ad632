"""plan = run over notebook 05's form (:mod:`choices`): every model (HF and GGUF) and both shot counts."""
from __future__ import annotations

import pytest

from choices import check_plan_equals_run, combinations, ids
from helpers.stages import EvalStage

CASES = combinations(EvalStage)
pytestmark = [pytest.mark.slow, pytest.mark.hub]


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_eval_plan_equals_run(case, twin_env, demo, tmp_path):
    from helpers.evaluate import write_standin

    data = demo / "data"
    bench = case.get("bench", EvalStage().bench)
    exam = str(write_standin(tmp_path / "exam", bench, questions=3)) if bench != "none" else ""
    stage = EvalStage(**{"output_dir": str(tmp_path), "eval_text": str(data / "heldout_zh.txt"), "exam_data": exam,
                         "mc_csv": str(data / "ceval_sample.csv"), "chinese_sp_model": str(data / "chinese_sp.model"),
                         "subjects": "", **case})

    def cells(plan, session) -> None:
        assert session.perplexity() > 1
        assert 0 <= session.multiple_choice().accuracy <= 1
        if set(case) - {"bench", "shots", "with_prompt"}:
            return  # the benchmark on every model of the dropdown is the same code as on the default one
        result = session.exam()
        assert (result is None) == (bench == "none") and (result is None or 0 <= result.accuracy <= 100)

    check_plan_equals_run(stage, cells)
