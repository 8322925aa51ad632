"""Speculative decoding: a small draft model proposes tokens that the target verifies (transformers back end)."""
from __future__ import annotations

import time
from typing import Any

from .backend import Backend, StopFilter
from .guidance import OFF
from ..util import UserError
from .hf import TransformersBackend


def _shared_vocabulary(target: TransformersBackend, draft: TransformersBackend) -> None:
    t_rows = target.model.get_output_embeddings().weight.shape[0]
    d_rows = draft.model.get_output_embeddings().weight.shape[0]
    if t_rows != d_rows or target.tokenizer.get_vocab() != draft.tokenizer.get_vocab():
        raise UserError(f"the draft model's vocabulary ({len(draft.tokenizer)} tokens, {d_rows} rows) differs from "
                        f"the target's ({len(target.tokenizer)} tokens, {t_rows} rows); speculative decoding needs "
                        "the same tokenizer (e.g. Chinese-Alpaca-2-1.3B as draft for Chinese-Alpaca-2-7B/13B)")


class PassRecorder:
    """Counts the target's verification passes from its own inputs, through a public forward pre-hook.

    With a KV cache, each pass feeds the target what it has not seen yet, starting at position
    ``cache_position[0]`` (``position_ids`` on transformers 5): the first pass the prompt and the draft's first
    candidates, each later one the last accepted token and the new candidates. A pass proposed the tokens after
    the last one already accepted; it kept as many as the next pass starts beyond it (the last pass ends at the
    output's end), one of them the target's own.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []  # (input length, first position) of each forward call

    def hook(self, module: Any, args: tuple, kwargs: dict) -> None:  # noqa: ARG002 - torch's hook signature
        ids = kwargs.get("input_ids")
        pos = kwargs.get("cache_position")
        pos = pos if pos is not None else kwargs.get("position_ids")
        if ids is not None and pos is not None:
            self.calls.append((int(ids.shape[1]), int(pos.reshape(-1)[0])))

    def steps(self, prompt: int, end: int) -> list[tuple[int, int]]:
        """``(proposed, accepted)`` of every verification pass of a generation from a ``prompt``-token prompt that
        ended at length ``end``."""
        starts = [max(pos, prompt - 1) for _, pos in self.calls] + [end - 1]
        proposed = [pos + n - 1 - start for (n, pos), start in zip(self.calls, starts)]
        return [(p, max(0, min(p, starts[i + 1] - starts[i] - 1))) for i, p in enumerate(proposed)]


def _timed(model: Any, ids: Any, mask: Any, kwargs: dict, **extra: Any) -> tuple[Any, float]:
    """Generate the reply's new token ids, and the seconds it took."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, **kwargs, **extra)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out[0, ids.shape[1]:], time.perf_counter() - start


def _warm_up(models: tuple, ids: Any, mask: Any, pad_token_id: int | None) -> None:
    """Warm up both models so the timings compare steady states."""
    import torch

    for m in models:
        with torch.inference_mode():
            m.generate(input_ids=ids[:, -8:], attention_mask=mask[:, -8:], max_new_tokens=2, do_sample=False,
                       pad_token_id=pad_token_id)


def _assisted(target: TransformersBackend, draft: TransformersBackend, ids: Any, mask: Any, kwargs: dict,
              num_assistant_tokens: int | None) -> tuple[Any, float, list[tuple[int, int]]]:
    """One assisted generation: the new ids, the seconds, and ``(proposed, accepted)`` per verification pass."""
    draft_config = draft.model.generation_config
    saved = (draft_config.num_assistant_tokens, draft_config.num_assistant_tokens_schedule)
    if num_assistant_tokens:
        draft_config.num_assistant_tokens, draft_config.num_assistant_tokens_schedule = int(num_assistant_tokens), "constant"
    recorder = PassRecorder()
    handle = target.model.register_forward_pre_hook(recorder.hook, with_kwargs=True)
    try:
        new, dt = _timed(target.model, ids, mask, kwargs, assistant_model=draft.model)
    finally:
        handle.remove()
        draft_config.num_assistant_tokens, draft_config.num_assistant_tokens_schedule = saved
    return new, dt, recorder.steps(int(ids.shape[1]), int(ids.shape[1] + new.shape[0]))


def speculative_generate(target: Backend, draft: Backend, prompt: str, *, num_assistant_tokens: int | None = None,
                         compare: bool = True, verbose: bool = True, **gen: Any) -> tuple[str, dict]:
    """Generate with a small draft model proposing tokens that the target verifies (transformers' assistant path).

    Args:
        target: the big model (transformers back end).
        draft: the small model with the same vocabulary (transformers back end).
        prompt: the prompt text (already templated).
        num_assistant_tokens: draft tokens per step (transformers' default schedule when None).
        compare: also time the target alone to report the speed-up.
        verbose: print the figures.
        **gen: sampling settings as for :meth:`Backend.generate`.

    Returns:
        ``(reply, stats)``; stats has ``tokens``, ``seconds``, ``tokens_per_s``, ``draft_proposed``,
        ``draft_accepted``, ``acceptance_rate``, ``target_passes`` and, with ``compare``, ``plain_tokens``,
        ``plain_seconds``, ``plain_tokens_per_s``, ``speedup`` and ``same_text`` (both runs gave the same
        reply, as they must under greedy decoding).
    """
    if not (isinstance(target, TransformersBackend) and isinstance(draft, TransformersBackend)):
        raise UserError("speculative decoding uses the transformers back end for both the target and the draft")
    if draft.model is target.model:
        raise UserError("the draft must be another model than the target (load it separately, even with the same "
                        "weights): speculative decoding runs both side by side")
    _shared_vocabulary(target, draft)
    settings = target.settings(**gen)
    if settings["guidance_scale"] != OFF:
        raise UserError("speculative decoding does not combine with CFG sampling (the target verifies several draft "
                        "tokens per pass; CFG guides one token at a time): pass guidance_scale=1")
    ids, mask = target.encode(prompt)
    kwargs = target.generate_kwargs(settings)
    _warm_up((target.model, draft.model), ids, mask, kwargs["generation_config"].pad_token_id)
    new, dt, steps = _assisted(target, draft, ids, mask, kwargs, num_assistant_tokens)
    text = _cut(target, new)
    proposed, accepted = sum(p for p, _ in steps), sum(a for _, a in steps)
    stats: dict[str, Any] = {
        "tokens": int(new.shape[0]), "seconds": dt, "tokens_per_s": new.shape[0] / dt if dt else 0.0,
        "target_passes": len(steps), "draft_proposed": proposed, "draft_accepted": accepted,
        "acceptance_rate": accepted / proposed if proposed else None,
    }
    if compare:
        plain, pdt = _timed(target.model, ids, mask, kwargs)
        stats.update(plain_tokens=int(plain.shape[0]), plain_seconds=pdt,
                     plain_tokens_per_s=plain.shape[0] / pdt if pdt else 0.0)
        stats["speedup"] = stats["tokens_per_s"] / stats["plain_tokens_per_s"] if stats["plain_tokens_per_s"] else None
        stats["same_text"] = _cut(target, plain) == text
    if verbose:
        _report(stats, compare)
    return text, stats


def _report(stats: dict, compare: bool) -> None:
    rate = f"{stats['acceptance_rate']:.0%}" if stats["acceptance_rate"] is not None else "n/a"
    line = (f"speculative: {stats['tokens_per_s']:.1f} tok/s, {stats['draft_accepted']}/{stats['draft_proposed']} "
            f"draft tokens accepted ({rate})")
    if compare and stats["speedup"] is not None:
        line += f"; target alone {stats['plain_tokens_per_s']:.1f} tok/s -> speed-up {stats['speedup']:.2f}x"
    print(line)


def _cut(backend: TransformersBackend, new_ids: Any) -> str:
    cut = StopFilter(backend.stop_strings())
    text = cut.feed(backend.tokenizer.decode(new_ids, skip_special_tokens=True).replace("\ufffd", ""))
    return (text + cut.flush()).strip()

