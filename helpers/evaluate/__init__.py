"""Measure models: perplexity, KL divergence of a quantized GGUF, C-Eval and CMMLU as the releases score them.

Every measurement runs on any back end: a Hugging Face folder (transformers; 16-bit, or bitsandbytes 8/4-bit),
a GGUF file (llama-cpp-python), or an already loaded model.

- :mod:`.scorers`: :func:`open_model`, the perplexity back ends;
- :mod:`.perplexity`: :func:`perplexity`, :func:`kl_divergence`, :func:`compare_quants`, :func:`plot_quant_table`;
- :mod:`.subjects`, :mod:`.examdata`, :mod:`.cells`: the benchmarks as data, read from any layout they ship in;
- :mod:`.prompts`: the releases' prompts (v1, v2, v3 scripts); :mod:`.engine`: constrained decoding on processed
  first-step scores, each subject's shared prefix evaluated once;
- :mod:`.exam`: :func:`run_exam` and its :class:`ExamOptions`; :mod:`.results`: :class:`ExamResult` (``summary.json``, ``submission.json``);
  :mod:`.paired`: :func:`compare_results`; :mod:`.published`: :func:`published_row`; :mod:`.timing`:
  :func:`estimate_time`, :func:`estimate_exam`; :mod:`.standin`: :func:`write_standin`;
- :mod:`.llama_chunks`: :class:`ChunkRunner`, a GGUF run over a text in chunks as llama-perplexity and
  llama-imatrix run it;
- :mod:`.choice`: :func:`multiple_choice` (one CSV of your own, scored the same way);
- :mod:`.eval_command`, :mod:`.exam_command`: ``python -m helpers evaluate``, ``ceval``, ``cmmlu`` (their options:
  :class:`~.eval_command.EvalOptions`; :class:`~.exam_command.ExamModels` with :class:`ExamOptions`).
"""
from __future__ import annotations

from .llama_chunks import ChunkRunner, ChunkSettings
from .choice import MC_WINDOW, multiple_choice
from .exam import ExamOptions, run_exam
from .examdata import ExamData, load_exam
from .paired import compare_results
from .perplexity import compare_quants, default_eval_text, perplexity, plot_quant_table
from .published import published_row
from .results import PREDICTIONS, ExamResult, load_result
from .scorers import PPL_WINDOW
from .standin import write_standin
from .subjects import benchmark
from .timing import estimate_exam

__all__ = ["ExamOptions", "ChunkRunner", "ChunkSettings", "MC_WINDOW", "PPL_WINDOW", "PREDICTIONS", "ExamData",
           "ExamResult", "benchmark", "compare_quants", "compare_results", "default_eval_text", "load_exam",
           "load_result", "multiple_choice", "estimate_exam", "perplexity", "plot_quant_table", "published_row",
           "run_exam", "write_standin"]
