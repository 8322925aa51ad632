"""The offline demo assets: deterministic, laid out like the releases, loadable by the real tools."""
from __future__ import annotations

import filecmp
import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.demo.build import build_demo


def _same_tree(a: Path, b: Path) -> list[str]:
    diffs = []
    cmp = filecmp.dircmp(a, b)
    diffs += cmp.left_only + cmp.right_only + cmp.diff_files + cmp.funny_files
    for sub in cmp.common_dirs:
        diffs += _same_tree(a / sub, b / sub)
    for name in cmp.common_files:  # dircmp compares shallowly (stat); compare bytes
        if (a / name).read_bytes() != (b / name).read_bytes():
            diffs.append(str(a / name))
    return diffs


def test_demo_is_deterministic(demo, tmp_path):
    again = build_demo(tmp_path / "again")
    assert _same_tree(demo, again) == []


def test_demo_cli_builds_and_lists(tmp_path):
    r = subprocess.run([sys.executable, "-m", "helpers", "demo", "--out", str(tmp_path / "d")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "chinese-alpaca-2-lora-7b" in r.stdout
    assert (tmp_path / "d" / "manifest.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folder left behind"


def test_layouts_match_the_releases(demo):
    assert (demo / "llama-7b" / "pytorch_model.bin.index.json").is_file()
    assert (demo / "Llama-2-7b-hf" / "model.safetensors.index.json").is_file()
    v1 = demo / "chinese-llama-lora-7b"
    cfg = json.loads((v1 / "adapter_config.json").read_text())
    assert {"enable_lora", "merge_weights"} <= cfg.keys()  # the 2023 PEFT fields
    assert cfg["modules_to_save"] == ["embed_tokens", "lm_head"]
    assert set(cfg["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    for f in ("adapter_model.bin", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        assert (v1 / f).is_file(), f
    assert (demo / "chinese-alpaca-2-lora-7b" / "adapter_model.safetensors").is_file()
    patch = sorted((demo / "open-chinese-llama-7b-patch").glob("pytorch_model-*.bin"))
    assert len(patch) == 3  # one per layer + the rest
    v3 = json.loads((demo / "Meta-Llama-3-8B-Instruct" / "config.json").read_text())
    assert v3["rope_theta"] == 500000.0 and v3["num_key_value_heads"] < v3["num_attention_heads"]
    for name in ("Llama-2-7b-hf", "Meta-Llama-3-8B-Instruct"):
        c = json.loads((demo / name / "config.json").read_text())
        assert c["hidden_size"] % 256 == 0 and c["intermediate_size"] % 256 == 0


def test_vocabularies_grow_like_the_releases(demo):
    import sentencepiece as spm
    import torch

    m = json.loads((demo / "manifest.json").read_text())["assets"]
    base = m["llama-7b"]["vocab"]
    llama, alpaca = m["chinese-llama-lora-7b"]["vocab"], m["chinese-alpaca-lora-7b"]["vocab"]
    assert llama > base and alpaca == llama + 1  # Alpaca adds [PAD]
    base_sp = spm.SentencePieceProcessor(model_file=str(demo / "llama-7b" / "tokenizer.model"))
    zh_sp = spm.SentencePieceProcessor(model_file=str(demo / "chinese-llama-lora-7b" / "tokenizer.model"))
    for i in range(base_sp.get_piece_size()):  # base ids unchanged
        assert zh_sp.id_to_piece(i) == base_sp.id_to_piece(i)
    text = "北京是中国的首都，也是一座有三千多年历史的古城。"
    assert len(zh_sp.encode(text)) * 1.5 <= len(base_sp.encode(text))
    sd = torch.load(demo / "chinese-alpaca-lora-7b" / "adapter_model.bin", weights_only=True)
    assert sd["base_model.model.model.embed_tokens.weight"].shape[0] == alpaca
    added = json.loads((demo / "chinese-alpaca-lora-7b" / "added_tokens.json").read_text())
    assert added == {"[PAD]": llama}


@pytest.mark.parametrize("lora,base", [("chinese-alpaca-2-lora-7b", "Llama-2-7b-hf"), ("chinese-llama-lora-7b", "llama-7b")])
def test_demo_lora_loads_with_peft_and_changes_the_output(demo, lora, base):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    vocab = json.loads((demo / "manifest.json").read_text())["assets"][lora]["vocab"]
    model = AutoModelForCausalLM.from_pretrained(demo / base, dtype=torch.float32)
    ids = torch.tensor([[1, 20, 30, 40, 50, 60]])
    with torch.no_grad():
        before = model(ids).logits[0, :, :100].clone()
    model.resize_token_embeddings(vocab)
    model = PeftModel.from_pretrained(model, demo / lora)
    with torch.no_grad():
        after = model(ids).logits[0, :, :100]
    assert after.shape == before.shape
    assert (after - before).abs().max() > 0.1
