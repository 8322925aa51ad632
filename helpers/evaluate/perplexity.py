"""Perplexity over sliding windows, and the KL divergence of a quantized model from its reference.

- :func:`perplexity`: sliding window of ``n_ctx`` tokens moved by ``stride``; every token after the
  first is scored exactly once, with at least ``n_ctx - stride`` tokens of context after the first window; or
  (``method="llama.cpp"``) llama-perplexity's chunks, the same figure as the tool (:mod:`.llama_ppl`).
- :func:`kl_divergence`: the same windows through a reference (F16) and a quantized model;
  KL(P_ref || P_quant) per token, averaged, plus the top-1 agreement and both perplexities.
- :func:`compare_quants` / :func:`plot_quant_table`: the notebooks' table of types, sizes and quality.
"""
from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from ..gguf import gguf_type
from ..util import DATA_DIR, UserError, progress, read_utf8
from .klreport import KLReport
from .llama_chunks import ChunkSettings, chunk_count
from .llama_ppl import chunked_kl_divergence, chunked_perplexity, log_softmax, tool_text
from .scorers import PPL_WINDOW, scoring


def default_eval_text() -> str:
    """A short Chinese text shipped with the package, for perplexity and token counts when the user gives none."""
    return (DATA_DIR / "corpus_zh.txt").read_text(encoding="utf-8")


def read_text(text_or_file: str | Path) -> str:
    """A :class:`~pathlib.Path` (or a string naming an existing file) is read as UTF-8; other strings are text.

    Raises:
        UserError: a missing or binary file, or no text at all (empty or only whitespace): nothing to measure.
    """
    if isinstance(text_or_file, Path) or (isinstance(text_or_file, str) and "\n" not in text_or_file
                                          and len(text_or_file) < 4096 and os.path.isfile(text_or_file)):
        path = Path(text_or_file)
        if not path.is_file():
            raise UserError(f"text file {path} not found")
        text, source = read_utf8(path, what="a UTF-8 text file to measure"), str(path)
    else:
        text, source = str(text_or_file), "the text"
    if not text.strip():
        raise UserError(f"{source} has no text (it is empty or only whitespace); give the text to measure")
    return text


def windows(n: int, n_ctx: int, stride: int) -> Iterator[tuple[int, int, int]]:
    """Sliding windows over ``n`` tokens: ``(begin, end, first)``; targets ``first..end-1`` are scored.

    The first window scores all its tokens after the first; each later window starts with
    ``n_ctx - stride`` (at least 1) already-scored tokens as context and scores the rest, so every
    position ``t >= 1`` is scored exactly once.
    """
    if not 0 < stride <= n_ctx:
        raise UserError(f"stride must be between 1 and n_ctx ({n_ctx}); got {stride}")
    context = max(n_ctx - stride, 1)
    begin, first = 0, 1
    while True:
        end = min(begin + n_ctx, n)
        yield begin, end, first
        if end >= n:
            return
        begin, first = end - context, end


def _token_ids(scorer, text: str) -> list[int]:
    ids = scorer.encode(text, bos=True)
    if len(ids) < 2:
        raise UserError("the text is too short to measure (fewer than 2 tokens)")
    return ids


def _window_logprobs(scorer, ids: list[int], n_ctx: int, stride: int, desc: str):
    """Yield ``(logprobs of the predicting positions, target ids)`` per window."""
    n_ctx = min(n_ctx, scorer.max_ctx)
    spans = list(windows(len(ids), n_ctx, min(stride, n_ctx)))
    for begin, end, first in progress(spans, desc=desc, unit="window"):
        logits = scorer.logits(ids[begin:end])
        yield log_softmax(logits[first - 1 - begin: end - 1 - begin]), ids[first:end]


METHODS = ("sliding", "llama.cpp")  # perplexity methods: sliding windows, or llama-perplexity's chunks


def perplexity(model: Any, text_or_file: str | Path, *, backend: str = "auto", n_ctx: int = PPL_WINDOW,
               stride: int = 256, method: str = "sliding", chunks: int | None = None,
               quantization: str | None = None) -> float:
    """Perplexity of ``model`` on a text: ``exp`` of the mean negative log-likelihood per token.

    Args:
        model: GGUF path, HF folder, ``llama_cpp.Llama`` (with ``logits_all``) or ``(model, tokenizer)``.
        text_or_file: the text, or a path to a UTF-8 file.
        backend: ``auto``, ``transformers`` or ``llama.cpp``.
        n_ctx: window (chunk) length in tokens.
        stride: ``sliding`` only: how far the window moves; the first ``n_ctx - stride`` tokens of later windows
            are context only (BOS is prepended once).
        method: ``sliding`` (every token after the first scored once), or ``llama.cpp``: llama-perplexity's
            chunks of ``n_ctx`` tokens, BOS at the start of each, the second half scored (the text needs at least
            two chunks). On a GGUF file this is the tool's own run (the same figure:
            :func:`~helpers.evaluate.llama_ppl.chunked_perplexity`); on other models the same chunks through their
            back end.
        chunks: ``llama.cpp`` only: at most this many chunks.
        quantization: transformers on a GPU: ``None``, ``"8bit"`` or ``"4bit"`` (bitsandbytes).
    """
    import numpy as np

    if method not in METHODS:
        raise UserError(f"unknown perplexity method {method!r}; use one of {', '.join(METHODS)}")
    text = read_text(text_or_file)
    if method == "llama.cpp":
        return _chunked(model, text, backend=backend, n_ctx=n_ctx, chunks=chunks, quantization=quantization)
    with scoring(model, backend=backend, n_ctx=n_ctx, quantization=quantization) as scorer:
        ids = _token_ids(scorer, text)
        nll, count = 0.0, 0
        for logp, targets in _window_logprobs(scorer, ids, n_ctx, stride, "perplexity"):
            nll -= float(logp[np.arange(len(targets)), targets].sum())
            count += len(targets)
    return math.exp(nll / count)


def _chunked(model: Any, text: str, *, backend: str, n_ctx: int, chunks: int | None,
             quantization: str | None = None) -> float:
    """llama-perplexity's figure: the tool's exact run on a GGUF file, its chunks through a scorer otherwise."""
    import numpy as np

    settings = ChunkSettings(n_ctx=n_ctx, chunks=chunks)
    path = Path(model) if isinstance(model, (str, Path)) else None
    if path is not None and path.is_file() and path.suffix.lower() == ".gguf" and backend != "transformers":
        return chunked_perplexity(path, text, settings).ppl
    with scoring(model, backend=backend, n_ctx=n_ctx, quantization=quantization) as scorer:
        ids = scorer.encode(tool_text(text), bos=True)
        bos = ids[0] if len(ids) > len(scorer.encode(tool_text(text), bos=False)) else None
        first = n_ctx // 2
        nll, count = 0.0, 0
        for c in progress(range(chunk_count(len(ids), settings, what="perplexity")), desc="perplexity", unit="chunk"):
            window = ids[c * n_ctx:(c + 1) * n_ctx]
            if bos is not None:
                window[0] = bos
            logp = log_softmax(scorer.logits(window)[first:n_ctx - 1])
            nll -= float(logp[np.arange(n_ctx - 1 - first), window[first + 1:]].sum())
            count += n_ctx - 1 - first
    return math.exp(nll / count)


@dataclass
class Reference:
    """The reference model's next-token log-probabilities on a text, kept on disk so the reference can be closed
    before a quantized model is opened (an F16 7B and its Q4_K_M do not fit a T4 or Colab's RAM together).

    Attributes:
        ids: the tokens (the reference's tokenization); spans: the scoring windows.
        logprobs: float32 ``(scored positions, vocabulary)`` array memory-mapped from a temporary file.
        nll: the reference's summed negative log-likelihood; n_ctx: the window length used.
    """

    ids: list[int]
    spans: list[tuple[int, int, int]]
    logprobs: Any
    nll: float
    n_ctx: int

    @property
    def n_tokens(self) -> int:
        """Scored positions."""
        return int(self.logprobs.shape[0])

    @property
    def ppl(self) -> float:
        """The reference's perplexity on the text."""
        return math.exp(self.nll / self.n_tokens)


def score_reference(scorer, text: str, n_ctx: int, stride: int, folder: str | Path) -> Reference:
    """Run the reference over the text once; its log-probabilities go to ``folder/reference.f32``."""
    import numpy as np

    ids = _token_ids(scorer, text)
    n_ctx = min(n_ctx, scorer.max_ctx)
    spans = list(windows(len(ids), n_ctx, min(stride, n_ctx)))
    store = np.lib.format.open_memmap(Path(folder) / "reference.npy", mode="w+", dtype=np.float32,
                                      shape=(len(ids) - 1, scorer.n_vocab))
    nll, row = 0.0, 0
    for logp, targets in _window_logprobs(scorer, ids, n_ctx, stride, "reference"):
        n = len(targets)
        store[row:row + n] = logp
        nll -= float(logp[np.arange(n), targets].sum())
        row += n
    store.flush()
    return Reference(ids=ids, spans=spans, logprobs=store, nll=nll, n_ctx=n_ctx)


def compare_to_reference(ref: Reference, quant) -> KLReport:
    """KL(P_ref || P_quant), top-1 agreement and both perplexities, from the stored reference."""
    import numpy as np

    if ref.logprobs.shape[1] != quant.n_vocab:
        raise UserError(f"the models have different vocabularies ({ref.logprobs.shape[1]} vs {quant.n_vocab}); "
                        "compare a quant only with the F16 it was made from")
    if quant.max_ctx < ref.n_ctx:
        raise UserError(f"the quantized model's context ({quant.max_ctx}) is shorter than the windows ({ref.n_ctx})")
    kl_sum = kl_max = nll_q = 0.0
    agree = row = 0
    for begin, end, first in progress(ref.spans, desc="KL divergence", unit="window"):
        n = end - first
        lp = np.asarray(ref.logprobs[row:row + n], dtype=np.float64)
        lq = log_softmax(quant.logits(ref.ids[begin:end])[first - 1 - begin: end - 1 - begin])
        kld = np.maximum((np.exp(lp) * (lp - lq)).sum(axis=-1), 0.0)
        kl_sum, kl_max = kl_sum + float(kld.sum()), max(kl_max, float(kld.max()))
        nll_q -= float(lq[np.arange(n), ref.ids[first:end]].sum())
        agree += int((lp.argmax(-1) == lq.argmax(-1)).sum())
        row += n
    return KLReport(mean_kld=kl_sum / row, max_kld=kl_max, top1_agreement=agree / row, ppl_ref=ref.ppl,
                    ppl_quant=math.exp(nll_q / row), n_tokens=row)


def kl_divergence(reference_gguf: Any, quant_gguf: Any, text: str | Path, *, n_ctx: int = PPL_WINDOW,
                  stride: int = 256, backend: str = "auto", method: str = "sliding",
                  chunks: int | None = None) -> KLReport:
    """KL divergence of a quantized model's next-token distributions from its reference's (F16).

    Both models read the same tokens (the reference's tokenization) in the same windows; they are loaded one
    after the other, never together (the reference's log-probabilities wait in a temporary file).

    Args:
        reference_gguf: the F16 GGUF (or any model :func:`open_model` accepts).
        quant_gguf: the quantized GGUF made from it.
        text: text or a path to a UTF-8 file.
        n_ctx: window length; stride: window step (see :func:`perplexity`).
        backend: passed to :func:`open_model` for both.
        method: ``sliding``, or ``llama.cpp``: llama-perplexity's chunks (two GGUF files, run as the tool runs
            them: :func:`~helpers.evaluate.llama_ppl.chunked_kl_divergence`).
        chunks: ``llama.cpp`` only: at most this many chunks.
    """
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    text = read_text(text)
    if method == "llama.cpp":
        return chunked_kl_divergence(reference_gguf, quant_gguf, text, ChunkSettings(n_ctx=n_ctx, chunks=chunks))
    with tempfile.TemporaryDirectory(prefix="kld-") as tmp:
        with scoring(reference_gguf, backend=backend, n_ctx=n_ctx) as scorer:
            ref = score_reference(scorer, text, n_ctx, stride, tmp)
        with scoring(quant_gguf, backend=backend, n_ctx=n_ctx) as scorer:
            report = compare_to_reference(ref, scorer)
        del ref
    return report


def compare_quants(f16_gguf: str | Path, quant_paths: Sequence[str | Path], text: str | Path, *,
                   n_ctx: int = PPL_WINDOW, stride: int = 256, n_threads: int | None = None) -> list[dict]:
    """One row per model for the notebooks' table: type, size, perplexity and KL divergence from the F16.

    One model is loaded at a time: the F16 first (its log-probabilities are kept in a temporary file, about
    4 bytes x vocabulary per scored token), then each quant; ``n_threads`` llama.cpp threads (default: one per core).

    Returns:
        dicts with ``type``, ``path``, ``size`` (bytes), ``size_gb``, ``ppl``, ``kld``, ``max_kld``, ``top1``;
        the F16 comes first (kld 0).
    """
    text = read_text(text)

    def row(path: str | Path, **values: float) -> dict:
        size = Path(path).stat().st_size
        return {"type": gguf_type(path), "path": str(path), "size": size, "size_gb": size / 1e9, **values}

    with tempfile.TemporaryDirectory(prefix="kld-") as tmp:
        with scoring(f16_gguf, backend="llama.cpp", n_ctx=n_ctx, n_threads=n_threads) as scorer:
            ref = score_reference(scorer, text, n_ctx, stride, tmp)
        rows = [row(f16_gguf, ppl=ref.ppl, kld=0.0, max_kld=0.0, top1=1.0)]
        for path in quant_paths:
            with scoring(path, backend="llama.cpp", n_ctx=n_ctx, n_threads=n_threads) as scorer:
                r = compare_to_reference(ref, scorer)
            rows.append(row(path, ppl=r.ppl_quant, kld=r.mean_kld, max_kld=r.max_kld, top1=r.top1_agreement))
        del ref
    return rows


def plot_quant_table(rows: Sequence[dict], *, title: str = "quantization: size, perplexity, KL divergence"):
    """Bar chart of :func:`compare_quants` rows (size, perplexity, mean KLD per type); returns the Figure."""
    from matplotlib.figure import Figure

    if not rows:
        raise UserError("no rows to plot; run compare_quants first")
    names = [r["type"] for r in rows]
    fig = Figure(figsize=(max(6.0, 1.2 * len(rows) * 3), 3.6))
    big = max(r["size"] for r in rows) >= 1e9
    panels = [("size (GB)" if big else "size (MB)", [r["size"] / (1e9 if big else 1e6) for r in rows]),
              ("perplexity", [r["ppl"] for r in rows]), ("mean KL divergence (nats)", [r["kld"] for r in rows])]
    for i, (label, values) in enumerate(panels):
        ax = fig.add_subplot(1, 3, i + 1)
        bars = ax.bar(names, values, color=["#4c72b0", "#55a868", "#c44e52"][i])
        ax.bar_label(bars, labels=[f"{v:.3g}" for v in values], fontsize=8)
        ax.set_title(label, fontsize=10)
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig
