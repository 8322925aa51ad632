"""llama.cpp from Python: is it installed, how to install it (Colab, portable builds), and keeping its log quiet."""
from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

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


@contextlib.contextmanager
def quiet_llama_log(*, log_file: str | Path | None = None) -> Iterator[list[str]]:
    """Collect llama.cpp's native log instead of printing it; on an exception, write what was collected to
    ``log_file`` (the caller names it in its one-line error), or print it without one.

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

    try:
        from llama_cpp._logger import llama_log_callback as restore
    except ImportError:
        restore = None  # NULL: llama.cpp's default (stderr)
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


def colab_install_llama_cpp(*, version: str = LLAMA_CPP_VERSION, force: bool = False) -> None:
    """Install llama-cpp-python in a notebook: prebuilt wheel when one fits this runtime, else a source build.

    The wheel index is llama-cpp-python's own (CPU, or the CUDA build matching ``torch.version.cuda``). When
    no wheel fits, it builds from source with portable flags (no ``-march=native``), after saying how long
    that takes. Not run in CI.
    """
    if llama_cpp_available() and not force:
        import llama_cpp

        print(f"llama-cpp-python {llama_cpp.__version__} is already installed")
        return
    try:
        import torch

        cuda = torch.version.cuda if torch.cuda.is_available() else None
    except ImportError:
        cuda = None
    tag = "cu" + "".join(cuda.split(".")[:2]) if cuda else "cpu"  # 12.4 -> cu124
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    print(f"installing llama-cpp-python {version} from the prebuilt {tag} wheels (about a minute) ...")
    rc = subprocess.call(pip + [f"llama-cpp-python=={version}", "--only-binary", "llama-cpp-python",
                                "--extra-index-url", f"{WHEEL_INDEX}/{tag}"])
    if rc != 0 and tag != "cpu":
        print(f"no {tag} wheel for this runtime; trying the CPU wheel (quantizing does not need the GPU) ...")
        rc = subprocess.call(pip + [f"llama-cpp-python=={version}", "--only-binary", "llama-cpp-python",
                                    "--extra-index-url", f"{WHEEL_INDEX}/cpu"])
    if rc != 0:
        args = PORTABLE_CMAKE_ARGS + (" -DGGML_CUDA=on" if cuda else "")
        wait = "20-30 minutes (CUDA build)" if cuda else "about 10 minutes on Colab's 2 CPU cores"
        print(f"no prebuilt wheel fits; building llama-cpp-python from source: expect {wait} ...")
        env = {**os.environ, "CMAKE_ARGS": args}
        rc = subprocess.call(pip + ["--no-binary", "llama-cpp-python", "--no-cache-dir",
                                    f"llama-cpp-python=={version}"], env=env)
    if rc != 0:
        raise UserError("llama-cpp-python could not be installed; see pip's output above")
    print("llama-cpp-python installed")
