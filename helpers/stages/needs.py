"""What the stages say when a need is not met, how they plan when the hub cannot be listed, and the one way every
stage that downloads plans its access to gated repos (:func:`access_needs`)."""
from __future__ import annotations

from typing import Callable, TypeVar

from ..colab import NO, Need
from ..hub import current_hub_id
from ..hub import access_problem
from ..util import UserError

T = TypeVar("T")

GET_GPU = "Runtime > Change runtime type > T4 GPU"
GET_LLAMA = "run the setup cell (it installs llama-cpp-python), or pip install llama-cpp-python"
MORE_RAM = "close other notebooks, restart the runtime, or choose a smaller model"
MORE_DISK = "another runtime or output folder with more free space"


def listing_fallback(notes: list[str], plan: Callable[[bool], T]) -> T:
    """``plan(offline=False)`` from the hub's listing; when the hub cannot be listed, ``plan(offline=True)`` from the
    catalog's architectures, with a note saying why (the whole reason, which may be the fix)."""
    try:
        return plan(False)
    except UserError as exc:
        notes.append(f"note: the hub could not be listed ({exc}); sizes are estimated from the catalog")
        return plan(True)


def access_needs(*inputs: tuple[str, str | None]) -> list[Need]:
    """One unmet need per ``(role, ref)`` this machine cannot download although it exists: a gated repo (Meta's
    Llama-2/3) without the ``HF_TOKEN`` secret, or with a token the repo does not accept yet
    (:func:`helpers.hub.access.access_problem`, asked before any download). Empty refs, local files and folders need
    nothing; each ref is asked once."""
    seen: set[str] = set()
    needs = []
    for role, ref in inputs:
        if not ref or ref in seen:
            continue
        seen.add(ref)
        problem = access_problem(ref, what=role)
        if problem:
            needs.append(Need(f"access to {current_hub_id(ref)}", "the right to download it", "none", NO, problem))
    return needs
