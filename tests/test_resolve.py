"""Model resolution: local paths, the offline mirror, catalog names, and what a hub download skips."""
from __future__ import annotations

import pytest

from helpers.hub.resolve import redundant_weights, resolve_model
from helpers.util import UserError

LLAMA2 = ["config.json", "generation_config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
          "model.safetensors.index.json", "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin",
          "pytorch_model.bin.index.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"]
LLAMA3 = ["config.json", "model-00001-of-00004.safetensors", "model.safetensors.index.json", "original/consolidated.00.pth",
          "original/params.json", "original/tokenizer.model", "tokenizer.json", "tokenizer_config.json"]
V1_LORA = ["adapter_config.json", "adapter_model.bin", "tokenizer.model", "special_tokens_map.json", "tokenizer_config.json"]


def _kept(files, ignore):
    import fnmatch

    return [f for f in files if not any(fnmatch.fnmatch(f, p) for p in ignore)]


def test_only_one_copy_of_the_weights_is_downloaded():
    kept = _kept(LLAMA2, redundant_weights(LLAMA2))
    assert not [f for f in kept if f.endswith(".bin") or f.startswith("pytorch_model")]
    assert "model.safetensors.index.json" in kept
    assert "model-00002-of-00002.safetensors" in kept and "tokenizer.model" in kept
    kept = _kept(LLAMA3, redundant_weights(LLAMA3))
    assert not [f for f in kept if f.startswith("original/")]
    assert "tokenizer.json" in kept
    assert _kept(V1_LORA, redundant_weights(V1_LORA)) == V1_LORA  # .bin-only repos keep their .bin


def test_mirror_and_catalog_names_resolve_offline(demo, monkeypatch):
    monkeypatch.setenv("HELPERS_LOCAL_MODELS", str(demo))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_model("hfl/chinese-alpaca-2-lora-7b") == demo / "chinese-alpaca-2-lora-7b"
    assert resolve_model("chinese-alpaca-2-7b") == demo / "chinese-alpaca-2-7b"  # catalog name -> hub id -> mirror
    assert resolve_model(demo / "llama-7b") == demo / "llama-7b"
    with pytest.raises(UserError, match=r"^HF_HUB_OFFLINE=1 is set: unset it to download model 'someone/not-mirrored', "
                                        r"or give a local folder"):
        resolve_model("someone/not-mirrored")
    with pytest.raises(UserError, match="not found"):
        resolve_model("./no/such/folder")
