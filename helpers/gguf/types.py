"""GGUF tensor and file types: what the streaming writer produces directly, and llama.cpp's quantization types."""
from __future__ import annotations

from ..util import UserError

DEFAULT_QUANT = "q4_k_m"

# llama.cpp file type (``llama_ftype`` in llama.h) of every quantization type name
FTYPES: dict[str, int] = {
    "f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q8_0": 7, "q5_0": 8, "q5_1": 9,
    "q2_k": 10, "q3_k_s": 11, "q3_k_m": 12, "q3_k_l": 13, "q4_k_s": 14, "q4_k_m": 15,
    "q5_k_s": 16, "q5_k_m": 17, "q6_k": 18, "iq2_xxs": 19, "iq2_xs": 20, "q2_k_s": 21,
    "iq3_xs": 22, "iq3_xxs": 23, "iq1_s": 24, "iq4_nl": 25, "iq3_s": 26, "iq3_m": 27,
    "iq2_s": 28, "iq2_m": 29, "iq4_xs": 30, "iq1_m": 31, "bf16": 32, "tq1_0": 36, "tq2_0": 37,
}
ALIASES = {"q3_k": "q3_k_m", "q4_k": "q4_k_m", "q5_k": "q5_k_m"}
# The mixes llama.cpp refuses to make without an importance matrix: their base type (or, for iq3_xs, the type of
# attn_q/attn_k and most ffn_gate/ffn_up) is one whose quantizer needs it (IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S,
# IQ3_XXS; Q2_K in q2_k_s). iq3_s, iq3_m, iq4_xs and iq4_nl work without one, and are better with one.
NEEDS_IMATRIX = frozenset({"iq1_s", "iq1_m", "iq2_xxs", "iq2_xs", "iq2_s", "iq2_m", "iq3_xxs", "iq3_xs", "q2_k_s"})
FLOAT_TYPES = ("f32", "f16", "bf16")
# Types the streaming GGUF writer (merge, to-gguf) produces: the float types, and every llama.cpp mix, quantized
# in memory under llama.cpp's per-tensor rules (:mod:`.quant_rules`)
WRITE_TYPES = FLOAT_TYPES + tuple(t for t in FTYPES if t not in FLOAT_TYPES)
# bits per weight of each mix's base type, for disk-space estimates (the mixes give some tensors more)
BITS_PER_WEIGHT = {"f32": 32.0, "f16": 16.0, "bf16": 16.0, "q4_0": 4.5, "q4_1": 5.0, "q5_0": 5.5, "q5_1": 6.0,
                   "q8_0": 8.5, "q2_k": 2.625, "q2_k_s": 2.625, "q3_k_s": 3.4375, "q3_k_m": 3.4375,
                   "q3_k_l": 3.4375, "q4_k_s": 4.5, "q4_k_m": 4.5, "q5_k_s": 5.5, "q5_k_m": 5.5, "q6_k": 6.5625,
                   "iq2_xxs": 2.0625, "iq2_xs": 2.3125, "iq2_s": 2.3125, "iq2_m": 2.5, "iq3_xxs": 3.0625,
                   "iq3_xs": 3.4375, "iq3_s": 3.4375, "iq3_m": 3.4375, "iq1_s": 1.5625, "iq1_m": 1.75,
                   "iq4_nl": 4.5, "iq4_xs": 4.25, "tq1_0": 1.6875, "tq2_0": 2.0625}


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


def float_type(outtype: str):
    """The GGML tensor type of a float output type (``f32``, ``f16``, ``bf16``)."""
    import gguf

    return {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
            "bf16": gguf.GGMLQuantizationType.BF16}[outtype]
