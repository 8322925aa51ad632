"""What a fine-tuning run returns (:class:`FinetuneResult`), and the finished run a rerun reuses."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..util import read_json
from .callbacks import read_loss_csv
from .dist import note
from .jobs import RUN_OUTPUTS
from .memory import MemoryEstimate
from .stats import StageStats

if TYPE_CHECKING:
    from .config import FinetuneConfig
    from .plan import RunPlan


@dataclass(frozen=True, repr=False)
class FinetuneResult:
    """What a run produced.

    Attributes:
        out: the adapter folder (merge it with ``python -m helpers merge --lora OUT``).
        global_step: optimizer steps done in total (including those before a resume).
        losses: ``(step, loss)`` of the whole run, as in ``loss.csv``.
        resumed_from: the checkpoint the run continued from, if any.
        template: the SFT prompt template (``None`` for PT).
        modules_to_save: modules trained in full.
        trainable_params: trainable parameter count.
        train_seconds, steps_per_second, tokens_per_second: speed of this invocation (tokens of all processes).
        memory: the memory estimate checked before loading.
        stats: peak memory and wall time after loading and after training (:class:`StageStats`).
        world_size: processes that trained.
    """

    out: Path
    global_step: int
    losses: list[tuple[int, float]]
    resumed_from: str | None
    template: str | None
    modules_to_save: tuple[str, ...]
    trainable_params: int
    train_seconds: float
    steps_per_second: float
    tokens_per_second: float
    memory: "MemoryEstimate | None" = None
    stats: tuple[StageStats, ...] = ()
    world_size: int = 1

    def __repr__(self) -> str:
        loss = f", loss {self.first_loss:.4f} -> {self.last_loss:.4f}" if self.losses else ""
        resumed = f", resumed from {Path(self.resumed_from).name}" if self.resumed_from else ""
        return (f"FinetuneResult(out={str(self.out)!r}, steps={self.global_step}{loss}{resumed}, "
                f"{self.steps_per_second:.2f} steps/s, {self.tokens_per_second:.0f} tokens/s)")

    def summary(self) -> str:
        """One line for the user: where the adapter is, the steps, the loss and the speed (or that it was reused)."""
        loss = f", loss {self.first_loss:.4f} -> {self.last_loss:.4f}" if self.losses else ""
        resumed = f", resumed from {Path(self.resumed_from).name}" if self.resumed_from else ""
        speed = (f", {self.train_seconds:.0f} s ({self.steps_per_second:.2f} steps/s)" if self.train_seconds
                 else " (trained earlier: nothing to train)")
        return f"adapter {self.out}: {self.global_step} steps{loss}{resumed}{speed}"

    @property
    def adapter_dir(self) -> Path:
        """The folder to pass to the merge as ``--lora`` (same as ``out``)."""
        return self.out

    @property
    def first_loss(self) -> float | None:
        return self.losses[0][1] if self.losses else None

    @property
    def last_loss(self) -> float | None:
        return self.losses[-1][1] if self.losses else None



def finished_record(out: Path, job_key: str) -> dict | None:
    """``finetune.json`` of a finished run of the job ``job_key`` (:attr:`FinetuneConfig.job_key`) in ``out``, its
    adapter complete (a run writes that record last); None when ``out`` holds no such run. Reads two small files,
    so a plan can ask it of a workspace before anything is downloaded."""
    record = read_json(out / "finetune.json", default=None)
    if not isinstance(record, dict) or (record.get("config") or {}).get("job_key") != job_key:
        return None
    return record if all((out / name).is_file() for name in RUN_OUTPUTS[:2]) else None


def result_from_record(out: Path, record: dict, memory: MemoryEstimate | None = None) -> FinetuneResult:
    """The :class:`FinetuneResult` of a finished run from its ``finetune.json`` (nothing trained now)."""
    stats = tuple(StageStats(**s) for s in record.get("stats") or [])
    return FinetuneResult(
        out=out, global_step=int(record["global_step"]), losses=read_loss_csv(out / "loss.csv"),
        resumed_from=record.get("resumed_from"), template=record.get("template"),
        modules_to_save=tuple(record.get("modules_to_save") or ()), trainable_params=int(record["trainable_params"]),
        train_seconds=0.0, steps_per_second=0.0, tokens_per_second=0.0, memory=memory, stats=stats,
        world_size=int(record.get("world_size") or 1))


def reuse_finished(config: FinetuneConfig, run: RunPlan, job: dict) -> FinetuneResult | None:
    """The result of this very job when OUT already holds its complete outputs (a rerun then loads nothing), else
    ``None``."""
    out = Path(config.out)
    record = read_json(out / "finetune.json", default=None)
    adapter = [out / name for name in RUN_OUTPUTS[:2]]
    if not record or record.get("job") != job or not all(p.is_file() for p in adapter):
        return None
    note(f"note: {out} already holds this job's adapter ({record['global_step']} steps): nothing to train")
    return result_from_record(out, record, run.memory)
