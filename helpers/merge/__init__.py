"""The streaming merge: LoRAs (in order) or a full-weight patch into a base model, to HF, Meta ``.pth`` or GGUF.

- :mod:`.core`: :func:`merge`, in three steps: preflight, stream, finish;
- :mod:`.options`: :class:`MergeOptions` and :class:`MergeResult`;
- :mod:`.inputs`: opening the inputs and verifying their SHA256;
- :mod:`.sources`: before any download, what the inputs are (files, sizes, the model they make):
  :func:`gather_sources`; :mod:`.planner`: what a merge fetches, writes and holds, and whether it fits
  (:func:`plan_resources`, ``python -m helpers plan``); :mod:`.sizes`: output bytes and peak RAM;
- :mod:`.preflight`: every check before anything is written, and the :class:`MergeLayout`;
- :mod:`.stream`: the tensor-by-tensor pass;
- :mod:`.job`: what makes two merges the same job;
- :mod:`.writers`: the HF safetensors and Meta ``.pth`` sinks (the GGUF sink is :class:`helpers.gguf.GGUFSink`);
- :mod:`.command`: ``python -m helpers merge``; :mod:`.plan_command`: ``python -m helpers plan``.
"""
from __future__ import annotations

from .core import merge
from .job import made_from
from .laptop import sources_fit
from .options import FORMATS, MergeOptions, MergeResult, Recipe
from .planner import ResourcePlan, plan_resources, resource_plan
from .sources import SourceFiles, Sources, gather_sources, merged_layout

__all__ = ["FORMATS", "gather_sources", "made_from", "merge", "MergeOptions", "MergeResult", "plan_resources",
           "merged_layout", "Recipe", "resource_plan", "ResourcePlan", "SourceFiles", "Sources", "sources_fit"]
