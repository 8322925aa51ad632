"""The stage protocol: a notebook step's form (:class:`Stage`, a frozen dataclass), its :class:`Plan` (what these
parameters need on a runtime, whether they fit, and the decisions ``run`` will carry out) and ``run``.

The check cell and ``python -m helpers colab-check`` call :meth:`Stage.check`; the run cells call :meth:`Plan.run`,
which executes exactly what the plan decided. When the form changed since the check cell ran, :meth:`Plan.run`
plans again first, so a skipped check can never run stale decisions.

``python -m helpers run`` does what the whole notebook does: :meth:`Plan.run`, then :meth:`Stage.headless` (the
cells after the run cell), and prints :func:`run_summary` of what that returns: every stage's result has a
``summary()`` that reads as a sentence, never a repr.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Mapping, TypeVar

from ..colab import NO, Need, Runtime
from ..util import UserError
from .form import Form
from .held import held_runtime
from .smoke import smoke_mode, smoked
from .stats import CellStats

MAX_FIXES = 3  # parameter changes a refusal proposes, each checked to fit
JobT = TypeVar("JobT")  # a stage's job: every decision its run carries out (MergeJob, QuantizeJob...)


@dataclass(frozen=True)
class Plan(Generic[JobT]):
    """What a stage's parameters need on a runtime, the verdict, and the decisions :meth:`run` carries out.

    Attributes:
        stage: the parameters planned.
        runtime: the runtime planned against (this machine measured, or free Colab described).
        needs: one row per requirement (GPU, memory, disk, wheels), each with its verdict.
        job: the stage's decisions (file names, back end, low-disk mode...), which :meth:`run` executes.
        notes: lines for the user (the merge plan, what was skipped and why).
        fixes: parameter changes that make it fit, each ``{attr: value}`` and checked by planning it.
    """

    stage: Stage[JobT]
    runtime: Runtime
    needs: list[Need]
    job: JobT
    notes: list[str] = field(default_factory=list)
    fixes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return all(n.status != NO for n in self.needs)

    def to_json(self) -> str:
        """The report as JSON: notebook, settings, verdict, runtime, needs, notes and fixes (by form name)."""
        return json.dumps({"notebook": self.stage.NOTEBOOK, "settings": self.stage.settings(), "fits": self.fits,
                           "runtime": dataclasses.asdict(self.runtime),
                           "needs": [dataclasses.asdict(n) for n in self.needs], "notes": self.notes,
                           "fixes": [{k.upper(): v for k, v in fix.items()} for fix in self.fixes]},
                          indent=2, ensure_ascii=False, default=str)

    def fix_text(self) -> str:
        """The fixes as the user types them: ``set NAME='value', or OTHER=2``."""
        ways = [" and ".join(self.stage.assignment(k, v) for k, v in fix.items()) for fix in self.fixes]
        return "set " + ", or ".join(ways) if ways else ""

    def summary(self) -> str:
        """The report: runtime, settings, one line per need, the notes, the verdict and the fixes."""
        width = max((len(n.what) for n in self.needs), default=4)
        lines = [f"colab-check {self.stage.NOTEBOOK}: {self.stage.settings()}", f"  {self.runtime.describe()}"]
        for n in self.needs:
            mark = {"ok": "ok  ", "slow": "slow", NO: "NO  "}[n.status]
            lines.append(f"  [{mark}] {n.what:{width}s}  needs {n.need}; has {n.have}" + (f": {n.fix}" if n.fix else ""))
        lines += [f"  {line}" for note in self.notes for line in note.splitlines()]
        lines.append("  -> fits" if self.fits else "  -> does NOT fit this runtime")
        if self.fixes:
            lines.append(f"  to fit: {self.fix_text()}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def refusal(self) -> str | None:
        """Why the stage will not run here, with what to change (None: it fits)."""
        bad = [n for n in self.needs if n.status == NO]
        if not bad:
            return None
        why = "; ".join(f"{n.what} needs {n.need}, has {n.have}" + (f" ({n.fix})" if n.fix else "") for n in bad)
        fix = f"; to fit, {self.fix_text()}" if self.fixes else ""
        return f"{self.stage.NOTEBOOK} will not fit {self.runtime.name} with these settings: {why}{fix}"

    def check(self) -> Plan[JobT]:
        """Raise :class:`UserError` with :meth:`refusal` when it does not fit; else return this plan."""
        why = self.refusal()
        if why:
            raise UserError(why)
        return self

    def run(self, form: Mapping[str, Any] | None = None) -> Any:
        """Carry out the plan. With ``form`` (a notebook's ``globals()``), parameters changed since the check cell
        are planned again first (on this machine), so the run never uses stale decisions."""
        if form is not None:
            current = type(self.stage).from_form(form)
            if current != self.stage:
                changed = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in self.stage.changes(current).items())
                print(f"the parameters changed since the check ({changed}): checking them again")
                return current.check().run()
        self.check()
        with CellStats(self.stage.step_name()):
            return self.stage.execute(self)


class Stage(Form, Generic[JobT]):
    """A notebook step. Subclasses are frozen dataclasses of :func:`~.form.param` fields and define
    :meth:`make_plan`, :meth:`candidate_fixes` and :meth:`execute`; ``Stage[MergeJob]`` makes ``Plan[MergeJob]``
    plans, whose ``job`` its :meth:`execute` carries out.

    Class attributes:
        NOTEBOOK: the notebook's name (``01_merge_lora``).
        SETUP: what the notebook's setup cell installs on Colab: ``llama_cpp`` (the CPU wheel), ``gpu`` (its CUDA
            wheel when one fits), ``server`` (its ``[server]`` extra).
        GPU: the notebook asks Colab for a GPU runtime (its metadata).
    """

    NOTEBOOK: ClassVar[str] = ""
    SETUP: ClassVar[frozenset[str]] = frozenset()
    GPU: ClassVar[bool] = False

    def __post_init__(self) -> None:
        self.check_form()

    @classmethod
    def from_form(cls, namespace: Mapping[str, Any]):
        """The stage a notebook's parameters describe; in smoke mode (``NOTEBOOK_SMOKE=1``) with the stand-in
        settings for the entries still at their defaults (:func:`~.smoke.smoked`)."""
        stage = super().from_form(namespace)
        return smoked(stage) if smoke_mode() else stage

    def smoke_values(self, demo: Path) -> dict[str, Any]:
        """The stand-in values smoke mode gives this form's entries left at their defaults (by field name), beside
        its own output folder and the shared workspace; ``demo`` is the demo stand-ins' folder."""
        return {}

    # -------------------------------------------------------------------------------------------- to override
    def settings(self) -> str:
        """One line naming what the parameters ask for (the report's title)."""
        return ", ".join(f"{f.name}={getattr(self, f.attr)!r}" for f in self.form_fields()[:3])

    def step_name(self) -> str:
        """What the run cell does, for its cost line (``quantize gguf: 12.3 s, ...``)."""
        return self.NOTEBOOK.split("_", 1)[1].replace("_", " ")

    def make_plan(self, runtime: Runtime) -> Plan[JobT]:
        """The plan on ``runtime`` (without fixes)."""
        raise NotImplementedError

    def candidate_fixes(self, plan: Plan[JobT]) -> list[dict[str, Any]]:
        """Parameter changes that may make ``plan`` fit, the smallest change first (each is then checked)."""
        return []

    def headless(self, plan: Plan[JobT], result: Any) -> Any:
        """The notebook's cells after its run cell, without the notebook (``python -m helpers run``): what they do
        with ``result`` (what :meth:`Plan.run` returned), returning what to summarize. Default: ``result`` itself,
        for the notebooks whose run cell is the whole step."""
        return result

    def execute(self, plan: Plan[JobT]) -> Any:
        """Carry out ``plan`` (made by :meth:`make_plan` for these parameters)."""
        raise NotImplementedError

    def output_folder(self) -> str:
        """Where the stage writes (its free disk counts)."""
        return str(getattr(self, "output_dir", ".") or ".")

    # -------------------------------------------------------------------------------------------- the protocol
    def plan(self, runtime: Runtime | None = None, *, fixes: bool = True) -> Plan[JobT]:
        """What these parameters need on ``runtime`` (default: this machine, crediting the memory this notebook's
        own earlier run still holds), whether they fit, and (``fixes``) which parameter changes would."""
        rt = runtime or held_runtime(self.NOTEBOOK, Runtime.detect(self.output_folder()))
        plan = self.make_plan(rt)
        if fixes and not plan.fits:
            plan = dataclasses.replace(plan, fixes=self._verified_fixes(plan))
        return plan

    def _verified_fixes(self, plan: Plan[JobT]) -> list[dict[str, Any]]:
        """The candidate fixes that make the plan fit; when no single one does (two needs unmet), pairs of them."""
        singles = self.candidate_fixes(plan)
        pairs = [a | b for a, b in itertools.combinations(singles, 2) if not set(a) & set(b)]
        found: list[dict[str, Any]] = []
        for candidates in (singles, pairs):
            for change in candidates:
                if self._fits_with(change, plan.runtime) and change not in found:
                    found.append(change)
                if len(found) == MAX_FIXES:
                    return found
            if found:
                return found
        return found

    def _fits_with(self, change: dict[str, Any], runtime: Runtime) -> bool:
        try:
            return dataclasses.replace(self, **change).plan(runtime, fixes=False).fits
        except UserError:
            return False

    def check(self, runtime: Runtime | None = None) -> Plan[JobT]:
        """The check cell: print the plan, and stop (:class:`UserError` naming what to change) when it does not
        fit; returns the plan for the run cells."""
        plan = self.plan(runtime)
        print(plan.summary())
        return plan.check()


def form_path(value: str) -> Path | None:
    """A form's path entry as a :class:`Path` (None when empty)."""
    return Path(value).expanduser() if str(value or "").strip() else None


def run_summary(result: Any) -> str:
    """What ``python -m helpers run`` prints at the end: the result's ``summary()`` (every stage's result has one);
    an object without one is named by its type, never printed as a repr."""
    summary = getattr(result, "summary", None)
    text = summary() if callable(summary) else None
    return text if isinstance(text, str) else f"done ({type(result).__name__})"
