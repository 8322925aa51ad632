"""CFG sampling (classifier-free guidance, added by Chinese-LLaMA-Alpaca-2 v2.0): each next token is chosen from the
prompt's log-probabilities pushed away from those of a *negative prompt*::

    guided = uncond + scale * (cond - uncond)      (cond, uncond: log-softmaxed logits)

A scale of 1 is plain decoding; above 1 it steers away from the negative prompt. The negative prompt is built as the
authors' ``inference_hf.py`` and ``gradio_demo.py`` build it: in a chat, the same template and turns with the negative
prompt in the place of the system prompt (:func:`negative_chat_text`); for text that is already templated
(:meth:`Backend.generate`) or a template without a system prompt, the negative prompt as given. Without one, the
unconditional branch starts from the prompt's last token (transformers' default, which the authors' scripts keep).

transformers guides itself (``generate(guidance_scale=..., negative_prompt_ids=...)``,
:meth:`.hf.TransformersBackend.generate_kwargs`). For llama.cpp, :class:`NegativeContext` runs the negative prompt in a
second context over the same loaded weights (it adds a KV cache, not a second copy of the model) and
:class:`LlamaCppGuidance` guides the scores through llama-cpp-python's logits-processor hook, before the repetition
penalty and the samplers, as transformers does.
"""
from __future__ import annotations

from typing import Any, Sequence

from ..tokens import build_prompt, get_template
from ..util import UserError

OFF = 1.0  # the guidance scale that is plain decoding


def check_scale(value: Any) -> float:
    """The guidance scale as a float; 1 is off, above 1 steers away from the negative prompt.

    Raises:
        UserError: not a number, or negative.
    """
    try:
        scale = float(value)
    except (TypeError, ValueError):
        raise UserError(f"guidance_scale must be a number (1: off, e.g. 1.5), not {value!r}") from None
    if not scale >= 0:
        raise UserError(f"guidance_scale must be 0 or more (1: off; above 1 steers away from the negative prompt), "
                        f"not {value!r}")
    return scale


def negative_chat_text(template: str, user: str, history: Sequence[tuple[str, str]], negative: str) -> str:
    """The negative prompt of a chat turn: the same template and turns with ``negative`` as the system prompt, or
    ``negative`` itself when the template has no system prompt (``raw``)."""
    t = get_template(template)
    if t.default_system is None:
        return negative
    return build_prompt(t, user, history=history, system=negative)


def guided_scores(cond: Any, uncond: Any, scale: float) -> Any:
    """``uncond + scale * (cond - uncond)`` on the log-softmax of two logit vectors (numpy float32, as transformers
    computes it)."""
    import numpy as np

    def log_softmax(x: Any) -> Any:
        x = np.asarray(x, dtype=np.float32)
        x = x - x.max()
        return x - np.log(np.exp(x).sum(dtype=np.float64)).astype(np.float32)

    c, u = log_softmax(cond), log_softmax(uncond)
    return (u + scale * (c - u)).astype(np.float32)


class NegativeContext:
    """A second llama.cpp context over a loaded :class:`llama_cpp.Llama`'s model, made with the first context's own
    parameters (context length, RoPE scaling, threads) through llama-cpp-python's C API; it shares the weights."""

    def __init__(self, llm: Any) -> None:
        import llama_cpp

        self._api = llama_cpp
        self.ctx = llama_cpp.llama_init_from_model(llm.model, llm.context_params)
        if not self.ctx:
            raise UserError("llama.cpp could not make the second context CFG sampling needs (out of memory?): load "
                            "with a smaller n_ctx, or decode without CFG (guidance_scale=1)")
        self.n_ctx = int(llama_cpp.llama_n_ctx(self.ctx))
        self.n_batch = int(llm.n_batch)
        self.n_vocab = int(llm.n_vocab())

    def reset(self) -> None:
        """Forget every token fed so far."""
        self._api.llama_memory_clear(self._api.llama_get_memory(self.ctx), True)

    def feed(self, tokens: Sequence[int]) -> Any:
        """Append ``tokens`` (at least one); return the logits after the last one (a numpy copy)."""
        import numpy as np

        api = self._api
        for i in range(0, len(tokens), self.n_batch):
            chunk = [int(t) for t in tokens[i:i + self.n_batch]]
            array = (api.llama_token * len(chunk))(*chunk)
            status = api.llama_decode(self.ctx, api.llama_batch_get_one(array, len(chunk)))
            if status != 0:
                raise UserError(f"llama.cpp failed to evaluate the negative prompt (llama_decode returned {status}); "
                                "shorten the negative prompt or load with a larger n_ctx")
        logits = api.llama_get_logits_ith(self.ctx, -1)
        return np.ctypeslib.as_array(logits, shape=(self.n_vocab,)).copy()

    def close(self) -> None:
        """Free the context (before the model it uses)."""
        ctx, self.ctx = self.ctx, None
        if ctx:
            self._api.llama_free(ctx)


class LlamaCppGuidance:
    """A llama-cpp-python logits processor for one generation: feeds the negative branch (``negative_tokens``, or the
    prompt's last token when None) and then each generated token to ``context``, and returns the guided scores."""

    def __init__(self, context: NegativeContext, scale: float, negative_tokens: Sequence[int] | None) -> None:
        self.context = context
        self.scale = float(scale)
        self.first = list(negative_tokens) if negative_tokens else None
        self.seen: int | None = None
        self.uncond: Any = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        n = len(input_ids)
        if self.seen is None:
            self.context.reset()
            self.uncond = self.context.feed(self.first or [int(input_ids[-1])])
        elif n > self.seen:
            self.uncond = self.context.feed([int(t) for t in input_ids[self.seen:]])
        self.seen = n
        return guided_scores(scores, self.uncond, self.scale)
