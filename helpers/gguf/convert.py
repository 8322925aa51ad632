"""``to-gguf``: a merged Hugging Face LLaMA folder to GGUF, one tensor at a time, through :class:`GGUFSink`.

``python -m helpers to-gguf --model DIR --out FILE.gguf [--outtype f16|q4_k_m|...] [--imatrix FILE]
[--template ID] [--split-gb N]``

The output appears only when complete; one run at a time writes it (a lock beside it); an interrupted
conversion resumes when rerun, a rerun after a killed run removes that run's temporaries, and a disk too small
or read-only is one error line saying so.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..checkpoint import TensorSpec, open_checkpoint
from ..disk import claim_output, disk_errors, require_free_disk
from ..tokens import tokenizer_files
from ..util import UserError, fault_point, progress, sample_digest
from .card import describe_model
from .layout import data_bytes
from .sink import GGUFSink
from .types import gguf_outtype


def convert_hf_to_gguf(model_dir: str | Path, out_path: str | Path, *, outtype: str = "f16",
                       template: str | None = None, name: str | None = None, split_max_size: int = 0,
                       sha256: bool = False, imatrix: str | Path | None = None) -> Path:
    """Convert a Hugging Face LLaMA folder to GGUF; returns the file (the first shard when split).

    The arguments are those of :func:`convert_to_gguf_files`.
    """
    return convert_to_gguf_files(model_dir, out_path, outtype=outtype, template=template, name=name,
                                 split_max_size=split_max_size, sha256=sha256, imatrix=imatrix)[0]


def gguf_bytes(config: dict, tensors: list[TensorSpec], outtype: str, tokenizer_dir: Path | None, *,
               has_imatrix: bool = False) -> int:
    """The disk a GGUF of ``tensors`` needs: the tensor data exactly as the writer lays it out in ``outtype``
    (:func:`helpers.gguf.layout.data_bytes`), plus the header (about the size of the tokenizer files, which it
    holds) and 64 KiB for the rest of the metadata."""
    vocab = sum(f.stat().st_size for f in tokenizer_files(tokenizer_dir)) if tokenizer_dir else 0
    return data_bytes(config, tensors, outtype, has_imatrix=has_imatrix) + vocab + (64 << 10)


def convert_to_gguf_files(model_dir: str | Path, out_path: str | Path, *, outtype: str = "f16",
                          template: str | None = None, name: str | None = None, split_max_size: int = 0,
                          sha256: bool = False, imatrix: str | Path | None = None) -> list[Path]:
    """Convert a Hugging Face LLaMA folder to GGUF, one tensor at a time; returns the files written.

    Args:
        model_dir: folder with config.json, the weights (safetensors or .bin shards) and the tokenizer.
        out_path: the ``.gguf`` to write (atomically: a temporary name until complete).
        outtype: ``f32``, ``f16``, ``bf16`` or a llama.cpp quantization type (``q8_0``, ``q4_k_m``, ...),
            quantized in memory exactly as llama.cpp's quantizer would quantize the F16 GGUF.
        template: prompt template id for the embedded chat template (default: from catalog / tokenizer).
        name: ``general.name`` / catalog name (default: the folder's name).
        split_max_size: bytes of tensor data per shard (0: one file); shards are ``<stem>-0000i-of-0000N.gguf``.
        sha256: write ``<file>.sha256`` beside each file.
        imatrix: importance matrix for the quantized types (needed by ``iq*`` and ``q2_k_s``).

    Returns:
        the GGUF files (the first shard first; one file unless ``split_max_size`` splits it).

    Raises:
        UserError: a bad type or model folder, another run writing the same output, a full or read-only disk.
    """
    outtype = gguf_outtype(outtype, imatrix=imatrix is not None)  # a bad type fails before anything is read
    out_path = Path(out_path)
    with claim_output(out_path, what="the GGUF", sidecars=gguf_sidecars(out_path)):
        return write_gguf(model_dir, out_path, outtype=outtype, template=template, name=name,
                          split_max_size=split_max_size, sha256=sha256, imatrix=imatrix)


def gguf_sidecars(gguf_path: Path) -> list[Path]:
    """The files written beside a GGUF: its ``.sha256`` and its Ollama ``.Modelfile``."""
    return [gguf_path.with_name(gguf_path.name + ".sha256"), gguf_path.with_name(gguf_path.stem + ".Modelfile")]


def _fingerprint(model_dir: Path) -> str:
    """What makes two conversions the same job (for resuming): the folder's files by content."""
    files = sorted(f for f in model_dir.iterdir() if f.is_file())
    return json.dumps([[f.name, f.stat().st_size, sample_digest(f)] for f in files])


def write_gguf(model_dir: str | Path, out_path: str | Path, *, outtype: str = "f16", template: str | None = None,
               name: str | None = None, split_max_size: int = 0, sha256: bool = False,
               imatrix: str | Path | None = None, what: str = "the GGUF", resumable: bool = True) -> list[Path]:
    """The conversion itself, for a caller that already holds the output (:func:`convert_to_gguf_files` takes the
    lock; ``quantize`` writes its temporary F16 this way): checks the free space first, resumes an interrupted
    conversion of the same folder, and turns a full or read-only disk met on the way into one error line naming
    ``what``. With ``resumable`` false (a temporary file) a failure leaves no partial output behind. Other
    arguments as :func:`convert_to_gguf_files`."""
    model_dir, out_path = Path(model_dir), Path(out_path)
    with open_checkpoint(model_dir) as ckpt:
        names = list(ckpt.names())
        tensors = [TensorSpec(n, tuple(ckpt.shape(n))) for n in names]
        tokenizer_dir = Path(ckpt.tokenizer_dir or model_dir)
        needed = gguf_bytes(ckpt.config, tensors, outtype, tokenizer_dir, has_imatrix=imatrix is not None)
        require_free_disk(out_path.parent, needed, what=what)
        card = describe_model(ckpt.config, tokenizer_dir, name=name or model_dir.name, template=template)
        sink = GGUFSink(out_path, outtype=outtype, card=card, split_max_size=split_max_size, sha256=sha256,
                        imatrix=imatrix, job=_fingerprint(model_dir))
        with disk_errors(out_path.parent, needed=needed, what=what):
            try:
                sink.open(config=dict(ckpt.config), tokenizer_dir=tokenizer_dir, tensors=tensors)
                resumed = 0
                for n in progress(names, desc=f"to GGUF {sink.outtype}", unit="tensor"):
                    if sink.done(n):
                        resumed += 1
                        continue
                    sink.write(n, ckpt.get(n))
                    fault_point("to-gguf.tensor")
                if resumed:
                    print(f"resumed an interrupted conversion: {resumed} tensors were already written")
                return sink.close()
            except BaseException as exc:
                sink.abort(keep_partial=resumable and not isinstance(exc, UserError))
                raise
