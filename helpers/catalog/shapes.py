"""The architectures of the released sizes, so that shapes and sizes can be planned before anything downloads."""
from __future__ import annotations

from .entry import ModelEntry

# size -> (hidden, intermediate, layers, attention heads, key/value heads) of the LLaMA-family releases
ARCHITECTURES: dict[str, tuple[int, int, int, int, int]] = {
    "1.3B": (4096, 11008, 4, 32, 32),   # Chinese-LLaMA/Alpaca-2-1.3B: four layers of the 7B's width
    "7B": (4096, 11008, 32, 32, 32),
    "8B": (4096, 14336, 32, 32, 8),      # Llama-3: grouped-query attention
    "13B": (5120, 13824, 40, 40, 40),
    "33B": (6656, 17920, 60, 52, 52),    # Meta's "30B"
}


def config_of(entry: ModelEntry, *, vocab_size: int | None = None) -> dict | None:
    """A ``config.json``-like dict with the architecture of ``entry``'s size (None for an unknown size).

    Args:
        entry: a catalog entry.
        vocab_size: embedding rows to use instead of the entry's (a base before its LoRA's vocabulary expansion).
    """
    if entry.size not in ARCHITECTURES:
        return None
    h, f, n, a, kv = ARCHITECTURES[entry.size]
    return {"hidden_size": h, "intermediate_size": f, "num_hidden_layers": n, "num_attention_heads": a,
            "num_key_value_heads": kv, "vocab_size": vocab_size or entry.vocab_size,
            "max_position_embeddings": entry.context_length}
