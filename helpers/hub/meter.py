"""Bytes received by the downloads of one job, for its progress line, and the way to stop them.

A :class:`Meter` is told every piece a download writes (from ``huggingface_hub``'s progress bar, in the download's
thread); the merge's progress bar shows :meth:`Meter.text` beside the tensors written. :meth:`Meter.cancel` makes
each download that reports to it stop at its next piece (:class:`DownloadCancelled`), which is how a merge that
ends (finished, failed or interrupted) stops the shards still downloading for it.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

from ..util import human_bytes


class DownloadCancelled(Exception):
    """A download stopped because the job it was for has ended (not an error of the mirror)."""


class Meter:
    """Bytes received so far out of ``total`` (0: unknown), and their rate since the first one."""

    def __init__(self, total: int = 0) -> None:
        self.total, self.done = total, 0
        self._first: float | None = None
        self._lock = threading.Lock()
        self._cancelled = threading.Event()
        self.listener: Callable[[], None] | None = None  # called (at most about once a second) as bytes arrive
        self._told = 0.0

    def add(self, n: int) -> None:
        """Count ``n`` bytes received (negative: a download went back).

        Raises:
            DownloadCancelled: :meth:`cancel` was called.
        """
        if self._cancelled.is_set():
            raise DownloadCancelled("the job this download was for has ended")
        now = time.monotonic()
        with self._lock:
            self._first = now if self._first is None else self._first
            self.done += n
            tell, self._told = now - self._told >= 1.0, now if now - self._told >= 1.0 else self._told
        if tell and self.listener is not None:
            self.listener()

    def rate(self) -> float:
        """Bytes per second since the first byte (0 before it)."""
        with self._lock:
            spent = time.monotonic() - self._first if self._first is not None else 0.0
            return self.done / spent if spent > 0 else 0.0

    def text(self) -> str:
        """``downloaded 1.2 GB of 2.9 GB, 30.1 MB/s`` (what the progress bar shows)."""
        of = f" of {human_bytes(self.total)}" if self.total else ""
        return f"downloaded {human_bytes(self.done)}{of}, {human_bytes(self.rate())}/s"

    def cancel(self) -> None:
        """Stop every download reporting to this meter at its next piece."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()
