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

import ctypes
import errno
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..disk import claim_output, disk_error_message, disk_errors, require_free_disk
from ..util import UserError, atomic_path, fault_point, human_bytes, log_dir, remove, tmp_name
from .convert import gguf_sidecars, write_gguf
from .export import write_checksum, write_modelfile
from .imatrix import imatrix_struct, read_imatrix
from .layout import requantized_bytes
from .llamacpp import LLAMA_CPP_LOGGER, install_hint, llama_cpp_available, quantize_binary, quiet_llama_log
from .metadata import check_gguf, gguf_template, gguf_type, read_metadata
from .types import DEFAULT_QUANT, FTYPES, NEEDS_IMATRIX, qtype_name

SOURCE_TYPES = frozenset({FTYPES["f32"], FTYPES["f16"], FTYPES["bf16"]})  # the file types llama.cpp quantizes from
_WRITE_FAILED = ("iostream error", "No space left", "File too large", "Disk quota")  # how its writes fail


class QuantizerFailed(Exception):
    """llama.cpp's quantizer returned an error; ``log`` is what it said (when it was collected)."""

    def __init__(self, code: object, log: str = "") -> None:
        super().__init__(f"llama.cpp's quantizer failed ({code})")
        self.code, self.log = code, log


def _quantize_python(src: Path, dst: Path, qtype: str, imatrix: Path | None, threads: int, verbose: bool,
                     log_file: Path) -> None:
    import logging

    import llama_cpp

    if not verbose:
        with quiet_llama_log(log_file=log_file):
            _run_python_quantizer(llama_cpp, src, dst, qtype, imatrix, threads)
        return
    lcp_logger = logging.getLogger(LLAMA_CPP_LOGGER)  # llama.cpp's log goes through this logger's level
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
        raise QuantizerFailed(rc)


def _quantize_binary(binary: str, src: Path, dst: Path, qtype: str, imatrix: Path | None, threads: int) -> None:
    cmd = [binary]
    if imatrix is not None:
        cmd += ["--imatrix", str(imatrix)]
    cmd += [str(src), str(dst), qtype.upper(), str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise QuantizerFailed(proc.returncode, proc.stderr or proc.stdout)


def quantized_bytes(src: Path, qtype: str, *, has_imatrix: bool = False) -> int:
    """The size of ``src`` (an F32/F16/BF16 GGUF) quantized to ``qtype`` (:func:`.layout.requantized_bytes`),
    with a MiB of margin for the metadata the quantizer changes."""
    return requantized_bytes(str(src), qtype, has_imatrix=has_imatrix) + (1 << 20)


def check_source(src: Path) -> None:
    """Refuse what llama.cpp cannot quantize before it runs: not a GGUF, truncated or corrupt, already quantized."""
    check_gguf(src)
    file_type = read_metadata(src, ("general.file_type",)).get("general.file_type")
    if file_type is not None and int(file_type) not in SOURCE_TYPES:
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


@dataclass(frozen=True)
class _Quantizer:
    """One quantization: the back end (llama-cpp-python, else the ``llama-quantize`` binary) and its settings."""

    qtype: str
    imatrix: Path | None
    threads: int
    verbose: bool
    log_file: Path
    binary: str | None  # None: llama-cpp-python

    def run(self, src: Path, tmp: Path) -> None:
        if self.binary is None:
            _quantize_python(src, tmp, self.qtype, self.imatrix, self.threads, self.verbose, self.log_file)
        else:
            _quantize_binary(self.binary, src, tmp, self.qtype, self.imatrix, self.threads)

    @property
    def name(self) -> str:
        return self.binary or "llama-cpp-python"


def _checked_inputs(model: Path, out: Path, qtype: str, imatrix: str | Path | None) -> Path | None:
    """Refuse what cannot work before anything runs; returns the importance matrix as a path."""
    if qtype in NEEDS_IMATRIX and imatrix is None:
        raise UserError(f"{qtype} needs an importance matrix: compute one with llama.cpp's llama-imatrix on some "
                        "Chinese text and pass --imatrix FILE, or choose a K-quant such as q4_k_m")
    if imatrix is not None and not Path(imatrix).is_file():
        raise UserError(f"importance matrix {imatrix} not found")
    if not model.exists():
        raise UserError(f"{model} not found: give a .gguf file or a Hugging Face model folder")
    if out.resolve() == model.resolve():
        raise UserError(f"the output {out} is the input itself: quantizing would replace it; choose another output name")
    if model.is_file():
        check_source(model)
    return Path(imatrix) if imatrix is not None else None


def _quantizer(qtype: str, imatrix: Path | None, threads: int | None, verbose: bool, out: Path) -> _Quantizer:
    binary = None if llama_cpp_available() else quantize_binary()
    if binary is None and not llama_cpp_available():
        raise UserError(install_hint())
    return _Quantizer(qtype, imatrix, int(threads or os.cpu_count() or 1), verbose,
                      log_dir() / f"quantize-{out.stem}.log", binary)


def _quantize_source(src: Path, out: Path, q: _Quantizer) -> None:
    """Quantize the float GGUF ``src`` into ``out`` (atomically), after checking the disk."""
    needed = quantized_bytes(src, q.qtype, has_imatrix=q.imatrix is not None)
    require_free_disk(out.parent, needed, what="the quantized GGUF")
    start = time.time()
    print(f"quantizing {src.name} to {q.qtype} with {q.threads} threads "
          "(a 7B model takes a few minutes on 2 cores) ...", file=sys.stderr)
    with atomic_path(out) as tmp:
        try:
            q.run(src, tmp)
        except QuantizerFailed as exc:
            raise UserError(_failure(exc, src, out, q.qtype, needed, q.log_file)) from None
        if not tmp.is_file():
            raise UserError(f"llama.cpp wrote nothing for {out}; see {q.log_file}")
        fault_point("quantize.written")
    print(f"{out.name}: {q.qtype} {human_bytes(out.stat().st_size)} in {time.time() - start:.1f}s ({q.name})",
          file=sys.stderr)


def quantize(model: str | Path, out: str | Path, *, qtype: str = DEFAULT_QUANT, imatrix: str | Path | None = None,
             threads: int | None = None, template: str | None = None, modelfile: bool = True,
             verbose: bool = False) -> Path:
    """Quantize ``model`` to ``out`` with llama.cpp's quantizer; returns ``out``.

    Args:
        model: a GGUF file (F32/F16/BF16) or a Hugging Face model folder (converted to F16 first, in a
            temporary file beside ``out`` that is removed afterwards).
        out: the ``.gguf`` to write (atomically); never the input itself.
        qtype: llama.cpp type name (``q4_k_m``, ``q5_k_m``, ``q8_0``, ``iq4_xs`` ... case-insensitive).
        imatrix: importance matrix file (required for ``iq*`` and ``q2_k_s``).
        threads: quantizer threads (default: all cores).
        template: prompt template for the Modelfile (default: from the model).
        modelfile: write ``<stem>.Modelfile`` and ``<file>.sha256`` beside ``out``.
        verbose: show llama.cpp's per-tensor log (otherwise it goes to a log file, named when it fails).

    Raises:
        UserError: a bad or already quantized input, an output that is the input, a missing importance matrix or
            quantizer, another run writing ``out``, a read-only or full disk.
    """
    qtype = qtype_name(qtype)
    model, out = Path(model), Path(out)
    q = _quantizer(qtype, _checked_inputs(model, out, qtype, imatrix), threads, verbose, out)
    with claim_output(out, what="the quantized GGUF", sidecars=gguf_sidecars(out)):
        temp_f16 = out.with_name(tmp_name(out).name + ".f16.gguf") if model.is_dir() else None
        try:
            if temp_f16 is not None:
                print(f"converting {model} to an F16 GGUF first ...", file=sys.stderr)
                src = write_gguf(model, temp_f16, outtype="f16", template=template, what="the temporary F16 GGUF",
                                 resumable=False)[0]
                fault_point("quantize.f16")
            else:
                src = model
            found = template or gguf_template(src)  # the Modelfile uses the template the GGUF carries
            _quantize_source(src, out, q)
        finally:
            if temp_f16 is not None:
                remove(temp_f16)
        if modelfile:
            with disk_errors(out.parent, what="the Modelfile and checksum"):
                write_modelfile(out, template=found or "raw")
                write_checksum(out)
    return out
