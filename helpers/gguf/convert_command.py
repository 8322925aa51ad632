"""``python -m helpers to-gguf --model HF_FOLDER --out FILE.gguf [--outtype TYPE]``: the GGUF, its ``.sha256`` and
(one file) an Ollama Modelfile."""
from __future__ import annotations

from dataclasses import MISSING, dataclass
from pathlib import Path

from ..disk import claim_output, disk_errors
from ..util import UserError, human_bytes
from ..util.params import param
from .convert import gguf_sidecars, write_gguf
from .export import write_modelfile
from .types import FLOAT_TYPES, WRITE_TYPES, gguf_outtype


@dataclass(frozen=True)
class ConvertOptions:
    """A conversion of a merged Hugging Face folder to GGUF."""

    model: str = param(MISSING, "Hugging Face model folder (merged model)")
    out: str = param(MISSING, "output .gguf file")
    outtype: str = param("f16", "f16, bf16, f32, or a llama.cpp quantization type quantized in the same "
                         "pass: " + ", ".join(t for t in WRITE_TYPES if t not in FLOAT_TYPES), parse=str.lower,
                         metavar="TYPE")
    imatrix: str | None = param(None, "importance matrix from llama-imatrix (needed for iq* types)")
    template: str | None = param(None, "prompt template id (alpaca, llama2-zh, llama3, raw); default: from the "
                                 "catalog / tokenizer files")
    split_gb: float | None = param(None, "split into shards of at most this many GiB", parse=float)


OPTIONS = (ConvertOptions,)


def main(o: ConvertOptions) -> int:
    """Write the GGUF (and its Modelfile); print what was written."""
    model = Path(o.model)
    if not (model / "config.json").is_file():
        raise UserError(f"{model} is not a Hugging Face model folder (no config.json)")
    split = int(o.split_gb * 1024**3) if o.split_gb else 0
    out = Path(o.out)
    with claim_output(out, what="the GGUF", sidecars=gguf_sidecars(out)):
        outtype = gguf_outtype(o.outtype, imatrix=o.imatrix is not None)
        files = write_gguf(model, out, outtype=outtype, template=o.template, split_max_size=split, sha256=True,
                           imatrix=o.imatrix)
        for f in files:
            print(f"wrote {f} ({human_bytes(f.stat().st_size)})")
        if len(files) == 1:  # the Modelfile uses the template embedded in the GGUF
            with disk_errors(out.parent, what="the Modelfile"):
                print(f"wrote {write_modelfile(files[0])}")
    return 0
