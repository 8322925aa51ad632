"""A :class:`~.config.FinetuneConfig` as ``python -m helpers finetune`` arguments (what a launch script passes to every
process)."""
from __future__ import annotations

import dataclasses

from .config import FinetuneConfig

FLAGS = {"load_in_4bit": "--4bit", "gradient_checkpointing": "--no-gradient-checkpointing",
         "check_memory": "--no-memory-check", "shuffle": "--no-shuffle", "streaming": "--streaming"}
NOT_FLAGS = ("live_plot", "plot_every", "extra", "save_total_limit", "logging_steps", "job_key")


def config_to_args(config: FinetuneConfig) -> list[str]:
    """The ``finetune`` arguments that give ``config`` back (settings left at their defaults are left out)."""
    out = []
    for f in dataclasses.fields(FinetuneConfig):
        value = getattr(config, f.name)
        if f.name in NOT_FLAGS or (f.default is not dataclasses.MISSING and value == f.default):
            continue
        if f.name in FLAGS:
            out.append(FLAGS[f.name])
        elif f.name == "modules_to_save":
            out += ["--modules-to-save", ",".join(value) or "none"]
        elif f.name == "target_modules":
            out += ["--target-modules", ",".join(value)]
        else:
            out += [f"--{f.name.replace('_', '-')}", str(value)]
    return out
