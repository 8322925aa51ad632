"""GGUF tensor and file types: what the streaming writer produces directly, and llama.cpp's quantization types."""
from __future__ import annotations

from ..util import UserError

# Types the streaming writer (merge, to-gguf) produces itself; everything else goes through llama.cpp's quantizer.
WRITE_TYPES = ("f32", "f16", "bf16", "q8_0")
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
NEEDS_IMATRIX = frozenset(t for t in FTYPES if t.startswith("iq")) | {"q2_k_s"}


def qtype_name(qtype: str) -> str:
    """Normalise a type name (``Q4_K_M`` -> ``q4_k_m``, ``q4_k`` -> ``q4_k_m``); UserError for unknown ones."""
    key = ALIASES.get(qtype.strip().lower(), qtype.strip().lower())
    if key not in FTYPES:
        raise UserError(f"unknown quantization type {qtype!r}; choose one of: {', '.join(FTYPES)}")
    return key


def write_types(outtype: str):
    """(GGML tensor type, llama file type) of a type the streaming writer produces (:data:`WRITE_TYPES`)."""
    import gguf

    table = {
        "f32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
        "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
        "bf16": (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
        "q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
    }
    if outtype not in table:
        raise UserError(f"unknown GGUF output type {outtype!r}; choose one of {', '.join(WRITE_TYPES)} "
                        "(K-quants such as q4_k_m: write f16, then run `python -m helpers quantize`)")
    return table[outtype]
