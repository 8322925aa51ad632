"""What a heavy cell cost, printed after it as unsloth's notebooks print it: wall time, the process's peak RAM, and
the peak GPU memory torch allocated during the cell."""
from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass
from types import TracebackType

from ..util import human_bytes


def _cuda():
    """torch's CUDA module when a GPU is there (None without torch or a GPU)."""
    torch = sys.modules.get("torch")
    return torch.cuda if torch is not None and torch.cuda.is_available() else None


@dataclass
class CellStats:
    """Measures the block it wraps: ``with CellStats("merge") as s: ...``; ``s.line()`` says what it took."""

    what: str
    seconds: float = 0.0
    peak_ram: int = 0
    peak_gpu: int | None = None
    _t0: float = 0.0

    def __enter__(self) -> CellStats:
        cuda = _cuda()
        if cuda is not None:
            cuda.reset_peak_memory_stats()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.seconds = time.perf_counter() - self._t0
        self.peak_ram = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        cuda = _cuda()
        self.peak_gpu = int(cuda.max_memory_allocated()) if cuda is not None else None
        if exc is None:
            print(self.line())

    def line(self) -> str:
        """``merge: 12.3 s, peak RAM 1.2 GB, peak GPU memory 5.1 GB``."""
        gpu = f", peak GPU memory {human_bytes(self.peak_gpu)}" if self.peak_gpu is not None else ""
        return f"{self.what}: {self.seconds:.1f} s, peak RAM {human_bytes(self.peak_ram)}{gpu}"
