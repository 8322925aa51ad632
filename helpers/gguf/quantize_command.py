"""``python -m helpers quantize --model GGUF_OR_HF --out FILE.gguf [--type TYPE] [--imatrix FILE]``: the files, then
one flag per :class:`~.llama_quantize.QuantizeOptions` field."""
from __future__ import annotations

from dataclasses import MISSING, dataclass

from ..util import human_bytes
from ..util.params import param
from .llama_quantize import QuantizeOptions, quantize


@dataclass(frozen=True)
class QuantizeFiles:
    """What is quantized, and to where."""

    model: str = param(MISSING, "input: a GGUF (F16/BF16/F32) or a Hugging Face model folder")
    out: str = param(MISSING, "output .gguf")


OPTIONS = (QuantizeFiles, QuantizeOptions)


def main(files: QuantizeFiles, options: QuantizeOptions) -> int:
    """Quantize; print what was written."""
    out = quantize(files.model, files.out, options)
    beside = f" with {out.stem}.Modelfile and {out.name}.sha256" if options.modelfile else ""
    print(f"wrote {out} ({human_bytes(out.stat().st_size)}){beside}")
    return 0
