"""Run C-Eval or CMMLU on a model the way the releases did, and estimate how long it takes.

:func:`run_exam` reads the data (:mod:`.examdata`), loads the model through :func:`helpers.chat.load_backend`
(an HF folder in 16-bit or bitsandbytes 8/4-bit, a GGUF through llama.cpp, a hub id or a catalog name), builds
each prompt in the style of the model's generation (:mod:`.prompts`), scores it by constrained decoding
(:mod:`.engine`) with a progress bar, and returns an :class:`~.results.ExamResult`.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..util import UserError, progress
from ..chat.options import LoadOptions, ServeOptions
from ..util.params import param, param_like
from .engine import ExamScorer, HFExamScorer, LlamaCppExamScorer, letter_scores, predict
from .examdata import ExamData, load_exam
from .prompts import STYLES, PromptStyle, style_for
from .results import Answer, ExamResult
from .scorers import is_llama
from .subjects import benchmark


def _subject_keys(text: str) -> tuple[str, ...] | None:
    return tuple(s.strip() for s in text.split(",") if s.strip()) or None


@dataclass(frozen=True, kw_only=True)
class ExamOptions:
    """How :func:`run_exam` runs a benchmark: its data, the model's loading, the prompts (the flags of
    ``python -m helpers ceval`` / ``cmmlu``, which preset ``benchmark``)."""

    benchmark: str = param("ceval", "ceval or cmmlu", cli=False)
    data: str | Path | None = param(None, "folder of the data (official CSV layout, the hub's parquet layout or an "
                                    "archive of it) or a hub data set id (default: ceval/ceval-exam, haonan-li/cmmlu)")
    split: str | None = param(None, "default: val for C-Eval, test for CMMLU (the splits the releases report)",
                              choices=("val", "test"))
    shots: int = param(5, "solved dev examples per prompt (the releases: 0, 5)", parse=int)
    with_prompt: bool = param(False, "wrap prompts in the instruction template (the releases did for Alpaca / "
                              "Instruct models)")
    style: str = param("auto", "whose scripts to follow: v1, v2, v3 (auto: from the model)", choices=("auto", *STYLES))
    backend: str = param_like(LoadOptions, "backend", "auto")
    quantization: str | None = param(None, "bitsandbytes quantization (transformers, GPU)", flag="--quant",
                                     choices=("8bit", "4bit"))
    dtype: str | None = param(None, "transformers weights dtype (default: float16 on GPU as the scripts, float32 "
                              "on CPU)")
    gguf_quant: str = param_like(ServeOptions, "gguf_quant", "q4_k")
    subjects: tuple[str, ...] | None = param(None, "comma-separated subject keys (default: all)",
                                             parse=_subject_keys, text=",".join)
    n_ctx: int | None = param(None, "llama.cpp context (default: the model's, at most 4096)", parse=int)
    batch_size: int | None = param(None, "questions per forward pass on transformers (default 8 on GPU, 1 on CPU)",
                                   parse=int)
    submission_only: bool = param(False, "a split without answers (C-Eval test): write only submission.json")
    show_progress: bool = param(True, "show a progress bar", cli=False)

    def __post_init__(self) -> None:
        benchmark(self.benchmark)
        if self.style not in ("auto", *STYLES):
            raise UserError(f"unknown prompt style {self.style!r}; use auto, {', '.join(STYLES)}")
        if self.subjects is not None:
            object.__setattr__(self, "subjects", tuple(self.subjects) or None)


def _llama3_vocab(scorer: ExamScorer) -> bool:
    """Whether the vocabulary is Llama-3's (``<|eot_id|>`` is one token)."""
    return len(scorer.prompt_ids("<|eot_id|>")) <= 2  # (BOS +) one special token; sentencepiece splits it up


@contextlib.contextmanager
def open_scorer(model: Any, *, backend: str = "auto", quantization: str | None = None, dtype: Any = None,
                n_ctx: int | None = None, batch_size: int | None = None,
                gguf_quant: str = "q4_k") -> Iterator[tuple[ExamScorer, str | None, str]]:
    """``(scorer, chat template or None, model name)`` for ``model``; a model loaded here is freed on exit.

    ``model``: an :class:`~.engine.ExamScorer`, a ``(model, tokenizer)`` pair, a ``llama_cpp.Llama``, or what
    :func:`helpers.chat.load_backend` loads (HF folder, ``.gguf``, hub id, catalog name). 16-bit weights are
    float16 on a GPU, as in the scripts (float32 on CPU unless ``dtype`` says otherwise).
    """
    if isinstance(model, ExamScorer):
        yield model, None, type(model).__name__
        return
    if isinstance(model, tuple) and len(model) == 2:
        yield HFExamScorer(*model, batch_size=batch_size), None, type(model[0]).__name__
        return
    if is_llama(model):
        yield LlamaCppExamScorer(model), None, str(getattr(model, "model_path", "llama.cpp"))
        return
    import torch

    from ..chat import load_backend

    if dtype is None and torch.cuda.is_available():
        dtype = "float16"
    loaded = load_backend(model, backend=backend, quantization=quantization, dtype=dtype, n_ctx=n_ctx,
                          gguf_quant=gguf_quant)
    try:
        if getattr(loaded, "llm", None) is not None:
            yield LlamaCppExamScorer(loaded.llm), loaded.template, str(loaded.path)
        else:
            yield HFExamScorer(loaded.model, loaded.tokenizer, batch_size=batch_size), loaded.template, str(loaded.path)
    finally:
        loaded.close()


def score_exam(scorer: ExamScorer, exam: ExamData, prompts: PromptStyle, *, model: str = "", reuse: bool = True,
               show_progress: bool = True) -> ExamResult:
    """Score every question of ``exam`` with ``scorer`` (the engine of :func:`run_exam`).

    Raises:
        UserError: the model gives non-finite logits for a letter.
    """
    ids = scorer.letter_ids()
    bar = progress(None, total=exam.n_questions, desc=f"{exam.bench.title} {exam.split}", unit="q",
                   disable=None if show_progress else True)
    answers: list[Answer] = []
    start = time.perf_counter()
    try:
        for sd in exam.subjects:
            bar.set_postfix_str(sd.subject.key)
            prefix = prompts.prefix(sd.subject, sd.dev)
            tokens = [scorer.prompt_ids(prefix + prompts.question(it, shots=bool(sd.dev))) for it in sd.items]
            raw = scorer.letter_logits(tokens, ids.all, reuse=reuse, done=bar.update)
            for item, row, prompt in zip(sd.items, raw, tokens):
                scores = letter_scores(row, ids, prompt)
                if not all(math.isfinite(s) for s in scores):
                    raise UserError(f"{sd.subject.key} row {item.index}: the model gives non-finite logits "
                                    f"for the letters ({scores}); the weights are damaged or overflow in this dtype")
                answers.append(Answer(sd.subject.key, item.index, item.answer, predict(scores), tuple(scores)))
    finally:
        bar.close()
    return ExamResult(benchmark=exam.bench.name, split=exam.split, shots=len(exam.subjects[0].dev),
                      with_prompt=prompts.with_prompt, style=prompts.style, model=model, backend=scorer.backend,
                      answers=tuple(answers), seconds=time.perf_counter() - start)


def run_exam(model: Any, options: ExamOptions = ExamOptions()) -> ExamResult:
    """Run a benchmark on ``model`` as the releases did and return the :class:`~.results.ExamResult`.

    Args:
        model: an HF folder, a ``.gguf`` file, a hub id or a catalog name (or a loaded model, see
            :func:`open_scorer`).
        options: the benchmark, its data (default: the benchmark's hub data set, ``ceval/ceval-exam``,
            ``haonan-li/cmmlu``) and split, the shots and prompts, how the model loads (:class:`ExamOptions`).

    Raises:
        UserError: bad data (see :func:`~.examdata.load_exam`), a model that cannot be loaded, a prompt that
            does not fit llama.cpp's context.
    """
    o = options
    spec = benchmark(o.benchmark)
    exam = load_exam(spec, o.data, split=o.split, subjects=o.subjects, shots=o.shots,
                     need_answers=not o.submission_only)
    with open_scorer(model, backend=o.backend, quantization=o.quantization, dtype=o.dtype, n_ctx=o.n_ctx,
                     batch_size=o.batch_size, gguf_quant=o.gguf_quant) as (scorer, template, name):
        chosen = o.style if o.style != "auto" else style_for(template, llama3_vocab=_llama3_vocab(scorer))
        return score_exam(scorer, exam, PromptStyle(chosen, spec, o.with_prompt), model=name,
                          show_progress=o.show_progress)
