"""Quantize a GGUF (or a Hugging Face folder) with llama.cpp's own quantizer.

Two back ends, tried in order: ``llama_cpp.llama_model_quantize`` from llama-cpp-python (no llama.cpp build
needed), or a ``llama-quantize`` binary on ``PATH``. Every llama.cpp type is accepted (``q2_k`` ... ``q8_0``,
``q4_k_m`` by default); the ``iq*`` types (and ``q2_k_s``) need an importance matrix (``--imatrix``, as written
by ``llama-imatrix``: the GGUF format or the legacy ``.dat``), which this module reads and hands to the
quantizer itself, so it works with the Python back end too.

Beside the output go an Ollama ``<stem>.Modelfile`` and ``<file>.sha256``.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from .util import UserError, atomic_path, human_bytes, remove, tmp_name

DEFAULT_TYPE = "q4_k_m"
LLAMA_CPP_VERSION = "0.3.36"
WHEEL_INDEX = "https://abetlen.github.io/llama-cpp-python/whl"
PORTABLE_CMAKE_ARGS = "-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"

# type name -> llama_ftype (llama.h)
FTYPES: dict[str, int] = {
    "f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q8_0": 7, "q5_0": 8, "q5_1": 9,
    "q2_k": 10, "q3_k_s": 11, "q3_k_m": 12, "q3_k_l": 13, "q4_k_s": 14, "q4_k_m": 15,
    "q5_k_s": 16, "q5_k_m": 17, "q6_k": 18, "iq2_xxs": 19, "iq2_xs": 20, "q2_k_s": 21,
    "iq3_xs": 22, "iq3_xxs": 23, "iq1_s": 24, "iq4_nl": 25, "iq3_s": 26, "iq3_m": 27,
    "iq2_s": 28, "iq2_m": 29, "iq4_xs": 30, "iq1_m": 31, "bf16": 32, "tq1_0": 36, "tq2_0": 37,
}
ALIASES = {"q3_k": "q3_k_m", "q4_k": "q4_k_m", "q5_k": "q5_k_m"}
NEEDS_IMATRIX = frozenset(t for t in FTYPES if t.startswith("iq")) | {"q2_k_s"}


def qtype_name(qtype: str) -> str:
    """Normalise a type name (``Q4_K_M`` -> ``q4_k_m``, ``q4_k`` -> ``q4_k_m``); UserError for unknown ones."""
    key = ALIASES.get(qtype.strip().lower(), qtype.strip().lower())
    if key not in FTYPES:
        raise UserError(f"unknown quantization type {qtype!r}; choose one of: {', '.join(FTYPES)}")
    return key


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
        "builds a portable wheel once and caches it; on Colab call helpers.quantize.colab_install_llama_cpp()), "
        f"or `pip install llama-cpp-python=={LLAMA_CPP_VERSION} --only-binary llama-cpp-python "
        f"--extra-index-url {WHEEL_INDEX}/cpu`, or put llama.cpp's `llama-quantize` binary on PATH"
    )


# ---------------------------------------------------------------------------------------------- imatrix
def read_imatrix(path: str | Path) -> dict[str, "list[float]"]:
    """Read an importance matrix (llama-imatrix's GGUF format or the legacy ``.dat``) as per-tensor weights.

    Values are the mean squared activations per input column, as llama-quantize passes them on:
    GGUF files store ``<tensor>.in_sum2`` / ``<tensor>.counts`` (divided here, per expert); legacy files
    store sums already divided by the number of calls.
    """
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise UserError(f"importance matrix {path} not found")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"GGUF":
        import gguf

        reader = gguf.GGUFReader(str(path))
        sums, counts = {}, {}
        for t in reader.tensors:
            if t.name.endswith(".in_sum2"):
                sums[t.name[: -len(".in_sum2")]] = np.asarray(t.data, dtype=np.float32).reshape(-1)
            elif t.name.endswith(".counts"):
                counts[t.name[: -len(".counts")]] = np.asarray(t.data, dtype=np.float32).reshape(-1)
        if not sums or set(sums) != set(counts):
            raise UserError(f"{path} is not a complete llama.cpp importance matrix (in_sum2 / counts tensors)")
        out = {}
        for name, s in sums.items():
            c = np.rint(counts[name])
            per = s.reshape(len(c), -1)
            vals = np.where(c[:, None] > 0, per / np.where(c > 0, c, 1)[:, None], 1.0)
            out[name] = vals.reshape(-1).astype(np.float32)
        return out
    out = {}
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<i", f.read(4))
            if n < 1:
                raise ValueError("no entries")
            for _ in range(n):
                (length,) = struct.unpack("<i", f.read(4))
                name = f.read(length).decode("utf-8")
                ncall, nval = struct.unpack("<ii", f.read(8))
                vals = np.frombuffer(f.read(4 * nval), dtype="<f4").astype(np.float32)
                if len(vals) != nval or nval < 1:
                    raise ValueError("truncated")
                out[name] = vals / ncall if ncall > 0 else vals
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not a llama.cpp importance matrix ({exc})") from None
    return out


def _imatrix_struct(data: dict):
    """A NULL-terminated ``llama_model_imatrix_data`` array (and the buffers it points to, to keep alive)."""
    import llama_cpp
    import numpy as np

    cls = llama_cpp.llama_model_imatrix_data
    arr = (cls * (len(data) + 1))()
    keep = []
    for i, (name, vals) in enumerate(sorted(data.items())):
        if not np.all(np.isfinite(vals)):
            raise UserError(f"importance matrix entry {name} has non-finite values; recompute it")
        buf = np.ascontiguousarray(vals, dtype=np.float32)
        cname = ctypes.c_char_p(name.encode())
        keep += [buf, cname]
        arr[i].name = cname.value
        arr[i].data = buf.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        arr[i].size = buf.size
    arr[len(data)].name = None
    return arr, keep


# ---------------------------------------------------------------------------------------------- quantize
def _quantize_python(src: Path, dst: Path, qtype: str, imatrix: Path | None, threads: int, verbose: bool) -> None:
    import logging

    import llama_cpp

    if not verbose:
        with quiet_llama_log():
            _run_python_quantizer(llama_cpp, src, dst, qtype, imatrix, threads)
        return
    try:
        from llama_cpp._logger import logger as lcp_logger  # llama.cpp's log goes through this logger's level
    except ImportError:
        lcp_logger = logging.getLogger("llama-cpp-python")
    old_level = lcp_logger.level
    lcp_logger.setLevel(logging.DEBUG)
    try:
        _run_python_quantizer(llama_cpp, src, dst, qtype, imatrix, threads)
    finally:
        lcp_logger.setLevel(old_level)


@contextlib.contextmanager
def quiet_llama_log() -> Iterator[list[str]]:
    """Collect llama.cpp's native log instead of printing it; on an exception, print what was collected.

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
            if failed and chunks:
                sys.stderr.write("".join(chunks))
                sys.stderr.flush()


def _run_python_quantizer(llama_cpp, src: Path, dst: Path, qtype: str, imatrix: Path | None, threads: int) -> None:

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[qtype]
    params.nthread = threads
    keep = None
    if imatrix is not None:
        arr, keep = _imatrix_struct(read_imatrix(imatrix))
        params.imatrix = ctypes.cast(arr, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
        keep = (arr, keep)
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    del keep
    if rc != 0:
        raise UserError(f"llama.cpp could not quantize {src} to {qtype} (code {rc}); an already quantized input "
                        "cannot be re-quantized: start from the F16 GGUF or the HF folder")


def _quantize_binary(binary: str, src: Path, dst: Path, qtype: str, imatrix: Path | None, threads: int) -> None:
    cmd = [binary]
    if imatrix is not None:
        cmd += ["--imatrix", str(imatrix)]
    cmd += [str(src), str(dst), qtype.upper(), str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise UserError(f"llama-quantize failed for {src} -> {qtype}: {' | '.join(tail)}")


def quantize(model: str | Path, out: str | Path, *, qtype: str = DEFAULT_TYPE, imatrix: str | Path | None = None,
             threads: int | None = None, template: str | None = None, modelfile: bool = True,
             verbose: bool = False) -> Path:
    """Quantize ``model`` to ``out`` with llama.cpp's quantizer; returns ``out``.

    Args:
        model: a GGUF file (F32/F16/BF16) or a Hugging Face model folder (converted to F16 first, in a
            temporary file beside ``out`` that is removed afterwards).
        out: the ``.gguf`` to write (atomically).
        qtype: llama.cpp type name (``q4_k_m``, ``q5_k_m``, ``q8_0``, ``iq4_xs`` ... case-insensitive).
        imatrix: importance matrix file (required for ``iq*`` and ``q2_k_s``).
        threads: quantizer threads (default: all cores).
        template: prompt template for the Modelfile (default: from the model).
        modelfile: write ``<stem>.Modelfile`` and ``<file>.sha256`` beside ``out``.
        verbose: show llama.cpp's per-tensor log.
    """
    from .gguf_export import convert_hf_to_gguf, gguf_template, write_checksum, write_modelfile

    qtype = qtype_name(qtype)
    model, out = Path(model), Path(out)
    if qtype in NEEDS_IMATRIX and imatrix is None:
        raise UserError(f"{qtype} needs an importance matrix: compute one with llama.cpp's llama-imatrix on some "
                        "Chinese text and pass --imatrix FILE, or choose a K-quant such as q4_k_m")
    imatrix = Path(imatrix) if imatrix is not None else None
    if imatrix is not None and not imatrix.is_file():
        raise UserError(f"importance matrix {imatrix} not found")
    use_python = llama_cpp_available()
    binary = None if use_python else quantize_binary()
    if not use_python and binary is None:
        raise UserError(install_hint())
    threads = int(threads or os.cpu_count() or 1)
    if not model.exists():
        raise UserError(f"{model} not found: give a .gguf file or a Hugging Face model folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    temp_f16 = None
    try:
        if model.is_dir():
            temp_f16 = out.with_name(tmp_name(out).name + ".f16.gguf")
            print(f"converting {model} to an F16 GGUF first ...", file=sys.stderr)
            src = convert_hf_to_gguf(model, temp_f16, outtype="f16", template=template)
        else:
            src = model
            with open(src, "rb") as f:
                if f.read(4) != b"GGUF":
                    raise UserError(f"{src} is not a GGUF file (give a .gguf or a Hugging Face model folder)")
        found = template or gguf_template(src)  # the Modelfile uses the template the GGUF carries
        start = time.time()
        print(f"quantizing {src.name} to {qtype} with {threads} threads "
              "(a 7B model takes a few minutes on 2 cores) ...", file=sys.stderr)
        with atomic_path(out) as tmp:
            if use_python:
                _quantize_python(src, tmp, qtype, imatrix, threads, verbose)
            else:
                _quantize_binary(binary, src, tmp, qtype, imatrix, threads)
            if not tmp.is_file():
                raise UserError(f"llama.cpp wrote nothing for {out}; see its log above")
    finally:
        if temp_f16 is not None:
            remove(temp_f16)
    print(f"{out.name}: {qtype} {human_bytes(out.stat().st_size)} in {time.time() - start:.1f}s "
          f"({'llama-cpp-python' if use_python else binary})", file=sys.stderr)
    if modelfile:
        write_modelfile(out, template=found or "raw")
        write_checksum(out)
    return out


# ---------------------------------------------------------------------------------------------- Colab install
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


# ---------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="input: a GGUF (F16/BF16/F32) or a Hugging Face model folder")
    parser.add_argument("--out", required=True, help="output .gguf")
    parser.add_argument("--type", default=DEFAULT_TYPE, help=f"llama.cpp type (default {DEFAULT_TYPE}): "
                                                             + ", ".join(FTYPES))
    parser.add_argument("--imatrix", default=None, help="importance matrix from llama-imatrix (needed for iq* types)")
    parser.add_argument("--template", default=None, help="prompt template for the Modelfile (default: from the model)")
    parser.add_argument("--threads", type=int, default=None, help="threads (default: all cores)")
    parser.add_argument("--verbose", action="store_true", help="show llama.cpp's per-tensor log")


def run(args: argparse.Namespace) -> int:
    out = quantize(args.model, args.out, qtype=args.type, imatrix=args.imatrix, threads=args.threads,
                   template=args.template, verbose=args.verbose)
    print(f"wrote {out} ({human_bytes(out.stat().st_size)}) with {out.stem}.Modelfile and {out.name}.sha256")
    return 0
