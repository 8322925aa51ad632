"""What the user sees of a long loop: a tqdm progress bar, and byte counts in human units."""
from __future__ import annotations

import os
import sys
from typing import Iterable, TypeVar

T = TypeVar("T")


def progress(iterable: Iterable[T], *, total: int | None = None, desc: str = "", unit: str = "it",
             disable: bool | None = None) -> Iterable[T]:
    """Wrap ``iterable`` in a tqdm progress bar (auto-selects the notebook widget when available)."""
    from tqdm.auto import tqdm

    if disable is None:
        disable = os.environ.get("HELPERS_NO_PROGRESS") == "1"
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, file=sys.stderr)


def human_bytes(n: float) -> str:
    """Format a byte count as a short human-readable string (``1.5 GB``)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TB"


def human_seconds(seconds: float) -> str:
    """Format a duration for people: ``45 s``, ``12 min``, ``1.5 h``."""
    minutes = seconds / 60
    return f"{seconds:.0f} s" if seconds < 90 else (f"{minutes:.0f} min" if minutes < 90 else f"{minutes / 60:.1f} h")
