"""One released model artefact: :class:`ModelEntry` and the vocabularies of its fields."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

KINDS = ("lora", "full", "patch", "gguf")
GENERATIONS = ("v1", "v2", "v3", "ocl", "original")
FAMILIES = ("llama", "llama2", "llama3")
RELEASE_TEMPLATES = ("alpaca", "llama2-zh", "llama3", "raw")  # the templates releases are published with

# The licence a release's weights carry is its family's (a LoRA merged into Llama-2 is a Llama-2 derivative; the
# Chinese-LLaMA-Alpaca projects ask users to follow it): the id a model card's ``license:`` field takes, and its name.
LICENSES = {"llama": ("other", "LLaMA model licence (Meta; non-commercial research use only)"),
            "llama2": ("llama2", "Llama 2 Community License"),
            "llama3": ("llama3", "Meta Llama 3 Community License")}

_SIZE_RE = re.compile(r"^\d+(\.\d+)?B$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


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
        aliases: earlier hub ids of the same repo (it moved to another organisation); lookups accept them and
            downloads use :attr:`hub_id`, the current location.
        sha256: SHA256 digests the release's authors published for its files, ``{file name: hex digest}``;
            downloads of those files are checked against them.
        gated: the hub serves the repo only to accounts that accepted its licence (Meta's Llama-2 and Llama-3), with
            their token; used when the hub itself cannot be asked.
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
    aliases: tuple[str, ...] = ()
    sha256: dict[str, str] | None = field(default=None, hash=False)
    gated: bool = False

    def __post_init__(self) -> None:
        def bad(what: str) -> ValueError:
            return ValueError(f"catalog entry {self.name!r}: {what}")

        if not self.name or self.name != self.name.lower() or any(c.isspace() for c in self.name):
            raise bad("name must be non-empty lowercase without spaces")
        for hub_id in (self.hub_id, *self.aliases):
            if hub_id.count("/") != 1 or not all(hub_id.split("/")):
                raise bad(f"hub id {hub_id!r} must look like 'owner/repo'")
        object.__setattr__(self, "aliases", tuple(self.aliases))
        if self.sha256 is not None:
            if not isinstance(self.sha256, dict) or not self.sha256 \
                    or not all(k and isinstance(v, str) and _SHA256_RE.match(v) for k, v in self.sha256.items()):
                raise bad("sha256 must map file names to 64 lowercase hex digits")
            object.__setattr__(self, "sha256", dict(self.sha256))
        for attr, allowed in (("kind", KINDS), ("generation", GENERATIONS), ("family", FAMILIES),
                              ("template", RELEASE_TEMPLATES)):
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
    def license(self) -> tuple[str, str]:
        """``(hub licence id, licence name)`` of the weights (the family's, :data:`LICENSES`)."""
        return LICENSES[self.family]

    @property
    def is_instruct(self) -> bool:
        """Same as :attr:`instruct`."""
        return self.instruct

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (``base`` as a list)."""
        d = dataclasses.asdict(self)
        d["base"] = list(self.base)
        d["aliases"] = list(self.aliases)
        return d

