"""Measure models: perplexity, KL divergence of a quantized GGUF, C-Eval and CMMLU as the releases score them.

Every measurement runs on any back end: a Hugging Face folder (transformers; 16-bit, or bitsandbytes 8/4-bit),
a GGUF file (llama-cpp-python), or an already loaded model.

- :mod:`.scorers`: :func:`open_model`, the perplexity back ends;
- :mod:`.perplexity`: :func:`perplexity`, :func:`kl_divergence`, :func:`compare_quants`, :func:`plot_quant_table`;
- :mod:`.subjects`, :mod:`.examdata`, :mod:`.cells`: the benchmarks as data, read from any layout they ship in;
- :mod:`.prompts`: the releases' prompts (v1, v2, v3 scripts); :mod:`.engine`: constrained decoding on processed
  first-step scores, each subject's shared prefix evaluated once;
- :mod:`.exam`: :func:`run_exam`; :mod:`.results`: :class:`ExamResult` (``summary.json``, ``submission.json``);
  :mod:`.paired`: :func:`compare_results`; :mod:`.published`: :func:`published_row`; :mod:`.timing`:
  :func:`estimate_time`, :func:`estimate_exam`; :mod:`.standin`: :func:`write_standin`;
- :mod:`.llama_chunks`: :class:`ChunkRunner`, a GGUF run over a text in chunks as llama-perplexity and
  llama-imatrix run it;
- :mod:`.choice`: :func:`multiple_choice` (one CSV of your own, scored the same way);
- :mod:`.cli`, :mod:`.exam_cli`: ``python -m helpers evaluate``, ``ceval``, ``cmmlu``.
"""
from __future__ import annotations

from .llama_chunks import ChunkRunner, ChunkSettings, chunk_count
from .choice import (ANSWER_CUE, LETTERS, MC_HEADER, MC_WINDOW, MCReport, format_item, letter_ids, mc_prompt,
                     multiple_choice, read_mc_csv)
from .engine import REPETITION_PENALTY, TEMPERATURE, ExamScorer, HFExamScorer, LetterIds, LlamaCppExamScorer
from .exam import open_scorer, run_exam, score_exam
from .examdata import ExamData, load_exam
from .paired import PairedComparison, compare_results
from .perplexity import KLReport, compare_quants, default_eval_text, kl_divergence, perplexity, plot_quant_table, read_text, windows
from .prompts import PromptStyle, style_for
from .published import PublishedRow, published_row, release_name
from .results import PREDICTIONS, Answer, ExamResult, load_result
from .scorers import PPL_WINDOW, HFScorer, LlamaCppScorer, open_model
from .standin import write_standin
from .subjects import BENCHMARKS, Benchmark, benchmark
from .timing import TimeEstimate, estimate_time, estimate_exam

__all__ = ["ANSWER_CUE", "BENCHMARKS", "ChunkRunner", "ChunkSettings", "chunk_count", "LETTERS", "MC_HEADER", "MC_WINDOW", "PPL_WINDOW", "PREDICTIONS", "REPETITION_PENALTY",
           "TEMPERATURE", "Answer", "Benchmark", "ExamData", "ExamResult", "ExamScorer", "HFExamScorer", "HFScorer",
           "KLReport", "LetterIds", "LlamaCppExamScorer", "LlamaCppScorer", "MCReport", "PairedComparison",
           "PromptStyle", "PublishedRow", "TimeEstimate", "benchmark", "compare_quants", "compare_results", "default_eval_text",
           "estimate_time", "format_item", "kl_divergence", "letter_ids", "load_exam", "load_result", "mc_prompt",
           "multiple_choice", "open_model", "open_scorer", "estimate_exam", "perplexity", "plot_quant_table",
           "published_row", "read_mc_csv", "read_text", "release_name", "run_exam", "score_exam", "style_for",
           "windows", "write_standin"]
