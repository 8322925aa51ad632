"""Perplexity and KL divergence of GGUFs measured as llama.cpp's ``llama-perplexity`` measures them.

The text is cut into chunks of ``n_ctx`` tokens (:mod:`.llama_chunks`: BOS at the start of each chunk where the
model adds one, the tail dropped); in each chunk only the second half is scored: the logits of positions
``n_ctx // 2`` to ``n_ctx - 2`` predict the tokens after them, so every scored token has at least half a chunk of
context. The perplexity is ``exp`` of the mean negative log-likelihood of those tokens, and its uncertainty the
tool's ``+/-`` (the standard error of the mean, times the perplexity). The figures match the tool's on the same
file, text, ``-c`` and ``--chunks`` (the tests compare them with the tool's output), so they compare with the
perplexities llama.cpp and the releases publish.

The KL divergence of a quantized GGUF from its reference is measured on the same positions (the reference's
log-probabilities wait in a temporary file, so the two models are never loaded together).
"""
from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..util import UserError, progress
from .klreport import KLReport
from .llama_chunks import ChunkRunner, ChunkSettings, chunk_count


@dataclass(frozen=True)
class ChunkedPerplexity:
    """llama-perplexity's result.

    Attributes:
        ppl: the perplexity ("Final estimate: PPL = ...").
        stderr: its uncertainty ("+/- ...").
        n_tokens: tokens scored; chunks: chunks evaluated; n_ctx: tokens per chunk.
    """

    ppl: float
    stderr: float
    n_tokens: int
    chunks: int
    n_ctx: int


def tool_text(text: str) -> str:
    """The text as llama.cpp's ``-f`` reads a file: one trailing newline dropped."""
    return text[:-1] if text.endswith("\n") else text


def log_softmax(logits: Any):
    """``log(softmax(logits))`` over the last axis, in float64."""
    import numpy as np

    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _scored(settings: ChunkSettings) -> tuple[int, int]:
    """``(first scored logit row, scored tokens per chunk)``: rows 0 .. n_ctx // 2 - 2 of the outputs, which start
    at position n_ctx // 2."""
    first = settings.n_ctx // 2
    return first, settings.n_ctx - 1 - first


def _targets(tokens: list[int], chunk: int, settings: ChunkSettings) -> list[int]:
    first, n = _scored(settings)
    start = chunk * settings.n_ctx + first + 1
    return tokens[start:start + n]


def chunked_perplexity(model: str | Path, text: str, settings: ChunkSettings | None = None) -> ChunkedPerplexity:
    """``llama-perplexity -m MODEL -f TEXT -c N [--chunks K]`` through llama-cpp-python.

    Args:
        model: a GGUF file.
        text: the text itself (read a file with :func:`helpers.evaluate.perplexity.read_text`).
        settings: chunk size (default 512, the tool's), chunks, batch, threads, GPU layers.

    Raises:
        UserError: no llama-cpp-python, a file llama.cpp cannot load, a text shorter than two chunks.
    """
    import numpy as np

    settings = settings or ChunkSettings()
    _, n_scored = _scored(settings)
    totals = {"nll": 0.0, "nll2": 0.0, "count": 0}
    with ChunkRunner(model, settings) as runner:
        tokens = runner.tokenize(tool_text(text))
        n_chunks = chunk_count(len(tokens), settings, what="perplexity")

        def score(chunk: int, logits) -> None:
            lp = log_softmax(logits[:n_scored])
            v = -lp[np.arange(n_scored), _targets(tokens, chunk, settings)]
            totals["nll"] += float(v.sum())
            totals["nll2"] += float((v * v).sum())
            totals["count"] += n_scored

        runner.run(tokens, n_chunks, outputs="scored", on_chunk=score,
                   progress=lambda it: progress(it, desc="perplexity", unit="batch"))
    count = totals["count"]
    mean = totals["nll"] / count
    var = totals["nll2"] / count - mean * mean
    ppl = math.exp(mean)
    stderr = math.sqrt(var / (count - 1)) * ppl if var > 0 and count > 1 else float("nan")
    return ChunkedPerplexity(ppl=ppl, stderr=stderr, n_tokens=count, chunks=n_chunks, n_ctx=settings.n_ctx)


def chunked_kl_divergence(reference: str | Path, quant: str | Path, text: str,
                          settings: ChunkSettings | None = None):
    """KL(P_reference || P_quant) per scored token, averaged, on llama-perplexity's chunks; plus the top-1
    agreement and both perplexities (a :class:`helpers.evaluate.perplexity.KLReport`).

    Raises:
        UserError: the two models tokenize the text differently (not the same vocabulary), or as
            :func:`chunked_perplexity`.
    """
    return chunked_kl_divergences(reference, [quant], text, settings)[0]


def chunked_kl_divergences(reference: str | Path, quants: list, text: str, settings: ChunkSettings | None = None):
    """:func:`chunked_kl_divergence` of several quants of one reference, which runs once: its log-probabilities
    wait in a temporary file (scored tokens x vocabulary floats) while each quant is loaded in turn."""
    import numpy as np

    settings = settings or ChunkSettings()
    _, n_scored = _scored(settings)
    text = tool_text(text)
    with tempfile.TemporaryDirectory(prefix="kld-") as tmp:
        with ChunkRunner(reference, settings) as runner:
            tokens = runner.tokenize(text)
            n_chunks = chunk_count(len(tokens), settings, what="the KL divergence")
            store = np.lib.format.open_memmap(Path(tmp) / "reference.npy", mode="w+", dtype=np.float32,
                                              shape=(n_chunks * n_scored, runner.n_vocab))

            def keep(chunk: int, logits) -> None:
                store[chunk * n_scored:(chunk + 1) * n_scored] = log_softmax(logits[:n_scored])

            runner.run(tokens, n_chunks, outputs="scored", on_chunk=keep,
                       progress=lambda it: progress(it, desc="reference", unit="batch"))
        reports = [_compare(store, quant, reference, tokens, n_chunks, text, settings) for quant in quants]
        store = None  # the memory map is closed before its folder goes
    return reports


def _compare(store, quant: str | Path, reference: str | Path, tokens: list[int], n_chunks: int, text: str,
             settings: ChunkSettings):
    """One quant's :class:`~helpers.evaluate.perplexity.KLReport` against the stored reference."""
    import numpy as np

    _, n_scored = _scored(settings)
    acc = {"kl": 0.0, "kl_max": 0.0, "nll_ref": 0.0, "nll_q": 0.0, "agree": 0}
    with ChunkRunner(quant, settings) as runner:
        if runner.tokenize(text) != tokens:
            raise UserError(f"{quant} tokenizes the text differently from {reference}; compare a quant only with "
                            "the model it was made from")

        def compare(chunk: int, logits) -> None:
            lp = np.asarray(store[chunk * n_scored:(chunk + 1) * n_scored], dtype=np.float64)
            lq = log_softmax(logits[:n_scored])
            kld = np.maximum((np.exp(lp) * (lp - lq)).sum(axis=-1), 0.0)
            idx = np.arange(n_scored), _targets(tokens, chunk, settings)
            acc["kl"] += float(kld.sum())
            acc["kl_max"] = max(acc["kl_max"], float(kld.max()))
            acc["nll_ref"] -= float(lp[idx].sum())
            acc["nll_q"] -= float(lq[idx].sum())
            acc["agree"] += int((lp.argmax(-1) == lq.argmax(-1)).sum())

        runner.run(tokens, n_chunks, outputs="scored", on_chunk=compare,
                   progress=lambda it: progress(it, desc="KL divergence", unit="batch"))
    n = n_chunks * n_scored
    return KLReport(mean_kld=acc["kl"] / n, max_kld=acc["kl_max"], top1_agreement=acc["agree"] / n,
                    ppl_ref=math.exp(acc["nll_ref"] / n), ppl_quant=math.exp(acc["nll_q"] / n), n_tokens=n)
