"""The figures a quantized model's comparison with its reference gives (one type for both scorers)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KLReport:
    """Token-level comparison of a quantized model with its reference.

    Attributes:
        mean_kld: mean KL(P_ref || P_quant) in nats per token.
        max_kld: the largest per-token KL divergence.
        top1_agreement: share of positions where both models' most likely token is the same.
        ppl_ref: perplexity of the reference on the text.
        ppl_quant: perplexity of the quantized model on the text.
        n_tokens: scored positions.
    """

    mean_kld: float
    max_kld: float
    top1_agreement: float
    ppl_ref: float
    ppl_quant: float
    n_tokens: int

    def __post_init__(self) -> None:
        if self.n_tokens <= 0:
            raise ValueError("n_tokens must be positive")
