"""llama.cpp from Python: is it installed, how to install it (Colab, portable builds), and keeping its log quiet."""
from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..util import UserError

LLAMA_CPP_VERSION = "0.3.36"
WHEEL_INDEX = "https://abetlen.github.io/llama-cpp-python/whl"
PORTABLE_CMAKE_ARGS = "-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"


def llama_cpp_available() -> bool:
    """True when llama-cpp-python can be imported (its native library loads)."""
    try:
        import llama_cpp  # noqa: F401
    except Exception:  # noqa: BLE001 - ImportError, or OSError from a broken native library
        return False
    return True


# what ``helpers serve`` imports beyond the llama-cpp-python wheel (its ``[server]`` extra brings them)
SERVER_MODULES = ("fastapi", "uvicorn")


def server_extras_missing() -> list[str]:
    """The modules ``helpers serve`` needs beyond llama-cpp-python (its ``[server]`` extra) that are not installed."""
    import importlib.util

    return [m for m in SERVER_MODULES if importlib.util.find_spec(m) is None]


def quantize_binary() -> str | None:
    """Path of a ``llama-quantize`` binary on PATH (``$LLAMA_QUANTIZE`` overrides), else None."""
    env = os.environ.get("LLAMA_QUANTIZE")
    if env and Path(env).is_file():
        return env
    return shutil.which("llama-quantize")


def install_hint() -> str:
    """How to get a quantizer, in one paragraph."""
    return (
        "llama.cpp's quantizer is not available: install llama-cpp-python (README, Setup: `bash scripts/setup.sh` "
        "builds a portable wheel once and caches it; on Colab call helpers.gguf.colab_install_llama_cpp()), "
        f"or `pip install llama-cpp-python=={LLAMA_CPP_VERSION} --only-binary llama-cpp-python "
        f"--extra-index-url {WHEEL_INDEX}/cpu`, or put llama.cpp's `llama-quantize` binary on PATH"
    )


LLAMA_CPP_LOGGER = "llama-cpp-python"  # the logging.Logger llama-cpp-python routes llama.cpp's log through


def llama_cpp_log_callback() -> Any:
    """llama-cpp-python's own llama.cpp log callback (the one it installs when imported), to put back after
    :func:`quiet_llama_log`; None (llama.cpp's default, stderr) when this version has none.

    llama-cpp-python exposes no public accessor for it: this adapter is the one place that reaches into
    ``llama_cpp._logger``, and ``tests/test_gguf.py`` fails when a new version moves it."""
    import importlib

    try:
        return getattr(importlib.import_module("llama_cpp._logger"), "llama_log_callback", None)
    except ImportError:
        return None


@contextlib.contextmanager
def quiet_llama_log(*, log_file: str | Path | None = None,
                    on_text: Callable[[str], None] | None = None) -> Iterator[list[str]]:
    """Collect llama.cpp's native log instead of printing it; on an exception, write what was collected to
    ``log_file`` (the caller names it in its one-line error), or print it without one. ``on_text`` sees each
    chunk as it comes (a progress bar reads the quantizer's per-tensor lines).

    Two channels are covered: the log callback (``llama_log_set``, which llama.cpp also hands to ggml) is
    swapped for one that stores the text, and file descriptor 2 points to a temporary file for anything
    written to stderr directly. Both are restored on exit (llama-cpp-python's own callback when it has one).
    Filtering by level is not used: llama-cpp-python 0.3.x maps ggml's INFO level to WARNING, so the
    ``llama-cpp-python`` logger's level does not hide the per-tensor lines.

    Yields:
        the list the log text is appended to (callback chunks first, then what reached file descriptor 2).
    """
    import tempfile

    import llama_cpp

    chunks: list[str] = []

    @llama_cpp.llama_log_callback
    def collect(level, text, user_data):  # noqa: ARG001 - ctypes signature
        chunks.append(text.decode("utf-8", "replace") if text else "")
        if on_text is not None:
            on_text(chunks[-1])

    restore = llama_cpp_log_callback()
    sys.stdout.flush()
    sys.stderr.flush()
    saved_fd = None
    with tempfile.TemporaryFile() as capture:
        try:
            saved_fd = os.dup(2)
            os.dup2(capture.fileno(), 2)
        except OSError:  # no usable file descriptor 2: the callback still catches the log
            saved_fd = None
        llama_cpp.llama_log_set(collect, ctypes.c_void_p(0))
        failed = True
        try:
            yield chunks
            failed = False
        finally:
            llama_cpp.llama_log_set(restore, ctypes.c_void_p(0))
            if saved_fd is not None:
                os.dup2(saved_fd, 2)
                os.close(saved_fd)
            capture.seek(0)
            direct = capture.read().decode("utf-8", "replace")
            if direct:
                chunks.append(direct)
            if failed and chunks and log_file is not None:
                Path(log_file).write_text("".join(chunks), encoding="utf-8")
            elif failed and chunks:
                sys.stderr.write("".join(chunks))
                sys.stderr.flush()


# CUDA builds published on llama-cpp-python's wheel index (checked online by :func:`available_cuda_tags`)
KNOWN_CUDA_TAGS = ("cu121", "cu122", "cu123", "cu124", "cu125")


@dataclass(frozen=True)
class WheelChoice:
    """How to install llama-cpp-python here: which prebuilt wheel index, or a source build, and why."""

    tag: str | None  # ``cpu``, ``cu124``...; None: build from source
    gpu: bool  # the build offloads layers to the GPU
    note: str  # one or two sentences for the user


def _cuda_version(tag: str) -> tuple[int, int] | None:
    """``cu124`` -> ``(12, 4)`` (None for other tags)."""
    m = re.fullmatch(r"cu(\d\d)(\d+)", tag)
    return (int(m[1]), int(m[2])) if m else None


def choose_wheel(*, cuda: str | None, want_gpu: bool, cuda_tags: Sequence[str], build_from_source: bool = False
               ) -> WheelChoice:
    """Choose the llama-cpp-python build for this runtime.

    The CPU wheel always works and is all that conversion and quantization need. A CUDA wheel is used only when
    the GPU is wanted and one exists for this CUDA major version at or below the runtime's minor version (CUDA
    12.x runtimes run wheels built for an older 12.y). A source build happens only when asked for, because it
    takes 20-60 minutes with CUDA (about 10 minutes for the CPU) on Colab's two cores.

    Args:
        cuda: the runtime's CUDA version (``torch.version.cuda``, e.g. ``"12.4"``), None without a GPU.
        want_gpu: GPU offload is wanted (chatting); conversion and quantization do not need it.
        cuda_tags: the CUDA wheel tags the index has for this version (``cu121``...).
        build_from_source: build instead of using a wheel (with CUDA when there is a GPU and it is wanted).
    """
    gpu = bool(want_gpu and cuda)
    if build_from_source:
        minutes = "20-60 minutes (CUDA)" if gpu else "about 10 minutes"
        return WheelChoice(None, gpu, f"building llama-cpp-python from source: {minutes} on Colab's 2 CPU cores")
    if not gpu:
        why = "" if not want_gpu else " (no GPU in this runtime)"
        return WheelChoice("cpu", False, f"using the prebuilt CPU wheel{why}; conversion and quantization run on the CPU")
    runtime = tuple(int(x) for x in cuda.split(".")[:2])
    fits = sorted((v, t) for t in cuda_tags if (v := _cuda_version(t)) and v[0] == runtime[0] and v <= runtime)
    if fits:
        tag = fits[-1][1]
        return WheelChoice(tag, True, f"using the prebuilt {tag} wheel (CUDA {cuda} runtime): layers run on the GPU")
    return WheelChoice("cpu", False, f"no prebuilt CUDA wheel fits CUDA {cuda} (index has {', '.join(cuda_tags) or 'none'}): "
                                   "using the CPU wheel, so llama.cpp chats on the CPU (conversion and quantization do "
                                   "not need the GPU). A CUDA source build takes 20-60 minutes on Colab's 2 cores: "
                                   "colab_install_llama_cpp(gpu=True, build_from_source=True) if you want it anyway")


def available_cuda_tags(version: str = LLAMA_CPP_VERSION, *, timeout: float = 10.0) -> list[str]:
    """The CUDA wheel tags llama-cpp-python's index has for ``version`` and this Python (online; falls back to
    :data:`KNOWN_CUDA_TAGS` when the index cannot be read)."""
    import urllib.request

    py = f"cp{sys.version_info.major}{sys.version_info.minor}"
    found = []
    for tag in KNOWN_CUDA_TAGS:
        try:
            with urllib.request.urlopen(f"{WHEEL_INDEX}/{tag}/llama-cpp-python/", timeout=timeout) as r:  # noqa: S310
                page = r.read().decode("utf-8", "replace")
        except OSError:
            return list(KNOWN_CUDA_TAGS)
        if f"llama_cpp_python-{version}-{py}" in page or (f"-{version}-" in page and py in page):
            found.append(tag)
    return found


def colab_install_llama_cpp(*, version: str = LLAMA_CPP_VERSION, gpu: bool = False, build_from_source: bool = False,
                            server: bool = False, force: bool = False) -> WheelChoice:
    """Install llama-cpp-python in a notebook from a prebuilt wheel (see :func:`choose_wheel` for the choice).

    Args:
        version: the llama-cpp-python version.
        gpu: install a CUDA build when a prebuilt one fits this runtime (chatting on a T4); conversion and
            quantization only need the CPU build, the default.
        build_from_source: build instead (20-60 minutes with CUDA on Colab; said before it starts).
        server: also install the ``[server]`` extra (the OpenAI-compatible server's web modules).
        force: reinstall even when llama-cpp-python is already importable.

    Returns:
        the plan that was carried out. Not run in CI.
    """
    if llama_cpp_available() and not force and not (server and server_extras_missing()):
        import llama_cpp

        print(f"llama-cpp-python {llama_cpp.__version__} is already installed")
        return WheelChoice("installed", bool(llama_cpp.llama_supports_gpu_offload()), "already installed")
    try:
        import torch

        cuda = torch.version.cuda if torch.cuda.is_available() else None
    except ImportError:
        cuda = None
    plan = choose_wheel(cuda=cuda, want_gpu=gpu, cuda_tags=available_cuda_tags(version) if gpu and cuda else (),
                      build_from_source=build_from_source)
    print(plan.note + " ...")
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    spec = f"llama-cpp-python{'[server]' if server else ''}=={version}"
    if plan.tag is None:
        args = PORTABLE_CMAKE_ARGS + (" -DGGML_CUDA=on" if plan.gpu else "")
        rc = subprocess.call(pip + ["--no-binary", "llama-cpp-python", "--no-cache-dir",
                                    spec], env={**os.environ, "CMAKE_ARGS": args})
    else:
        rc = subprocess.call(pip + [spec, "--only-binary", "llama-cpp-python",
                                    "--extra-index-url", f"{WHEEL_INDEX}/{plan.tag}"])
    if rc != 0:
        hint = ("" if plan.tag is None else
                "; no prebuilt wheel could be installed: colab_install_llama_cpp(build_from_source=True) builds one "
                "(about 10 minutes for the CPU)")
        raise UserError(f"llama-cpp-python could not be installed; see pip's output above{hint}")
    print("llama-cpp-python installed")
    return plan
