"""Lazy checkpoint / adapter access: every release layout reads back the tensors torch itself would load."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from helpers.checkpoint import files as sources
from reference import torch_state

from helpers.checkpoint import open_adapter, open_checkpoint
from helpers.tokens import tokenizer_vocab_size
from helpers.util import UserError


def _same(ckpt, ref: dict[str, torch.Tensor]) -> None:
    assert sorted(ckpt.names()) == sorted(ref)
    for name, t in ref.items():
        assert ckpt.shape(name) == tuple(t.shape)
        got = ckpt.get(name)
        assert got.dtype == t.dtype and torch.equal(got, t), name
        f32 = ckpt.get(name, dtype=torch.float32)
        assert f32.dtype == torch.float32 and torch.equal(f32, t.float()), name


@pytest.mark.parametrize("folder", ["Llama-2-7b-hf", "llama-7b", "Meta-Llama-3-8B-Instruct"])
def test_sharded_checkpoints(demo, folder, monkeypatch):
    monkeypatch.setattr(sources, "CHUNK_BYTES", 4096)  # exercise the chunked float32 conversion
    ref = torch_state(demo / folder)
    with open_checkpoint(demo / folder) as ckpt:
        _same(ckpt, ref)
        assert ckpt.config == json.loads((demo / folder / "config.json").read_text())
        assert ckpt.tokenizer_dir == demo / folder
        # file order: one shard after the other (a .bin shard is loaded once)
        index = json.loads(next((demo / folder).glob("*.index.json")).read_text())["weight_map"]
        shards = [index[n] for n in ckpt.names()]
        assert shards == sorted(shards)


def test_single_file_checkpoints(demo, tmp_path):
    from safetensors.torch import save_file

    ref = torch_state(demo / "Llama-2-7b-hf")
    for name, save in (("model.safetensors", lambda sd, p: save_file(sd, str(p))),
                       ("pytorch_model.bin", lambda sd, p: torch.save(sd, p))):
        d = tmp_path / name.split(".")[0]
        d.mkdir()
        shutil.copyfile(demo / "Llama-2-7b-hf" / "config.json", d / "config.json")
        save(ref, d / name)
        with open_checkpoint(d) as ckpt:
            _same(ckpt, ref)
        with open_checkpoint(d / name) as ckpt:  # the file itself
            assert sorted(ckpt.names()) == sorted(ref)


# Meta's layout, written out independently of helpers.checkpoint
META_NAMES = {"self_attn.q_proj": "attention.wq", "self_attn.k_proj": "attention.wk", "self_attn.v_proj": "attention.wv",
              "self_attn.o_proj": "attention.wo", "mlp.gate_proj": "feed_forward.w1",
              "mlp.down_proj": "feed_forward.w2", "mlp.up_proj": "feed_forward.w3",
              "input_layernorm": "attention_norm", "post_attention_layernorm": "ffn_norm"}


def write_meta(hf: dict[str, torch.Tensor], cfg: dict, out: Path, n: int) -> None:
    heads, kv, hidden = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["hidden_size"]
    hd = hidden // heads

    def interleave(w, nh):  # HF row p*hd/2 + i of each head -> Meta row 2i + p
        return w[[h * hd + p * (hd // 2) + i for h in range(nh) for i in range(hd // 2) for p in range(2)]]

    meta = {}
    for k, v in hf.items():
        if k == "model.embed_tokens.weight":
            meta["tok_embeddings.weight"] = v
        elif k == "model.norm.weight":
            meta["norm.weight"] = v
        elif k == "lm_head.weight":
            meta["output.weight"] = v
        else:
            _, _, layer, rest = k.removesuffix(".weight").split(".", 3)
            name = f"layers.{layer}.{META_NAMES[rest]}.weight"
            meta[name] = interleave(v, heads) if "q_proj" in rest else interleave(v, kv) if "k_proj" in rest else v
    parts = [{} for _ in range(n)]
    for k, v in meta.items():
        if "norm" in k:
            pieces = [v] * n
        elif any(s in k for s in ("tok_embeddings", "wo.", "w2.")):
            pieces = torch.tensor_split(v, n, dim=1)
        else:
            pieces = torch.tensor_split(v, n, dim=0)
        for p, piece in zip(parts, pieces):
            p[k] = piece.clone()
    parts[0]["rope.freqs"] = torch.ones(hd // 2)
    out.mkdir()
    for i, p in enumerate(parts):
        torch.save(p, out / f"consolidated.{i:02d}.pth")
    (out / "params.json").write_text(json.dumps({"dim": hidden, "multiple_of": 256, "n_heads": heads,
                                                 "n_kv_heads": kv, "n_layers": cfg["num_hidden_layers"],
                                                 "norm_eps": cfg["rms_norm_eps"], "rope_theta": cfg["rope_theta"],
                                                 "vocab_size": -1}))


@pytest.mark.parametrize("folder,n", [("Meta-Llama-3-8B-Instruct", 2), ("llama-7b", 1)])
def test_meta_pth_reads_as_hf(demo, tmp_path, folder, n):
    hf = torch_state(demo / folder)
    cfg = json.loads((demo / folder / "config.json").read_text())
    write_meta(hf, cfg, tmp_path / "7B", n)
    with open_checkpoint(tmp_path / "7B") as ckpt:
        _same(ckpt, hf)
        c = ckpt.config
        for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                  "rms_norm_eps", "rope_theta", "vocab_size"):
            assert c[k] == cfg[k], k


def test_adapters_old_and_new_layouts(demo):
    v1 = open_adapter(demo / "chinese-alpaca-lora-7b")  # old PEFT config, .bin, no modules_to_save infix
    assert v1.config["enable_lora"] is None and v1.scaling == 32 / 8 and not v1.fan_in_fan_out
    assert set(v1.saved) == {"model.embed_tokens.weight", "lm_head.weight"}
    assert len(v1.lora) == 2 * 7 and "model.layers.1.mlp.down_proj.weight" in v1.lora
    assert v1.embed_rows == v1.tokenizer_vocab == 1279  # [PAD] from added_tokens.json
    assert open_adapter(demo / "chinese-llama-lora-7b").tokenizer_vocab == 1278
    v3 = open_adapter(demo / "llama-3-chinese-8b-instruct-v2-lora")  # safetensors, keys with the infix
    assert set(v3.saved) == {"model.embed_tokens.weight", "lm_head.weight"}
    assert v3.tokenizer_vocab == 1024 == tokenizer_vocab_size(demo / "Meta-Llama-3-8B-Instruct")
    assert v3.delta_shape("model.layers.0.self_attn.k_proj.weight") == (128, 256)  # GQA: 2 kv heads of 64
    w = torch.zeros(128, 256)
    v3.add_delta(w, "model.layers.0.self_attn.k_proj.weight")
    from safetensors.torch import load_file

    raw = load_file(demo / "llama-3-chinese-8b-instruct-v2-lora" / "adapter_model.safetensors")
    p = "base_model.model.model.layers.0.self_attn.k_proj."
    assert torch.allclose(w, 2.0 * raw[p + "lora_B.weight"].float() @ raw[p + "lora_A.weight"].float())


def test_corrupt_and_incomplete_inputs(demo, tmp_path):
    d = shutil.copytree(demo / "Llama-2-7b-hf", tmp_path / "m")
    (d / "model-00001-of-00002.safetensors").write_bytes(b"\x10\x00")
    with pytest.raises(UserError, match="model-00001-of-00002.safetensors is truncated.*download it again"):
        open_checkpoint(d)
    (d / "model-00001-of-00002.safetensors").unlink()
    with pytest.raises(UserError, match="lacks model-00001-of-00002.safetensors.*download"):
        open_checkpoint(d)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no model weights"):
        open_checkpoint(empty)
    with pytest.raises(UserError, match="adapter_config.json"):
        open_adapter(empty)
