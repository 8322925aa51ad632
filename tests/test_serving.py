"""Serving at scale (issue 22): vLLM cannot load these LoRAs (adapters that train the expanded embed_tokens /
lm_head in full are refused by its LoRA loader), so the route is merge to an HF folder, then ``vllm serve`` it.
vLLM reads such a folder through transformers: ``config.json`` (architecture, vocabulary, RoPE scaling, context),
the tokenizer files and ``generation_config.json`` (stop ids). These tests check that the merge writes all of it."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest


def _merge(base: Path, lora: Path, out: Path) -> Path:
    from helpers.merge import MergeOptions, Recipe, merge

    merge(Recipe(base, [lora]), out, MergeOptions(fmt="hf", outtype="f16", progress=False))
    return out


def _rows(folder: Path, suffix: str) -> int:
    from safetensors import safe_open

    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), "pt") as st:
            for key in st.keys():
                if key.endswith(suffix):
                    return st.get_slice(key).get_shape()[0]
    raise AssertionError(f"no {suffix} in {folder}")


def test_hf_output_has_what_vllm_reads(demo, tmp_path):
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    from helpers.tokens import tokenizer_vocab_size

    out = _merge(demo / "Llama-2-7b-hf", demo / "chinese-alpaca-2-lora-7b", tmp_path / "hf")
    cfg = AutoConfig.from_pretrained(str(out))
    assert cfg.architectures == ["LlamaForCausalLM"]
    n = tokenizer_vocab_size(out)
    assert cfg.vocab_size == n == _rows(out, "embed_tokens.weight") == _rows(out, "lm_head.weight")
    assert len(AutoTokenizer.from_pretrained(str(out))) == n  # what vLLM's tokenizer sees
    gen = GenerationConfig.from_pretrained(str(out))
    eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    assert 2 in eos and gen.bos_token_id == 1  # </s> ends an Alpaca-2 reply
    assert not json.loads((out / "config.json").read_text()).get("rope_scaling")


@pytest.mark.parametrize("release,scaling,context", [
    ("chinese-alpaca-2-lora-7b-16k", {"type": "linear", "factor": 4.0}, 16384),
    ("chinese-alpaca-2-lora-7b-64k", {"type": "yarn", "factor": 16.0, "original_max_position_embeddings": 4096},
     65536)])
def test_long_context_release_keeps_its_rope_scaling(demo, tmp_path, release, scaling, context):
    """A 16K / 64K LoRA without a config.json of its own: the catalog's RoPE scaling goes into config.json, or
    vLLM would serve it with the base's 4K positions."""
    from transformers import AutoConfig

    lora = Path(shutil.copytree(demo / "chinese-alpaca-2-lora-7b", tmp_path / release))
    assert not (lora / "config.json").exists()
    out = _merge(demo / "Llama-2-7b-hf", lora, tmp_path / "hf")
    written = json.loads((out / "config.json").read_text())
    assert written["rope_scaling"] == scaling and written["max_position_embeddings"] == context
    rope = AutoConfig.from_pretrained(str(out)).rope_parameters
    assert rope["rope_type"] == scaling["type"] and rope["factor"] == scaling["factor"]


def test_llama3_instruct_merged_into_the_base_stops_at_eot(demo, tmp_path):
    """Llama-3-Chinese-8B-Instruct (v1) was trained on Meta-Llama-3-8B, whose generation_config.json stops at
    <|end_of_text|> only; replies end with <|eot_id|>, so the merged folder must stop there too."""
    from helpers.tokens import load_tokenizer

    base = Path(shutil.copytree(demo / "Meta-Llama-3-8B-Instruct", tmp_path / "Meta-Llama-3-8B"))
    end_of_text = json.loads((base / "generation_config.json").read_text())["eos_token_id"][0]
    (base / "generation_config.json").write_text(json.dumps({"bos_token_id": 768, "eos_token_id": end_of_text}))
    lora = Path(shutil.copytree(demo / "llama-3-chinese-8b-instruct-v2-lora",
                                tmp_path / "llama-3-chinese-8b-instruct-lora"))
    out = _merge(base, lora, tmp_path / "hf")
    eot = load_tokenizer(out).convert_tokens_to_ids("<|eot_id|>")
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["eos_token_id"] == [end_of_text, eot] and eot != end_of_text
