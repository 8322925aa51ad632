"""The authors' two-stage recipe for a new vocabulary, as one setting (``embedding_stage_steps``).

Continued pre-training with an expanded Chinese vocabulary starts from embeddings whose new rows are the resize's
initial values. The authors first trained only the embeddings, with the transformer frozen (stage 1), then LoRA
together with the whole ``embed_tokens``/``lm_head`` (stage 2). Here both stages are one run with one optimizer and
one schedule: during the first N optimizer steps a gradient hook zeroes the gradients of every LoRA weight and of
the rows of ``embed_tokens``/``lm_head`` below the base vocabulary, so only the new tokens' rows move (AdamW with
zero gradients, zero moments and no weight decay leaves a weight exactly where it is); from step N on the hooks let
every gradient through. The adapter is the usual one (LoRA plus the full ``embed_tokens``/``lm_head``) and merges
as before; a resume inside stage 1 stays in stage 1, since the stage follows the Trainer's step count.
"""
from __future__ import annotations

from typing import Any

from ..util import UserError
from .memory import EMBEDDINGS


def _stage_params(model) -> tuple[list, list]:
    """``(LoRA weights, trained embed_tokens/lm_head copies)`` of a PEFT model."""
    lora, embeddings = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if "lora_" in name:
            lora.append(p)
        elif any(e in name for e in EMBEDDINGS):
            embeddings.append(p)
    return lora, embeddings


def embedding_stage(model, *, base_vocab: int, steps: int) -> Any:
    """Install the stage-1 gradient hooks on ``model`` and return the Trainer callback that ends stage 1 after
    ``steps`` optimizer steps.

    Raises:
        UserError: the model trains no full embeddings (the tokenizer is not larger than the base vocabulary).
    """
    from transformers import TrainerCallback

    lora, embeddings = _stage_params(model)
    if len(embeddings) < 2:
        raise UserError("embedding_stage_steps trains the new rows of embed_tokens and lm_head, but this run trains "
                        "no full embeddings: give the expanded tokenizer (--tokenizer) of a larger vocabulary")
    stage = {"one": True}

    def frozen(grad):
        return grad.zero_() if stage["one"] else grad

    def new_rows_only(grad):
        if stage["one"]:
            grad = grad.clone()
            grad[:base_vocab] = 0
        return grad

    for p in lora:
        p.register_hook(frozen)
    for p in embeddings:
        p.register_hook(new_rows_only)

    class EmbeddingStage(TrainerCallback):
        """Stage 1 while fewer than ``steps`` optimizer steps are done."""

        def on_step_begin(self, args, state, control, **kw):
            stage["one"] = state.global_step < steps

        def on_train_begin(self, args, state, control, **kw):
            stage["one"] = state.global_step < steps

    return EmbeddingStage()
