"""plan = run over notebook 03's form (:mod:`choices`): every model (HF and GGUF), back end, quantization and
long-context choice; the load and a short reply in each, the server and speculative decoding where the form asks."""
from __future__ import annotations

import pytest

from choices import check_plan_equals_run, combinations, ids
from helpers.stages import ChatStage

CASES = combinations(ChatStage)
pytestmark = [pytest.mark.slow, pytest.mark.hub]


def cells(plan, session) -> None:
    """The notebook's later cells: a reply; the server and speculative decoding only in the default case, where
    the form's defaults ask for both (they cost a process start and a second model)."""
    assert isinstance(session.reply(), str)
    if plan.stage == ChatStage(max_new_tokens=4):
        assert session.serve() is not None
        assert session.job.draft is None or session.speculative() is not None


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_chat_plan_equals_run(case, twin_env):
    check_plan_equals_run(ChatStage(**{"max_new_tokens": 4, **case}), cells)
