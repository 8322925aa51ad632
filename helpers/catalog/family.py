"""Which generation a model belongs to, and the refusal to merge a LoRA into another generation's base.

:func:`family_of_config`, :func:`family_of_lora` and :func:`check_family` catch the most common merge
mistake: a LoRA from one generation applied to another generation's base.
"""
from __future__ import annotations

import re

from ..util import UserError
from .entry import FAMILIES, ModelEntry
from .lookup import find
from .releases import CATALOG


def family_of_config(config: dict) -> str:
    """Infer the family of a base model from its HF ``config.json`` (or Meta ``params.json``) dict.

    ``llama3`` when the vocabulary is >= 128000 or ``rope_theta`` >= 500000; ``llama`` (LLaMA-1)
    when the context is 2048 (or, with no context given, ``rms_norm_eps`` is 1e-6); else ``llama2``.
    """
    vocab = config.get("vocab_size") or 0
    theta = config.get("rope_theta") or 0
    rope = config.get("rope_scaling") or {}
    if vocab >= 128000 or theta >= 500000 or (isinstance(rope, dict) and rope.get("rope_type") == "llama3"):
        return "llama3"
    ctx = config.get("max_position_embeddings") or config.get("max_sequence_length") or config.get("max_seq_len")
    if ctx == 2048:
        return "llama"
    if ctx:
        return "llama2"
    eps = config.get("rms_norm_eps", config.get("norm_eps"))
    if eps is not None and abs(float(eps) - 1e-6) < 1e-12:
        return "llama"
    if vocab in (49953, 49954):
        return "llama"
    return "llama2"


_NAME_PATTERNS = (  # checked in order; the digit look-aheads keep "llama-30b" out of "llama-3"
    ("llama3", re.compile(r"llama[-_ ]?3(?![0-9])")),
    ("llama2", re.compile(r"(llama|alpaca)[-_ ]?2(?![0-9])")),
    ("llama", re.compile(r"huggyllama|decapoda|llama[-_ ]?1(?![0-9])|llama[-_ ]?(7|13|30|33|65)b")),
)
_VOCAB_FAMILY = {49953: "llama", 49954: "llama", 55296: "llama2", 128256: "llama3"}


def family_of_lora(adapter_config: dict, *, vocab_size: int | None) -> str | None:
    """Infer the family a LoRA was trained for, or ``None`` when nothing tells.

    Looks at ``base_model_name_or_path`` first, then at the LoRA's vocabulary size (the rows of its
    saved embeddings or its tokenizer length): 49953/49954 LLaMA-1, 55296 Llama-2, 128256 Llama-3.
    """
    path = str(adapter_config.get("base_model_name_or_path") or "").lower()
    for family, pattern in _NAME_PATTERNS:
        if pattern.search(path):
            return family
    return _VOCAB_FAMILY.get(vocab_size) if vocab_size else None


_FAMILY_LABEL = {"llama": "LLaMA-1", "llama2": "Llama-2", "llama3": "Llama-3"}
_GEN_OF_FAMILY = {"llama": "v1", "llama2": "v2", "llama3": "v3"}
_DISPLAY = {"llama-7b": "LLaMA-7B", "llama-13b": "LLaMA-13B", "llama-33b": "LLaMA-33B (30B)",
            "llama-2-7b": "Llama-2-7B", "llama-2-13b": "Llama-2-13B", "llama-3-8b": "Meta-Llama-3-8B",
            "llama-3-8b-instruct": "Meta-Llama-3-8B-Instruct"}


def _right_bases(what: str, family: str) -> list[ModelEntry]:
    entry = find(what)
    if entry is not None and entry.base and entry.family == family:
        return [CATALOG[entry.base[0]]]
    originals = [e for e in CATALOG.values() if e.generation == "original" and e.family == family
                 and not e.instruct]
    size = re.search(r"(?<![0-9.])(\d+(?:\.\d+)?)b(?![a-z])", what.lower())
    if size:
        same = [e for e in originals if e.size.lower() == f"{size.group(1)}b"]
        originals = same or originals
    return originals


def check_family(base_family: str, lora_family: str | None, *, what: str) -> None:
    """Refuse to merge a LoRA/patch into a base of another generation.

    Args:
        base_family: family of the base model (see :func:`family_of_config`).
        lora_family: family of the LoRA (see :func:`family_of_lora`); ``None`` skips the check.
        what: the LoRA's name or hub id, used in the message and to name the right base.

    Raises:
        UserError: the families differ; the message names the base to use instead.
    """
    for fam in (base_family, lora_family):
        if fam is not None and fam not in FAMILIES:
            raise ValueError(f"unknown family {fam!r}; expected one of {', '.join(FAMILIES)}")
    if lora_family is None or lora_family == base_family:
        return
    entry = find(what)
    thing = "patch" if entry is not None and entry.kind == "patch" else "LoRA"
    bases = " or ".join(f"the original {_DISPLAY.get(e.name, e.hub_id)} ({e.hub_id})"
                        for e in _right_bases(what, lora_family))
    raise UserError(f"{what} is a {_FAMILY_LABEL[lora_family]} ({_GEN_OF_FAMILY[lora_family]}) {thing} but the "
                    f"base is a {_FAMILY_LABEL[base_family]} model; merge it into {bases} instead")

