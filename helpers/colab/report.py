"""What a notebook's parameters need, row by row, against what the runtime has, and the verdict."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..util import UserError, human_bytes
from .runtime import Runtime

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


@dataclass(frozen=True)
class CheckReport:
    """The dry run of one notebook: its settings, each need against the runtime, and notes (e.g. the merge plan)."""

    notebook: str
    runtime: Runtime
    settings: str
    needs: list[Need]
    notes: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return all(n.status != NO for n in self.needs)

    def summary(self) -> str:
        """The report: runtime, settings, one line per need, the notes and the verdict."""
        width = max(len(n.what) for n in self.needs) if self.needs else 4
        lines = [f"colab-check {self.notebook}: {self.settings}", f"  {self.runtime.describe()}"]
        for n in self.needs:
            mark = {OK: "ok  ", SLOW: "slow", NO: "NO  "}[n.status]
            fix = f": {n.fix}" if n.fix else ""
            lines.append(f"  [{mark}] {n.what:{width}s}  needs {n.need}; has {n.have}{fix}")
        lines += [f"  {line}" for note in self.notes for line in note.splitlines()]
        lines.append("  -> fits" if self.fits else "  -> does NOT fit this runtime")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def refusal(self) -> str | None:
        """Why the notebook will not run here, with what to change (None: it fits)."""
        bad = [n for n in self.needs if n.status == NO]
        if not bad:
            return None
        return (f"{self.notebook} will not fit {self.runtime.name} with these settings: "
                + "; ".join(f"{n.what} needs {n.need}, has {n.have}" + (f" ({n.fix})" if n.fix else "") for n in bad))

    def check(self) -> None:
        """Raise :class:`UserError` with :meth:`refusal` when it does not fit."""
        why = self.refusal()
        if why:
            raise UserError(why)
