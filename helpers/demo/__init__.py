"""Offline demo assets: tiny, deterministic stand-ins for every release, named after the repos they stand in for.

- :mod:`.build`: :func:`build_demo`, in named steps (tokenizers, originals, LoRAs, small model, patch, a merged
  release, data);
- :mod:`.weights` / :mod:`.tokenizers` / :mod:`.data`: the pieces (tiny LLaMA weights and LoRAs, trained
  tokenizers, instruction and evaluation data);
- :mod:`.assets`: :func:`use_demo_assets`, smoke mode's wiring of the hub ids to the stand-ins;
- :mod:`.command`: ``python -m helpers demo``.
"""
from __future__ import annotations

from .assets import use_demo_assets
from .data import sample_data

__all__ = ["sample_data", "use_demo_assets"]
