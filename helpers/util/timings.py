"""Where a run's time goes: each phase (a listing, a header read, a HEAD, a download, a verification, the merge)
timed and, with ``HELPERS_TIMINGS=1``, printed as it ends with a timestamp from the process's start, and summed by
kind at the end (:func:`report`). Off by default: nothing is printed, the sums are still kept.

Phases run in several threads at once (downloads beside the merge), so the sums by kind can add up to more than
the wall time; the timestamps show what overlapped.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from typing import Iterator

TIMINGS_ENV = "HELPERS_TIMINGS"  # "1": print each phase with its timestamp, and the sums
_START = time.monotonic()
_lock = threading.Lock()
_totals: dict[str, list[float]] = {}  # kind -> [seconds, count]


def enabled() -> bool:
    """True when ``$HELPERS_TIMINGS`` is ``1`` (read at each call)."""
    return os.environ.get(TIMINGS_ENV) == "1"


def elapsed() -> float:
    """Seconds since this module was imported (the process's start, near enough)."""
    return time.monotonic() - _START


def note(kind: str, what: str, seconds: float, extra: str = "") -> None:
    """Record one phase of ``kind`` that took ``seconds``; printed (``timing: [t] kind what seconds extra``) when
    enabled."""
    with _lock:
        total = _totals.setdefault(kind, [0.0, 0])
        total[0] += seconds
        total[1] += 1
    if enabled():
        _say(f"{kind:9s} {seconds:6.2f} s  {what}{'  ' + extra if extra else ''}")


def _say(text: str) -> None:
    """One ``timing:`` line on stderr, written whole (several threads report at once)."""
    with _lock:
        sys.stderr.write(f"timing: [{elapsed():7.1f} s] {text}\n")
        sys.stderr.flush()


@contextlib.contextmanager
def phase(kind: str, what: str) -> Iterator[None]:
    """Time the block as one phase of ``kind`` (recorded even when it raises)."""
    t0 = time.monotonic()
    try:
        yield
    finally:
        note(kind, what, time.monotonic() - t0)


def totals() -> dict[str, tuple[float, int]]:
    """``{kind: (seconds, count)}`` recorded so far."""
    with _lock:
        return {k: (v[0], int(v[1])) for k, v in _totals.items()}


def report() -> None:
    """Print the sums by kind (when enabled)."""
    if enabled():
        _say("totals: " + ", ".join(f"{k} {s:.1f} s ({n})" for k, (s, n) in sorted(totals().items())))
