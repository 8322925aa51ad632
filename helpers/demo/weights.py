"""Tiny LLaMA-shaped weights in the released layouts: base models, LoRA adapters, their configs.

All widths are multiples of 256 so llama.cpp's K-quants apply.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from ..checkpoint import LORA_TARGETS
from ..util import write_json



@dataclass(frozen=True)
class TinySpec:
    """Shape of a tiny LLaMA-family model (widths are multiples of 256 for K-quants)."""

    hidden: int = 256
    intermediate: int = 768  # what Meta's formula gives for dim 256 with multiple_of 256
    layers: int = 2
    heads: int = 4
    kv_heads: int = 4
    max_positions: int = 4096
    rms_eps: float = 1e-5
    rope_theta: float = 10000.0

    def __post_init__(self) -> None:
        if self.hidden % self.heads or self.heads % self.kv_heads:
            raise ValueError("hidden must divide by heads and heads by kv_heads")


V1 = TinySpec(max_positions=2048, rms_eps=1e-6)
V2 = TinySpec()
V2_SMALL = TinySpec(layers=1)
V3 = TinySpec(kv_heads=2, max_positions=8192, rope_theta=500000.0)


def generator(seed: int):
    """A seeded torch generator (the demo is the same bytes on every run)."""
    import torch

    return torch.Generator().manual_seed(seed)


def randn(shape, std: float, g):
    """Normal noise of ``shape`` and standard deviation ``std`` from generator ``g``."""
    import torch

    return torch.randn(*shape, generator=g) * std


def base_state_dict(spec: TinySpec, vocab: int, *, seed: int):
    """A random LLaMA state dict in HF names; layers are scaled so every block matters."""
    import torch

    g = generator(seed)
    h, f, hd = spec.hidden, spec.intermediate, spec.hidden // spec.heads
    sd: OrderedDict[str, torch.Tensor] = OrderedDict()
    sd["model.embed_tokens.weight"] = randn((vocab, h), 1.0, g)
    for i in range(spec.layers):
        p = f"model.layers.{i}."
        sd[p + "self_attn.q_proj.weight"] = randn((h, h), h ** -0.5, g)
        sd[p + "self_attn.k_proj.weight"] = randn((spec.kv_heads * hd, h), h ** -0.5, g)
        sd[p + "self_attn.v_proj.weight"] = randn((spec.kv_heads * hd, h), h ** -0.5, g)
        sd[p + "self_attn.o_proj.weight"] = randn((h, h), h ** -0.5, g)
        sd[p + "mlp.gate_proj.weight"] = randn((f, h), h ** -0.5, g)
        sd[p + "mlp.up_proj.weight"] = randn((f, h), h ** -0.5, g)
        sd[p + "mlp.down_proj.weight"] = randn((h, f), f ** -0.5, g)
        sd[p + "input_layernorm.weight"] = 1.0 + randn((h,), 0.1, g)
        sd[p + "post_attention_layernorm.weight"] = 1.0 + randn((h,), 0.1, g)
    sd["model.norm.weight"] = 1.0 + randn((h,), 0.1, g)
    sd["lm_head.weight"] = randn((vocab, h), 3 * h ** -0.5, g)
    return sd


def hf_config(spec: TinySpec, vocab: int, *, bos: int = 1, eos: int | list[int] = 2, dtype: str = "float16") -> dict:
    """A ``LlamaForCausalLM`` config.json for ``spec``."""
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "hidden_size": spec.hidden, "intermediate_size": spec.intermediate, "num_hidden_layers": spec.layers,
        "num_attention_heads": spec.heads, "num_key_value_heads": spec.kv_heads,
        "max_position_embeddings": spec.max_positions, "rms_norm_eps": spec.rms_eps, "rope_theta": spec.rope_theta,
        "rope_scaling": None, "vocab_size": vocab, "bos_token_id": bos, "eos_token_id": eos, "pad_token_id": None,
        "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False, "initializer_range": 0.02,
        "pretraining_tp": 1, "use_cache": True, "torch_dtype": dtype,
    }


def _split_two(sd):
    """Split a state dict into two shards the way sharded releases look (layer boundaries)."""
    first, second = OrderedDict(), OrderedDict()
    for k, v in sd.items():
        (first if (k.startswith("model.embed_tokens") or k.startswith("model.layers.0.")) else second)[k] = v
    return [first, second]


def write_hf_model(d: Path, sd, config: dict, *, fmt: str, dtype: str = "float16", shards: list | None = None,
                   single: bool = False) -> None:
    """Write an HF checkpoint: ``safetensors`` or legacy ``bin`` shards plus the index and configs.

    ``single`` writes one ``model.safetensors`` / ``pytorch_model.bin`` without an index.
    """
    import torch
    from safetensors.torch import save_file

    tdtype = getattr(torch, dtype)
    shards = [sd] if single else (shards if shards is not None else _split_two(sd))
    n = len(shards)
    weight_map, total = {}, 0
    for i, shard in enumerate(shards, 1):
        shard = OrderedDict((k, v.to(tdtype).contiguous()) for k, v in shard.items())
        name = (f"model-{i:05d}-of-{n:05d}.safetensors" if fmt == "safetensors" else f"pytorch_model-{i:05d}-of-{n:05d}.bin")
        if single:
            name = "model.safetensors" if fmt == "safetensors" else "pytorch_model.bin"
        if fmt == "safetensors":
            save_file(shard, str(d / name), metadata={"format": "pt"})
        else:
            torch.save(shard, d / name)
        for k, v in shard.items():
            weight_map[k] = name
            total += v.numel() * v.element_size()
    index = "model.safetensors.index.json" if fmt == "safetensors" else "pytorch_model.bin.index.json"
    if not single:
        write_json(d / index, {"metadata": {"total_size": total}, "weight_map": weight_map})
    write_json(d / "config.json", config)
    gen = {"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"], "pad_token_id": 0 if fmt == "bin" else None}
    write_json(d / "generation_config.json", {k: v for k, v in gen.items() if v is not None})


def lora_state_dict(base_sd, spec: TinySpec, *, r: int, vocab: int | None, seed: int, infix: bool = False):
    """A PEFT LoRA state dict on the 7 projections; with ``vocab``, full embed/lm_head as modules_to_save."""
    g = generator(seed)
    sd = OrderedDict()
    for i in range(spec.layers):
        for t in LORA_TARGETS:
            mod = "self_attn" if t.endswith(("q_proj", "k_proj", "v_proj", "o_proj")) else "mlp"
            out_f, in_f = base_sd[f"model.layers.{i}.{mod}.{t}.weight"].shape
            p = f"base_model.model.model.layers.{i}.{mod}.{t}."
            sd[p + "lora_A.weight"] = randn((r, in_f), 0.05, g)
            sd[p + "lora_B.weight"] = randn((out_f, r), 0.05, g)
    if vocab is not None:
        mid = ".modules_to_save.default" if infix else ""
        for key, std in (("model.embed_tokens", 1.0), ("lm_head", 3 * spec.hidden ** -0.5)):
            old = base_sd[key + ".weight"]
            new = randn((vocab, old.shape[1]), std, g)
            n = min(vocab, old.shape[0])
            new[:n] = old[:n] + randn((n, old.shape[1]), std * 0.1, g)
            sd[f"base_model.model.{key}{mid}.weight"] = new
    return sd


def write_lora(d: Path, sd, *, r: int, alpha: float, base_name: str, old_peft: bool, fmt: str,
               modules_to_save: bool = True) -> None:
    """Write ``adapter_config.json`` + ``adapter_model.{bin,safetensors}`` as the releases did."""
    import torch
    from safetensors.torch import save_file

    cfg = {"base_model_name_or_path": base_name, "bias": "none", "fan_in_fan_out": False, "inference_mode": True,
           "lora_alpha": alpha, "lora_dropout": 0.05, "modules_to_save": ["embed_tokens", "lm_head"] if modules_to_save else None,
           "peft_type": "LORA", "r": r, "target_modules": list(LORA_TARGETS), "task_type": "CAUSAL_LM"}
    if old_peft:  # fields of the 2023 PEFT that newer versions do not know
        cfg.update(enable_lora=None, merge_weights=False)
    else:
        cfg.update(init_lora_weights=True, layers_pattern=None, layers_to_transform=None, revision=None, use_rslora=False)
    write_json(d / "adapter_config.json", dict(sorted(cfg.items())))
    sd = OrderedDict((k, v.half().contiguous()) for k, v in sd.items())
    if fmt == "safetensors":
        save_file(sd, str(d / "adapter_model.safetensors"), metadata={"format": "pt"})
    else:
        torch.save(sd, d / "adapter_model.bin")
