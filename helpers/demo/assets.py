"""Smoke mode's wiring: build the demo assets once and make the real hub ids resolve to them."""
from __future__ import annotations

import os
from pathlib import Path

from ..hub import LOCAL_MODELS_ENV
from .build import build_demo


def demo_dir() -> Path:
    """Where smoke mode keeps the demo assets (``$HELPERS_DEMO_DIR`` or a user cache folder)."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cllama" / "demo-assets"
    return Path(os.environ.get("HELPERS_DEMO_DIR", default))


def use_demo_assets(path: str | Path | None = None) -> Path:
    """Build (once) the offline demo assets and make hub ids resolve to them.

    Sets ``HELPERS_LOCAL_MODELS`` and ``HF_HUB_OFFLINE=1`` so the notebooks' real defaults
    (``meta-llama/Llama-2-7b-hf``, ``hfl/chinese-alpaca-2-lora-7b``, ...) resolve to the tiny
    stand-ins. Safe to call from several processes at once (a file lock guards the build).
    """
    import fcntl

    out = Path(path) if path else demo_dir()
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        build_demo(out)
    os.environ[LOCAL_MODELS_ENV] = str(out.resolve())
    os.environ["HF_HUB_OFFLINE"] = "1"
    return out
