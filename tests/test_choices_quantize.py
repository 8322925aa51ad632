"""plan = run over notebook 02's form (:mod:`choices`): every model the dropdown offers, merged or converted."""
from __future__ import annotations

import pytest

from choices import check_plan_equals_run, combinations, ids
from helpers.stages import QuantizeStage

CASES = combinations(QuantizeStage)
pytestmark = [pytest.mark.slow, pytest.mark.hub]


def test_every_dropdown_value_is_tried():
    assert {c["model"] for c in CASES if "model" in c} | {QuantizeStage().model} == set(
        next(f for f in QuantizeStage.form_fields() if f.attr == "model").entry.choices)


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_quantize_plan_equals_run(case, twin_env, tmp_path):
    stage = QuantizeStage(**{"output_dir": str(tmp_path), "quant_types": "q8_0", **case})
    result = check_plan_equals_run(stage)
    if result is not None:
        assert set(result.quants) == {"q8_0"} and result.quants["q8_0"].is_file()
        no_f16 = stage.plan().job.source in ("published", "direct")  # low-disk mode writes no F16
        assert result.f16 is None if no_f16 else result.f16.is_file()
        assert result.quants["q8_0"] != result.f16
