"""What a merge combines (:class:`Recipe`), its settings (:class:`MergeOptions`, declared once with
:func:`~helpers.util.params.param`) and what it produced (:class:`MergeResult`)."""
from __future__ import annotations

import argparse
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Collection, Mapping

from ..gguf import FLOAT_TYPES, WRITE_TYPES, gguf_outtype
from ..hub import ModelRef
from ..util import UserError, human_bytes, human_seconds
from ..util.params import param

FORMATS = ("hf", "pth", "gguf")
DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}  # torch dtype of each HF / .pth outtype
_QUANTS = ", ".join(t for t in WRITE_TYPES if t not in FLOAT_TYPES)


def parse_size(text: str) -> int:
    """A size such as ``2GB`` or ``500MB`` in bytes (a flag's value)."""
    units = {"": 1, "B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper()
    num = t.rstrip("KMGB")
    try:
        return int(float(num) * units[t[len(num):]])
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 2GB, 500MB)") from None


def _sha256_listing(path: str) -> dict[str, set[str]]:
    from .inputs import parse_sha256_file

    return parse_sha256_file(path)


@dataclass(frozen=True)
class Recipe:
    """What a merge combines: the base, the LoRAs applied in order, and a full-weight patch added last.

    Attributes:
        base: base model folder or hub id (HF safetensors / .bin shards, or Meta .pth).
        loras: LoRA folders or hub ids, applied in this order.
        patch: a full-weight delta checkpoint (Open-Chinese-LLaMA), added last.

    Given as text (or paths), each is classified once on creation (:class:`~helpers.hub.ModelRef`: a folder here,
    the offline mirror's copy or a hub id) and the :class:`~helpers.hub.ModelRef` is what the merge carries down.
    """

    base: str | Path = param(MISSING, "base model: folder or hub id (HF or Meta .pth layout)")
    loras: tuple[str | Path, ...] = param((), "LoRA folder or hub id; repeat to apply several, in order (Plus: "
                                          "LLaMA-Plus first)", flag="--lora", many=True, metavar="LORA")
    patch: str | Path | None = param(None, "full-weight delta to add (Open-Chinese-LLaMA patch)")

    def __post_init__(self) -> None:  # each reference classified once, here, and carried down (hub.ModelRef)
        object.__setattr__(self, "base", ModelRef.of(self.base))
        object.__setattr__(self, "loras", tuple(ModelRef.of(x) for x in self.loras))
        object.__setattr__(self, "patch", ModelRef.of(self.patch) if self.patch else None)


@dataclass(frozen=True)
class MergeOptions:
    """How to write a merge; each field is declared once here, and ``python -m helpers merge``'s flags are made from
    these declarations (:func:`helpers.util.params.add_arguments`).

    Attributes:
        fmt: ``hf``, ``pth`` or ``gguf``.
        outtype: ``f32``, ``f16``, ``bf16`` (any format) or, for gguf, any llama.cpp quantization type
            (``q8_0``, ``q4_k_m``, ...; case and the aliases ``q4_k`` etc. are normalised), quantized in the same pass.
        imatrix: importance matrix for a quantized GGUF (required by ``iq*`` and ``q2_k_s``).
        awq: AWQ search results applied to the merged weights (:mod:`.awq`): llm-awq's ``.pt`` dump, as a file or
            a hub file ``owner/repo/file.pt`` (the authors': ``hfl/chinese-llama-alpaca-2-awq/<model>-w4-g128.pt``).
        low_disk: fetch a hub base one safetensors shard at a time, deleting each before the next (peak disk: the
            largest shard + the LoRAs + the output); ``None``: only when the planner says the full download would
            not fit.
        overwrite: replace an existing output (only once the new one is complete).
        replace: an output that holds another merge (a notebook's own output of an earlier job, e.g. of an adapter
            trained again) is replaced instead of refused; the same job is still recognised and kept.
        verify_sha256: ``{file name: digest(s)}`` that input files must match (``dir/name`` or ``name``).
        write_sha256: write a ``SHA256SUMS`` listing (a ``.sha256`` file beside a GGUF).
        max_shard_bytes: HF shard size (default 2 GiB).
        pth_shards: number of ``consolidated.NN.pth`` shards (default: as the releases).
        progress: show a progress bar.
    """

    fmt: str = param("hf", "output format", choices=FORMATS, flag="--format")
    outtype: str = param("f16", "f16, bf16 or f32; with --format gguf also a llama.cpp quantization type, quantized "
                         f"in the same pass (no F16 file): {_QUANTS}", parse=str.lower, metavar="TYPE")
    imatrix: str | Path | None = param(None, "importance matrix from llama-imatrix for a quantized GGUF (needed for "
                                       "the iq* types and q2_k_s)", metavar="FILE")
    awq: str | Path | None = param(None, "AWQ search results to apply before quantizing (llm-awq's .pt dump, e.g. "
                                   "hfl/chinese-llama-alpaca-2-awq/chinese-alpaca-2-7b-w4-g128.pt)",
                                   metavar="FILE_OR_HUB_FILE")
    low_disk: bool | None = param(None, "delete each hub base shard once merged, the next one downloading meanwhile "
                                  "(peak disk: the two largest shards, or the largest where two do not fit, + the "
                                  "LoRAs + the output); default: only when the full download would not fit")
    overwrite: bool = param(False, "replace an existing output")
    replace: bool = param(False, "replace an output another merge made (the same merge is still kept)")
    verify_sha256: Mapping[str, str | Collection[str]] | None = param(
        None, "verify input files against this sha256sum listing", flag="--sha256", parse=_sha256_listing,
        metavar="FILE")
    write_sha256: bool = param(True, "do not write a SHA256SUMS listing of the outputs", flag="--no-sha256")
    max_shard_bytes: int | None = param(None, "HF shard size limit (default 2GB)", flag="--shard-size",
                                        parse=parse_size, metavar="SIZE")
    pth_shards: int | None = param(None, "number of consolidated.NN.pth shards", parse=int, metavar="N")
    progress: bool = param(True, "no progress bar")

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise UserError(f"unknown format {self.fmt!r}; use one of {', '.join(FORMATS)}")
        if self.fmt == "gguf":
            object.__setattr__(self, "outtype", gguf_outtype(self.outtype, imatrix=self.imatrix is not None))
        elif self.outtype not in FLOAT_TYPES:
            raise UserError(f"--outtype {self.outtype} is not available for --format {self.fmt}; use f16, bf16 or f32"
                            " (quantization types are for gguf)")
        if self.awq is not None and not str(self.awq).strip():
            object.__setattr__(self, "awq", None)
        if self.awq is not None:
            from .awq import is_hub_file

            if not is_hub_file(self.awq) and not Path(self.awq).expanduser().is_file():
                raise UserError(f"AWQ results {self.awq} not found; give llm-awq's .pt file or a hub file "
                                "(owner/repo/file.pt)")
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
            return f"already made earlier, nothing merged ({self.vocab_size}-token vocabulary):\n{files}"
        resumed = f" (and {self.tensors_resumed} resumed from an interrupted run)" if self.tensors_resumed else ""
        return (f"merged: {self.tensors_written} tensors written{resumed} in {human_seconds(self.seconds)}, "
                f"{self.vocab_size}-token vocabulary, peak RAM {human_bytes(self.peak_rss_bytes)}\n{files}")
