"""The released Chinese LLaMA/Alpaca models: hub ids, bases, vocabularies, templates, contexts.

One :class:`ModelEntry` per downloadable artefact: a LoRA, a full Hugging Face model, a GGUF repo or
a weight patch, plus the original Meta bases the LoRAs and patches are merged into. Notebooks use
:func:`names` for dropdowns, :func:`get` to resolve what the user typed, and :func:`merge_plan` to
know which base and which adapters to apply, in which order (Alpaca-Plus/Pro need the LLaMA-Plus
LoRA first). :func:`family_of_config`, :func:`family_of_lora` and :func:`check_family` catch the
most common merge mistake: a LoRA from one generation applied to another generation's base.

``python -m helpers catalog [--kind K] [--generation G] [--json]`` prints the catalog.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from .util import UserError

KINDS = ("lora", "full", "patch", "gguf")
GENERATIONS = ("v1", "v2", "v3", "ocl", "original")
FAMILIES = ("llama", "llama2", "llama3")
TEMPLATES = ("alpaca", "llama2-zh", "llama3", "raw")

_SIZE_RE = re.compile(r"^\d+(\.\d+)?B$")


@dataclass(frozen=True)
class ModelEntry:
    """One released model artefact.

    Attributes:
        name: catalog key, lowercase (``chinese-alpaca-2-7b-lora``).
        hub_id: Hugging Face repo id (``hfl/chinese-alpaca-2-lora-7b``).
        kind: ``lora`` | ``full`` | ``patch`` | ``gguf``.
        generation: ``v1`` | ``v2`` | ``v3`` | ``ocl`` | ``original`` (Meta's own weights).
        family: architecture family of the weights: ``llama`` (LLaMA-1), ``llama2``, ``llama3``.
        size: parameter count as released (``1.3B``, ``7B``, ``13B``, ``33B``, ``8B``).
        vocab_size: rows of the embedding matrix after merging.
        template: prompt template id: ``alpaca``, ``llama2-zh``, ``llama3`` or ``raw`` (plain continuation).
        context_length: native trained context in tokens.
        rope_scaling: HF-config-style RoPE scaling of long-context models, else ``None``.
        base: for ``lora``/``patch``: catalog names to apply first, in order (the original base, then
            earlier LoRAs). Empty for ``full``/``gguf``.
        instruct: an instruction/chat model (needs its template).
        needs_trust_remote_code: the HF weights ship custom modelling code (64K YaRN models).
        notes: one short remark for people choosing a model.
    """

    name: str
    hub_id: str
    kind: str
    generation: str
    family: str
    size: str
    vocab_size: int
    template: str
    context_length: int
    rope_scaling: dict | None = field(default=None, hash=False)
    base: tuple[str, ...] = ()
    instruct: bool = False
    needs_trust_remote_code: bool = False
    notes: str = ""

    def __post_init__(self) -> None:
        def bad(what: str) -> ValueError:
            return ValueError(f"catalog entry {self.name!r}: {what}")

        if not self.name or self.name != self.name.lower() or any(c.isspace() for c in self.name):
            raise bad("name must be non-empty lowercase without spaces")
        if self.hub_id.count("/") != 1 or not all(self.hub_id.split("/")):
            raise bad(f"hub_id {self.hub_id!r} must look like 'owner/repo'")
        for attr, allowed in (("kind", KINDS), ("generation", GENERATIONS), ("family", FAMILIES),
                              ("template", TEMPLATES)):
            if getattr(self, attr) not in allowed:
                raise bad(f"{attr} {getattr(self, attr)!r} is not one of {', '.join(allowed)}")
        if not _SIZE_RE.match(self.size):
            raise bad(f"size {self.size!r} must look like '7B' or '1.3B'")
        if not isinstance(self.vocab_size, int) or self.vocab_size <= 0:
            raise bad("vocab_size must be a positive int")
        if not isinstance(self.context_length, int) or self.context_length <= 0:
            raise bad("context_length must be a positive int")
        object.__setattr__(self, "base", tuple(self.base))
        if self.kind in ("lora", "patch") and not self.base:
            raise bad(f"a {self.kind} needs a base to be merged into")
        if self.kind in ("full", "gguf") and self.base:
            raise bad(f"a {self.kind} model has no base")
        if self.generation == "original" and self.kind != "full":
            raise bad("original (Meta) models are listed as full models")
        if self.instruct != (self.template != "raw"):
            raise bad("instruct models need a chat template and base models the 'raw' template")
        if self.rope_scaling is not None:
            if not isinstance(self.rope_scaling, dict) or "type" not in self.rope_scaling \
                    or "factor" not in self.rope_scaling:
                raise bad("rope_scaling must be a dict with 'type' and 'factor'")
            object.__setattr__(self, "rope_scaling", dict(self.rope_scaling))

    @property
    def is_instruct(self) -> bool:
        """Same as :attr:`instruct`."""
        return self.instruct

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (``base`` as a list)."""
        d = dataclasses.asdict(self)
        d["base"] = list(self.base)
        return d


_V1, _V2, _V3 = 2048, 4096, 8192  # native contexts per generation
_ROPE_16K = {"type": "linear", "factor": 4.0}
_ROPE_64K = {"type": "yarn", "factor": 16.0, "original_max_position_embeddings": 4096}


def _m(name: str, hub_id: str, kind: str, generation: str, family: str, size: str, vocab: int, template: str,
       ctx: int, base: tuple[str, ...] = (), *, rope: dict | None = None, remote_code: bool = False,
       notes: str = "") -> ModelEntry:
    return ModelEntry(name, hub_id, kind, generation, family, size, vocab, template, ctx, rope, base,
                      template != "raw", remote_code, notes)


def _v1(name: str, hub: str, size: str, base: tuple[str, ...], *, notes: str = "") -> ModelEntry:
    alpaca = "alpaca" in name  # Alpaca LoRAs carry one extra [PAD] row: 49954 vs 49953
    return _m(name, hub, "lora", "v1", "llama", size, 49954 if alpaca else 49953,
              "alpaca" if alpaca else "raw", _V1, base, notes=notes)


def _v2(name: str, hub: str, kind: str, size: str, base: tuple[str, ...] = (), *, ctx: int = _V2,
        rope: dict | None = None, notes: str = "") -> ModelEntry:
    return _m(name, hub, kind, "v2", "llama2", size, 55296, "llama2-zh" if "alpaca" in name else "raw", ctx,
              base, rope=rope, remote_code=ctx == 65536 and kind != "gguf", notes=notes)


def _v3(name: str, hub: str, kind: str, base: tuple[str, ...] = (), *, notes: str = "") -> ModelEntry:
    return _m(name, hub, kind, "v3", "llama3", "8B", 128256, "llama3" if "instruct" in name else "raw", _V3,
              base, notes=notes)


_NOT_IN_SEED = "hub id follows the upstream ziqingyang naming rule; the seed README only names this model"
_PLUS = "merge the LLaMA-Plus LoRA first, then this one"

_ENTRIES: list[ModelEntry] = [
    # Original Meta bases (LLaMA-1 via the public huggyllama conversion; "33B" is Meta's 30B release)
    _m("llama-7b", "huggyllama/llama-7b", "full", "original", "llama", "7B", 32000, "raw", _V1),
    _m("llama-13b", "huggyllama/llama-13b", "full", "original", "llama", "13B", 32000, "raw", _V1),
    _m("llama-33b", "huggyllama/llama-30b", "full", "original", "llama", "33B", 32000, "raw", _V1,
       notes="Meta published it as 30B; the Chinese-LLaMA project calls it 33B"),
    _m("llama-2-7b", "meta-llama/Llama-2-7b-hf", "full", "original", "llama2", "7B", 32000, "raw", _V2),
    _m("llama-2-13b", "meta-llama/Llama-2-13b-hf", "full", "original", "llama2", "13B", 32000, "raw", _V2),
    _m("llama-3-8b", "meta-llama/Meta-Llama-3-8B", "full", "original", "llama3", "8B", 128256, "raw", _V3),
    _m("llama-3-8b-instruct", "meta-llama/Meta-Llama-3-8B-Instruct", "full", "original", "llama3", "8B",
       128256, "llama3", _V3),
    # Chinese-LLaMA / Chinese-Alpaca v1: LoRA only (vocab 49953 / 49954), merged into the original LLaMA
    _v1("chinese-llama-7b-lora", "ziqingyang/chinese-llama-lora-7b", "7B", ("llama-7b",)),
    _v1("chinese-llama-13b-lora", "ziqingyang/chinese-llama-lora-13b", "13B", ("llama-13b",)),
    _v1("chinese-llama-33b-lora", "ziqingyang/chinese-llama-lora-33b", "33B", ("llama-33b",), notes=_NOT_IN_SEED),
    _v1("chinese-llama-plus-7b-lora", "ziqingyang/chinese-llama-plus-lora-7b", "7B", ("llama-7b",)),
    _v1("chinese-llama-plus-13b-lora", "ziqingyang/chinese-llama-plus-lora-13b", "13B", ("llama-13b",)),
    _v1("chinese-llama-plus-33b-lora", "ziqingyang/chinese-llama-plus-lora-33b", "33B", ("llama-33b",),
        notes=_NOT_IN_SEED),
    _v1("chinese-alpaca-7b-lora", "ziqingyang/chinese-alpaca-lora-7b", "7B", ("llama-7b",)),
    _v1("chinese-alpaca-13b-lora", "ziqingyang/chinese-alpaca-lora-13b", "13B", ("llama-13b",)),
    _v1("chinese-alpaca-33b-lora", "ziqingyang/chinese-alpaca-lora-33b", "33B", ("llama-33b",), notes=_NOT_IN_SEED),
    _v1("chinese-alpaca-plus-7b-lora", "ziqingyang/chinese-alpaca-plus-lora-7b", "7B",
        ("llama-7b", "chinese-llama-plus-7b-lora"), notes=_PLUS),
    _v1("chinese-alpaca-plus-13b-lora", "ziqingyang/chinese-alpaca-plus-lora-13b", "13B",
        ("llama-13b", "chinese-llama-plus-13b-lora"), notes=_PLUS),
    _v1("chinese-alpaca-plus-33b-lora", "ziqingyang/chinese-alpaca-plus-lora-33b", "33B",
        ("llama-33b", "chinese-llama-plus-33b-lora"), notes=f"{_PLUS}; {_NOT_IN_SEED}"),
    _v1("chinese-alpaca-pro-7b-lora", "ziqingyang/chinese-alpaca-pro-lora-7b", "7B",
        ("llama-7b", "chinese-llama-plus-7b-lora"), notes=f"{_PLUS}; {_NOT_IN_SEED}"),
    _v1("chinese-alpaca-pro-13b-lora", "ziqingyang/chinese-alpaca-pro-lora-13b", "13B",
        ("llama-13b", "chinese-llama-plus-13b-lora"), notes=f"{_PLUS}; {_NOT_IN_SEED}"),
    _v1("chinese-alpaca-pro-33b-lora", "ziqingyang/chinese-alpaca-pro-lora-33b", "33B",
        ("llama-33b", "chinese-llama-plus-33b-lora"), notes=f"{_PLUS}; {_NOT_IN_SEED}"),
    # Chinese-LLaMA-2 / Chinese-Alpaca-2 (v2): full Hugging Face models, vocab 55296, 4K context
    _v2("chinese-llama-2-1.3b", "hfl/chinese-llama-2-1.3b", "full", "1.3B",
        notes="small draft model for speculative sampling; no LoRA release"),
    _v2("chinese-llama-2-7b", "hfl/chinese-llama-2-7b", "full", "7B"),
    _v2("chinese-llama-2-13b", "hfl/chinese-llama-2-13b", "full", "13B"),
    _v2("chinese-alpaca-2-1.3b", "hfl/chinese-alpaca-2-1.3b", "full", "1.3B",
        notes="small draft model for speculative sampling; no LoRA release"),
    _v2("chinese-alpaca-2-7b", "hfl/chinese-alpaca-2-7b", "full", "7B"),
    _v2("chinese-alpaca-2-13b", "hfl/chinese-alpaca-2-13b", "full", "13B"),
    # v2 long context: 16K (position interpolation) and 64K (YaRN, custom modelling code)
    _v2("chinese-llama-2-7b-16k", "hfl/chinese-llama-2-7b-16k", "full", "7B", ctx=16384, rope=_ROPE_16K),
    _v2("chinese-llama-2-13b-16k", "hfl/chinese-llama-2-13b-16k", "full", "13B", ctx=16384, rope=_ROPE_16K),
    _v2("chinese-alpaca-2-7b-16k", "hfl/chinese-alpaca-2-7b-16k", "full", "7B", ctx=16384, rope=_ROPE_16K),
    _v2("chinese-alpaca-2-13b-16k", "hfl/chinese-alpaca-2-13b-16k", "full", "13B", ctx=16384, rope=_ROPE_16K),
    _v2("chinese-llama-2-7b-64k", "hfl/chinese-llama-2-7b-64k", "full", "7B", ctx=65536, rope=_ROPE_64K),
    _v2("chinese-alpaca-2-7b-64k", "hfl/chinese-alpaca-2-7b-64k", "full", "7B", ctx=65536, rope=_ROPE_64K),
    # v2 RLHF (preference-aligned Alpaca-2): full models only
    _v2("chinese-alpaca-2-1.3b-rlhf", "hfl/chinese-alpaca-2-1.3b-rlhf", "full", "1.3B"),
    _v2("chinese-alpaca-2-7b-rlhf", "hfl/chinese-alpaca-2-7b-rlhf", "full", "7B"),
    # v2 LoRAs (with full embeddings/lm_head), merged straight into the original Llama-2 (not the chat model)
    _v2("chinese-llama-2-7b-lora", "hfl/chinese-llama-2-lora-7b", "lora", "7B", ("llama-2-7b",)),
    _v2("chinese-llama-2-13b-lora", "hfl/chinese-llama-2-lora-13b", "lora", "13B", ("llama-2-13b",)),
    _v2("chinese-alpaca-2-7b-lora", "hfl/chinese-alpaca-2-lora-7b", "lora", "7B", ("llama-2-7b",)),
    _v2("chinese-alpaca-2-13b-lora", "hfl/chinese-alpaca-2-lora-13b", "lora", "13B", ("llama-2-13b",)),
    _v2("chinese-llama-2-7b-16k-lora", "hfl/chinese-llama-2-lora-7b-16k", "lora", "7B", ("llama-2-7b",),
        ctx=16384, rope=_ROPE_16K),
    _v2("chinese-llama-2-13b-16k-lora", "hfl/chinese-llama-2-lora-13b-16k", "lora", "13B", ("llama-2-13b",),
        ctx=16384, rope=_ROPE_16K),
    _v2("chinese-alpaca-2-7b-16k-lora", "hfl/chinese-alpaca-2-lora-7b-16k", "lora", "7B", ("llama-2-7b",),
        ctx=16384, rope=_ROPE_16K),
    _v2("chinese-alpaca-2-13b-16k-lora", "hfl/chinese-alpaca-2-lora-13b-16k", "lora", "13B", ("llama-2-13b",),
        ctx=16384, rope=_ROPE_16K),
    _v2("chinese-llama-2-7b-64k-lora", "hfl/chinese-llama-2-lora-7b-64k", "lora", "7B", ("llama-2-7b",),
        ctx=65536, rope=_ROPE_64K),
    _v2("chinese-alpaca-2-7b-64k-lora", "hfl/chinese-alpaca-2-lora-7b-64k", "lora", "7B", ("llama-2-7b",),
        ctx=65536, rope=_ROPE_64K),
    # Llama-3-Chinese (v3): original Llama-3 vocab (128256), 8K context; full, LoRA and GGUF
    _v3("llama-3-chinese-8b", "hfl/llama-3-chinese-8b", "full"),
    _v3("llama-3-chinese-8b-lora", "hfl/llama-3-chinese-8b-lora", "lora", ("llama-3-8b",)),
    _v3("llama-3-chinese-8b-gguf", "hfl/llama-3-chinese-8b-gguf", "gguf"),
    _v3("llama-3-chinese-8b-instruct", "hfl/llama-3-chinese-8b-instruct", "full",
        notes="v1 instruct: tuned from Llama-3-Chinese-8B"),
    _v3("llama-3-chinese-8b-instruct-lora", "hfl/llama-3-chinese-8b-instruct-lora", "lora", ("llama-3-8b",),
        notes="v1 instruct LoRA: merges into the original Meta-Llama-3-8B base, not the Instruct model"),
    _v3("llama-3-chinese-8b-instruct-gguf", "hfl/llama-3-chinese-8b-instruct-gguf", "gguf"),
    _v3("llama-3-chinese-8b-instruct-v2", "hfl/llama-3-chinese-8b-instruct-v2", "full",
        notes="v2 instruct: tuned from Meta-Llama-3-8B-Instruct"),
    _v3("llama-3-chinese-8b-instruct-v2-lora", "hfl/llama-3-chinese-8b-instruct-v2-lora", "lora",
        ("llama-3-8b-instruct",), notes="merges into Meta-Llama-3-8B-Instruct"),
    _v3("llama-3-chinese-8b-instruct-v2-gguf", "hfl/llama-3-chinese-8b-instruct-v2-gguf", "gguf"),
    _v3("llama-3-chinese-8b-instruct-v3", "hfl/llama-3-chinese-8b-instruct-v3", "full",
        notes="v3 instruct: released as full and GGUF only (no LoRA)"),
    _v3("llama-3-chinese-8b-instruct-v3-gguf", "hfl/llama-3-chinese-8b-instruct-v3-gguf", "gguf"),
    # Open-Chinese-LLaMA (OpenLMLab): full-weight delta patch over LLaMA-7B, original 32000 vocab
    _m("open-chinese-llama-7b-patch", "openlmlab/open-chinese-llama-7b-patch", "patch", "ocl", "llama", "7B",
       32000, "raw", _V1, ("llama-7b",), notes="patch = base + delta for every tensor; a base model, not instruct"),
]

# v2 GGUF repos: every v2 full model above has one, named like the full repo plus "-gguf" (pick a quant file inside)
_ENTRIES += [dataclasses.replace(e, name=f"{e.name}-gguf", hub_id=f"{e.hub_id}-gguf", kind="gguf",
                                 needs_trust_remote_code=False)
             for e in _ENTRIES if e.generation == "v2" and e.kind == "full"]
_ENTRIES.sort(key=lambda e: ("original", "v1", "v2", "v3", "ocl").index(e.generation))  # stable: keeps groups together

CATALOG: dict[str, ModelEntry] = {e.name: e for e in _ENTRIES}


def _check_catalog(catalog: dict[str, ModelEntry], entries: list[ModelEntry]) -> None:
    """Fail loudly on a malformed catalog: duplicate keys/hub ids, dangling or misordered bases."""
    if len(catalog) != len(entries):
        raise ValueError("duplicate catalog names")
    hubs = [e.hub_id.lower() for e in entries]
    if len(set(hubs)) != len(hubs):
        raise ValueError("duplicate hub ids in the catalog")
    for e in entries:
        for i, b in enumerate(e.base):
            if b not in catalog:
                raise ValueError(f"{e.name}: base {b!r} is not in the catalog")
            ref = catalog[b]
            want = ("full", "original") if i == 0 else ("lora", e.generation)
            if (ref.kind, ref.generation) != want or ref.family != e.family or ref.size != e.size:
                raise ValueError(f"{e.name}: base #{i} {b!r} must be a {want[1]} {want[0]} {e.family} {e.size} model")


_check_catalog(CATALOG, _ENTRIES)


def _lookup_table() -> dict[str, str]:
    """Lowercase name / hub id / unambiguous hub repo name -> catalog name."""
    table: dict[str, str] = {}
    for e in CATALOG.values():
        table[e.name] = e.name
        table[e.hub_id.lower()] = e.name
    repos: dict[str, set[str]] = {}
    for e in CATALOG.values():
        repos.setdefault(e.hub_id.split("/")[1].lower(), set()).add(e.name)
    for repo, owners in repos.items():
        if len(owners) == 1 and repo not in table:
            table[repo] = next(iter(owners))
    return table


_LOOKUP = _lookup_table()
_HUB_PREFIXES = ("https://huggingface.co/", "http://huggingface.co/", "huggingface.co/", "hf.co/")


def _normalize(query: str) -> str:
    q = str(query).strip().lower()
    for prefix in _HUB_PREFIXES:
        if q.startswith(prefix):
            q = q[len(prefix):]
    return q.rstrip("/")


def find(name_or_hub_id: str) -> ModelEntry | None:
    """Return the entry for a catalog name or hub id (case-insensitive), or ``None``.

    The repo part of a hub id alone (``chinese-alpaca-2-lora-7b``) also works when it is unambiguous.
    """
    key = _LOOKUP.get(_normalize(name_or_hub_id))
    return CATALOG[key] if key else None


def get(name_or_hub_id: str) -> ModelEntry:
    """Return the entry for a catalog name or hub id (case-insensitive).

    Raises:
        UserError: unknown name; the message lists up to 3 close matches.
    """
    entry = find(name_or_hub_id)
    if entry is not None:
        return entry
    q = _normalize(name_or_hub_id)
    close: list[str] = []
    for match in difflib.get_close_matches(q, list(_LOOKUP), n=12, cutoff=0.6):
        if _LOOKUP[match] not in close:
            close.append(_LOOKUP[match])
    hint = f"did you mean {', '.join(close[:3])}? " if close else ""
    raise UserError(f"unknown model {name_or_hub_id!r}; {hint}run `python -m helpers catalog` to list the names")


def names(*, kind: str | None = None, generation: str | None = None) -> list[str]:
    """Catalog names in catalog order, optionally only one ``kind`` and/or ``generation``."""
    if kind is not None and kind not in KINDS:
        raise UserError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    if generation is not None and generation not in GENERATIONS:
        raise UserError(f"unknown generation {generation!r}; use one of {', '.join(GENERATIONS)}")
    return [e.name for e in CATALOG.values()
            if (kind is None or e.kind == kind) and (generation is None or e.generation == generation)]


def merge_plan(name: str) -> tuple[str, list[str]]:
    """Return ``(original base hub id, [hub ids to apply in order, ending with this one])``.

    Example: ``merge_plan("chinese-alpaca-plus-7b-lora")`` ->
    ``("huggyllama/llama-7b", ["ziqingyang/chinese-llama-plus-lora-7b", "ziqingyang/chinese-alpaca-plus-lora-7b"])``.

    Raises:
        UserError: unknown name, or a full/GGUF model (nothing to merge).
    """
    entry = get(name)
    if entry.kind not in ("lora", "patch"):
        raise UserError(f"{entry.name} is a {entry.kind} model ({entry.hub_id}); no merge is needed, "
                        "download and load it directly")
    base, *earlier = (CATALOG[b] for b in entry.base)
    return base.hub_id, [e.hub_id for e in earlier] + [entry.hub_id]


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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m helpers catalog``."""
    parser.add_argument("name", nargs="?", help="show one model (catalog name or hub id) and its merge plan")
    parser.add_argument("--kind", choices=KINDS, help="only this kind of release")
    parser.add_argument("--generation", choices=GENERATIONS, help="only this generation")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def run(args: argparse.Namespace) -> int:
    """Print the catalog (or one entry) as a table or JSON."""
    if getattr(args, "name", None):
        entry = get(args.name)
        data = entry.to_dict()
        if entry.base:
            base, steps = merge_plan(entry.name)
            data["merge_plan"] = {"base": base, "apply": steps}
        if args.json:
            print(json.dumps(data, indent=2, ensure_ascii=False))
        else:
            print("\n".join(f"{k}: {v}" for k, v in data.items()))
        return 0
    entries = [CATALOG[n] for n in names(kind=args.kind, generation=args.generation)]
    if args.json:
        print(json.dumps([e.to_dict() for e in entries], indent=2, ensure_ascii=False))
        return 0
    rows = [["name", "kind", "hub id", "vocab", "template", "context"]]
    rows += [[e.name, e.kind, e.hub_id, str(e.vocab_size), e.template, str(e.context_length)] for e in entries]
    print(_table(rows))
    return 0
