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
