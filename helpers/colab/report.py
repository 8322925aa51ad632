"""What a notebook's parameters need, row by row, against what the runtime has (:class:`Need`)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..util import human_bytes

OK, SLOW, NO = "ok", "slow", "NO"


@dataclass(frozen=True)
class Need:
    """One requirement: ``what`` (disk, RAM, GPU memory, GPU, llama.cpp...), how much or which, what the runtime
    has, the verdict (:data:`OK`, :data:`SLOW`: it runs but slower than it should, :data:`NO`), and how to fix it."""

    what: str
    need: str
    have: str
    status: str = OK
    fix: str = ""
    amount: int | None = None  # bytes needed, for the rows that are amounts

    def renamed(self, what: str) -> Need:
        """The same need under another name (``RAM (server)``)."""
        return dataclasses.replace(self, what=what)


def bytes_need(what: str, need: int, have: int | None, *, fix: str = "", slow_fix: str = "",
               detail: str = "") -> Need:
    """A :class:`Need` for an amount of memory or disk: ``NO`` when it exceeds ``have`` (``SLOW`` instead when a
    ``slow_fix`` says how it still runs), ``OK`` when it fits or ``have`` is unknown."""
    fits = have is None or need <= have
    status = OK if fits else (SLOW if slow_fix else NO)
    return Need(what, human_bytes(need) + (f" ({detail})" if detail else ""),
                human_bytes(have) if have is not None else "unknown", status,
                "" if fits else (slow_fix or fix), need)


def wheel_need(what: str, have: bool, *, fix: str) -> Need:
    """A :class:`Need` for a package the run cannot do without."""
    return Need(what, "it", "installed" if have else "missing", OK if have else NO, "" if have else fix)
