"""What a notebook's earlier run still holds in this process (loaded models), so that running all cells twice
neither counts that memory against the second run nor loads a second copy beside the first.

:func:`hold` records what a stage's run loaded; :func:`held_runtime` credits that memory to the runtime the next
plan sees (it is freed before loading again); :func:`release` frees it, which a stage's run does first.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from ..colab import Runtime
from ..device import free_memory

_HELD: dict[str, list[Any]] = {}


def hold(notebook: str, *objects: Any) -> None:
    """Remember what ``notebook``'s run loaded (models with a ``close()``)."""
    _HELD.setdefault(notebook, []).extend(o for o in objects if o is not None)


def _footprint(obj: Any) -> tuple[int, int]:
    """``(RAM, GPU memory)`` bytes a loaded back end holds: a transformers model's own footprint (on the GPU when it
    is there), a llama.cpp model's file size (mapped into RAM, or offloaded to the GPU)."""
    model = getattr(obj, "model", None)
    if model is not None and hasattr(model, "get_memory_footprint"):
        size = int(model.get_memory_footprint())
        on_gpu = str(getattr(model, "device", "cpu")).startswith("cuda")
        return (0, size) if on_gpu else (size, 0)
    path = getattr(obj, "path", None)
    if getattr(obj, "llm", None) is not None and path is not None and path.is_file():
        size = path.stat().st_size
        return (0, size) if getattr(obj, "n_gpu_layers", 0) else (size, 0)
    return 0, 0


def held_memory(notebook: str) -> tuple[int, int]:
    """``(RAM, GPU memory)`` bytes ``notebook``'s earlier run still holds."""
    sizes = [_footprint(o) for o in _HELD.get(notebook, [])]
    return sum(r for r, _ in sizes), sum(g for _, g in sizes)


def held_runtime(notebook: str, runtime: Runtime) -> Runtime:
    """``runtime`` with the memory ``notebook``'s earlier run holds counted as free (its run frees it first)."""
    ram, vram = held_memory(notebook)
    if not (ram or vram):
        return runtime
    return dataclasses.replace(runtime, ram=None if runtime.ram is None else runtime.ram + ram,
                               vram=None if runtime.vram is None else runtime.vram + vram)


def release(notebook: str) -> None:
    """Close what ``notebook``'s earlier run loaded and give the memory back."""
    for obj in _HELD.pop(notebook, []):
        close = getattr(obj, "close", None)
        if callable(close):
            close()
    free_memory()
