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
from typing import Any, Iterable, Iterator

from ..util import UserError, progress
from .engine import ExamScorer, HFExamScorer, LlamaCppExamScorer, letter_scores, predict
from .examdata import ExamData, load_exam
from .prompts import STYLES, PromptStyle, style_for
from .results import Answer, ExamResult
from .subjects import benchmark


def _is_llama(obj: Any) -> bool:
    return type(obj).__name__ == "Llama" and type(obj).__module__.startswith("llama_cpp")


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
    if _is_llama(model):
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


def run_exam(model: Any, bench: str = "ceval", *, data: Any = None, split: str | None = None, shots: int = 5,
             with_prompt: bool = False, style: str = "auto", subjects: Iterable[str] | None = None,
             backend: str = "auto", quantization: str | None = None, dtype: Any = None, n_ctx: int | None = None,
             batch_size: int | None = None, gguf_quant: str = "q4_k", submission_only: bool = False,
             show_progress: bool = True) -> ExamResult:
    """Run a benchmark on ``model`` as the releases did and return the :class:`~.results.ExamResult`.

    Args:
        model: an HF folder, a ``.gguf`` file, a hub id or a catalog name (or a loaded model, see
            :func:`open_scorer`).
        bench: ``ceval`` or ``cmmlu``.
        data: the data: a folder (official CSV layout, the hub's parquet layout, or an archive of them) or a
            hub data set id; default: the benchmark's hub data set (``ceval/ceval-exam``, ``haonan-li/cmmlu``).
        split: ``val`` or ``test`` (default: C-Eval ``val``, CMMLU ``test``, the splits the releases report).
        shots: solved dev examples before each question (the releases report 0 and 5).
        with_prompt: wrap the prompts in the instruction template (the releases did for Alpaca models).
        style: ``v1``, ``v2``, ``v3`` (which generation's scripts to follow) or ``auto`` (from the model).
        subjects: subject keys to run (default: all).
        backend: ``auto``, ``transformers`` or ``llama.cpp``.
        quantization: ``None``, ``"8bit"`` or ``"4bit"`` (transformers, bitsandbytes, GPU).
        dtype: transformers weights dtype (default: float16 on GPU as the scripts, float32 on CPU).
        n_ctx: llama.cpp context (default: the model's, at most 4096).
        batch_size: questions per forward pass on transformers (default 8 on GPU, 1 on CPU).
        gguf_quant: which GGUF of a catalog GGUF repo.
        submission_only: the split has no answers (C-Eval test): only predictions, no accuracy.
        show_progress: show a progress bar.

    Raises:
        UserError: bad data (see :func:`~.examdata.load_exam`), a model that cannot be loaded, a prompt that
            does not fit llama.cpp's context.
    """
    if style not in ("auto", *STYLES):
        raise UserError(f"unknown prompt style {style!r}; use auto, {', '.join(STYLES)}")
    spec = benchmark(bench)
    exam = load_exam(spec, data, split=split, subjects=subjects, shots=shots, need_answers=not submission_only)
    with open_scorer(model, backend=backend, quantization=quantization, dtype=dtype, n_ctx=n_ctx,
                     batch_size=batch_size, gguf_quant=gguf_quant) as (scorer, template, name):
        chosen = style if style != "auto" else style_for(template, llama3_vocab=_llama3_vocab(scorer))
        return score_exam(scorer, exam, PromptStyle(chosen, spec, with_prompt), model=name,
                          show_progress=show_progress)
