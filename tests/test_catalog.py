"""Tests for helpers.catalog: coverage of the seed READMEs, vocab sizes, merge order, lookups, family checks, CLI."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import catalog
from helpers.__main__ import main
from helpers.catalog import ModelEntry
from helpers.catalog.releases import CATALOG
from helpers.catalog.releases import check_catalog
from helpers.util import UserError

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SHARED_DIR", ROOT.parent / "shared"))

# Hub ids copied by hand from the seed READMEs (v1 Model Hub table, v2 full/GGUF/LoRA tables,
# v3 download table, OCL usage notes) and the original bases they name.
V1_HUB_IDS = [
    "ziqingyang/chinese-llama-lora-7b", "ziqingyang/chinese-llama-plus-lora-7b",
    "ziqingyang/chinese-llama-lora-13b", "ziqingyang/chinese-llama-plus-lora-13b",
    "ziqingyang/chinese-alpaca-lora-7b", "ziqingyang/chinese-alpaca-plus-lora-7b",
    "ziqingyang/chinese-alpaca-lora-13b", "ziqingyang/chinese-alpaca-plus-lora-13b",
]
V2_HUB_IDS = [
    "hfl/chinese-llama-2-13b", "hfl/chinese-llama-2-7b", "hfl/chinese-llama-2-1.3b",
    "hfl/chinese-alpaca-2-13b", "hfl/chinese-alpaca-2-7b", "hfl/chinese-alpaca-2-1.3b",
    "hfl/chinese-llama-2-7b-64k", "hfl/chinese-alpaca-2-7b-64k",
    "hfl/chinese-llama-2-13b-16k", "hfl/chinese-llama-2-7b-16k",
    "hfl/chinese-alpaca-2-13b-16k", "hfl/chinese-alpaca-2-7b-16k",
    "hfl/chinese-alpaca-2-7b-rlhf", "hfl/chinese-alpaca-2-1.3b-rlhf",
    "hfl/chinese-llama-2-13b-gguf", "hfl/chinese-llama-2-7b-gguf", "hfl/chinese-llama-2-1.3b-gguf",
    "hfl/chinese-alpaca-2-13b-gguf", "hfl/chinese-alpaca-2-7b-gguf", "hfl/chinese-alpaca-2-1.3b-gguf",
    "hfl/chinese-llama-2-7b-64k-gguf", "hfl/chinese-alpaca-2-7b-64k-gguf",
    "hfl/chinese-llama-2-13b-16k-gguf", "hfl/chinese-llama-2-7b-16k-gguf",
    "hfl/chinese-alpaca-2-13b-16k-gguf", "hfl/chinese-alpaca-2-7b-16k-gguf",
    "hfl/chinese-alpaca-2-7b-rlhf-gguf", "hfl/chinese-alpaca-2-1.3b-rlhf-gguf",
    "hfl/chinese-llama-2-lora-13b", "hfl/chinese-llama-2-lora-7b",
    "hfl/chinese-alpaca-2-lora-13b", "hfl/chinese-alpaca-2-lora-7b",
    "hfl/chinese-llama-2-lora-7b-64k", "hfl/chinese-alpaca-2-lora-7b-64k",
    "hfl/chinese-llama-2-lora-13b-16k", "hfl/chinese-llama-2-lora-7b-16k",
    "hfl/chinese-alpaca-2-lora-13b-16k", "hfl/chinese-alpaca-2-lora-7b-16k",
]
V3_HUB_IDS = [
    "hfl/llama-3-chinese-8b-instruct-v2", "hfl/llama-3-chinese-8b-instruct-v2-lora",
    "hfl/llama-3-chinese-8b-instruct-v2-gguf",
    "hfl/llama-3-chinese-8b-instruct", "hfl/llama-3-chinese-8b-instruct-lora", "hfl/llama-3-chinese-8b-instruct-gguf",
    "hfl/llama-3-chinese-8b", "hfl/llama-3-chinese-8b-lora", "hfl/llama-3-chinese-8b-gguf",
    # Instruct-v3 is named in the research notes (C-Eval table); it ships as full + GGUF only
    "hfl/llama-3-chinese-8b-instruct-v3", "hfl/llama-3-chinese-8b-instruct-v3-gguf",
]
OCL_HUB_IDS = ["openlmlab/open-chinese-llama-7b-patch"]
ORIGINAL_HUB_IDS = [
    "huggyllama/llama-7b", "huggyllama/llama-13b", "huggyllama/llama-30b",
    "meta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-13b-hf",
    "meta-llama/Meta-Llama-3-8B", "meta-llama/Meta-Llama-3-8B-Instruct",
]
# Named in the seeds (v2 README's arena and C-Eval tables, v1 notebook RAM notes) without hub ids
V1_NAMED_ONLY = [
    "chinese-llama-33b-lora", "chinese-llama-plus-33b-lora", "chinese-alpaca-33b-lora",
    "chinese-alpaca-plus-33b-lora", "chinese-alpaca-pro-7b-lora", "chinese-alpaca-pro-13b-lora",
    "chinese-alpaca-pro-33b-lora",
]
ALL_HUB_IDS = V1_HUB_IDS + V2_HUB_IDS + V3_HUB_IDS + OCL_HUB_IDS + ORIGINAL_HUB_IDS


@pytest.mark.parametrize("hub_id", ALL_HUB_IDS)
def test_every_seed_model_is_in_the_catalog(hub_id):
    entry = catalog.find(hub_id)
    assert entry is not None, hub_id
    if hub_id.startswith("ziqingyang/"):  # moved to the hfl organisation: the seed's id is a former id
        assert entry.hub_id == "hfl/" + hub_id.split("/")[1] and hub_id in entry.aliases
    else:
        assert entry.hub_id == hub_id  # spelled exactly as the seed gives it


@pytest.mark.parametrize("name", V1_NAMED_ONLY)
def test_v1_33b_and_pro_models_are_listed(name):
    entry = catalog.get(name)
    assert entry.generation == "v1" and entry.kind == "lora"
    assert entry.hub_id.startswith("hfl/chinese-") and entry.aliases == ("ziqingyang/" + entry.hub_id[4:],)


def test_moved_v1_loras_are_found_by_either_id():
    v1 = [e for e in CATALOG.values() if e.generation == "v1"]
    assert len(v1) == 15
    for e in v1:
        (old,) = e.aliases
        assert old.startswith("ziqingyang/") and e.hub_id == "hfl/" + old.split("/")[1]
        assert catalog.get(old) is e and catalog.get(e.hub_id) is e and catalog.get(old.upper()) is e
    assert catalog.get("hfl/chinese-alpaca-plus-lora-7b").name == "chinese-alpaca-plus-7b-lora"
    assert catalog.get("hfl/chinese-llama-lora-7b").name == "chinese-llama-7b-lora"
    assert all(not e.aliases for e in CATALOG.values() if e.generation != "v1")


# The SHA256.md the v1 README links (ymcui/Chinese-LLaMA-Alpaca), copied by hand: two tokenizers, three adapters.
PUBLISHED = {
    "chinese-llama-7b-lora": ("2a2c24d096f5d509f24946fdbd8c25e1ce4a0acb955902f7436d74c0c0379d86",
                              "e2676d4ca29ca1750f6ff203328d73b189321dc5776ceede037cbd36541d70c0"),
    "chinese-alpaca-plus-13b-lora": ("a1fcdcb6d7e1068f925fb36ec78632c76058ba12ba352bed4d44060b8e6f4706",
                                     "2d967e855b1213a439df6c8ce2791f869c84b4f3b6cfacf22b86440b8192a2f8"),
    "chinese-alpaca-pro-33b-lora": ("0e7ba4951f605d2c0a7f0bcb983d7f6ed075c8dd23fbbcbc8a8c9643247212a3",
                                    "2d967e855b1213a439df6c8ce2791f869c84b4f3b6cfacf22b86440b8192a2f8"),
}


def test_published_sha256_of_the_v1_loras():
    for name, (adapter, tokenizer) in PUBLISHED.items():
        assert CATALOG[name].sha256 == {"adapter_model.bin": adapter, "tokenizer.model": tokenizer}
    v1 = [e for e in CATALOG.values() if e.generation == "v1"]
    assert len({e.sha256["adapter_model.bin"] for e in v1}) == len(v1)  # one per release
    tokenizers = {e.instruct: {x.sha256["tokenizer.model"] for x in v1 if x.instruct == e.instruct} for e in v1}
    assert all(len(t) == 1 for t in tokenizers.values()) and tokenizers[True] != tokenizers[False]
    assert all(e.sha256 is None for e in CATALOG.values() if e.generation != "v1")
    assert catalog.get("ziqingyang/chinese-alpaca-lora-7b").to_dict()["sha256"]["tokenizer.model"].startswith("2d967e85")


def test_no_seed_hub_link_is_missing():
    """Independent check: every hfl/ziqingyang/openlmlab repo linked from the seeds is catalogued."""
    seeds = SHARED / "seeds"
    if not seeds.is_dir():
        pytest.skip("../shared/seeds not available")
    text = "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in sorted(seeds.glob("*.md")))
    found = set(re.findall(r"\b((?:hfl|ziqingyang|openlmlab)/[a-z0-9][a-z0-9._-]*[a-z0-9])", text))
    found.discard("hfl/chinese-llama-alpaca-2-awq")  # AWQ search results, not a model
    assert len(found) > 40
    missing = sorted(h for h in found if catalog.find(h) is None)
    assert not missing
    assert set(ALL_HUB_IDS) - set(ORIGINAL_HUB_IDS) - {"hfl/llama-3-chinese-8b-instruct-v3",
                                                       "hfl/llama-3-chinese-8b-instruct-v3-gguf"} <= found


@pytest.mark.parametrize("hub_id, vocab", [
    *[(h, 49954 if "alpaca" in h else 49953) for h in V1_HUB_IDS],
    *[(h, 55296) for h in V2_HUB_IDS],
    *[(h, 128256) for h in V3_HUB_IDS],
    ("openlmlab/open-chinese-llama-7b-patch", 32000),
    ("huggyllama/llama-7b", 32000), ("meta-llama/Llama-2-13b-hf", 32000), ("meta-llama/Meta-Llama-3-8B", 128256),
])
def test_vocab_sizes(hub_id, vocab):
    assert catalog.get(hub_id).vocab_size == vocab


def test_vocab_by_generation_across_the_whole_catalog():
    for e in CATALOG.values():
        if e.generation == "v1":
            assert e.vocab_size == (49954 if e.instruct else 49953), e.name
        elif e.generation == "v2":
            assert e.vocab_size == 55296, e.name
        elif e.generation == "v3":
            assert e.vocab_size == 128256, e.name
        elif e.generation == "ocl":
            assert e.vocab_size == 32000, e.name


def test_templates_and_contexts():
    assert catalog.get("chinese-alpaca-7b-lora").template == "alpaca"
    assert catalog.get("chinese-llama-plus-13b-lora").template == "raw"
    assert catalog.get("chinese-alpaca-2-7b").template == "llama2-zh"
    assert catalog.get("chinese-alpaca-2-7b-rlhf").template == "llama2-zh"
    assert catalog.get("chinese-llama-2-13b").template == "raw"
    assert catalog.get("llama-3-chinese-8b-instruct-v3").template == "llama3"
    assert catalog.get("llama-3-chinese-8b").template == "raw"
    assert catalog.get("meta-llama/Meta-Llama-3-8B-Instruct").is_instruct
    for e in CATALOG.values():
        assert e.is_instruct == e.instruct == (e.template != "raw")
        want = {"v1": 2048, "ocl": 2048, "v3": 8192}.get(e.generation)
        if want:
            assert e.context_length == want, e.name
    e16, e64 = catalog.get("hfl/chinese-alpaca-2-lora-13b-16k"), catalog.get("chinese-llama-2-7b-64k")
    assert (e16.context_length, e16.rope_scaling) == (16384, {"type": "linear", "factor": 4.0})
    assert e64.context_length == 65536 and e64.needs_trust_remote_code
    assert e64.rope_scaling == {"type": "yarn", "factor": 16.0, "original_max_position_embeddings": 4096}
    assert catalog.get("chinese-alpaca-2-7b-64k-lora").needs_trust_remote_code
    assert not catalog.get("chinese-alpaca-2-7b-64k-gguf").needs_trust_remote_code
    assert catalog.get("chinese-alpaca-2-7b").rope_scaling is None


def test_plus_merge_order():
    assert catalog.release_recipe("chinese-alpaca-plus-7b-lora") == (
        "huggyllama/llama-7b", ["hfl/chinese-llama-plus-lora-7b", "hfl/chinese-alpaca-plus-lora-7b"])
    # by (former) hub id too, and the 13B pair uses the 13B base (the seed table's "LLaMA-7B" there is a typo);
    # plans name the current ids, the ones downloads use
    assert catalog.release_recipe("ziqingyang/chinese-alpaca-plus-lora-13b") == (
        "huggyllama/llama-13b", ["hfl/chinese-llama-plus-lora-13b", "hfl/chinese-alpaca-plus-lora-13b"])
    assert catalog.release_recipe("chinese-alpaca-pro-33b-lora") == (
        "huggyllama/llama-30b", ["hfl/chinese-llama-plus-lora-33b", "hfl/chinese-alpaca-pro-lora-33b"])
    assert catalog.get("chinese-alpaca-plus-7b-lora").base == ("llama-7b", "chinese-llama-plus-7b-lora")


@pytest.mark.parametrize("name, plan", [
    ("chinese-alpaca-13b-lora", ("huggyllama/llama-13b", ["hfl/chinese-alpaca-lora-13b"])),
    ("chinese-alpaca-2-7b-lora", ("meta-llama/Llama-2-7b-hf", ["hfl/chinese-alpaca-2-lora-7b"])),
    ("chinese-llama-2-13b-16k-lora", ("meta-llama/Llama-2-13b-hf", ["hfl/chinese-llama-2-lora-13b-16k"])),
    ("llama-3-chinese-8b-instruct-lora", ("meta-llama/Meta-Llama-3-8B", ["hfl/llama-3-chinese-8b-instruct-lora"])),
    ("llama-3-chinese-8b-instruct-v2-lora",
     ("meta-llama/Meta-Llama-3-8B-Instruct", ["hfl/llama-3-chinese-8b-instruct-v2-lora"])),
    ("open-chinese-llama-7b-patch", ("huggyllama/llama-7b", ["openlmlab/open-chinese-llama-7b-patch"])),
])
def test_merge_plans(name, plan):
    assert catalog.release_recipe(name) == plan


@pytest.mark.parametrize("name", ["chinese-alpaca-2-7b", "chinese-alpaca-2-7b-gguf", "llama-2-7b"])
def test_merge_plan_refuses_full_and_gguf(name):
    with pytest.raises(UserError, match="no merge is needed"):
        catalog.release_recipe(name)


def test_every_base_chain_is_consistent():
    for e in CATALOG.values():
        if e.kind in ("lora", "patch"):
            first = CATALOG[e.base[0]]
            assert first.generation == "original" and first.kind == "full"
            assert first.family == e.family and first.size == e.size
            assert all(CATALOG[b].kind == "lora" for b in e.base[1:])
        else:
            assert e.base == ()
    broken = dataclasses.replace(CATALOG["chinese-alpaca-7b-lora"], base=("llama-13b",))  # wrong size
    entries = [broken if e.name == broken.name else e for e in CATALOG.values()]
    with pytest.raises(ValueError, match="base #0 'llama-13b'"):
        check_catalog({e.name: e for e in entries}, entries)
    dangling = dataclasses.replace(broken, base=("llama-8b",))
    entries = [dangling if e.name == dangling.name else e for e in CATALOG.values()]
    with pytest.raises(ValueError, match="not in the catalog"):
        check_catalog({e.name: e for e in entries}, entries)
    clash = dataclasses.replace(CATALOG["chinese-alpaca-7b-lora"], aliases=("hfl/chinese-llama-lora-7b",))
    entries = [clash if e.name == clash.name else e for e in CATALOG.values()]
    with pytest.raises(ValueError, match="duplicate hub ids"):
        check_catalog({e.name: e for e in entries}, entries)


def test_get_and_find():
    e = catalog.get("chinese-alpaca-2-7b-lora")
    assert e.hub_id == "hfl/chinese-alpaca-2-lora-7b" and e.kind == "lora"
    assert catalog.get("HFL/Chinese-Alpaca-2-LoRA-7B") is e
    assert catalog.get("  chinese-alpaca-2-lora-7b ") is e  # the repo part of the hub id alone
    assert catalog.get("https://huggingface.co/hfl/chinese-alpaca-2-lora-7b") is e
    assert catalog.get("meta-llama/llama-2-7b-hf").name == "llama-2-7b"
    assert catalog.find("no-such-model") is None
    assert all(CATALOG[n].name == n and n == n.lower() for n in CATALOG)


def test_unknown_name_lists_close_matches():
    with pytest.raises(UserError) as err:
        catalog.get("chinese-alpaca-2-7b-lroa")
    msg = str(err.value)
    assert "chinese-alpaca-2-7b-lora" in msg and "python -m helpers catalog" in msg
    suggested = [n for n in CATALOG if re.search(rf"(?<![\w.-]){re.escape(n)}(?![\w.-])", msg)]
    assert 1 <= len(suggested) <= 3
    with pytest.raises(UserError, match="python -m helpers catalog"):
        catalog.get("zzzz")


def test_names_filters_keep_catalog_order():
    assert catalog.names() == list(CATALOG)
    gguf = catalog.names(kind="gguf")
    assert gguf and all(CATALOG[n].kind == "gguf" for n in gguf)
    assert gguf == [n for n in CATALOG if n in set(gguf)]
    v3_lora = catalog.names(kind="lora", generation="v3")
    assert v3_lora == ["llama-3-chinese-8b-lora", "llama-3-chinese-8b-instruct-lora",
                       "llama-3-chinese-8b-instruct-v2-lora"]
    assert len(catalog.names(generation="original")) == 7
    with pytest.raises(UserError):
        catalog.names(kind="awq")


LLAMA1_CONFIG = {"architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "max_position_embeddings": 2048,
                 "rms_norm_eps": 1e-06, "vocab_size": 32000}
LLAMA2_CONFIG = {"architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "max_position_embeddings": 4096,
                 "rms_norm_eps": 1e-05, "vocab_size": 32000}
LLAMA3_CONFIG = {"architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "max_position_embeddings": 8192,
                 "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "vocab_size": 128256, "num_key_value_heads": 8}


@pytest.mark.parametrize("config, family", [
    (LLAMA1_CONFIG, "llama"),
    (LLAMA2_CONFIG, "llama2"),
    (LLAMA3_CONFIG, "llama3"),
    ({**LLAMA1_CONFIG, "vocab_size": 49954}, "llama"),                          # merged Chinese-Alpaca v1
    ({**LLAMA2_CONFIG, "vocab_size": 55296, "rope_scaling": {"type": "linear", "factor": 4.0}}, "llama2"),  # 16K
    ({**LLAMA3_CONFIG, "vocab_size": 32000}, "llama3"),                         # rope_theta alone says Llama-3
    ({"max_sequence_length": 2048, "rms_norm_eps": 1e-6, "vocab_size": 32000}, "llama"),  # decapoda-style
    ({"dim": 4096, "norm_eps": 1e-06, "vocab_size": -1}, "llama"),              # Meta LLaMA-1 params.json
    ({"dim": 4096, "norm_eps": 1e-05, "vocab_size": -1}, "llama2"),             # Meta Llama-2 params.json
])
def test_family_of_config(config, family):
    assert catalog.family_of_config(config) == family


def test_family_of_config_agrees_with_the_original_entries():
    for name in catalog.names(generation="original"):
        e = CATALOG[name]
        cfg = {"vocab_size": e.vocab_size, "max_position_embeddings": e.context_length,
               "rope_theta": 500000.0 if e.family == "llama3" else 10000.0}
        assert catalog.family_of_config(cfg) == e.family, name


@pytest.mark.parametrize("base_path, vocab, family", [
    ("decapoda-research/llama-7b-hf", None, "llama"),
    ("huggyllama/llama-30b", None, "llama"),          # "llama-30b" must not read as Llama-3
    ("elinas/llama-7b-hf-transformers-4.29", 49954, "llama"),
    ("/content/llama-65b", None, "llama"),
    ("meta-llama/Llama-2-7b-hf", None, "llama2"),
    ("/models/llama2-13b", 32000, "llama2"),
    ("meta-llama/Meta-Llama-3-8B-Instruct", None, "llama3"),
    ("/content/merged", 55296, "llama2"),
    ("", 49953, "llama"),
    (None, 128256, "llama3"),
    ("/content/merged", 32000, None),
    ("/content/merged", None, None),
])
def test_family_of_lora(base_path, vocab, family):
    assert catalog.family_of_lora({"base_model_name_or_path": base_path, "r": 8}, vocab_size=vocab) == family


def test_family_of_lora_without_the_key():
    assert catalog.family_of_lora({}, vocab_size=None) is None


def test_check_family_refuses_v1_lora_on_llama2_base():
    with pytest.raises(UserError) as err:
        catalog.check_family("llama2", "llama", what="chinese-alpaca-lora-7b")
    msg = str(err.value)
    assert msg.startswith("chinese-alpaca-lora-7b is a LLaMA-1 (v1) LoRA but the base is a Llama-2 model")
    assert "huggyllama/llama-7b" in msg and "llama-13b" not in msg


def test_check_family_names_the_right_base():
    with pytest.raises(UserError, match=r"meta-llama/Llama-2-13b-hf"):
        catalog.check_family("llama", "llama2", what="hfl/chinese-alpaca-2-lora-13b")
    with pytest.raises(UserError, match=r"Meta-Llama-3-8B-Instruct"):
        catalog.check_family("llama2", "llama3", what="llama-3-chinese-8b-instruct-v2-lora")
    with pytest.raises(UserError, match=r"huggyllama/llama-13b") as err:  # not in the catalog: size from the path
        catalog.check_family("llama3", "llama", what="/content/my-lora-13b")
    assert "llama-7b" not in str(err.value)
    with pytest.raises(UserError, match="patch"):
        catalog.check_family("llama2", "llama", what="open-chinese-llama-7b-patch")


def test_check_family_passes_when_it_matches_or_cannot_tell():
    assert catalog.check_family("llama2", "llama2", what="x") is None
    assert catalog.check_family("llama", None, what="x") is None
    with pytest.raises(ValueError):
        catalog.check_family("llama4", "llama", what="x")


def test_model_entry_validation():
    good = dict(name="x-7b", hub_id="o/x-7b", kind="full", generation="v2", family="llama2", size="7B",
                vocab_size=55296, template="raw", context_length=4096)
    assert ModelEntry(**good).instruct is False
    for bad in ({"kind": "awq"}, {"generation": "v4"}, {"family": "mistral"}, {"template": "chatml"},
                {"vocab_size": 0}, {"name": "X-7B"}, {"hub_id": "no-owner"}, {"size": "7b"},
                {"kind": "lora"}, {"base": ("llama-2-7b",)}, {"instruct": True},
                {"rope_scaling": {"factor": 4.0}}, {"aliases": ("no-owner",)}, {"sha256": {"a.bin": "ABC"}},
                {"sha256": {}}):
        with pytest.raises(ValueError):
            ModelEntry(**{**good, **bad})
    e = ModelEntry(**{**good, "kind": "lora", "base": ["llama-2-7b"]})
    assert e.base == ("llama-2-7b",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.name = "y"  # type: ignore[misc]
    assert hash(CATALOG["chinese-alpaca-2-7b-16k"])  # entries stay hashable despite the rope dict


def test_cli_json_subprocess():
    out = subprocess.run([sys.executable, "-m", "helpers", "catalog", "--json"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert [d["name"] for d in data] == list(CATALOG)
    plus = next(d for d in data if d["name"] == "chinese-alpaca-plus-7b-lora")
    assert plus["base"] == ["llama-7b", "chinese-llama-plus-7b-lora"] and plus["vocab_size"] == 49954


def test_cli_table_filters_and_errors(capsys):
    assert main(["catalog", "--kind", "lora", "--generation", "v2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["name", "kind", "hub", "id", "vocab", "template", "context"]
    assert [ln.split()[0] for ln in lines[1:]] == catalog.names(kind="lora", generation="v2")
    assert "hfl/chinese-alpaca-2-lora-7b-64k" in lines[-1] and lines[-1].split()[-1] == "65536"
    assert main(["catalog", "chinese-alpaca-plus-7b-lora", "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert one["release_recipe"]["apply"][0] == "hfl/chinese-llama-plus-lora-7b"
    assert one["aliases"] == ["ziqingyang/chinese-alpaca-plus-lora-7b"]
    assert main(["catalog", "no-such-model"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown model") and len(err.strip().splitlines()) == 1


def test_every_release_template_is_a_template_the_renderer_knows():
    from helpers.catalog import get, names
    from helpers.catalog.entry import RELEASE_TEMPLATES
    from helpers.tokens import TEMPLATES

    assert set(RELEASE_TEMPLATES) <= set(TEMPLATES)
    assert {get(name).template for name in names()} <= set(RELEASE_TEMPLATES)
