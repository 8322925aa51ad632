"""Which ggml type each tensor gets in a llama.cpp quantization mix (``q4_k_m``, ``q3_k_l``, ``iq4_xs`` ...).

llama.cpp's quantizer does not give every tensor the file type's base type. For the LLaMA architecture
(no experts) its rules, restated here, are:

- only tensors of two or more dimensions whose names end in ``weight`` and are not norms are quantized; the
  rest keep the type they have in the F16 GGUF (F32);
- ``output.weight`` (and ``token_embd.weight`` when there is no ``output.weight``) becomes Q6_K (Q5_K for the
  2-bit and 1-bit iq mixes; Q8_0 when the base type is Q8_0 or its block does not divide the row);
  ``token_embd.weight`` otherwise keeps the base type, except Q2_K / IQ3_S / Q4_K for the lowest mixes;
- ``attn_v`` and ``ffn_down`` get more bits in most mixes, by position: a counter over the attn_v tensors
  (in llama.cpp's tensor order: by layer, then by name) and the layer index of ffn_down, with
  ``use_more_bits`` (the first and last eighth of the layers and every third layer in between);
  grouped-query attention with 4 or more query heads per key/value head and 80-layer GQA models (70B)
  get more bits for attn_v too;
- a row length the chosen type's block does not divide falls back: the iq types to IQ4_NL, Q2_K/Q3_K/TQ to
  Q4_0, Q4_K to Q5_0, Q5_K to Q5_1, Q6_K to Q8_0, and to F16 when even that block does not divide it.

:func:`tensor_types` applies them to a whole model at once; :func:`requires_imatrix` says which tensors
cannot be quantized without an importance matrix; :func:`order_key` is the quantizer's tensor order.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import gguf  # the type enum and block sizes

from .types import FLOAT_TYPES, TENSOR_TYPE

T = gguf.GGMLQuantizationType

# the base tensor type of each file type (llama.cpp's default for the 2-D weights)
FLOAT_FTYPES: dict[str, T] = {t: TENSOR_TYPE[t] for t in FLOAT_TYPES}
BASE_TYPE: dict[str, T] = {name: t for name, t in TENSOR_TYPE.items() if name not in FLOAT_TYPES}
_LOW_IQ = {"iq2_xxs", "iq2_xs", "iq1_s", "iq2_s", "iq2_m", "iq1_m"}  # the 1- and 2-bit iq mixes
_FALLBACK = {T.IQ1_S: T.IQ4_NL, T.IQ1_M: T.IQ4_NL, T.IQ2_XXS: T.IQ4_NL, T.IQ2_XS: T.IQ4_NL, T.IQ2_S: T.IQ4_NL,
             T.IQ3_XXS: T.IQ4_NL, T.IQ3_S: T.IQ4_NL, T.IQ4_XS: T.IQ4_NL, T.Q2_K: T.Q4_0, T.Q3_K: T.Q4_0,
             T.TQ1_0: T.Q4_0, T.TQ2_0: T.Q4_0, T.Q4_K: T.Q5_0, T.Q5_K: T.Q5_1, T.Q6_K: T.Q8_0}
_NEED_IMATRIX = {T.IQ3_XXS, T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ1_M, T.IQ1_S}
_LAYER = re.compile(r"blk\.(\d+)\.")


@dataclass(frozen=True)
class ModelShape:
    """What the rules need to know about the model besides its tensors.

    Attributes:
        n_layer: number of transformer blocks.
        n_head: query heads.
        n_head_kv: key/value heads (grouped-query attention when fewer than ``n_head``).
    """

    n_layer: int
    n_head: int
    n_head_kv: int

    @property
    def gqa(self) -> int:
        """Query heads per key/value head."""
        return self.n_head // self.n_head_kv if self.n_head_kv else 0

    @property
    def is_70b(self) -> bool:
        """llama.cpp's LLaMA-70B size class: 80 layers with grouped-query attention."""
        return self.n_layer == 80 and self.n_head != self.n_head_kv


def block_size(qtype: T) -> int:
    """Values per block of ``qtype``."""
    return gguf.GGML_QUANT_SIZES[qtype][0]


def _category(name: str) -> str:
    if name == "output.weight":
        return "output"
    if name == "token_embd.weight":
        return "token_embd"
    for part in ("attn_qkv.weight", "attn_kv_b.weight", "attn_v.weight", "attn_k.weight", "attn_q.weight",
                 "attn_output.weight", "ffn_up", "ffn_gate", "ffn_down"):
        if part in name:
            return {"attn_qkv.weight": "attn_v", "attn_kv_b.weight": "attn_v"}.get(part, part.removesuffix(".weight"))
    return "other"


def _quantizable(name: str, shape: Sequence[int]) -> bool:
    dims = len(shape)
    while dims > 1 and shape[len(shape) - dims] == 1:  # leading size-1 dimensions do not count (ggml_n_dims)
        dims -= 1
    return dims >= 2 and name.endswith("weight") and "_norm.weight" not in name


def order_key(name: str) -> tuple[int, str]:
    """Sort key of llama.cpp's quantizer's tensor order (it writes tensors in this order too): by block number
    (tensors outside the blocks first), then by name."""
    m = _LAYER.match(name)
    return (int(m.group(1)) if m else -1, name)


def _more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


class _Mix:
    """The running state of one pass over a model's tensors (the attn_v counter and the rest)."""

    def __init__(self, ftype: str, model: ModelShape, has_imatrix: bool, n_attn_v: int, tied: bool) -> None:
        self.ftype, self.model, self.has_imatrix, self.tied = ftype, model, has_imatrix, tied
        self.n_attn_v, self.i_attn_v, self.i_ffn_down = n_attn_v, 0, 0
        self.i_ffn = {"ffn_gate": 0, "ffn_up": 0}  # layer counters of ffn_gate and ffn_up

    def choose(self, name: str, n_cols: int) -> T:
        ft, cat, new = self.ftype, _category(name), BASE_TYPE[self.ftype]
        gqa4 = self.model.gqa >= 4
        if cat == "output" or (self.tied and cat == "token_embd"):
            if n_cols % block_size(new):
                new = T.Q8_0
            elif ft in _LOW_IQ or ft == "iq3_xxs":
                new = T.Q5_K
            elif new != T.Q8_0:
                new = T.Q6_K
        elif cat == "token_embd":
            new = {"iq2_xxs": T.Q2_K, "iq2_xs": T.Q2_K, "iq1_s": T.Q2_K, "iq1_m": T.Q2_K, "iq2_s": T.IQ3_S,
                   "iq2_m": T.IQ3_S, "iq3_xxs": T.IQ3_S, "tq1_0": T.Q4_K, "tq2_0": T.Q4_K}.get(ft, new)
        elif ft in _LOW_IQ:
            wide = ft in ("iq2_s", "iq2_m")
            if cat == "attn_v":
                new = T.Q4_K if gqa4 else (T.IQ3_S if wide else T.Q2_K)
                self.i_attn_v += 1
            elif cat == "ffn_down":
                if self.i_ffn_down < self.model.n_layer // 8:
                    new = T.IQ3_S if wide else T.Q2_K
                self.i_ffn_down += 1
            elif cat == "attn_output":
                new = {"iq1_s": T.IQ2_XXS, "iq1_m": T.IQ2_XXS, "iq2_s": T.IQ3_S, "iq2_m": T.IQ3_S}.get(ft, new)
        elif cat == "attn_v":
            new = self._attn_v(new, gqa4)
            self.i_attn_v += 1
        elif cat in ("attn_k", "attn_q"):
            new = {"iq3_xs": T.IQ3_XXS, "iq3_xxs": T.IQ2_S}.get(ft, new)
        elif cat == "ffn_down":
            new = self._ffn_down(new, self.i_ffn_down, self.model.n_layer)
            self.i_ffn_down += 1
        elif cat == "attn_output":
            new = {"q2_k": T.Q3_K, "iq3_xxs": T.IQ3_S, "q3_k_m": T.Q4_K, "q3_k_l": T.Q5_K,
                   "iq3_m": T.Q4_K}.get(ft, new)
        elif cat in ("ffn_gate", "ffn_up"):
            i, n = self.i_ffn[cat], self.model.n_layer
            if ft == "iq3_xs" and n // 8 <= i < 7 * n // 8:
                new = T.IQ3_XXS
            self.i_ffn[cat] += 1
        return _fallback(new, n_cols)

    def _attn_v(self, new: T, gqa4: bool) -> T:
        ft, i, n = self.ftype, self.i_attn_v, self.n_attn_v
        if ft == "q2_k":
            new = T.Q4_K if gqa4 else T.Q3_K
        elif ft == "q2_k_s" and gqa4:
            new = T.Q4_K
        elif ft == "iq3_xxs":
            new = T.Q4_K if gqa4 else (T.IQ3_XXS if self.has_imatrix else T.IQ3_S)
        elif ft in ("iq3_xs", "iq3_s") and gqa4:
            new = T.Q4_K
        elif ft == "iq3_m":
            new = T.Q4_K
        elif ft == "q3_k_m":
            new = T.Q5_K if i < 2 else T.Q4_K
        elif ft == "q3_k_l":
            new = T.Q5_K
        elif ft in ("iq4_nl", "iq4_xs") and gqa4:
            new = T.Q5_K
        elif ft in ("q4_k_m", "q5_k_m") and _more_bits(i, n):
            new = T.Q6_K
        elif ft == "q4_k_s" and i < 4:
            new = T.Q5_K
        if self.model.is_70b and new in (T.Q3_K, T.Q4_K):
            new = T.Q5_K
        return new

    def _ffn_down(self, new: T, i: int, n: int) -> T:
        ft = self.ftype
        if ft == "q2_k":
            return T.Q3_K
        if ft == "q2_k_s":
            return T.Q4_K if i < n // 8 else new
        if ft == "iq3_xxs" and not self.has_imatrix:
            return T.Q4_K if i < n // 8 else T.Q3_K
        if ft == "q3_k_m":
            return T.Q5_K if i < n // 16 else T.Q4_K
        if ft == "iq3_m" and i < n // 8:
            return T.Q4_K
        if ft == "q3_k_l":
            return T.Q5_K
        if ft == "q4_k_m":
            return T.Q6_K if _more_bits(i, n) else new
        if i < n // 8 and ft in ("iq4_nl", "iq4_xs") and not self.has_imatrix:
            return T.Q5_K
        if ft == "q5_k_m" and _more_bits(i, n):
            return T.Q6_K
        if ft == "q4_k_s" and i < n // 8:
            return T.Q5_K
        if ft in ("q4_0", "q5_0") and self.has_imatrix and i < n // 8:
            return T.Q4_1 if ft == "q4_0" else T.Q5_1
        return new


def _fallback(new: T, n_cols: int) -> T:
    """The type to use when ``new``'s block does not divide a row of ``n_cols`` values."""
    if n_cols % block_size(new) == 0:
        return new
    if new in _FALLBACK:
        new = _FALLBACK[new]
    elif block_size(new) > 32:
        raise ValueError(f"llama.cpp defines no fallback for {new.name}")
    return new if n_cols % block_size(new) == 0 else T.F16


def tensor_types(ftype: str, tensors: Sequence[tuple[str, Sequence[int], T]], model: ModelShape, *,
                 has_imatrix: bool = False) -> dict[str, T]:
    """The type llama.cpp's quantizer gives each tensor of an F16 GGUF for file type ``ftype``.

    Args:
        ftype: a file type name of :data:`BASE_TYPE` (``q4_k_m``; aliases already resolved).
        tensors: ``(GGUF name, shape in torch order (rows first), type in the F16 GGUF)`` of every tensor.
        model: layers and heads.
        has_imatrix: an importance matrix is used (some mixes then keep lower types).

    Returns:
        ``{GGUF name: ggml type}``; tensors the quantizer leaves alone keep their input type. A float ``ftype``
        (``f16``, ``bf16``, ``f32``: llama-quantize converting or dequantizing) gives every quantizable tensor that
        type, with no per-tensor rules, as llama.cpp does.
    """
    if ftype in FLOAT_FTYPES:
        return {n: FLOAT_FTYPES[ftype] if _quantizable(n, tuple(s)) else t for n, s, t in tensors}
    if ftype not in BASE_TYPE:
        raise ValueError(f"{ftype!r} is not a quantization mix")
    names = {n for n, _, _ in tensors}
    n_attn_v = sum(1 for n in names if _category(n) == "attn_v")
    mix = _Mix(ftype, model, has_imatrix, n_attn_v, tied="output.weight" not in names)
    shapes = {n: (tuple(s), t) for n, s, t in tensors}
    out: dict[str, T] = {}
    for name in sorted(names, key=order_key):  # the counters run in llama.cpp's order
        shape, in_type = shapes[name]
        out[name] = mix.choose(name, int(shape[-1])) if _quantizable(name, shape) else in_type
    return out


def requires_imatrix(name: str, qtype: T, ftype: str) -> bool:
    """True when llama.cpp refuses to quantize tensor ``name`` to ``qtype`` without an importance matrix."""
    if name in ("token_embd.weight", "output.weight"):
        return False
    return qtype in _NEED_IMATRIX or (qtype == T.Q2_K and ftype == "q2_k_s")
