"""``python -m helpers to-gguf --model HF_FOLDER --out FILE.gguf [--outtype TYPE]``."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..disk import claim_output, disk_errors
from ..util import UserError, human_bytes
from .convert import gguf_sidecars, write_gguf
from .export import write_modelfile
from .types import WRITE_TYPES, gguf_outtype

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m helpers to-gguf``."""
    parser.add_argument("--model", required=True, help="Hugging Face model folder (merged model)")
    parser.add_argument("--out", required=True, help="output .gguf file")
    parser.add_argument("--outtype", default="f16", type=str.lower, metavar="TYPE",
                        help="f16 (default), bf16, f32, or a llama.cpp quantization type quantized in the same pass: "
                             + ", ".join(t for t in WRITE_TYPES if t not in ("f16", "bf16", "f32")))
    parser.add_argument("--imatrix", default=None, help="importance matrix from llama-imatrix (needed for iq* types)")
    parser.add_argument("--template", default=None, help="prompt template id (alpaca, llama2-zh, llama3, raw); "
                                                         "default: from the catalog / tokenizer files")
    parser.add_argument("--split-gb", type=float, default=None, help="split into shards of at most this many GiB")


def run(args: argparse.Namespace) -> int:
    """Run ``python -m helpers to-gguf``: the GGUF, its ``.sha256`` and (one file) an Ollama Modelfile."""
    model = Path(args.model)
    if not (model / "config.json").is_file():
        raise UserError(f"{model} is not a Hugging Face model folder (no config.json)")
    split = int(args.split_gb * 1024**3) if args.split_gb else 0
    out = Path(args.out)
    with claim_output(out, what="the GGUF", sidecars=gguf_sidecars(out)):
        outtype = gguf_outtype(args.outtype, imatrix=args.imatrix is not None)
        files = write_gguf(model, out, outtype=outtype, template=args.template, split_max_size=split, sha256=True,
                           imatrix=args.imatrix)
        for f in files:
            print(f"wrote {f} ({human_bytes(f.stat().st_size)})")
        if len(files) == 1:
            from .metadata import gguf_template

            template = gguf_template(files[0]) or "raw"  # the Modelfile uses the template embedded in the GGUF
            with disk_errors(out.parent, what="the Modelfile"):
                print(f"wrote {write_modelfile(files[0], template=template)} (template {template})")
    return 0
