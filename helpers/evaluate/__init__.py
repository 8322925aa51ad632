"""Measure models: perplexity, KL divergence of a quantized GGUF, C-Eval-style multiple choice.

Every measurement runs on any back end: a Hugging Face folder (transformers), a GGUF file (llama-cpp-python
with ``logits_all``), or an already loaded ``llama_cpp.Llama`` / ``(model, tokenizer)`` / chat back end.

- :mod:`.scorers`: :func:`open_model`, the scoring back ends;
- :mod:`.perplexity`: :func:`perplexity`, :func:`kl_divergence`, :func:`compare_quants`, :func:`plot_quant_table`;
- :mod:`.llama_chunks`: :class:`ChunkRunner`, a GGUF run over a text in chunks as llama-perplexity and
  llama-imatrix run it;
- :mod:`.choice`: :func:`multiple_choice` (the releases' C-Eval / CMMLU prompt);
- :mod:`.cli`: ``python -m helpers evaluate``.
"""
from __future__ import annotations

from .llama_chunks import ChunkRunner, ChunkSettings, chunk_count
from .choice import (ANSWER_CUE, LETTERS, MC_HEADER, MC_WINDOW, MCReport, format_item, letter_ids, mc_prompt,
                     multiple_choice, read_mc_csv)
from .perplexity import KLReport, compare_quants, kl_divergence, perplexity, plot_quant_table, read_text, windows
from .scorers import PPL_WINDOW, HFScorer, LlamaCppScorer, open_model

__all__ = ["ANSWER_CUE", "ChunkRunner", "ChunkSettings", "chunk_count", "LETTERS", "MC_HEADER", "MC_WINDOW", "PPL_WINDOW", "HFScorer", "KLReport", "LlamaCppScorer",
           "MCReport", "compare_quants", "format_item", "kl_divergence", "letter_ids", "mc_prompt", "multiple_choice",
           "open_model", "perplexity", "plot_quant_table", "read_mc_csv", "read_text", "windows"]
