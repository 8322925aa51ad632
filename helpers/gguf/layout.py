"""Which tensors a GGUF holds, under which names, in which types, and how many bytes their data takes.

Shared by the writer (:class:`~helpers.gguf.sink.GGUFSink`) and by anything that must know a GGUF's size before
it exists (the disk checks, the planner): both see the same names and the same per-tensor types.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from ..checkpoint import TensorSpec
from ..util import UserError

SKIP_SUFFIXES = (".rotary_emb.inv_freq", ".attention.masked_bias", ".attention.bias")
ALIGNMENT = 32  # GGUF's default data alignment: every tensor's data starts on a multiple of it


def gguf_names(plan: Sequence[TensorSpec], n_layers: int) -> tuple[list[str], int | None]:
    """The GGUF name of each planned tensor (``""`` for buffers that are not written) and the embedding rows.

    Raises:
        UserError: a tensor the llama architecture has no name for.
    """
    import gguf

    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)
    names, embed_rows = [], None
    for p in plan:
        if p.name.endswith(SKIP_SUFFIXES):
            names.append("")
            continue
        new = tmap.get_name(p.name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise UserError(f"tensor {p.name!r} has no GGUF name in the llama architecture; is this a LLaMA model?")
        if new == "token_embd.weight":
            embed_rows = p.shape[0]
        names.append(new)
    return names, embed_rows


def tensor_types(plan: Sequence[TensorSpec], names: Sequence[str], outtype: str, *, n_layers: int, n_head: int,
                 n_kv: int, has_imatrix: bool = False) -> dict[str, Any]:
    """The GGML type of every written tensor: the converter's for the float types (1-D tensors and norms in F32),
    llama.cpp's quantizer's (applied to the F16 output) for the quantization types."""
    import gguf

    from .types import FLOAT_TYPES, float_type

    T = gguf.GGMLQuantizationType
    quantized = outtype not in FLOAT_TYPES
    base = float_type("f16" if quantized else outtype)
    f16_types = {new: (T.F32 if len(p.shape) <= 1 or new.endswith("_norm.weight") else base, p.shape)
                 for p, new in zip(plan, names) if new}
    if not quantized:
        return {n: t for n, (t, _) in f16_types.items()}
    from .quant_rules import ModelShape, tensor_types as quant_types

    return quant_types(outtype, [(n, s, t) for n, (t, s) in f16_types.items()], ModelShape(n_layers, n_head, n_kv),
                       has_imatrix=has_imatrix)


def tensor_nbytes(shape: Sequence[int], qtype: Any) -> int:
    """Bytes of one tensor's data in ``qtype`` (without alignment padding)."""
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[qtype]
    return math.prod(shape) // block * size


def data_bytes(config: dict, plan: Sequence[TensorSpec], outtype: str, *, has_imatrix: bool = False) -> int:
    """Bytes of a GGUF's tensor data (alignment padding included) for ``plan`` written as ``outtype``."""
    n_layers = int(config["num_hidden_layers"])
    n_head = int(config["num_attention_heads"])
    names, _ = gguf_names(plan, n_layers)
    types = tensor_types(plan, names, outtype, n_layers=n_layers, n_head=n_head,
                         n_kv=int(config.get("num_key_value_heads") or n_head), has_imatrix=has_imatrix)
    total = 0
    for p, new in zip(plan, names):
        if new:
            n = tensor_nbytes(p.shape, types[new])
            total += n + (-n % ALIGNMENT)
    return total


def requantized_bytes(path: str, outtype: str, *, has_imatrix: bool = False) -> int:
    """About the size of the file llama.cpp's quantizer writes when it quantizes the float GGUF at ``path`` to
    ``outtype``: this file's header, then its tensors under the quantizer's per-tensor rules (exact data bytes,
    alignment included)."""
    import gguf

    from .quant_rules import ModelShape, tensor_types as quant_types

    reader = gguf.GGUFReader(path, "r")
    meta = {k: f.contents() for k, f in reader.fields.items() if k.endswith(("block_count", "head_count",
                                                                               "head_count_kv"))}
    arch = str(reader.fields["general.architecture"].contents())
    n_head = int(meta[f"{arch}.attention.head_count"])
    model = ModelShape(int(meta[f"{arch}.block_count"]), n_head,
                       int(meta.get(f"{arch}.attention.head_count_kv") or n_head))
    tensors = [(t.name, tuple(int(x) for x in reversed(t.shape.tolist())), t.tensor_type) for t in reader.tensors]
    types = quant_types(outtype, tensors, model, has_imatrix=has_imatrix)
    data = sum((n := tensor_nbytes(shape, types[name])) + (-n % ALIGNMENT) for name, shape, _ in tensors)
    return int(reader.data_offset) + data
