"""Which dtype a GPU gets: bf16 only where it is native (compute capability 8.0+), fp16 on a T4."""
from __future__ import annotations

import pytest
import torch

from helpers.device import bf16_native, torch_dtype


@pytest.fixture
def gpu(monkeypatch):
    """Pretend a CUDA GPU of the given compute capability is present (bf16 'supported', as torch says on a T4)."""
    def make(capability: tuple[int, int]) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: capability)
    return make


def test_t4_gets_fp16_not_emulated_bf16(gpu):
    gpu((7, 5))  # Colab's T4
    assert not bf16_native()
    assert torch_dtype(None, on_gpu=True) == torch.float16


def test_ampere_and_later_get_bf16(gpu):
    gpu((8, 0))
    assert bf16_native()
    assert torch_dtype("auto", on_gpu=True) == torch.bfloat16


def test_cpu_and_explicit_choices():
    assert torch_dtype(None, on_gpu=False) == torch.float32
    assert torch_dtype("fp16", on_gpu=False) == torch.float16
    assert torch_dtype(torch.bfloat16, on_gpu=True) == torch.bfloat16


def test_finetune_precision_on_a_t4_is_fp16(gpu, tmp_path):
    from helpers.train.config import FinetuneConfig
    from helpers.train.setup import pick_precision

    data = tmp_path / "d.json"
    data.write_text("[]", encoding="utf-8")
    config = FinetuneConfig(base="b", data=str(data), out=str(tmp_path / "o"))
    gpu((7, 5))
    assert pick_precision(config, cuda=True) == "fp16"
    gpu((9, 0))
    assert pick_precision(config, cuda=True) == "bf16"
