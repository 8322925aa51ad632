"""Stand-ins for llm-awq search results: the format the Chinese-LLaMA-Alpaca-2 authors publish in
``hfl/chinese-llama-alpaca-2-awq`` (``torch.save`` of ``{"scale": [...], "clip": [...]}``), made for the tiny models.

:func:`standin_results` makes results for a model's state dict (``tests/test_awq.py``); :func:`stage_awq_repo` lays
out the twin's ``hfl/chinese-llama-alpaca-2-awq``: a ``<model>-w4-g128.pt`` for every model the authors published
results for, made for the merge that model's stand-ins make (its LoRA stand-in into its base stand-in, or the full
model's stand-in), each with its own random values.
"""
from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

import torch

GROUP = 128  # the published results' group size (-w4-g128)


def standin_results(sd: dict[str, torch.Tensor], *, clip: bool = True, seed: int = 0) -> dict:
    """Search results in llm-awq's format for the model ``sd``: its four Llama scale groups per layer (v -> o only
    when the shapes match, as llm-awq's ``auto_scale_block``), random positive float16 scales, and clipping ranges
    [rows, groups, 1] that cut the largest values of v/o/gate/up/down (as ``auto_clip_block``: not q/k)."""
    g = torch.Generator().manual_seed(seed)
    layers = sorted({int(n.split(".")[2]) for n in sd if n.startswith("model.layers.")})
    scale, clips = [], []

    def scales(n: int) -> torch.Tensor:
        return torch.exp(0.5 * torch.randn(n, generator=g)).half()

    for i in layers:
        p = f"model.layers.{i}."
        hidden = sd[p + "input_layernorm.weight"].shape[0]
        scale.append((p + "input_layernorm", tuple(p + f"self_attn.{x}_proj" for x in "qkv"), scales(hidden)))
        v, o = sd[p + "self_attn.v_proj.weight"], sd[p + "self_attn.o_proj.weight"]
        if v.shape == o.shape:
            scale.append((p + "self_attn.v_proj", (p + "self_attn.o_proj",), scales(v.shape[0])))
        scale.append((p + "post_attention_layernorm", (p + "mlp.gate_proj", p + "mlp.up_proj"), scales(hidden)))
        up = sd[p + "mlp.up_proj.weight"]
        scale.append((p + "mlp.up_proj", (p + "mlp.down_proj",), scales(up.shape[0])))
        for name in ("self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):
            w = sd[p + name + ".weight"]
            amax = w.reshape(w.shape[0], -1, GROUP).abs().amax(dim=-1, keepdim=True)
            clips.append((p + name, (0.7 * amax).half()))
    return {"scale": scale, "clip": clips if clip else []}


def model_seed(name: str) -> int:
    """Each published model's stand-in its own values (a wrong file for a release shows)."""
    return zlib.crc32(name.encode())


def _digest(files) -> str:
    """One SHA256 of ``files``' bytes (stand-ins copied under several ids are merged once)."""
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(f.read_bytes())
    return h.hexdigest()


def _merged_state(model: str, repos: dict[str, Path], work: Path, cache: dict) -> dict[str, torch.Tensor] | None:
    """The float32 state of what the stand-ins make for ``model``: its LoRA release merged into its base (the
    stand-ins the twin serves under their ids), else the full model's stand-in; None when the catalog has neither."""
    from reference import torch_state

    from helpers import catalog
    from helpers.merge import MergeOptions, Recipe, merge

    lora = catalog.find(f"{model}-lora")
    if lora is not None:
        base, adapter = repos[catalog.get(lora.base[0]).hub_id], repos[lora.hub_id]
        key = (_digest(adapter.glob("adapter_model.*")), _digest(base.glob("*.safetensors")))
        if key not in cache:
            out = work / f"awq-merged-{len(cache)}"
            merge(Recipe(base, [adapter]), out, MergeOptions(outtype="f32", progress=False, write_sha256=False))
            cache[key] = torch_state(out)
        return cache[key]
    full = catalog.find(model)
    return {k: v.float() for k, v in torch_state(repos[full.hub_id]).items()} if full is not None else None


def stage_awq_repo(folder: Path, repos: dict[str, Path], work: Path) -> Path:
    """``folder`` filled as the twin's ``hfl/chinese-llama-alpaca-2-awq``: ``<model>-w4-g128.pt`` for every model of
    :data:`helpers.merge.awq.AWQ_PUBLISHED` (``repos``: the twin's other repos, ``{hub id: folder}``)."""
    from helpers.merge.awq import AWQ_PUBLISHED, published_awq

    folder.mkdir(parents=True, exist_ok=True)
    cache: dict = {}
    for model in sorted(AWQ_PUBLISHED):
        sd = _merged_state(model, repos, work, cache)
        if sd is not None:
            torch.save(standin_results(sd, seed=model_seed(model)), folder / published_awq(model).split("/")[-1])
    return folder
