"""The settings of one merge (:class:`MergeOptions`) and what it produced (:class:`MergeResult`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Mapping

from ..gguf import FLOAT_TYPES, WRITE_TYPES, gguf_outtype
from ..util import UserError, human_bytes, human_seconds

FORMATS = ("hf", "pth", "gguf")
DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}  # torch dtype of each HF / .pth outtype


@dataclass(frozen=True)
class MergeOptions:
    """How to write a merge.

    Attributes:
        fmt: ``hf``, ``pth`` or ``gguf``.
        outtype: ``f32``, ``f16``, ``bf16`` (any format) or, for gguf, any llama.cpp quantization type
            (``q8_0``, ``q4_k_m``, ...; case and the aliases ``q4_k`` etc. are normalised), quantized in the same pass.
        overwrite: replace an existing output (only once the new one is complete).
        verify_sha256: ``{file name: digest(s)}`` that input files must match (``dir/name`` or ``name``).
        write_sha256: write a ``SHA256SUMS`` listing (a ``.sha256`` file beside a GGUF).
        progress: show a progress bar.
        max_shard_bytes: HF shard size (default 2 GiB).
        pth_shards: number of ``consolidated.NN.pth`` shards (default: as the releases).
        imatrix: importance matrix for a quantized GGUF (required by ``iq*`` and ``q2_k_s``).
        low_disk: fetch a hub base one safetensors shard at a time, deleting each before the next (peak disk: the
            largest shard + the LoRAs + the output); ``None``: only when the planner says the full download would
            not fit.
    """

    fmt: str = "hf"
    outtype: str = "f16"
    overwrite: bool = False
    verify_sha256: Mapping[str, str | Collection[str]] | None = None
    write_sha256: bool = True
    progress: bool = True
    max_shard_bytes: int | None = None
    pth_shards: int | None = None
    imatrix: str | Path | None = None
    low_disk: bool | None = None

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise UserError(f"unknown format {self.fmt!r}; use one of {', '.join(FORMATS)}")
        if self.fmt == "gguf":
            object.__setattr__(self, "outtype", gguf_outtype(self.outtype, imatrix=self.imatrix is not None))
        elif self.outtype not in FLOAT_TYPES:
            raise UserError(f"--outtype {self.outtype} is not available for --format {self.fmt}; use f16, bf16 or f32"
                            " (quantization types are for gguf)")
        if self.imatrix is not None:
            if self.outtype in FLOAT_TYPES:
                raise UserError("--imatrix is used only when quantizing: choose a quantized --outtype with --format gguf")
            if not Path(self.imatrix).expanduser().is_file():
                raise UserError(f"importance matrix {self.imatrix} not found")

    def target(self, out: str | Path) -> Path:
        """The output path: ``out`` itself, or ``out/ggml-model-<outtype>.gguf`` for a GGUF into a folder."""
        return gguf_target(out, self.outtype) if self.fmt == "gguf" else Path(out).expanduser()


def gguf_target(out: str | Path, outtype: str) -> Path:
    """Where a GGUF of ``outtype`` goes: ``out`` itself when it names a ``.gguf``, else
    ``out/ggml-model-<outtype>.gguf``."""
    out = Path(out).expanduser()
    return out if out.suffix == ".gguf" else out / f"ggml-model-{outtype}.gguf"


@dataclass(frozen=True)
class MergeResult:
    """What a merge produced.

    Attributes:
        outputs: the files written (final names).
        vocab_size: rows of the merged embeddings.
        tensors_written: tensors computed in this run.
        tensors_resumed: tensors skipped because an interrupted run had already written them.
        seconds: wall time of this call.
        peak_rss_bytes: peak resident memory of this process so far.
        already_merged: the output existed and nothing was done.
    """

    outputs: list[Path]
    vocab_size: int
    tensors_written: int
    tensors_resumed: int = 0
    seconds: float = 0.0
    peak_rss_bytes: int = 0
    already_merged: bool = False

    def summary(self) -> str:
        """What was written, and how: the tensors, the time, the vocabulary, the peak memory."""
        files = "\n".join(f"  {human_bytes(p.stat().st_size) if p.is_file() else '':>10}  {p}" for p in self.outputs)
        if self.already_merged:
            return f"already made earlier, nothing merged:\n{files}"
        resumed = f" (and {self.tensors_resumed} resumed from an interrupted run)" if self.tensors_resumed else ""
        return (f"merged: {self.tensors_written} tensors written{resumed} in {human_seconds(self.seconds)}, "
                f"{self.vocab_size}-token vocabulary, peak RAM {human_bytes(self.peak_rss_bytes)}\n{files}")
