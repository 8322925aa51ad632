"""Memory and wall time of a run's heavy steps, as unsloth's notebooks print them after loading and after training.

On a GPU the peak is ``torch.cuda.max_memory_reserved`` (what the caching allocator held at most, which is what
decides an out-of-memory error) against the card's total memory; on a CPU it is the process's peak resident set
(``getrusage``) against the machine's RAM.
"""
from __future__ import annotations

import os
import resource
import sys
from dataclasses import dataclass

from ..util import human_bytes


@dataclass(frozen=True)
class StageStats:
    """Peak memory and wall time up to the end of one step of a run.

    Attributes:
        stage: ``load`` (base model and LoRA built) or ``train`` (training done).
        seconds: wall time of the step.
        device: the GPU's name, or ``CPU``.
        peak_bytes: peak reserved GPU memory (GPU) or peak resident memory of this process (CPU), so far.
        total_bytes: the GPU's memory or the machine's RAM.
    """

    stage: str
    seconds: float
    device: str
    peak_bytes: int
    total_bytes: int | None

    @property
    def peak_share(self) -> float | None:
        """Peak memory as a share of the device's (None when unknown)."""
        return self.peak_bytes / self.total_bytes if self.total_bytes else None

    def summary(self) -> str:
        """One line, e.g. ``train: 92.4 s (1.54 min); peak GPU memory 9.8 GB of 15.0 GB (65.3 %) on Tesla T4``."""
        kind = "CPU peak RSS" if self.device == "CPU" else "peak GPU memory"
        share = f" ({100 * self.peak_share:.1f} %)" if self.peak_share is not None else ""
        total = f" of {human_bytes(self.total_bytes)}" if self.total_bytes else ""
        return (f"{self.stage}: {self.seconds:.1f} s ({self.seconds / 60:.2f} min); {kind} "
                f"{human_bytes(self.peak_bytes)}{total}{share} on {self.device}")


def peak_rss_bytes() -> int:
    """This process's peak resident set size (bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB, macOS bytes


def total_ram_bytes() -> int | None:
    """The machine's physical memory (bytes), or None where it cannot be read."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def stage_stats(stage: str, seconds: float, *, cuda: bool) -> StageStats:
    """Measure now: the peak so far on this process's GPU (``cuda``) or of its resident memory."""
    if cuda:
        import torch

        index = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return StageStats(stage, seconds, props.name, int(torch.cuda.max_memory_reserved(index)),
                          int(props.total_memory))
    return StageStats(stage, seconds, "CPU", peak_rss_bytes(), total_ram_bytes())
