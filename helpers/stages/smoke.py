"""Smoke mode (``NOTEBOOK_SMOKE=1``, the tests and CI): the notebooks run on the demo stand-ins, with stand-in settings
that the stage applies, never the users' form.

The parameters cell holds the users' form only. When a stage is built from a notebook's globals in smoke mode
(:meth:`~.base.Stage.from_form`), :func:`smoked` makes the demo stand-ins reachable (the hub twin at
``HF_ENDPOINT``, else the local stand-in folder) and gives stand-in values to the entries **still at their
defaults**: a value the user (or a test) typed is kept as typed. Every notebook writes to its own output folder (its
runtime's local disk) and keeps its work in one shared workspace, :data:`SMOKE_WORKSPACE`, as a user's notebooks
share one Drive folder: what 01 saves there, 02 to 05 find.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

SMOKE_ENV = "NOTEBOOK_SMOKE"
SMOKE_WORKSPACE = "smoke-output/workspace"  # relative to the notebook's folder, as its output folders are


def smoke_mode() -> bool:
    """True under ``NOTEBOOK_SMOKE=1`` (read at each call)."""
    return os.environ.get(SMOKE_ENV) == "1"


def smoked(stage: Any) -> Any:
    """``stage`` with the smoke stand-ins (:meth:`~.base.Stage.smoke_values`, plus its own output folder and the
    shared workspace) for the entries still at their defaults; prints which entries it changed."""
    from ..demo import use_demo_assets

    demo = use_demo_assets()
    wanted = {"output_dir": f"smoke-output/{stage.NOTEBOOK}", "workspace": SMOKE_WORKSPACE,
              **stage.smoke_values(demo)}
    defaults = {f.attr: f.default for f in stage.form_fields()}
    changes = {k: v for k, v in wanted.items() if k in defaults and getattr(stage, k) == defaults[k] != v}
    if not changes:
        return stage
    print("smoke mode, stand-in settings for the entries left at their defaults: "
          + ", ".join(stage.assignment(k, v) for k, v in changes.items()))
    return dataclasses.replace(stage, **changes)
