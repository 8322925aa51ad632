"""The released Chinese LLaMA/Alpaca models, as data: one :class:`ModelEntry` per downloadable artefact.

LoRAs, full Hugging Face models, GGUF repos and weight patches, plus the original Meta bases the LoRAs
and patches are merged into. :data:`CATALOG` maps catalog names to entries; it is checked for duplicate
names and hub ids, and for dangling or misordered bases, when the module loads.
"""
from __future__ import annotations

import dataclasses

from .entry import ModelEntry

_V1, _V2, _V3 = 2048, 4096, 8192  # native contexts per generation
_GATED_OWNERS = ("meta-llama",)  # hub organisations whose repos need an accepted licence and a token
_ROPE_16K = {"type": "linear", "factor": 4.0}
_ROPE_64K = {"type": "yarn", "factor": 16.0, "original_max_position_embeddings": 4096}


def _m(name: str, hub_id: str, kind: str, generation: str, family: str, size: str, vocab: int, template: str,
       ctx: int, base: tuple[str, ...] = (), *, rope: dict | None = None, remote_code: bool = False,
       notes: str = "") -> ModelEntry:
    return ModelEntry(name, hub_id, kind, generation, family, size, vocab, template, ctx, rope, base,
                      template != "raw", remote_code, notes, gated=hub_id.split("/")[0] in _GATED_OWNERS)


# The v1 LoRAs were published as ziqingyang/<repo> (the names the seed READMEs give) and now live in the hfl
# organisation on the hub: downloads use hfl/<repo>, lookups accept both.
_V1_OWNER, _V1_FORMER_OWNER = "hfl", "ziqingyang"

# SHA256 the v1 project published for each LoRA's files (SHA256.md of ymcui/Chinese-LLaMA-Alpaca, which the seed
# README links): adapter_model.bin per release, and tokenizer.model per type (every LLaMA LoRA ships the LLaMA
# tokenizer, every Alpaca one the Alpaca tokenizer, whatever the size or version).
_V1_TOKENIZER_SHA256 = {
    "llama": "e2676d4ca29ca1750f6ff203328d73b189321dc5776ceede037cbd36541d70c0",
    "alpaca": "2d967e855b1213a439df6c8ce2791f869c84b4f3b6cfacf22b86440b8192a2f8",
}
_V1_ADAPTER_SHA256 = {
    "chinese-llama-7b-lora": "2a2c24d096f5d509f24946fdbd8c25e1ce4a0acb955902f7436d74c0c0379d86",
    "chinese-llama-plus-7b-lora": "8c928db86b2a0cf73f019832f921eb7e1e069ca21441b4bfa12c4381c6cc46be",
    "chinese-llama-13b-lora": "6a4ce789d219bde122f8d9a20371937f2aa2ee86a2311d9f5e303df2e774f9fc",
    "chinese-llama-plus-13b-lora": "784fcff9c4bdf4e77d442a01158e121caf8fcce0f97ffb32396fe7a3617ee7e8",
    "chinese-llama-33b-lora": "93a449bafb71ff1bb74a4a21e64e102e5078e5c3898eb40d013790072a0fa3de",
    "chinese-llama-plus-33b-lora": "16f2544f4b5be9840dbb1a8071a9bc42627ed4232be3b0b600b43f7b4b5f08a7",
    "chinese-alpaca-7b-lora": "0d9b6ed8e4a7d1ae590a16c89a452a488d66ff07e45487972f61c2b6e46e36de",
    "chinese-alpaca-plus-7b-lora": "4ee0bf805c312a9a771624d481fbdb4485e1b0a70cd2a8da9f96137f177b795d",
    "chinese-alpaca-pro-7b-lora": "3cd2776908c3f5efe68bf6cf0248cb0e80fb7c55a52b8406325c9f0ca37b8594",
    "chinese-alpaca-13b-lora": "cb8dda3c005f3343a0740dcd7237fbb600cb14b6bff9b6f3d488c086a2f08ada",
    "chinese-alpaca-plus-13b-lora": "a1fcdcb6d7e1068f925fb36ec78632c76058ba12ba352bed4d44060b8e6f4706",
    "chinese-alpaca-pro-13b-lora": "f076b20fc2390ddbc35fd56d580d46ea834b33bbae34a4bb3cb7b571e60602e0",
    "chinese-alpaca-33b-lora": "6b39da4c682e715a9de30b247b7e9b812d2d54f7d320ec9b452000a5cd4d178d",
    "chinese-alpaca-plus-33b-lora": "411f5b9351abcc33c13a82bdd97ddcff81ad7993a8ddb83085b7ea97fad92fc7",
    "chinese-alpaca-pro-33b-lora": "0e7ba4951f605d2c0a7f0bcb983d7f6ed075c8dd23fbbcbc8a8c9643247212a3",
}


def _v1(name: str, repo: str, size: str, base: tuple[str, ...], *, notes: str = "") -> ModelEntry:
    alpaca = "alpaca" in name  # Alpaca LoRAs carry one extra [PAD] row: 49954 vs 49953
    entry = _m(name, f"{_V1_OWNER}/{repo}", "lora", "v1", "llama", size, 49954 if alpaca else 49953,
               "alpaca" if alpaca else "raw", _V1, base, notes=notes)
    sha256 = {"adapter_model.bin": _V1_ADAPTER_SHA256[name],
              "tokenizer.model": _V1_TOKENIZER_SHA256["alpaca" if alpaca else "llama"]}
    return dataclasses.replace(entry, aliases=(f"{_V1_FORMER_OWNER}/{repo}",), sha256=sha256)


def _v2(name: str, hub: str, kind: str, size: str, base: tuple[str, ...] = (), *, ctx: int = _V2,
        rope: dict | None = None, notes: str = "") -> ModelEntry:
    return _m(name, hub, kind, "v2", "llama2", size, 55296, "llama2-zh" if "alpaca" in name else "raw", ctx,
              base, rope=rope, remote_code=ctx == 65536 and kind != "gguf", notes=notes)


def _v3(name: str, hub: str, kind: str, base: tuple[str, ...] = (), *, notes: str = "") -> ModelEntry:
    return _m(name, hub, kind, "v3", "llama3", "8B", 128256, "llama3" if "instruct" in name else "raw", _V3,
              base, notes=notes)


_NOT_IN_SEED = "hub id follows the upstream naming rule; the seed README only names this model"
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
    _v1("chinese-llama-7b-lora", "chinese-llama-lora-7b", "7B", ("llama-7b",)),
    _v1("chinese-llama-13b-lora", "chinese-llama-lora-13b", "13B", ("llama-13b",)),
    _v1("chinese-llama-33b-lora", "chinese-llama-lora-33b", "33B", ("llama-33b",), notes=_NOT_IN_SEED),
    _v1("chinese-llama-plus-7b-lora", "chinese-llama-plus-lora-7b", "7B", ("llama-7b",)),
    _v1("chinese-llama-plus-13b-lora", "chinese-llama-plus-lora-13b", "13B", ("llama-13b",)),
    _v1("chinese-llama-plus-33b-lora", "chinese-llama-plus-lora-33b", "33B", ("llama-33b",),
        notes=_NOT_IN_SEED),
    _v1("chinese-alpaca-7b-lora", "chinese-alpaca-lora-7b", "7B", ("llama-7b",)),
    _v1("chinese-alpaca-13b-lora", "chinese-alpaca-lora-13b", "13B", ("llama-13b",)),
    _v1("chinese-alpaca-33b-lora", "chinese-alpaca-lora-33b", "33B", ("llama-33b",), notes=_NOT_IN_SEED),
    _v1("chinese-alpaca-plus-7b-lora", "chinese-alpaca-plus-lora-7b", "7B",
        ("llama-7b", "chinese-llama-plus-7b-lora"), notes=_PLUS),
    _v1("chinese-alpaca-plus-13b-lora", "chinese-alpaca-plus-lora-13b", "13B",
        ("llama-13b", "chinese-llama-plus-13b-lora"), notes=_PLUS),
    _v1("chinese-alpaca-plus-33b-lora", "chinese-alpaca-plus-lora-33b", "33B",
        ("llama-33b", "chinese-llama-plus-33b-lora"), notes=f"{_PLUS}; {_NOT_IN_SEED}"),
    _v1("chinese-alpaca-pro-7b-lora", "chinese-alpaca-pro-lora-7b", "7B",
        ("llama-7b", "chinese-llama-plus-7b-lora"), notes=f"{_PLUS}; {_NOT_IN_SEED}"),
    _v1("chinese-alpaca-pro-13b-lora", "chinese-alpaca-pro-lora-13b", "13B",
        ("llama-13b", "chinese-llama-plus-13b-lora"), notes=f"{_PLUS}; {_NOT_IN_SEED}"),
    _v1("chinese-alpaca-pro-33b-lora", "chinese-alpaca-pro-lora-33b", "33B",
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


def check_catalog(catalog: dict[str, ModelEntry], entries: list[ModelEntry]) -> None:
    """Fail loudly on a malformed catalog: duplicate keys/hub ids, dangling or misordered bases."""
    if len(catalog) != len(entries):
        raise ValueError("duplicate catalog names")
    hubs = [h.lower() for e in entries for h in (e.hub_id, *e.aliases)]
    if len(set(hubs)) != len(hubs):
        raise ValueError("duplicate hub ids (or aliases) in the catalog")
    for e in entries:
        for i, b in enumerate(e.base):
            if b not in catalog:
                raise ValueError(f"{e.name}: base {b!r} is not in the catalog")
            ref = catalog[b]
            want = ("full", "original") if i == 0 else ("lora", e.generation)
            if (ref.kind, ref.generation) != want or ref.family != e.family or ref.size != e.size:
                raise ValueError(f"{e.name}: base #{i} {b!r} must be a {want[1]} {want[0]} {e.family} {e.size} model")


check_catalog(CATALOG, _ENTRIES)

