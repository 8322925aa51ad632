"""Speculative decoding: a small draft model proposes tokens that the target verifies (transformers back end)."""
from __future__ import annotations

import time
from typing import Any

from .backend import Backend, StopFilter
from ..util import UserError
from .hf import TransformersBackend


def _shared_vocabulary(target: TransformersBackend, draft: TransformersBackend) -> None:
    t_rows = target.model.get_output_embeddings().weight.shape[0]
    d_rows = draft.model.get_output_embeddings().weight.shape[0]
    if t_rows != d_rows or target.tokenizer.get_vocab() != draft.tokenizer.get_vocab():
        raise UserError(f"the draft model's vocabulary ({len(draft.tokenizer)} tokens, {d_rows} rows) differs from "
                        f"the target's ({len(target.tokenizer)} tokens, {t_rows} rows); speculative decoding needs "
                        "the same tokenizer (e.g. Chinese-Alpaca-2-1.3B as draft for Chinese-Alpaca-2-7B/13B)")


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
    import torch

    if not (isinstance(target, TransformersBackend) and isinstance(draft, TransformersBackend)):
        raise UserError("speculative decoding uses the transformers back end for both the target and the draft")
    _shared_vocabulary(target, draft)
    s = target.settings(**gen)
    ids, mask = target.encode(prompt)
    kwargs = target.generate_kwargs(s)
    steps: list[tuple[int, int]] = []  # (draft tokens proposed, accepted) per verification pass
    model = target.model
    original = getattr(model, "_get_candidate_generator", None)

    def recording(*args: Any, **kw: Any):
        generator = original(*args, **kw)
        update = generator.update_candidate_strategy

        def update_and_record(input_ids, scores, num_matches):
            steps.append((int(scores.shape[1]) - 1, int(num_matches)))
            return update(input_ids, scores, num_matches)

        generator.update_candidate_strategy = update_and_record
        return generator

    def timed(**extra: Any) -> tuple[Any, float]:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, **kwargs, **extra)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return out[0, ids.shape[1]:], time.perf_counter() - start

    for m in (model, draft.model):  # warm up both so the timings compare steady states
        with torch.inference_mode():
            m.generate(input_ids=ids[:, -8:], attention_mask=mask[:, -8:], max_new_tokens=2, do_sample=False,
                       pad_token_id=kwargs["generation_config"].pad_token_id)
    draft_config = draft.model.generation_config
    saved = (draft_config.num_assistant_tokens, draft_config.num_assistant_tokens_schedule)
    if num_assistant_tokens:
        draft_config.num_assistant_tokens, draft_config.num_assistant_tokens_schedule = int(num_assistant_tokens), "constant"
    if original is not None:
        model._get_candidate_generator = recording
    try:
        new, dt = timed(assistant_model=draft.model)
    finally:
        if original is not None:
            del model._get_candidate_generator
        draft_config.num_assistant_tokens, draft_config.num_assistant_tokens_schedule = saved
    text = _cut(target, new)
    proposed, accepted = sum(p for p, _ in steps), sum(a for _, a in steps)
    stats: dict[str, Any] = {
        "tokens": int(new.shape[0]), "seconds": dt, "tokens_per_s": new.shape[0] / dt if dt else 0.0,
        "target_passes": len(steps), "draft_proposed": proposed, "draft_accepted": accepted,
        "acceptance_rate": accepted / proposed if proposed else None,
    }
    if compare:
        plain, pdt = timed()
        stats.update(plain_tokens=int(plain.shape[0]), plain_seconds=pdt,
                     plain_tokens_per_s=plain.shape[0] / pdt if pdt else 0.0)
        stats["speedup"] = stats["tokens_per_s"] / stats["plain_tokens_per_s"] if stats["plain_tokens_per_s"] else None
        stats["same_text"] = _cut(target, plain) == text
    if verbose:
        rate = f"{stats['acceptance_rate']:.0%}" if stats["acceptance_rate"] is not None else "n/a"
        line = f"speculative: {stats['tokens_per_s']:.1f} tok/s, {accepted}/{proposed} draft tokens accepted ({rate})"
        if compare and stats["speedup"] is not None:
            line += f"; target alone {stats['plain_tokens_per_s']:.1f} tok/s -> speed-up {stats['speedup']:.2f}x"
        print(line)
    return text, stats


def _cut(backend: TransformersBackend, new_ids: Any) -> str:
    cut = StopFilter(backend.stop_strings())
    text = cut.feed(backend.tokenizer.decode(new_ids, skip_special_tokens=True).replace("\ufffd", ""))
    return (text + cut.flush()).strip()

