"""plan = run over notebook 03's form (:mod:`choices`): every model (HF and GGUF), back end, quantization and
long-context choice; the load and a short reply in each, the server and speculative decoding where the form asks."""
from __future__ import annotations

import pytest

from choices import check_plan_equals_run, combinations, ids
from helpers.stages import ChatStage

DRAFT = {"draft_model": "chinese-alpaca-2-1.3b", "quantization": "none"}  # opt-in: no dropdown of its own
CASES = combinations(ChatStage) + [DRAFT]
pytestmark = [pytest.mark.slow, pytest.mark.hub]


def cells(plan, session) -> None:
    """The notebook's later cells: a reply; the server and speculative decoding where the plan runs them (the form
    asks for them: they cost a process start and a second model)."""
    assert isinstance(session.reply(), str)
    if plan.job.server is not None:
        assert session.serve() is not None
    if plan.job.draft is not None:
        assert session.speculative() is not None


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_chat_plan_equals_run(case, twin_env):
    check_plan_equals_run(ChatStage(**{"max_new_tokens": 4, **case}), cells)
