"""The settings of one merge (:class:`MergeOptions`) and what it produced (:class:`MergeResult`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Mapping

from ..gguf import WRITE_TYPES
from ..util import UserError

FORMATS = ("hf", "pth", "gguf")
OUTTYPES = WRITE_TYPES  # f32, f16, bf16 for every format; q8_0 for gguf
DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}  # torch dtype of each HF / .pth outtype


@dataclass(frozen=True)
class MergeOptions:
    """How to write a merge.

    Attributes:
        fmt: ``hf``, ``pth`` or ``gguf``.
        outtype: ``f32``, ``f16``, ``bf16`` (any format) or ``q8_0`` (gguf only).
        overwrite: replace an existing output (only once the new one is complete).
        verify_sha256: ``{file name: digest(s)}`` that input files must match (``dir/name`` or ``name``).
        write_sha256: write a ``SHA256SUMS`` listing (a ``.sha256`` file beside a GGUF).
        progress: show a progress bar.
        max_shard_bytes: HF shard size (default 2 GiB).
        pth_shards: number of ``consolidated.NN.pth`` shards (default: as the releases).
    """

    fmt: str = "hf"
    outtype: str = "f16"
    overwrite: bool = False
    verify_sha256: Mapping[str, str | Collection[str]] | None = None
    write_sha256: bool = True
    progress: bool = True
    max_shard_bytes: int | None = None
    pth_shards: int | None = None

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise UserError(f"unknown format {self.fmt!r}; use one of {', '.join(FORMATS)}")
        if self.outtype not in OUTTYPES or (self.outtype == "q8_0" and self.fmt != "gguf"):
            raise UserError(f"--outtype {self.outtype} is not available for --format {self.fmt}; use f16, bf16 or f32"
                            + (" (q8_0 is for gguf)" if self.outtype == "q8_0" else ""))

    def target(self, out: str | Path) -> Path:
        """The output path: ``out`` itself, or ``out/ggml-model-<outtype>.gguf`` for a GGUF into a folder."""
        out = Path(out).expanduser()
        if self.fmt == "gguf" and out.suffix != ".gguf":
            return out / f"ggml-model-{self.outtype}.gguf"
        return out


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
