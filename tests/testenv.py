"""The environment the tests run in, chosen by the tests rather than by the user's shell.

A user's ``~/.bashrc`` often exports ``HF_ENDPOINT`` (a mirror), ``HF_HUB_OFFLINE=1``, ``HF_HOME`` or a real
``HF_TOKEN``; left alone they reach every notebook kernel and CLI subprocess a test starts, change what it downloads
(or whether), and could touch the user's own token and cache. :func:`apply` replaces them, once per process and
before ``huggingface_hub`` is imported (it reads them once): every variable named by :data:`CLEARED` or starting
with one of :data:`CLEARED_PREFIXES` is removed, then :func:`controlled` sets the few the tests rely on.
``tests/conftest.py`` applies it when it loads (and its autouse fixture ``test_env`` puts it back after each test),
``notebooks/conftest.py`` in smoke mode; kernels, Jupyter servers and ``python -m helpers`` subprocesses inherit it.

Kept: what says how to run the test machinery itself (``PATH``, ``PYTHONPATH``, ``HOME``, ``CLLAMA_*``,
``CHROMIUM``, ``SHARED_DIR``, ``HUBTWIN_PYTHON``), and the switches of the run given in ``keep`` (the notebooks'
``NOTEBOOK_SMOKE`` / ``NOTEBOOK_HUB``, which select the smoke mode the run tests).
"""
from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

# The hub's and transformers' switches, the project's own, Colab's markers (helpers.env.in_colab reads them).
CLEARED_PREFIXES = ("HF_", "HUGGINGFACE_", "HUGGING_FACE_", "TRANSFORMERS_", "HELPERS_", "NOTEBOOK_", "COLAB_")
PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
CLEARED = (*PROXIES, *(p.lower() for p in PROXIES), "CUDA_VISIBLE_DEVICES", "PYTHONWARNINGS", "TOKENIZERS_PARALLELISM")
LOOPBACK = "127.0.0.1,localhost"

_ROOT: Path | None = None  # this process's folder for HF_HOME and logs (removed at exit)


def is_cleared(name: str) -> bool:
    """Whether :func:`apply` removes ``name`` from the environment before setting its own values."""
    return name in CLEARED or name.startswith(CLEARED_PREFIXES)


def controlled(root: str | Path) -> dict[str, str]:
    """The variables the tests set themselves, with ``root`` a fresh folder for the hub cache and logs: offline (a
    test that downloads goes through the hub twin, ``tests/conftest.py::hub_env``), an empty ``HF_HOME`` (never the
    user's cache or saved token), no token, no proxy for loopback, no progress bars, and a demo folder of the tests'
    own (never the one a by-hand twin run built in the user's cache, whose stand-ins pass the published-sum check:
    a test that wants that sets ``HELPERS_DEMO_DIR`` itself)."""
    root = Path(root)
    return {"HF_HOME": str(root / "hf-home"), "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
            "HELPERS_DEMO_DIR": str(root / "demo-assets"),
            "HELPERS_NO_PROGRESS": "1", "HELPERS_LOG_DIR": str(root / "logs"), "TOKENIZERS_PARALLELISM": "false",
            "NO_PROXY": LOOPBACK, "no_proxy": LOOPBACK}


def environment(base: Mapping[str, str], root: str | Path, *, keep: Iterable[str] = ()) -> dict[str, str]:
    """``base`` with every cleared variable removed (but those in ``keep``) and :func:`controlled` set."""
    keep = set(keep)
    env = {k: v for k, v in base.items() if k in keep or not is_cleared(k)}
    env.update({k: v for k, v in controlled(root).items() if k not in keep})
    return env


def apply(*, keep: Iterable[str] = ()) -> dict[str, str]:
    """Make ``os.environ`` the tests' environment (once per process; later calls return it unchanged).

    Raises:
        RuntimeError: ``huggingface_hub`` was imported before, with whatever the shell had exported.
    """
    global _ROOT
    if _ROOT is None:
        if "huggingface_hub.constants" in sys.modules:
            raise RuntimeError("huggingface_hub was imported before tests/testenv.py applied the tests' environment; "
                               "apply it first (tests/conftest.py, notebooks/conftest.py)")
        _ROOT = Path(tempfile.mkdtemp(prefix="cllama-testenv-"))
        atexit.register(shutil.rmtree, _ROOT, True)
        shell_warnings = "PYTHONWARNINGS" in os.environ and "PYTHONWARNINGS" not in set(keep)
        env = environment(os.environ, _ROOT, keep=keep)
        os.environ.clear()
        os.environ.update(env)
        (_ROOT / "hf-home").mkdir()
        if shell_warnings:
            _reset_warning_filters()
    return dict(os.environ)


def _reset_warning_filters() -> None:
    """Drop the filters the shell's ``PYTHONWARNINGS`` added to this interpreter at its start; keep Python's
    defaults, on which pytest adds its own for each test."""
    warnings.resetwarnings()
    warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
    for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
        warnings.filterwarnings("ignore", category=category, append=True)


def restore(snapshot: Mapping[str, str]) -> None:
    """Put ``os.environ`` back to ``snapshot`` (what a test added, changed or removed), leaving pytest's own
    ``PYTEST_*`` variables (the current test's name) alone."""
    for name in [n for n in os.environ if n not in snapshot and not n.startswith("PYTEST_")]:
        del os.environ[name]
    for name, value in snapshot.items():
        if os.environ.get(name) != value and not name.startswith("PYTEST_"):
            os.environ[name] = value
