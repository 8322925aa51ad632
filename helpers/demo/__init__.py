"""Offline demo assets: tiny, deterministic stand-ins for every release, named after the repos they stand in for.

- :mod:`.build`: :func:`build_demo`, in named steps (tokenizers, originals, LoRAs, small model, patch, a merged
  release, data);
- :mod:`.weights` / :mod:`.tokenizers` / :mod:`.data`: the pieces (tiny LLaMA weights and LoRAs, trained
  tokenizers, instruction and evaluation data);
- :mod:`.assets`: :func:`use_demo_assets`, smoke mode's wiring of the hub ids to the stand-ins;
- :mod:`.cli`: ``python -m helpers demo``.
"""
from __future__ import annotations

from .assets import demo_dir, use_demo_assets
from .build import build_demo
from .data import sample_data, write_data
from .tokenizers import LLAMA3_SPECIAL, corpus, llama3_tokenizer, sp_tokenizer_folder, train_sentencepiece
from .weights import (V1, V2, V2_SMALL, V3, TinySpec, base_state_dict, hf_config, lora_state_dict,
                      write_hf_model, write_lora)

__all__ = ["LLAMA3_SPECIAL", "V1", "V2", "V2_SMALL", "V3", "TinySpec", "base_state_dict", "build_demo",
           "corpus", "demo_dir", "hf_config", "llama3_tokenizer", "lora_state_dict", "sample_data",
           "sp_tokenizer_folder", "train_sentencepiece", "use_demo_assets", "write_data", "write_hf_model",
           "write_lora"]
