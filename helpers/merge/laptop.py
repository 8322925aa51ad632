"""Does it fit my laptop? The GGUF a release becomes at a type, and the RAM llama.cpp needs to run it.

- **file**: the GGUF exactly as the writer lays it out (:func:`helpers.gguf.data_bytes`: every tensor at the type
  llama.cpp's quantization mix gives it, alignment included; the ``iq`` types with an importance matrix, as the
  importance-matrix route makes them), plus the tokenizer and the metadata;
- **KV cache** at the context (default 4096 tokens), as llama.cpp allocates it by default (F16 keys and values):
  ``2 x layers x context x key/value heads x head size x 2`` bytes;
- **compute buffer**, as llama.cpp sizes its graph for a micro-batch of 512 tokens without flash attention (the
  default of Ollama and llama-cpp-python): the larger of the logits (512 x vocabulary floats) and the attention
  scores with their mask (heads x context x 512 floats, plus context x 512), plus the feed-forward activations
  (3 x 512 x FFN width floats) (``tests/test_laptop.py`` checks it against llama.cpp's own figures);
- **runtime**: :data:`RUNTIME` for llama.cpp itself, its threads and the tokenizer tables.

The weights are memory-mapped and all of them are read for every token, so they count in full. A laptop
"fits" when the total is at most :data:`USABLE` of its RAM: the system, a browser and the desktop keep the rest
(and macOS lets the GPU use about that share of unified memory by default).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..catalog import get
from ..gguf import data_bytes
from .sources import inputs_of, merged_layout
from .sizes import METADATA

RUN_CTX = 4096  # context the table assumes
UBATCH = 512  # llama.cpp's default micro-batch
RUNTIME = 256 << 20  # llama.cpp, its thread pool and vocabulary tables
USABLE = 0.75  # share of a laptop's RAM a model may take
LAPTOPS_GB = (8, 16, 32)
LAPTOP_TYPES = ("q8_0", "q6_k", "q4_k_m", "iq4_xs", "q3_k_m", "iq3_xxs")
GB = 1 << 30


@dataclass(frozen=True)
class RunFit:
    """What running one GGUF needs.

    Attributes:
        outtype: the GGUF type; n_ctx: the context.
        file_bytes: the GGUF's size; kv_bytes: KV cache; compute_bytes: llama.cpp's compute buffer.
    """

    outtype: str
    n_ctx: int
    file_bytes: int
    kv_bytes: int
    compute_bytes: int

    def __post_init__(self) -> None:
        if min(self.file_bytes, self.kv_bytes, self.compute_bytes) < 0 or self.n_ctx < 1:
            raise ValueError("sizes must be non-negative and the context positive")

    @property
    def ram_bytes(self) -> int:
        """RAM to run it: weights + KV cache + compute buffer + runtime."""
        return self.file_bytes + self.kv_bytes + self.compute_bytes + RUNTIME

    def fits(self, laptop_gb: float) -> bool:
        """True when it runs on a laptop with ``laptop_gb`` GiB of RAM (:data:`USABLE` of it)."""
        return self.ram_bytes <= USABLE * laptop_gb * GB

    @property
    def smallest_laptop(self) -> int | None:
        """The smallest of :data:`LAPTOPS_GB` it fits (None: none)."""
        return next((g for g in LAPTOPS_GB if self.fits(g)), None)

    def summary(self) -> str:
        """One line: file, KV cache, compute buffer, total, and the laptops it fits."""
        fits = [g for g in LAPTOPS_GB if self.fits(g)]
        verdict = f"fits laptops with {', '.join(f'{g}' for g in fits)} GB of RAM" if fits else \
            f"fits none of {', '.join(map(str, LAPTOPS_GB))} GB"
        return (f"run {self.outtype} at {self.n_ctx} tokens: file {self.file_bytes / GB:.1f} GB + KV cache "
                f"{self.kv_bytes / GB:.1f} GB + compute {self.compute_bytes / GB:.2f} GB + runtime "
                f"{RUNTIME / GB:.2f} GB = {self.ram_bytes / GB:.1f} GB of RAM; {verdict}")


def run_buffers(config: dict, n_ctx: int = RUN_CTX) -> tuple[int, int]:
    """``(KV cache bytes, compute buffer bytes)`` llama.cpp allocates to run a model of ``config`` at ``n_ctx``."""
    n_layer, n_embd = int(config["num_hidden_layers"]), int(config["hidden_size"])
    n_head = int(config["num_attention_heads"])
    n_kv = int(config.get("num_key_value_heads") or n_head)
    head_dim = int(config.get("head_dim") or n_embd // n_head)
    kv = 2 * n_layer * n_ctx * n_kv * head_dim * 2
    ub = min(UBATCH, n_ctx)
    logits = ub * int(config["vocab_size"]) * 4
    attention = (n_head + 1) * n_ctx * ub * 4
    ffn = 3 * ub * int(config["intermediate_size"]) * 4
    return kv, max(logits, attention) + ffn


def run_fit(base: str, loras: list[str] = (), patch: str | None = None, *, outtype: str, n_ctx: int = RUN_CTX,
            offline: bool = True) -> RunFit:
    """What running the merge of ``base`` + ``loras`` (+ ``patch``) at ``outtype`` needs, before any download.

    Args:
        base, loras, patch: as for :func:`helpers.merge.merge` (a catalog release's come from
            :func:`helpers.catalog.release_recipe`).
        outtype: a GGUF type (``q4_k_m``, ``iq3_xxs`` ...; the ``iq`` types as made with an importance matrix).
        n_ctx: the context to run at.
        offline: estimate catalog releases from their architectures (no hub listing).
    """
    return sources_fit(inputs_of(base, list(loras), patch,
                                 offline=offline), outtype=outtype, n_ctx=n_ctx)


def sources_fit(sources: list, *, outtype: str, n_ctx: int = RUN_CTX) -> RunFit:
    """:func:`run_fit` from the inputs a :class:`~helpers.merge.planner.ResourcePlan` already listed."""
    config, tensors, tokenizer = merged_layout(sources)
    file_bytes = data_bytes(config, tensors, outtype, has_imatrix=outtype.startswith("iq")) + tokenizer + METADATA
    kv, compute = run_buffers(config, n_ctx)
    return RunFit(outtype, n_ctx, file_bytes, kv, compute)


def release_fit(name: str, outtype: str, *, n_ctx: int = RUN_CTX) -> RunFit:
    """:func:`run_fit` for a catalog release (a LoRA, patch or full release), from its architecture."""
    from ..catalog import release_recipe

    entry = get(name)
    if entry.kind in ("lora", "patch"):
        base, loras = release_recipe(entry.name)
        patch = loras.pop() if entry.kind == "patch" else None
        return run_fit(base, loras, patch, outtype=outtype, n_ctx=n_ctx)
    return run_fit(entry.hub_id, [], None, outtype=outtype, n_ctx=n_ctx)
