"""plan = run over notebook 04's form (:mod:`choices`): every base model, both modes, QLoRA and LoRA."""
from __future__ import annotations

import pytest

from choices import check_plan_equals_run, combinations, ids
from helpers.stages import FinetuneStage

CASES = combinations(FinetuneStage) + [{"load_in_4bit": True}]  # smoke mode trains in 16-bit; the form's default
pytestmark = [pytest.mark.slow, pytest.mark.hub]


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_finetune_plan_equals_run(case, twin_env, tmp_path):
    smoke = {"output_dir": str(tmp_path), "max_steps": 1, "lora_r": 4, "lora_alpha": 8, "load_in_4bit": False}
    stage = FinetuneStage(**{**smoke, **case})
    result = check_plan_equals_run(stage)
    if result is not None:
        assert (result.adapter_dir / "adapter_config.json").is_file() and result.global_step == 1
