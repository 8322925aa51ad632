"""Quantize a GGUF (or a Hugging Face folder) with llama.cpp's own quantizer.

Two back ends, tried in order: ``llama_cpp.llama_model_quantize`` from llama-cpp-python (no llama.cpp build
needed), or a ``llama-quantize`` binary on ``PATH``. Every llama.cpp type is accepted (``q2_k`` ... ``q8_0``,
``q4_k_m`` by default); the ``iq*`` types (and ``q2_k_s``) need an importance matrix (``--imatrix``, as written
by ``llama-imatrix``: the GGUF format or the legacy ``.dat``), which this module reads and hands to the
quantizer itself, so it works with the Python back end too.

Beside the output go an Ollama ``<stem>.Modelfile`` and ``<file>.sha256``.

Everything llama.cpp would fail on is checked first, so a failure is one line: a truncated or corrupt GGUF, an
input that is already quantized, a read-only or too small output folder, another run writing the same output.
llama.cpp's own log goes to a file (named in the error) instead of the terminal.
"""
from __future__ import annotations

import argparse
import ctypes
import errno
import os
import subprocess
import sys
import time
from pathlib import Path

from ..disk import claim_output, disk_error_message, disk_errors
from ..util import UserError, atomic_path, fault_point, human_bytes, log_dir, remove, require_free_disk, tmp_name
from .convert import gguf_sidecars, write_gguf
from .export import write_checksum, write_modelfile
from .imatrix import check_imatrix_fits, imatrix_metadata, imatrix_struct, read_imatrix
from .llamacpp import install_hint, llama_cpp_available, quantize_binary, quiet_llama_log
from .metadata import check_gguf, gguf_template, gguf_type, read_metadata
from .types import DEFAULT_QUANT, FTYPES, NEEDS_IMATRIX, qtype_name

SOURCE_TYPES = {0: 32, 1: 16, 32: 16}  # llama file types llama.cpp quantizes from (F32, F16, BF16): bits per weight
# about the bits per weight of each type on LLaMA models (with the larger types llama.cpp keeps for some tensors)
BITS_PER_WEIGHT = {"q2_k": 3.4, "q2_k_s": 3.0, "q3_k_s": 3.5, "q3_k_m": 3.9, "q3_k_l": 4.3, "q4_0": 4.6, "q4_1": 5.0,
                   "q4_k_s": 4.6, "q4_k_m": 4.9, "q5_0": 5.6, "q5_1": 6.0, "q5_k_s": 5.6, "q5_k_m": 5.7, "q6_k": 6.6,
                   "q8_0": 8.5, "f16": 16.0, "bf16": 16.0, "f32": 32.0}
_WRITE_FAILED = ("iostream error", "No space left", "File too large", "Disk quota")  # how its writes fail


class QuantizerFailed(Exception):
    """llama.cpp's quantizer returned an error; ``log`` is what it said (when it was collected)."""

    def __init__(self, code: object, log: str = "") -> None:
        super().__init__(f"llama.cpp's quantizer failed ({code})")
        self.code, self.log = code, log


def _quantize_python(src: Path, dst: Path, qtype: str, imatrix: Path | None, threads: int, verbose: bool,
                     log_file: Path, requantize: bool = False) -> None:
    import logging

    import llama_cpp

    if not verbose:
        with quiet_llama_log(log_file=log_file):
            _run_python_quantizer(llama_cpp, src, dst, qtype, imatrix, threads, requantize)
        return
    try:
        from llama_cpp._logger import logger as lcp_logger  # llama.cpp's log goes through this logger's level
    except ImportError:
        lcp_logger = logging.getLogger("llama-cpp-python")
    old_level = lcp_logger.level
    lcp_logger.setLevel(logging.DEBUG)
    try:
        _run_python_quantizer(llama_cpp, src, dst, qtype, imatrix, threads, requantize)
    finally:
        lcp_logger.setLevel(old_level)


def imatrix_overrides(llama_cpp, imatrix: Path, n_entries: int):
    """The ``quantize.imatrix.*`` keys the llama-quantize tool adds to the GGUFs it writes (file name as given,
    first dataset, entries, chunks), as a terminated ``llama_model_kv_override`` array."""
    datasets, chunks = imatrix_metadata(imatrix)
    kvs: list[tuple[str, str | int]] = [("quantize.imatrix.file", str(imatrix)[:127])]
    kvs += [("quantize.imatrix.dataset", datasets[0][:127])] if datasets else []
    kvs += [("quantize.imatrix.entries_count", n_entries)]
    kvs += [("quantize.imatrix.chunks_count", chunks)] if chunks > 0 else []
    arr = (llama_cpp.llama_model_kv_override * (len(kvs) + 1))()
    for o, (key, value) in zip(arr, kvs):
        o.key = key.encode()
        if isinstance(value, str):
            o.tag, o.value.val_str = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_STR, value.encode()
        else:
            o.tag, o.value.val_i64 = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_INT, value
    arr[len(kvs)].key = b""
    return arr


def _run_python_quantizer(llama_cpp, src: Path, dst: Path, qtype: str, imatrix: Path | None, threads: int,
                          requantize: bool = False) -> None:
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[qtype]
    params.nthread = threads
    params.allow_requantize = requantize
    keep = None
    if imatrix is not None:
        data = read_imatrix(imatrix)
        arr, bufs = imatrix_struct(data)
        overrides = imatrix_overrides(llama_cpp, imatrix, len(data))
        params.imatrix = ctypes.cast(arr, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
        params.kv_overrides = ctypes.cast(overrides, ctypes.POINTER(llama_cpp.llama_model_kv_override))
        keep = (arr, bufs, overrides)
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    del keep
    if rc != 0:
        raise QuantizerFailed(rc)


def _quantize_binary(binary: str, src: Path, dst: Path, qtype: str, imatrix: Path | None, threads: int,
                     requantize: bool = False) -> None:
    cmd = [binary] + (["--allow-requantize"] if requantize else [])
    if imatrix is not None:
        cmd += ["--imatrix", str(imatrix)]
    cmd += [str(src), str(dst), qtype.upper(), str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise QuantizerFailed(proc.returncode, proc.stderr or proc.stdout)


def quantized_bytes(src: Path, qtype: str) -> int:
    """About the size of ``src`` (an F32/F16/BF16 GGUF, or a Q8_0 one being requantized) quantized to ``qtype``,
    with a margin."""
    bits = SOURCE_TYPES.get(int(read_metadata(src, ("general.file_type",)).get("general.file_type", 1)), 8.5)
    return int(src.stat().st_size * BITS_PER_WEIGHT.get(qtype, 8.5) / bits * 1.1) + (1 << 20)


def check_source(src: Path, *, requantize: bool = False) -> None:
    """Refuse what llama.cpp cannot quantize before it runs: not a GGUF, truncated or corrupt, already quantized
    (unless ``requantize``)."""
    check_gguf(src)
    file_type = read_metadata(src, ("general.file_type",)).get("general.file_type")
    if file_type is not None and int(file_type) not in SOURCE_TYPES and not requantize:
        raise UserError(f"{src} is already quantized ({gguf_type(src)}); llama.cpp quantizes only from F32, F16 or "
                        "BF16: start from the F16 GGUF or the HF folder")


def _failure(exc: QuantizerFailed, src: Path, out: Path, qtype: str, needed: int, log_file: Path) -> str:
    """The one line for a quantizer that failed although the checks passed: a write that failed, or its log."""
    log = exc.log or (log_file.read_text(encoding="utf-8", errors="replace") if log_file.is_file() else "")
    if any(k in log for k in _WRITE_FAILED):
        return disk_error_message(OSError(errno.ENOSPC, "no space"), folder=out.parent, needed=needed,
                                  what="the quantized GGUF") or ""
    if exc.log:  # the binary's own output
        log_file.write_text(exc.log, encoding="utf-8")
    reason = next((ln.split("failed to quantize:")[-1].strip() for ln in reversed(log.splitlines())
                   if "failed to quantize" in ln), "")
    return (f"llama.cpp could not quantize {src} to {qtype} (code {exc.code}{': ' + reason if reason else ''}); "
            f"its log is in {log_file}")


def _checked_inputs(model: Path, qtype: str, imatrix: str | Path | None, requantize: bool) -> Path | None:
    """Refuse before anything runs: a type that needs an importance matrix without one, a missing matrix or model,
    a source llama.cpp cannot quantize."""
    if qtype in NEEDS_IMATRIX and imatrix is None:
        raise UserError(f"{qtype} needs an importance matrix: compute one on this model (python -m helpers imatrix) "
                        "and pass --imatrix FILE, or choose a K-quant such as q4_k_m")
    imatrix = Path(imatrix) if imatrix is not None else None
    if imatrix is not None and not imatrix.is_file():
        raise UserError(f"importance matrix {imatrix} not found")
    if not model.exists():
        raise UserError(f"{model} not found: give a .gguf file or a Hugging Face model folder")
    if model.is_file():
        check_source(model, requantize=requantize)
    return imatrix


def _f16_of(model: Path, temp_f16: Path, template: str | None) -> Path:
    """A Hugging Face folder converted to the temporary F16 GGUF llama.cpp quantizes from."""
    print(f"converting {model} to an F16 GGUF first ...", file=sys.stderr)
    src = write_gguf(model, temp_f16, outtype="f16", template=template, what="the temporary F16 GGUF",
                     resumable=False)[0]
    fault_point("quantize.f16")
    return src


def _back_end() -> tuple[bool, str | None]:
    """``(llama-cpp-python is there, else the llama-quantize binary)``; UserError when neither is."""
    use_python = llama_cpp_available()
    binary = None if use_python else quantize_binary()
    if not use_python and binary is None:
        raise UserError(install_hint())
    return use_python, binary


def _check_imatrix_for(src: Path, imatrix: Path) -> None:
    """Refuse an importance matrix made for another model than ``src`` (names or widths differ)."""
    import gguf

    columns = {t.name: int(t.shape[0]) for t in gguf.GGUFReader(str(src)).tensors if len(t.shape) == 2}
    check_imatrix_fits(read_imatrix(imatrix), columns, source=f"importance matrix {imatrix}")


def _check_written(tmp: Path, out: Path, log_file: Path) -> None:
    if not tmp.is_file():
        raise UserError(f"llama.cpp wrote nothing for {out}; see {log_file}")
    fault_point("quantize.written")


def quantize(model: str | Path, out: str | Path, *, qtype: str = DEFAULT_QUANT, imatrix: str | Path | None = None,
             threads: int | None = None, template: str | None = None, modelfile: bool = True,
             verbose: bool = False, requantize: bool = False) -> Path:
    """Quantize ``model`` to ``out`` with llama.cpp's quantizer; returns ``out``.

    Args:
        model: a GGUF file (F32/F16/BF16) or a Hugging Face model folder (converted to F16 first, in a
            temporary file beside ``out`` that is removed afterwards).
        out: the ``.gguf`` to write (atomically).
        qtype: llama.cpp type name (``q4_k_m``, ``q5_k_m``, ``q8_0``, ``iq4_xs`` ... case-insensitive).
        imatrix: importance matrix file (required for the 1-, 2- and 3-bit iq types and ``q2_k_s``); one made for
            another model is refused.
        threads: quantizer threads (default: all cores).
        template: prompt template for the Modelfile (default: from the model).
        modelfile: write ``<stem>.Modelfile`` and ``<file>.sha256`` beside ``out``.
        verbose: show llama.cpp's per-tensor log (otherwise it goes to a log file, named when it fails).
        requantize: accept an already quantized GGUF (llama-quantize's ``--allow-requantize``: a Q8_0
            intermediate of the importance-matrix route; quality is lost against quantizing from F16).

    Raises:
        UserError: a bad or already quantized input, a missing or mismatched importance matrix, no quantizer,
            another run writing ``out``, a read-only or full disk.
    """
    qtype = qtype_name(qtype)
    model, out = Path(model), Path(out)
    imatrix = _checked_inputs(model, qtype, imatrix, requantize)
    use_python, binary = _back_end()
    threads = int(threads or os.cpu_count() or 1)
    log_file = log_dir() / f"quantize-{out.stem}.log"
    with claim_output(out, what="the quantized GGUF", sidecars=gguf_sidecars(out)):
        temp_f16 = out.with_name(tmp_name(out).name + ".f16.gguf") if model.is_dir() else None
        try:
            src = _f16_of(model, temp_f16, template) if temp_f16 is not None else model
            if imatrix is not None:
                _check_imatrix_for(src, imatrix)
            found = template or gguf_template(src)  # the Modelfile uses the template the GGUF carries
            needed = quantized_bytes(src, qtype)
            require_free_disk(out.parent, needed, what="the quantized GGUF")
            start = time.time()
            print(f"quantizing {src.name} to {qtype} with {threads} threads "
                  "(a 7B model takes a few minutes on 2 cores) ...", file=sys.stderr)
            with atomic_path(out) as tmp:
                try:
                    if use_python:
                        _quantize_python(src, tmp, qtype, imatrix, threads, verbose, log_file, requantize)
                    else:
                        _quantize_binary(binary, src, tmp, qtype, imatrix, threads, requantize)
                except QuantizerFailed as exc:
                    raise UserError(_failure(exc, src, out, qtype, needed, log_file)) from None
                _check_written(tmp, out, log_file)
        finally:
            if temp_f16 is not None:
                remove(temp_f16)
        print(f"{out.name}: {qtype} {human_bytes(out.stat().st_size)} in {time.time() - start:.1f}s "
              f"({'llama-cpp-python' if use_python else binary})", file=sys.stderr)
        if modelfile:
            with disk_errors(out.parent, what="the Modelfile and checksum"):
                write_modelfile(out, template=found or "raw")
                write_checksum(out)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="input: a GGUF (F16/BF16/F32) or a Hugging Face model folder")
    parser.add_argument("--out", required=True, help="output .gguf")
    parser.add_argument("--type", default=DEFAULT_QUANT, help=f"llama.cpp type (default {DEFAULT_QUANT}): "
                                                             + ", ".join(FTYPES))
    parser.add_argument("--imatrix", default=None, help="importance matrix (python -m helpers imatrix, or "
                                                        "llama-imatrix; needed for the 1-3 bit iq types)")
    parser.add_argument("--allow-requantize", action="store_true", help="accept an already quantized GGUF (Q8_0)")
    parser.add_argument("--template", default=None, help="prompt template for the Modelfile (default: from the model)")
    parser.add_argument("--threads", type=int, default=None, help="threads (default: all cores)")
    parser.add_argument("--verbose", action="store_true", help="show llama.cpp's per-tensor log")


def run(args: argparse.Namespace) -> int:
    out = quantize(args.model, args.out, qtype=args.type, imatrix=args.imatrix, threads=args.threads,
                   template=args.template, verbose=args.verbose, requantize=args.allow_requantize)
    print(f"wrote {out} ({human_bytes(out.stat().st_size)}) with {out.stem}.Modelfile and {out.name}.sha256")
    return 0
