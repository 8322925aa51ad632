"""GGUF tensor and file types: what the streaming writer produces directly, and llama.cpp's quantization types;
the numbers (file types, block sizes) are gguf-py's tables."""
from __future__ import annotations

import gguf

from ..util import UserError

DEFAULT_QUANT = "q4_k_m"
T = gguf.GGMLQuantizationType

# The tensor type behind each output type name this package writes or quantizes to: the float types themselves, and
# each llama.cpp mix's base type (llama.cpp's default for the 2-D weights; :mod:`.quant_rules` gives some tensors
# more). The names are llama.cpp's file types (``gguf.LlamaFileType``), lower case, without ``MOSTLY_``.
TENSOR_TYPE: dict[str, T] = {
    "f32": T.F32, "f16": T.F16, "bf16": T.BF16,
    "q4_0": T.Q4_0, "q4_1": T.Q4_1, "q5_0": T.Q5_0, "q5_1": T.Q5_1, "q8_0": T.Q8_0,
    "q2_k": T.Q2_K, "q2_k_s": T.Q2_K, "q3_k_s": T.Q3_K, "q3_k_m": T.Q3_K, "q3_k_l": T.Q3_K,
    "q4_k_s": T.Q4_K, "q4_k_m": T.Q4_K, "q5_k_s": T.Q5_K, "q5_k_m": T.Q5_K, "q6_k": T.Q6_K,
    "iq2_xxs": T.IQ2_XXS, "iq2_xs": T.IQ2_XS, "iq2_s": T.IQ2_XS, "iq2_m": T.IQ2_S, "iq3_xxs": T.IQ3_XXS,
    "iq3_xs": T.IQ3_S, "iq3_s": T.IQ3_S, "iq3_m": T.IQ3_S, "iq1_s": T.IQ1_S, "iq1_m": T.IQ1_M,
    "iq4_nl": T.IQ4_NL, "iq4_xs": T.IQ4_XS, "tq1_0": T.TQ1_0, "tq2_0": T.TQ2_0,
}


def _ftype(name: str) -> int:
    return int(gguf.LlamaFileType["ALL_F32" if name == "f32" else f"MOSTLY_{name.upper()}"])


# llama.cpp's file type (``llama_ftype`` in llama.h, gguf-py's ``LlamaFileType``) of every type name, in its order
FTYPES: dict[str, int] = {name: _ftype(name) for name in sorted(TENSOR_TYPE, key=_ftype)}
ALIASES = {"q3_k": "q3_k_m", "q4_k": "q4_k_m", "q5_k": "q5_k_m"}
# The mixes llama.cpp refuses to make without an importance matrix: their base type (or, for iq3_xs, the type of
# attn_q/attn_k and most ffn_gate/ffn_up) is one whose quantizer needs it (IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S,
# IQ3_XXS; Q2_K in q2_k_s). iq3_s, iq3_m, iq4_xs and iq4_nl work without one, and are better with one.
NEEDS_IMATRIX = frozenset({"iq1_s", "iq1_m", "iq2_xxs", "iq2_xs", "iq2_s", "iq2_m", "iq3_xxs", "iq3_xs", "q2_k_s"})
FLOAT_TYPES = ("f32", "f16", "bf16")
# Types the streaming GGUF writer (merge, to-gguf) produces: the float types, and every llama.cpp mix, quantized
# in memory under llama.cpp's per-tensor rules (:mod:`.quant_rules`)
WRITE_TYPES = FLOAT_TYPES + tuple(t for t in FTYPES if t not in FLOAT_TYPES)
# bits per weight of each type's tensor type (gguf-py's block sizes), for disk-space estimates (the mixes give some
# tensors more)
BITS_PER_WEIGHT: dict[str, float] = {name: 8 * gguf.GGML_QUANT_SIZES[t][1] / gguf.GGML_QUANT_SIZES[t][0]
                                     for name, t in TENSOR_TYPE.items()}


def qtype_name(qtype: str) -> str:
    """Normalise a type name (``Q4_K_M`` -> ``q4_k_m``, ``q4_k`` -> ``q4_k_m``); UserError for unknown ones."""
    key = ALIASES.get(qtype.strip().lower(), qtype.strip().lower())
    if key not in FTYPES:
        raise UserError(f"unknown quantization type {qtype!r}; choose one of: {', '.join(FTYPES)}")
    return key


def gguf_outtype(outtype: str, *, imatrix: bool = False) -> str:
    """Normalise and check a GGUF output type (``Q4_K_M`` -> ``q4_k_m``, ``q4_k`` -> ``q4_k_m``).

    Raises:
        UserError: an unknown type, or a type of :data:`NEEDS_IMATRIX` without an importance matrix.
    """
    key = ALIASES.get(outtype.strip().lower(), outtype.strip().lower())
    if key not in WRITE_TYPES:
        raise UserError(f"unknown GGUF output type {outtype!r}; choose one of: {', '.join(WRITE_TYPES)}")
    if key in NEEDS_IMATRIX and not imatrix:
        raise UserError(f"{key} needs an importance matrix: pass --imatrix FILE (python -m helpers imatrix, or "
                        "llama-imatrix), or choose a K-quant such as q4_k_m")
    return key


def float_type(outtype: str) -> T:
    """The GGML tensor type of a float output type (``f32``, ``f16``, ``bf16``)."""
    if outtype not in FLOAT_TYPES:
        raise KeyError(outtype)
    return TENSOR_TYPE[outtype]
