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
import ctypes
import os
import subprocess
import sys
import time
from pathlib import Path

from ..util import UserError, atomic_path, human_bytes, remove, tmp_name
from .convert import convert_hf_to_gguf
from .export import write_checksum, write_modelfile
from .imatrix import imatrix_struct, read_imatrix
from .llamacpp import install_hint, llama_cpp_available, quantize_binary, quiet_llama_log
from .metadata import gguf_template
from .types import DEFAULT_QUANT, FTYPES, NEEDS_IMATRIX, qtype_name


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


def _run_python_quantizer(llama_cpp, src: Path, dst: Path, qtype: str, imatrix: Path | None, threads: int) -> None:

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[qtype]
    params.nthread = threads
    keep = None
    if imatrix is not None:
        arr, keep = imatrix_struct(read_imatrix(imatrix))
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


def quantize(model: str | Path, out: str | Path, *, qtype: str = DEFAULT_QUANT, imatrix: str | Path | None = None,
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="input: a GGUF (F16/BF16/F32) or a Hugging Face model folder")
    parser.add_argument("--out", required=True, help="output .gguf")
    parser.add_argument("--type", default=DEFAULT_QUANT, help=f"llama.cpp type (default {DEFAULT_QUANT}): "
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
