"""How long a C-Eval / CMMLU run will take, before it starts.

The work is counted in prompt tokens: with the shared prefix evaluated once per subject, a run reads each
subject's prefix once plus every question's own tokens (the scripts' way reads the whole prompt per question;
both are reported). Tokens are counted with the model's tokenizer when one is given, else estimated from the
characters. Seconds follow from a prompt-processing rate per runtime, scaled by model size: rough figures for
a 7B model (see :data:`TOKENS_PER_SECOND_7B`), good to a factor of about two; the progress bar's ETA is the
measured one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..util import UserError, human_seconds
from .exam import ExamOptions
from .examdata import ExamData
from .prompts import PromptStyle

# prompt tokens per second of a 7B model, by (runtime, weights). T4: llama.cpp's CUDA prompt processing of
# a 4-bit 7B (~1.2k tok/s), transformers fp16 prefill at ~40% of the T4's 65 TFLOPS, LLM.int8 several times
# slower than fp16, NF4 dequantizing on the fly; cpu: Colab's two vCPUs (llama.cpp 4-bit; fp32 transformers).
TOKENS_PER_SECOND_7B = {
    ("t4", "gguf"): 1200.0,
    ("t4", "f16"): 1800.0,
    ("t4", "8bit"): 350.0,
    ("t4", "4bit"): 900.0,
    ("cpu", "gguf"): 10.0,
    ("cpu", "f16"): 3.0,
}
SECONDS_PER_QUESTION = {"t4": 0.02, "cpu": 0.05}  # per-call overhead (tokenizing, launching, reading logits)
TOKENS_PER_CHAR = 0.8  # Chinese text, Chinese-LLaMA/Alpaca and Llama-3 vocabularies (about 0.6-0.9)


@dataclass(frozen=True)
class TimeEstimate:
    """``seconds`` for ``questions`` questions reading ``tokens`` prompt tokens (``naive_tokens`` and
    ``naive_seconds``: re-reading the whole prompt per question, as the scripts do) on ``runtime``/``weights``."""

    questions: int
    tokens: int
    naive_tokens: int
    seconds: float
    naive_seconds: float
    runtime: str
    weights: str

    def text(self) -> str:
        """One line for a notebook."""
        return (f"{self.questions} questions, {self.tokens:,} prompt tokens: about {human_seconds(self.seconds)} on "
                f"{self.runtime} ({self.weights}); re-reading each whole prompt would take "
                f"{human_seconds(self.naive_seconds)}")


def count_tokens(exam: ExamData, prompts: PromptStyle, count: Callable[[str], int] | None = None) -> tuple[int, int]:
    """``(tokens with the prefix read once per subject, tokens re-reading every whole prompt)``.

    ``count``: the model's token counter (default: characters x :data:`TOKENS_PER_CHAR`).
    """
    count = count or (lambda text: max(1, round(len(text) * TOKENS_PER_CHAR)))
    shared = naive = 0
    for sd in exam.subjects:
        text = prompts.prefix(sd.subject, sd.dev)
        prefix = count(text) if text else 0
        questions = [count(prompts.question(it, shots=bool(sd.dev))) for it in sd.items]
        shared += prefix + sum(questions)
        naive += prefix * len(questions) + sum(questions)
    return shared, naive


def estimate_time(exam: ExamData, prompts: PromptStyle, *, params_b: float = 7.0, runtime: str = "t4",
                  weights: str = "gguf", count: Callable[[str], int] | None = None) -> TimeEstimate:
    """Estimate a run before it starts.

    Args:
        exam: the data (:func:`~.examdata.load_exam`).
        prompts: the prompt style the run will use.
        params_b: model size in billions of parameters (1.3, 7, 8, 13...).
        runtime: ``t4`` (Colab's free GPU) or ``cpu``.
        weights: ``gguf`` (llama.cpp, 4-5 bit), ``f16``, ``8bit`` or ``4bit`` (transformers).
        count: the model's token counter, when it is loaded.
    """
    rate = TOKENS_PER_SECOND_7B.get((runtime, weights))
    if rate is None:
        known = ", ".join(f"{r}/{w}" for r, w in TOKENS_PER_SECOND_7B)
        raise UserError(f"no speed figure for {runtime}/{weights}; known: {known}")
    if params_b <= 0:
        raise UserError(f"params_b must be positive, not {params_b}")
    rate *= 7.0 / params_b
    shared, naive = count_tokens(exam, prompts, count)
    overhead = SECONDS_PER_QUESTION[runtime] * exam.n_questions
    return TimeEstimate(questions=exam.n_questions, tokens=shared, naive_tokens=naive,
                        seconds=shared / rate + overhead, naive_seconds=naive / rate + overhead,
                        runtime=runtime, weights=weights)


def estimate_exam(model: Any, options: ExamOptions = ExamOptions(), *, runtime: str = "t4", params_b: float | None = None,
                  exam: ExamData | None = None) -> TimeEstimate:
    """:func:`estimate_time` for ``run_exam(model, options)`` (:func:`~.exam.run_exam`), before loading the model:
    the data is read (downloaded if needed: a few MB), the prompt style and size come from the catalog (size 7B
    and v2 prompts when the model is not a catalog release), tokens are estimated from characters.

    Args:
        model: as for ``run_exam`` (a ``.gguf`` file or a catalog GGUF repo counts as llama.cpp weights).
        options: :class:`~.exam.ExamOptions`.
        runtime: ``t4`` or ``cpu``.
        params_b: model size in billions (default: the catalog's, else 7).
        exam: the data already read (:func:`~.examdata.load_exam`); then the options' ``data``, ``split``,
            ``shots`` and ``subjects`` are not used.
    """
    from ..catalog import find
    from .examdata import load_exam
    from .prompts import PromptStyle, style_for
    from .published import release_name
    from .subjects import benchmark

    o = options
    spec = benchmark(o.benchmark)
    if exam is None:
        exam = load_exam(spec, o.data, split=o.split, subjects=o.subjects, shots=o.shots, need_answers=False)
    entry = find(str(model)) or find(release_name(model))
    style = o.style if o.style != "auto" else style_for(entry.template if entry else None,
                                                        llama3_vocab=bool(entry and entry.family == "llama3"))
    gguf = str(model).lower().endswith(".gguf") or bool(entry and entry.kind == "gguf")
    weights = "gguf" if gguf else (o.quantization or "f16")
    size = params_b or (float(entry.size.rstrip("B")) if entry else 7.0)
    return estimate_time(exam, PromptStyle(style, spec, o.with_prompt), params_b=size, runtime=runtime,
                         weights=weights)
