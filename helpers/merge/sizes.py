"""How much a merge writes and holds, from its tensors: the output's bytes and the peak RAM.

Used before anything is downloaded (:mod:`.planner`) and once the inputs are open (:mod:`.preflight`), so both
say the same.
"""
from __future__ import annotations

from ..checkpoint import TensorSpec
from ..gguf import FLOAT_TYPES, data_bytes
from ..gguf.layout import gguf_names, tensor_nbytes, tensor_types
from .options import MergeOptions
from .writers import WRITE_CHUNK_ELEMENTS

MERGE_PROCESS_BYTES = 256 << 20  # torch, numpy, gguf and the interpreter: what a merge holds before its first tensor
HF_CHUNK = WRITE_CHUNK_ELEMENTS * 4  # HF / .pth writers convert a tensor in chunks of this many values
METADATA = 64 << 10  # configs, checksums, Modelfile, a GGUF's keys besides the vocabulary
# a GGUF stores each token as an 8-byte length + its text, a float32 score and an int32 type (16 bytes besides the
# text), where sentencepiece's tokenizer.model spends about 8 bytes of framing: the vocabulary outgrows the file
GGUF_TOKEN_EXTRA = 8


def output_size(config: dict, tensors: list[TensorSpec], options: MergeOptions, tokenizer_bytes: int) -> int:
    """Bytes of the finished output: a GGUF exactly as the writer lays it out, HF / ``.pth`` tensors in their dtype
    (twice for ``.pth``: staged pieces, then the shards), plus the tokenizer and :data:`METADATA`."""
    if options.fmt == "gguf":  # the header holds the vocabulary: the tokenizer's size and a little per token
        data = data_bytes(config, tensors, options.outtype, has_imatrix=options.imatrix is not None)
        return data + tokenizer_bytes + GGUF_TOKEN_EXTRA * int(config.get("vocab_size", 0)) + METADATA
    data = sum(tp.numel for tp in tensors) * (4 if options.outtype == "f32" else 2)
    return data * (2 if options.fmt == "pth" else 1) + tokenizer_bytes + METADATA


def peak_ram(config: dict, tensors: list[TensorSpec], options: MergeOptions) -> int:
    """The merge's peak RAM, from the tensors in the order they are merged: the libraries, plus at the worst
    moment one tensor in float32 and as written (its float16 copy, or a chunk for HF / ``.pth``). A quantized
    GGUF quantizes each tensor in the background while the next one is merged, so there two neighbours count."""
    f32 = [tp.numel * 4 for tp in tensors]
    if options.fmt != "gguf":
        return MERGE_PROCESS_BYTES + max(f32) + HF_CHUNK
    n_layers, n_head = int(config["num_hidden_layers"]), int(config["num_attention_heads"])
    names, _ = gguf_names(tensors, n_layers)
    types = tensor_types(tensors, names, options.outtype, n_layers=n_layers, n_head=n_head,
                         n_kv=int(config.get("num_key_value_heads") or n_head), has_imatrix=options.imatrix is not None)
    written = [tensor_nbytes(tp.shape, types[n]) if n else 0 for tp, n in zip(tensors, names)]
    if options.outtype in FLOAT_TYPES:
        return MERGE_PROCESS_BYTES + max(a + w for a, w in zip(f32, written))
    following = f32[1:] + [0]
    return MERGE_PROCESS_BYTES + max(a + w + b for a, w, b in zip(f32, written, following))
