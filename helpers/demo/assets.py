"""Smoke mode's wiring: build the demo assets once and make the real hub ids resolve to them.

Two ways, chosen by ``HF_ENDPOINT``:

- unset: offline. ``HELPERS_LOCAL_MODELS`` points at the demo assets and ``HF_HUB_OFFLINE=1``, so hub ids
  resolve to the local stand-in folders and nothing is downloaded;
- set (a hub twin serving the stand-ins under their real hub ids, see ``tests/hubtwin.py``): the models are
  downloaded from ``HF_ENDPOINT`` exactly as a Colab user downloads them from the hub; only the demo data
  files (instructions, evaluation text) are read from the local demo folder.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..hub import LOCAL_MODELS_ENV
from ..hub import demo_dir
from .build import build_demo


def use_demo_assets(path: str | Path | None = None, *, through_hub: bool | None = None) -> Path:
    """Build (once) the demo assets and make the notebooks' hub ids reach the tiny stand-ins.

    Without ``HF_ENDPOINT``, sets ``HELPERS_LOCAL_MODELS`` and ``HF_HUB_OFFLINE=1`` so the notebooks' real
    defaults (``meta-llama/Llama-2-7b-hf``, ``hfl/chinese-alpaca-2-lora-7b``, ...) resolve to the local
    stand-ins. With ``HF_ENDPOINT`` set it changes nothing in the environment: the same ids are downloaded
    from that endpoint (a hub twin serving the stand-ins). Either way returns the demo folder, whose
    ``data/`` the notebooks read. Safe to call from several processes at once (a file lock guards the build).

    Args:
        path: the demo folder (default: :func:`demo_dir`).
        through_hub: download through ``HF_ENDPOINT`` (default: when it is set); ``False`` keeps the offline
            wiring even then (the offline demo job must not download anything from a public mirror).
    """
    import fcntl

    out = Path(path) if path else demo_dir()
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        build_demo(out)
    if through_hub is None:
        through_hub = bool(os.environ.get("HF_ENDPOINT"))
    if not through_hub:
        os.environ[LOCAL_MODELS_ENV] = str(out.resolve())
        os.environ["HF_HUB_OFFLINE"] = "1"
    return out
