"""Independent references the tests compare against (plain torch, no helpers code)."""
from __future__ import annotations

from pathlib import Path

import torch


def torch_state(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint folder, loaded whole with safetensors / torch.load."""
    from safetensors.torch import load_file

    sd: dict[str, torch.Tensor] = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        sd.update(load_file(f))
    for f in sorted(Path(folder).glob("*.bin")):
        sd.update(torch.load(f, map_location="cpu", weights_only=True))
    return sd


def reference_awq(folder: Path, results: dict):
    """llm-awq's apply_scale then apply_clip on the transformers model loaded from ``folder`` (float32)."""
    from transformers import AutoModelForCausalLM
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        for prev_name, layer_names, s in results["scale"]:
            prev = model.get_submodule(prev_name)
            if isinstance(prev, torch.nn.Linear):
                prev.weight[-s.size(0):].div_(s.view(-1, 1))
            else:
                assert isinstance(prev, LlamaRMSNorm)
                prev.weight.div_(s)
            for name in layer_names:
                model.get_submodule(name).weight.mul_(s.view(1, -1))
        for name, max_val in results["clip"]:
            layer = model.get_submodule(name)
            shape = layer.weight.shape
            w = layer.weight.data.reshape(*max_val.shape[:2], -1)
            layer.weight.data = torch.clamp(w, -max_val, max_val).reshape(shape)
    return model
