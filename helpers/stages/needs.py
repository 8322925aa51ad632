"""What the stages say when a need is not met, and how they plan when the hub cannot be listed."""
from __future__ import annotations

from typing import Callable, TypeVar

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
