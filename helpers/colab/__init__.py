"""The Colab dry run: before any download, what a notebook's parameters need against what the runtime has.

- :mod:`.runtime`: :class:`Runtime`, this machine measured or free Colab described (T4 or CPU);
- :mod:`.params`: a notebook's ``parameters`` cell read without running it, and ``NAME=VALUE`` overrides;
- :mod:`.sizing`: model files, weights at each precision, KV cache, GGUF sizes;
- :mod:`.checks`: one check per notebook; :mod:`.report`: :class:`Need` rows and the :class:`CheckReport`;
- :mod:`.cli`: ``python -m helpers colab-check NOTEBOOK [--set NAME=VALUE] [--colab t4|cpu]``.

In a notebook, right after the parameters cell: ``colab_check("01_merge_lora", globals())``.
"""
from __future__ import annotations

from typing import Any

from ..util import UserError
from .checks import CHECKS
from .params import apply_overrides, notebook_params, notebook_setup
from .report import NO, OK, SLOW, CheckReport, Need
from .runtime import FREE_COLAB_DISK, FREE_COLAB_RAM, T4_VRAM, Runtime


def check_notebook(notebook: str, params: dict[str, Any], runtime: Runtime) -> CheckReport:
    """The dry run of ``notebook`` (``01_merge_lora``...) with ``params`` on ``runtime`` (nothing printed or raised
    for a misfit: see :meth:`CheckReport.check`).

    Raises:
        UserError: a notebook without a check, or parameters that name nothing known (an unknown model...).
    """
    check = CHECKS.get(notebook)
    if check is None:
        raise UserError(f"no Colab check for {notebook!r}; the notebooks are: {', '.join(CHECKS)}")
    return check({k: v for k, v in params.items() if k.isupper()}, runtime)


def colab_check(notebook: str, params: dict[str, Any], *, runtime: Runtime | None = None) -> CheckReport:
    """In a notebook, after its parameters cell: print what the parameters need against this runtime, and stop
    the notebook (:class:`UserError`, saying what to change) when they will not fit.

    Args:
        notebook: the notebook's name (``01_merge_lora``).
        params: its parameters, usually ``globals()``.
        runtime: check against this runtime instead of measuring this one.
    """
    runtime = runtime or Runtime.detect(params.get("OUTPUT_DIR") or ".")
    report = check_notebook(notebook, params, runtime)
    print(report.summary())
    report.check()
    return report


__all__ = [
    "CHECKS", "FREE_COLAB_DISK", "FREE_COLAB_RAM", "NO", "OK", "SLOW", "T4_VRAM", "CheckReport", "Need", "Runtime",
    "apply_overrides", "check_notebook", "colab_check", "notebook_params", "notebook_setup",
]
