"""Constrained decoding as the releases' scripts score it, fast: one subject's shared prefix is evaluated once.

The method (ymcui/Chinese-LLaMA-Alpaca{,-2,-3} ``scripts/ceval/llama_evaluator.py``): one generation step with
``repetition_penalty=1.1`` and ``temperature=0.2`` (``top_k=0``, ``top_p=1``); ``generate``'s first-step
*processed* scores are the logits after the repetition penalty (every token id present in the prompt: a
positive logit divided by 1.1, a negative one multiplied by 1.1, once per id) and then divided by the
temperature. A letter's score is the processed score of ``encode("A", add_special_tokens=False)[0]`` plus that
of ``encode("：A")[-1]``; the prediction is the first letter with the highest score.

Only the eight letter logits of the last position are needed, so each back end returns just those:

- :class:`HFExamScorer` (transformers, 16-bit or bitsandbytes 8/4-bit): the prompts' common token prefix is
  run once into a ``DynamicCache``; the questions are run after it in batches (right-padded, each row's own
  last position read through ``logits_to_keep``), and the cache is cropped back to the prefix (``crop``);
- :class:`LlamaCppExamScorer` (a GGUF through llama-cpp-python): the prefix stays in llama.cpp's KV cache;
  each question rewinds ``n_tokens`` to the prefix and evaluates only its own tokens (``eval`` drops the
  cache past ``n_tokens``), reading the last position's logits with ``llama_get_logits_ith``.

Both take token ids, so the shared prefix is exact whatever the tokenizer does at the prefix/question seam.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..util import UserError
from .subjects import LETTERS

REPETITION_PENALTY = 1.1  # the scripts' GenerationConfig
TEMPERATURE = 0.2


@dataclass(frozen=True)
class LetterIds:
    """Token ids of the letters A-D: ``bare`` = ``encode(letter)[0]`` without BOS, ``cued`` = ``encode("：" +
    letter)[-1]`` with it (the token of a letter after the answer cue)."""

    bare: tuple[int, int, int, int]
    cued: tuple[int, int, int, int]

    @property
    def all(self) -> list[int]:
        """The eight ids in the order :meth:`ExamScorer.letter_logits` returns them: bare, then cued."""
        return [*self.bare, *self.cued]


def processed(logit: float, token: int, prompt: set[int] | frozenset[int]) -> float:
    """One first-step score after transformers' ``RepetitionPenaltyLogitsProcessor(1.1)`` and
    ``TemperatureLogitsWarper(0.2)``: ``logit`` of ``token`` after a prompt holding the ids in ``prompt``."""
    if token in prompt:
        logit = logit * REPETITION_PENALTY if logit < 0 else logit / REPETITION_PENALTY
    return logit / TEMPERATURE


def letter_scores(raw: Sequence[float], ids: LetterIds, prompt: Sequence[int]) -> list[float]:
    """The four letter scores of one question from the raw logits of ``ids.all`` (in that order)."""
    seen = frozenset(prompt)
    values = {tok: processed(float(x), tok, seen) for tok, x in zip(ids.all, raw)}
    return [values[b] + values[c] for b, c in zip(ids.bare, ids.cued)]


def predict(scores: Sequence[float]) -> str:
    """The letter of the highest score (the first one on a tie, as ``numpy.argmax``)."""
    best = max(range(4), key=lambda i: (scores[i], -i))
    return LETTERS[best]


def common_prefix(prompts: Sequence[Sequence[int]]) -> int:
    """Tokens every prompt starts with, leaving at least one token of each prompt to evaluate."""
    if not prompts:
        return 0
    first, n = prompts[0], min(len(p) for p in prompts) - 1
    k = 0
    while k < n and all(p[k] == first[k] for p in prompts):
        k += 1
    return max(k, 0)


class ExamScorer:
    """A model that turns prompts into the raw logits of the letter tokens at their next position."""

    backend = ""
    owned = False  # loaded here (then close() frees it)

    def prompt_ids(self, text: str) -> list[int]:
        """Token ids of a whole prompt, as the scripts' ``tokenizer(prompt)``: BOS first, special tokens parsed."""
        raise NotImplementedError

    def letter_ids(self) -> LetterIds:
        """The letters' token ids (:class:`LetterIds`)."""
        raise NotImplementedError

    def letter_logits(self, prompts: Sequence[Sequence[int]], ids: Sequence[int], *, reuse: bool = True,
                      done: Callable[[int], None] | None = None):
        """Raw next-token logits of ``ids`` after each prompt, ``float32 [len(prompts), len(ids)]``.

        With ``reuse`` the prompts' common prefix is evaluated once; without it every prompt is evaluated
        whole (the scripts' way; the speed benchmark's reference). ``done(n)`` is called as ``n`` more prompts
        are scored (a progress bar).
        """
        raise NotImplementedError

    def close(self) -> None:
        """Free the model if this scorer loaded it."""


class HFExamScorer(ExamScorer):
    """A transformers causal LM and its tokenizer (any dtype, bitsandbytes 8/4-bit included).

    Args:
        model: the model (eval mode, on its device).
        tokenizer: its tokenizer (``helpers.tokens.load_tokenizer`` gives the sentencepiece-exact one).
        batch_size: questions per forward pass after the shared prefix (default 8 on a GPU, 1 on CPU);
            halved on a CUDA out-of-memory error.
    """

    backend = "transformers"

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int | None = None) -> None:
        import inspect

        import torch

        self.model, self.tok = model, tokenizer
        # transformers 5 calls the KV cache argument `cache`; earlier versions `past_key_values`
        params = inspect.signature(model.forward).parameters if model is not None else {}
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        on_gpu = getattr(getattr(model, "device", None), "type", "cpu") == "cuda"
        self.batch_size = batch_size or (8 if on_gpu and torch.cuda.is_available() else 1)
        if self.batch_size < 1:
            raise UserError(f"batch size must be 1 or more, not {self.batch_size}")

    def prompt_ids(self, text: str) -> list[int]:
        return [int(i) for i in self.tok(text)["input_ids"]]

    def letter_ids(self) -> LetterIds:
        bare = tuple(int(self.tok.encode(c, add_special_tokens=False)[0]) for c in LETTERS)
        cued = tuple(int(self.tok.encode("：" + c)[-1]) for c in LETTERS)
        return LetterIds(bare, cued)  # type: ignore[arg-type]

    def _forward(self, rows: list[Sequence[int]], ids: Sequence[int], cache: Any):
        """Raw logits of ``ids`` at each row's last token; ``rows`` continue ``cache`` (right-padded)."""
        import torch

        device = self.model.device
        width = max(len(r) for r in rows)
        x = torch.tensor([list(r) + [r[-1]] * (width - len(r)) for r in rows], dtype=torch.long, device=device)
        last = [len(r) - 1 for r in rows]
        keep = sorted(set(last))
        out = self.model(input_ids=x, use_cache=cache is not None, logits_to_keep=torch.tensor(keep, device=device),
                         **{self._cache_arg: cache})
        logits = out.logits[torch.arange(len(rows), device=device), torch.tensor([keep.index(i) for i in last],
                                                                                   device=device)]
        return logits[:, torch.tensor(list(ids), device=device)].float().cpu().numpy()

    def letter_logits(self, prompts: Sequence[Sequence[int]], ids: Sequence[int], *, reuse: bool = True,
                      done: Callable[[int], None] | None = None):
        import numpy as np
        import torch

        done = done or (lambda n: None)
        if not reuse:
            rows = []
            with torch.inference_mode():
                for p in prompts:
                    rows.append(self._forward([p], ids, None))
                    done(1)
            return np.concatenate(rows)
        while True:
            try:
                return self._shared(prompts, ids, done)
            except torch.cuda.OutOfMemoryError:
                if self.batch_size == 1:
                    raise UserError("out of GPU memory even one question at a time; use a smaller quant "
                                    "(--quant 4bit) or a GGUF") from None
                self.batch_size //= 2
                torch.cuda.empty_cache()

    def _shared(self, prompts: Sequence[Sequence[int]], ids: Sequence[int], done: Callable[[int], None]):
        import numpy as np
        import torch
        from transformers import DynamicCache

        k = common_prefix(prompts)
        out = []
        with torch.inference_mode():
            cache = None
            if k:
                cache = DynamicCache()
                x = torch.tensor([list(prompts[0][:k])], dtype=torch.long, device=self.model.device)
                self.model(input_ids=x, use_cache=True, logits_to_keep=1, **{self._cache_arg: cache})
            size = min(self.batch_size, len(prompts))
            if cache is not None and size > 1:
                cache.batch_repeat_interleave(size)
            for start in range(0, len(prompts), size):
                chunk = [p[k:] for p in prompts[start:start + size]]
                n = len(chunk)
                chunk += [chunk[-1]] * (size - n)  # the last batch is filled up: the cache has `size` rows
                out.append(self._forward(chunk, ids, cache)[:n])
                done(n)
                if cache is not None and cache.get_seq_length() > k:
                    cache.crop(k - cache.get_seq_length())  # a negative count removes tokens (transformers 4 and 5)
        return np.concatenate(out)


class LlamaCppExamScorer(ExamScorer):
    """A ``llama_cpp.Llama`` (``logits_all`` not needed): the prefix stays in its KV cache between questions."""

    backend = "llama.cpp"

    def __init__(self, llm: Any) -> None:
        self.llm = llm

    def prompt_ids(self, text: str) -> list[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=True))

    def letter_ids(self) -> LetterIds:
        bare = tuple(self.llm.tokenize(c.encode(), add_bos=False, special=False)[0] for c in LETTERS)
        cued = tuple(self.llm.tokenize(("：" + c).encode("utf-8"), add_bos=True, special=False)[-1] for c in LETTERS)
        return LetterIds(bare, cued)  # type: ignore[arg-type]

    def _last(self, ids: Sequence[int]):
        import llama_cpp
        import numpy as np

        row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.llm.ctx, -1), shape=(self.llm.n_vocab(),))
        return row[list(ids)].astype(np.float32)

    def letter_logits(self, prompts: Sequence[Sequence[int]], ids: Sequence[int], *, reuse: bool = True,
                      done: Callable[[int], None] | None = None):
        import numpy as np

        n_ctx = int(self.llm.n_ctx())
        longest = max(len(p) for p in prompts)
        if longest > n_ctx:
            raise UserError(f"a prompt of {longest} tokens does not fit llama.cpp's context of {n_ctx}; "
                            f"pass a larger n_ctx (--n-ctx {-(-longest // 256) * 256})")
        k = common_prefix(prompts) if reuse else 0
        llm = self.llm
        llm.reset()
        if k:
            llm.eval(list(prompts[0][:k]))
        rows = []
        for p in prompts:
            llm.n_tokens = k  # eval() removes the KV cache from n_tokens on and appends the rest
            llm.eval(list(p[k:]))
            rows.append(self._last(ids))
            if done:
                done(1)
        return np.stack(rows)

    def close(self) -> None:
        if self.owned and self.llm is not None:
            self.llm.close()
            self.llm = None
