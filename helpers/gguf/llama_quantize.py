"""Quantize a GGUF (or a Hugging Face folder) with llama.cpp's own quantizer.

Two back ends, tried in order: ``llama_cpp.llama_model_quantize`` from llama-cpp-python (no llama.cpp build
needed), or a ``llama-quantize`` binary on ``PATH``. Every llama.cpp type is accepted (``q2_k`` ... ``q8_0``,
``q4_k_m`` by default); the 1-, 2- and 3-bit ``iq*`` types (and ``q2_k_s``) need an importance matrix
(``--imatrix``: the GGUF format or the legacy ``.dat``), which this module reads and hands to the quantizer
itself, so it works with the Python back end too; a matrix made for another model is refused.

Beside the output go an Ollama ``<stem>.Modelfile`` and ``<file>.sha256``. The output's bytes are llama-quantize's
own; it carries the source's metadata, so an output made from a merge's GGUF records that merge's job
(:data:`~.metadata.JOB_KEY`) and a rerun with the same source, type and matrix keeps it instead of quantizing again.
A progress bar follows the tensors as llama.cpp reports them.

Everything llama.cpp would fail on is checked first, so a failure is one line: a truncated or corrupt GGUF, an
input that is already quantized, an output that is the input, a read-only or too small output folder, another run
writing the same output. llama.cpp's own log goes to a file (named in the error) instead of the terminal.
"""
from __future__ import annotations

import ctypes
import errno
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..disk import claim_output, disk_error_message, disk_errors, require_free_disk
from ..util import UserError, atomic_path, fault_point, human_bytes, log_dir, progress, remove, tmp_name
from ..util.params import param
from .convert import gguf_sidecars, write_gguf
from .export import write_checksum, write_modelfile
from .imatrix import check_imatrix_fits, imatrix_metadata, imatrix_struct, read_imatrix
from .layout import requantized_bytes
from .llamacpp import LLAMA_CPP_LOGGER, install_hint, llama_cpp_available, quantize_binary, quiet_llama_log
from .metadata import JOB_KEY, check_gguf, gguf_type, read_metadata
from .types import DEFAULT_QUANT, FTYPES, NEEDS_IMATRIX, qtype_name

SOURCE_TYPES = frozenset({FTYPES["f32"], FTYPES["f16"], FTYPES["bf16"]})  # the file types llama.cpp quantizes from
_WRITE_FAILED = ("iostream error", "No space left", "File too large", "Disk quota")  # how its writes fail
_STEP = re.compile(r"\[\s*(\d+)/\s*(\d+)\]")  # llama.cpp's quantizer: "[  12/ 291] blk.0.attn_q.weight ..."


class QuantizerFailed(Exception):
    """llama.cpp's quantizer returned an error; ``log`` is what it said (when it was collected)."""

    def __init__(self, code: object, log: str = "") -> None:
        super().__init__(f"llama.cpp's quantizer failed ({code})")
        self.code, self.log = code, log


class _TensorProgress:
    """A progress bar over the tensors llama.cpp's quantizer reports in its log."""

    def __init__(self, desc: str) -> None:
        self.desc, self.bar = desc, None

    def __call__(self, text: str) -> None:
        for done, total in _STEP.findall(text):
            if self.bar is None:
                self.bar = progress(None, total=int(total), desc=self.desc, unit="tensor")
            self.bar.update(int(done) - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _overrides(llama_cpp, kvs: list[tuple[str, str | int]]):
    """``kvs`` as the terminated ``llama_model_kv_override`` array the quantizer writes into its output."""
    arr = (llama_cpp.llama_model_kv_override * (len(kvs) + 1))()
    for o, (key, value) in zip(arr, kvs):
        o.key = key.encode()
        if isinstance(value, str):
            o.tag, o.value.val_str = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_STR, value.encode()
        else:
            o.tag, o.value.val_i64 = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_INT, value
    arr[len(kvs)].key = b""
    return arr


def imatrix_keys(imatrix: Path, n_entries: int) -> list[tuple[str, str | int]]:
    """The ``quantize.imatrix.*`` keys the llama-quantize tool adds to the GGUFs it writes (file name as given, first
    dataset, entries, chunks)."""
    datasets, chunks = imatrix_metadata(imatrix)
    kvs: list[tuple[str, str | int]] = [("quantize.imatrix.file", str(imatrix)[:127])]
    kvs += [("quantize.imatrix.dataset", datasets[0][:127])] if datasets else []
    kvs += [("quantize.imatrix.entries_count", n_entries)]
    return kvs + ([("quantize.imatrix.chunks_count", chunks)] if chunks > 0 else [])


@dataclass(frozen=True)
class _Quantizer:
    """One quantization: the back end (llama-cpp-python, else the ``llama-quantize`` binary) and its settings."""

    qtype: str
    imatrix: Path | None
    threads: int
    verbose: bool
    log_file: Path
    binary: str | None  # None: llama-cpp-python
    requantize: bool = False

    @property
    def name(self) -> str:
        return self.binary or "llama-cpp-python"

    def run(self, src: Path, tmp: Path) -> None:
        if self.binary is not None:
            return self._run_binary(src, tmp)
        import logging

        import llama_cpp

        if self.verbose:  # llama.cpp's log goes through this logger's level
            logger = logging.getLogger(LLAMA_CPP_LOGGER)
            old = logger.level
            logger.setLevel(logging.DEBUG)
            try:
                return self._run_python(llama_cpp, src, tmp)
            finally:
                logger.setLevel(old)
        bar = _TensorProgress(f"quantize {self.qtype}")
        try:
            with quiet_llama_log(log_file=self.log_file, on_text=bar):
                self._run_python(llama_cpp, src, tmp)
        finally:
            bar.close()

    def _run_python(self, llama_cpp, src: Path, dst: Path) -> None:
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype, params.nthread, params.allow_requantize = FTYPES[self.qtype], self.threads, self.requantize
        keep: list = []
        if self.imatrix is not None:  # with the quantize.imatrix.* keys llama-quantize writes
            data = read_imatrix(self.imatrix)
            arr, bufs = imatrix_struct(data)
            overrides = _overrides(llama_cpp, imatrix_keys(self.imatrix, len(data)))
            params.imatrix = ctypes.cast(arr, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
            params.kv_overrides = ctypes.cast(overrides, ctypes.POINTER(llama_cpp.llama_model_kv_override))
            keep += [arr, bufs, overrides]
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
        del keep
        if rc != 0:
            raise QuantizerFailed(rc)

    def _run_binary(self, src: Path, dst: Path) -> None:
        cmd = [self.binary] + (["--allow-requantize"] if self.requantize else [])
        cmd += ["--imatrix", str(self.imatrix)] if self.imatrix is not None else []
        cmd += [str(src), str(dst), self.qtype.upper(), str(self.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise QuantizerFailed(proc.returncode, proc.stderr or proc.stdout)


def quantized_bytes(src: Path, qtype: str, *, has_imatrix: bool = False) -> int:
    """The size of ``src`` (an F32/F16/BF16 GGUF, or a Q8_0 one being requantized) quantized to ``qtype``
    (:func:`.layout.requantized_bytes`), with a MiB of margin for the metadata the quantizer changes."""
    return requantized_bytes(str(src), qtype, has_imatrix=has_imatrix) + (1 << 20)


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


def _checked_inputs(model: Path, out: Path, qtype: str, imatrix: str | Path | None, requantize: bool) -> Path | None:
    """Refuse what cannot work before anything runs; returns the importance matrix as a path."""
    if qtype in NEEDS_IMATRIX and imatrix is None:
        raise UserError(f"{qtype} needs an importance matrix: compute one on this model (python -m helpers imatrix) "
                        "and pass --imatrix FILE, or choose a K-quant such as q4_k_m")
    if imatrix is not None and not Path(imatrix).is_file():
        raise UserError(f"importance matrix {imatrix} not found")
    if not model.exists():
        raise UserError(f"{model} not found: give a .gguf file or a Hugging Face model folder")
    if out.resolve() == model.resolve():
        raise UserError(f"the output {out} is the input itself: quantizing would replace it; choose another output name")
    if model.is_file():
        check_source(model, requantize=requantize)
    return Path(imatrix) if imatrix is not None else None


def _quantizer(qtype: str, imatrix: Path | None, threads: int | None, verbose: bool, out: Path,
               requantize: bool) -> _Quantizer:
    binary = None if llama_cpp_available() else quantize_binary()
    if binary is None and not llama_cpp_available():
        raise UserError(install_hint())
    return _Quantizer(qtype, imatrix, int(threads or os.cpu_count() or 1), verbose,
                      log_dir() / f"quantize-{out.stem}.log", binary, requantize)


def _check_imatrix_for(src: Path, imatrix: Path) -> None:
    """Refuse an importance matrix made for another model than ``src`` (names or widths differ)."""
    import gguf

    columns = {t.name: int(t.shape[0]) for t in gguf.GGUFReader(str(src)).tensors if len(t.shape) == 2}
    check_imatrix_fits(read_imatrix(imatrix), columns, source=f"importance matrix {imatrix}")


_SAME = ("quantize.imatrix.file", "quantize.imatrix.entries_count", "quantize.imatrix.chunks_count")


def already_quantized(out: Path, src: Path, qtype: str, imatrix: Path | None) -> bool:
    """True when ``out`` is the ``qtype`` quantization of the merge ``src`` holds (the job it records, which the
    quantizer copies into its output) with the same importance matrix; False for a source that records no job."""
    if not out.is_file():
        return False
    try:
        job = read_metadata(src, (JOB_KEY,)).get(JOB_KEY)
        meta = read_metadata(out, ("general.file_type", JOB_KEY, *_SAME))
    except UserError:
        return False
    expected = dict(imatrix_keys(imatrix, len(read_imatrix(imatrix)))) if imatrix is not None else {}
    return (job is not None and meta.get(JOB_KEY) == job and meta.get("general.file_type") == FTYPES[qtype]
            and all(meta.get(k) == expected.get(k) for k in _SAME))


def _quantize_source(src: Path, out: Path, q: _Quantizer) -> None:
    """Quantize the GGUF ``src`` into ``out`` (atomically), after checking the matrix and the disk; nothing when
    ``out`` already holds this quantization."""
    if q.imatrix is not None:
        _check_imatrix_for(src, q.imatrix)
    if already_quantized(out, src, q.qtype, q.imatrix):
        print(f"{out.name}: already the {q.qtype} of {src.name}; kept", file=sys.stderr)
        return
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


@dataclass(frozen=True)
class QuantizeOptions:
    """How to quantize; each field is declared once here, and ``python -m helpers quantize``'s flags are made from
    these declarations.

    Attributes:
        qtype: llama.cpp type name (``q4_k_m``, ``q5_k_m``, ``q8_0``, ``iq4_xs`` ... case-insensitive).
        imatrix: importance matrix file (required for the 1-, 2- and 3-bit iq types and ``q2_k_s``); one made for
            another model is refused.
        requantize: accept an already quantized GGUF (llama-quantize's ``--allow-requantize``: a Q8_0
            intermediate of the importance-matrix route; quality is lost against quantizing from F16).
        template: prompt template for the Modelfile (default: from the model).
        threads: quantizer threads (default: all cores).
        modelfile: write ``<stem>.Modelfile`` and ``<file>.sha256`` beside ``out``.
        verbose: show llama.cpp's per-tensor log (otherwise a progress bar, and the log in a file named when it
            fails).
    """

    qtype: str = param(DEFAULT_QUANT, f"llama.cpp type: {', '.join(FTYPES)}", flag="--type", metavar="TYPE")
    imatrix: str | Path | None = param(None, "importance matrix (python -m helpers imatrix, or llama-imatrix; needed "
                                       "for the 1-3 bit iq types)", metavar="FILE")
    requantize: bool = param(False, "accept an already quantized GGUF (Q8_0)", flag="--allow-requantize")
    template: str | None = param(None, "prompt template for the Modelfile (default: from the model)")
    threads: int | None = param(None, "threads (default: all cores)", parse=int, metavar="N")
    modelfile: bool = param(True, "no Ollama Modelfile and .sha256 beside the output")
    verbose: bool = param(False, "show llama.cpp's per-tensor log")


def quantize(model: str | Path, out: str | Path, options: QuantizeOptions = QuantizeOptions()) -> Path:
    """Quantize ``model`` to ``out`` with llama.cpp's quantizer as ``options`` say; returns ``out``.

    Args:
        model: a GGUF file (F32/F16/BF16) or a Hugging Face model folder (converted to F16 first, in a
            temporary file beside ``out`` that is removed afterwards).
        out: the ``.gguf`` to write (atomically); never the input itself. One that already holds this
            quantization of the same source (and matrix) is kept.
        options: the type, the importance matrix and the rest (:class:`QuantizeOptions`).

    Raises:
        UserError: a bad or already quantized input, an output that is the input, a missing or mismatched
            importance matrix, no quantizer, another run writing ``out``, a read-only or full disk.
    """
    imatrix, threads, template, verbose, requantize = (options.imatrix, options.threads, options.template,
                                                       options.verbose, options.requantize)
    qtype = qtype_name(options.qtype)
    model, out = Path(model), Path(out)
    q = _quantizer(qtype, _checked_inputs(model, out, qtype, imatrix, requantize), threads, verbose, out, requantize)
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
            _quantize_source(src, out, q)
        finally:
            if temp_f16 is not None:
                remove(temp_f16)
        if options.modelfile:
            with disk_errors(out.parent, what="the Modelfile and checksum"):
                write_modelfile(out, template=template)  # default: the template the GGUF carries (from src)
                write_checksum(out)
    return out
