"""Measure models: perplexity, KL divergence of a quantized GGUF, C-Eval-style multiple choice.

Every measurement runs on any back end: a Hugging Face folder (transformers), a GGUF file
(llama-cpp-python with ``logits_all``), or an already loaded ``llama_cpp.Llama`` / ``(model, tokenizer)``.

- :func:`perplexity`: sliding window of ``n_ctx`` tokens moved by ``stride``; every token after the
  first is scored exactly once, with at least ``n_ctx - stride`` tokens of context after the first window.
- :func:`kl_divergence`: the same windows through a reference (F16) and a quantized model;
  KL(P_ref || P_quant) per token, averaged, plus the top-1 agreement and both perplexities.
- :func:`multiple_choice`: the releases' C-Eval/CMMLU prompt (question, ``\\nA. ...`` lines,
  ``\\n答案：``; few-shot under the header ``以下是中国关于{subject}考试的单项选择题，...``), answer =
  the option letter whose token is most probable at the next position.
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from .util import UserError, progress, write_json

LETTERS = "ABCD"
MC_HEADER = "以下是中国关于{subject}考试的单项选择题，请选出其中的正确答案。\n\n"
ANSWER_CUE = "\n答案："


# ---------------------------------------------------------------------------------------------
# back ends: encode text, return logits for a token sequence
class _HFScorer:
    """transformers model + tokenizer."""

    backend = "transformers"

    def __init__(self, model, tokenizer):
        self.model, self.tok = model, tokenizer
        self.n_vocab = int(model.get_output_embeddings().weight.shape[0])
        self.max_ctx = int(getattr(model.config, "max_position_embeddings", 0) or 1 << 30)

    def encode(self, text: str, *, bos: bool) -> list[int]:
        ids = list(self.tok.encode(text, add_special_tokens=False))
        bos_id = getattr(self.tok, "bos_token_id", None)
        return ([bos_id] if bos and bos_id is not None else []) + ids

    def token_text(self, idx: int) -> str:
        return self.tok.decode([idx])

    def logits(self, ids: Sequence[int], *, last_only: bool = False):
        import torch

        x = torch.tensor([list(ids)], dtype=torch.long, device=self.model.device)
        with torch.inference_mode():
            out = self.model(input_ids=x, logits_to_keep=1 if last_only else 0, use_cache=False)
        return out.logits[0].float().cpu().numpy()


class _LlamaCppScorer:
    """llama-cpp-python ``Llama`` created with ``logits_all=True``; reuses the KV cache of a shared prefix."""

    backend = "llama.cpp"

    def __init__(self, llm):
        if not getattr(llm, "_logits_all", True):
            raise UserError("the llama_cpp.Llama was created without logits_all=True; recreate it with logits_all=True")
        self.llm = llm
        self.n_vocab = int(llm.n_vocab())
        self.max_ctx = int(llm.n_ctx())

    def encode(self, text: str, *, bos: bool) -> list[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=bos, special=True))

    def token_text(self, idx: int) -> str:
        return self.llm.detokenize([idx]).decode("utf-8", errors="replace")

    def logits(self, ids: Sequence[int], *, last_only: bool = False):
        import numpy as np

        ids = list(ids)
        if len(ids) > self.max_ctx:
            raise UserError(f"{len(ids)} tokens do not fit the context of {self.max_ctx}; pass a larger n_ctx")
        llm, keep = self.llm, 0
        cached = list(llm.input_ids[: llm.n_tokens])
        while keep < min(len(cached), len(ids) - 1) and cached[keep] == ids[keep]:
            keep += 1
        llm.n_tokens = keep  # eval() drops the cache after n_tokens and appends the rest
        llm.eval(ids[keep:])
        rows = llm.scores[len(ids) - 1: len(ids)] if last_only else llm.scores[: len(ids)]
        return np.array(rows, dtype=np.float32)


def _is_llama(obj: Any) -> bool:
    return type(obj).__name__ == "Llama" and type(obj).__module__.startswith("llama_cpp")


def open_model(model: Any, *, backend: str = "auto", n_ctx: int = 512, dtype: str | None = None,
               n_threads: int | None = None):
    """Wrap ``model`` for scoring: a GGUF path, an HF folder, a ``llama_cpp.Llama``, ``(model, tokenizer)``
    or a :func:`helpers.infer.load_backend` object.

    Args:
        model: what to evaluate.
        backend: ``auto`` (GGUF -> llama.cpp, folder -> transformers), ``transformers`` or ``llama.cpp``.
        n_ctx: context to allocate for llama.cpp.
        dtype: torch dtype for transformers (default float32 on CPU, float16 on GPU).
        n_threads: llama.cpp CPU threads (default: half the logical cores).
    """
    if backend not in ("auto", "transformers", "llama.cpp"):
        raise UserError(f"unknown backend {backend!r}; use auto, transformers or llama.cpp")
    if isinstance(model, (_HFScorer, _LlamaCppScorer)):
        return model
    if isinstance(model, tuple) and len(model) == 2:
        return _HFScorer(*model)
    llm = model if _is_llama(model) else next(
        (getattr(model, a) for a in ("llm", "llama", "_llm") if _is_llama(getattr(model, a, None))), None)
    if llm is not None:  # a Llama, or a helpers.infer back end holding one
        if getattr(llm, "_logits_all", True) or not getattr(llm, "model_path", None):
            return _LlamaCppScorer(llm)
        model, backend, n_ctx = llm.model_path, "llama.cpp", max(n_ctx, int(llm.n_ctx()))  # reopen with logits_all
    if hasattr(model, "model") and hasattr(model, "tokenizer") and not isinstance(model, (str, Path)):
        return _HFScorer(model.model, model.tokenizer)
    path = Path(model)
    if not path.exists():  # a catalog name or hub id
        from .infer import resolve

        path = resolve(model)[0]
    gguf = path.is_file() and path.suffix.lower() == ".gguf"
    if backend == "llama.cpp" or (backend == "auto" and gguf):
        if not path.is_file():
            raise UserError(f"{path} is not a GGUF file; convert the folder first (python -m helpers to-gguf)")
        try:
            from llama_cpp import Llama
        except ImportError:
            raise UserError("llama-cpp-python is not installed; run the setup cell, or use --backend transformers "
                            "with an HF folder") from None
        threads = n_threads or max(1, (os.cpu_count() or 2) // 2)  # one per physical core: no spin-wait fights
        llm = Llama(model_path=str(path), n_ctx=n_ctx, n_batch=min(n_ctx, 512), logits_all=True, n_gpu_layers=-1,
                    n_threads=threads, n_threads_batch=threads, verbose=False)
        return _LlamaCppScorer(llm)
    if gguf or not (path / "config.json").is_file():
        raise UserError(f"{path} is not a Hugging Face model folder; use backend='llama.cpp' for GGUF files")
    import torch

    from .backend_hf import _load_hf

    net, tokenizer, _, _ = _load_hf(path, dtype=dtype or ("float16" if torch.cuda.is_available() else "float32"))
    return _HFScorer(net, tokenizer)


# ---------------------------------------------------------------------------------------------
# perplexity and KL divergence
def read_text(text_or_file: str | Path) -> str:
    """A :class:`~pathlib.Path` (or a string naming an existing file) is read as UTF-8; other strings are text."""
    if isinstance(text_or_file, Path) or (isinstance(text_or_file, str) and "\n" not in text_or_file
                                          and len(text_or_file) < 4096 and os.path.isfile(text_or_file)):
        path = Path(text_or_file)
        if not path.is_file():
            raise UserError(f"text file {path} not found")
        return path.read_text(encoding="utf-8")
    return str(text_or_file)


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


def _log_softmax(x):
    import numpy as np

    x = np.asarray(x, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


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
        yield _log_softmax(logits[first - 1 - begin: end - 1 - begin]), ids[first:end]


def perplexity(model: Any, text_or_file: str | Path, *, backend: str = "auto", n_ctx: int = 512,
               stride: int = 256) -> float:
    """Perplexity of ``model`` on a text: ``exp`` of the mean negative log-likelihood per token.

    Args:
        model: GGUF path, HF folder, ``llama_cpp.Llama`` (with ``logits_all``) or ``(model, tokenizer)``.
        text_or_file: the text, or a path to a UTF-8 file (BOS is prepended once).
        backend: ``auto``, ``transformers`` or ``llama.cpp``.
        n_ctx: window length in tokens.
        stride: how far the window moves; the first ``n_ctx - stride`` tokens of later windows are context only.
    """
    import numpy as np

    scorer = open_model(model, backend=backend, n_ctx=n_ctx)
    ids = _token_ids(scorer, read_text(text_or_file))
    nll, count = 0.0, 0
    for logp, targets in _window_logprobs(scorer, ids, n_ctx, stride, "perplexity"):
        nll -= float(logp[np.arange(len(targets)), targets].sum())
        count += len(targets)
    return math.exp(nll / count)


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


def _kl(ref, quant, text: str, n_ctx: int, stride: int) -> KLReport:
    import numpy as np

    if ref.n_vocab != quant.n_vocab:
        raise UserError(f"the models have different vocabularies ({ref.n_vocab} vs {quant.n_vocab}); "
                        "compare a quant only with the F16 it was made from")
    ids = _token_ids(ref, text)
    n_ctx = min(n_ctx, ref.max_ctx, quant.max_ctx)
    spans = list(windows(len(ids), n_ctx, min(stride, n_ctx)))
    kl_sum = kl_max = nll_r = nll_q = 0.0
    agree = count = 0
    for begin, end, first in progress(spans, desc="KL divergence", unit="window"):
        rows = slice(first - 1 - begin, end - 1 - begin)
        lp = _log_softmax(ref.logits(ids[begin:end])[rows])
        lq = _log_softmax(quant.logits(ids[begin:end])[rows])
        kld = np.maximum((np.exp(lp) * (lp - lq)).sum(axis=-1), 0.0)
        targets, pos = ids[first:end], np.arange(end - first)
        kl_sum, kl_max = kl_sum + float(kld.sum()), max(kl_max, float(kld.max()))
        nll_r -= float(lp[pos, targets].sum())
        nll_q -= float(lq[pos, targets].sum())
        agree += int((lp.argmax(-1) == lq.argmax(-1)).sum())
        count += len(targets)
    return KLReport(mean_kld=kl_sum / count, max_kld=kl_max, top1_agreement=agree / count,
                    ppl_ref=math.exp(nll_r / count), ppl_quant=math.exp(nll_q / count), n_tokens=count)


def kl_divergence(reference_gguf: Any, quant_gguf: Any, text: str | Path, *, n_ctx: int = 512,
                  stride: int = 256, backend: str = "auto") -> KLReport:
    """KL divergence of a quantized model's next-token distributions from its reference's (F16).

    Both models read the same tokens (the reference's tokenization) in the same windows.

    Args:
        reference_gguf: the F16 GGUF (or any model :func:`open_model` accepts).
        quant_gguf: the quantized GGUF made from it.
        text: text or a path to a UTF-8 file.
        n_ctx: window length; stride: window step (see :func:`perplexity`).
        backend: passed to :func:`open_model` for both.
    """
    ref = open_model(reference_gguf, backend=backend, n_ctx=n_ctx)
    quant = open_model(quant_gguf, backend=backend, n_ctx=n_ctx)
    return _kl(ref, quant, read_text(text), n_ctx, stride)


def gguf_type(path: str | Path) -> str:
    """Quantization type of a GGUF (``F16``, ``Q8_0``, ``Q4_K_M``...), from its metadata or else its name."""
    try:
        from gguf import LlamaFileType

        from .backend_llamacpp import gguf_metadata

        file_type = gguf_metadata(path).get("general.file_type")
        if file_type is not None:
            return LlamaFileType(int(file_type)).name.replace("MOSTLY_", "").replace("ALL_", "")
    except Exception:  # noqa: BLE001 - fall back to the file name
        pass
    m = re.search(r"(i?q\d_[a-z0-9_]+?|bf16|f16|f32)(?=\.gguf$|$)", Path(path).name, re.IGNORECASE)
    return m.group(1).upper() if m else Path(path).stem


def compare_quants(f16_gguf: str | Path, quant_paths: Sequence[str | Path], text: str | Path, *,
                   n_ctx: int = 512, stride: int = 256) -> list[dict]:
    """One row per model for the notebooks' table: type, size, perplexity and KL divergence from the F16.

    Returns:
        dicts with ``type``, ``path``, ``size`` (bytes), ``size_gb``, ``ppl``, ``kld``, ``max_kld``, ``top1``;
        the F16 comes first (kld 0).
    """
    text = read_text(text)
    ref = open_model(f16_gguf, backend="llama.cpp", n_ctx=n_ctx)
    rows = []
    for path in [f16_gguf, *quant_paths]:
        size = Path(path).stat().st_size
        if Path(path) == Path(f16_gguf):
            ppl = perplexity(ref, text, n_ctx=n_ctx, stride=stride)
            row = dict(ppl=ppl, kld=0.0, max_kld=0.0, top1=1.0)
        else:
            r = _kl(ref, open_model(path, backend="llama.cpp", n_ctx=n_ctx), text, n_ctx, stride)
            row = dict(ppl=r.ppl_quant, kld=r.mean_kld, max_kld=r.max_kld, top1=r.top1_agreement)
        rows.append({"type": gguf_type(path), "path": str(path), "size": size, "size_gb": size / 1e9, **row})
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


# ---------------------------------------------------------------------------------------------
# C-Eval / CMMLU-style multiple choice
@dataclass(frozen=True)
class MCReport:
    """Multiple-choice result: ``accuracy`` over the ``n`` items that have an answer, and one dict per item
    (``id``, ``answer``, ``pred``, ``correct``, ``probs`` over the four letters)."""

    accuracy: float
    n: int
    per_item: list[dict] = field(default_factory=list)

    @property
    def correct(self) -> int:
        return sum(1 for item in self.per_item if item.get("correct"))


def read_mc_csv(path: str | Path) -> list[dict]:
    """Rows of a CSV in the C-Eval layout (``id,question,A,B,C,D,answer``; ``answer`` may be absent)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found; pass a CSV with columns id,question,A,B,C,D,answer")
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    missing = {"question", *LETTERS} - set(rows[0] if rows else {})
    if not rows or missing:
        raise UserError(f"{path} lacks the C-Eval columns {sorted(missing) or 'and rows'}; "
                        "expected id,question,A,B,C,D,answer")
    for i, row in enumerate(rows):
        row.setdefault("id", str(i))
        row["answer"] = (row.get("answer") or "").strip().upper()
    return rows


def format_item(row: dict, *, with_answer: bool) -> str:
    """``question\\nA. ...\\nB. ...\\nC. ...\\nD. ...\\n答案：`` (+ ``X\\n\\n`` with the answer)."""
    text = row["question"] + "".join(f"\n{c}. {row[c]}" for c in LETTERS) + ANSWER_CUE
    return text + f"{row['answer']}\n\n" if with_answer else text


def mc_prompt(row: dict, *, shots: Sequence[dict] = (), subject: str = "", template: str | None = None) -> str:
    """The prompt for one item: zero-shot item, or header + solved examples + item; optionally chat-wrapped.

    With a chat ``template`` each solved example becomes an earlier turn (question -> letter) and the
    header opens the first turn.
    """
    header = MC_HEADER.format(subject=subject) if shots else ""
    if template in (None, "", "raw"):
        return header + "".join(format_item(s, with_answer=True) for s in shots) + format_item(row, with_answer=False)
    from .templates import build_prompt

    turns = [(format_item(s, with_answer=False), s["answer"]) for s in shots]
    if turns:
        turns[0] = (header + turns[0][0], turns[0][1])
    user = format_item(row, with_answer=False)
    return build_prompt(template, user, history=turns)


def letter_ids(scorer) -> dict[str, list[int]]:
    """Token ids that stand for each option letter at the answer position.

    Sentencepiece gives a letter right after ``：`` without a space (``A``) but a letter at the start of
    a text with the dummy prefix (``▁A``); byte-level BPE has ``A`` and ``ĠA``. All single-token
    variants that decode to the bare letter are kept; their probabilities are summed.
    """
    cue = scorer.encode(ANSWER_CUE, bos=False)
    out = {}
    for letter in LETTERS:
        cands = []
        full = scorer.encode(ANSWER_CUE + letter, bos=False)
        if len(full) == len(cue) + 1 and full[:len(cue)] == cue:
            cands.append(full[-1])
        for text in (letter, " " + letter):
            ids = scorer.encode(text, bos=False)
            if ids:
                cands.append(ids[-1])
        keep = sorted({c for c in cands if scorer.token_text(c).strip() == letter})
        if not keep:
            raise UserError(f"the tokenizer has no single token for the letter {letter}; cannot score options")
        out[letter] = keep
    return out


def multiple_choice(model: Any, csv_path: str | Path, *, shots: int = 0, dev_csv: str | Path | None = None,
                    subject: str | None = None, template: str | None = None, backend: str = "auto",
                    n_ctx: int = 2048, limit: int | None = None) -> MCReport:
    """Score a C-Eval-layout CSV the way the releases did: answer = most probable option letter.

    Args:
        model: anything :func:`open_model` accepts.
        csv_path: items (``id,question,A,B,C,D,answer``).
        shots: solved examples before each item (0 or 5 in the releases).
        dev_csv: where the examples come from (C-Eval's ``*_dev.csv``); default: the other items of ``csv_path``.
        subject: subject name for the few-shot header (default: the CSV name without ``_val``/``_dev``/``_test``).
        template: chat template id for instruct models (``alpaca``, ``llama2-zh``, ``llama3``); None = plain text.
        backend: ``auto``, ``transformers`` or ``llama.cpp``.
        n_ctx: context limit; examples are dropped from the end until the prompt fits.
        limit: score only the first ``limit`` items.
    """
    import numpy as np

    if shots < 0:
        raise UserError("shots must be 0 or more")
    all_rows = read_mc_csv(csv_path)
    rows = all_rows[: limit or None]
    dev = read_mc_csv(dev_csv) if dev_csv else None
    subject = subject or re.sub(r"_(val|dev|test)$", "", Path(csv_path).stem).replace("_", " ")
    scorer = open_model(model, backend=backend, n_ctx=n_ctx)
    n_ctx = min(n_ctx, scorer.max_ctx)
    cands = letter_ids(scorer)
    items = []
    for row in progress(rows, desc="multiple choice", unit="item"):
        pool = dev if dev is not None else [r for r in all_rows if r["id"] != row["id"] and r["answer"]]
        examples = pool[:shots]
        while True:
            ids = scorer.encode(mc_prompt(row, shots=examples, subject=subject, template=template), bos=True)
            if len(ids) <= n_ctx or not examples:
                break
            examples = examples[:-1]
        logp = _log_softmax(scorer.logits(ids[-n_ctx:], last_only=True)[-1])
        scores = np.array([np.logaddexp.reduce(logp[cands[c]]) for c in LETTERS])
        probs = np.exp(scores - scores.max())
        probs /= probs.sum()
        pred = LETTERS[int(scores.argmax())]
        items.append({"id": row["id"], "answer": row["answer"], "pred": pred,
                      "correct": bool(row["answer"]) and pred == row["answer"],
                      "probs": {c: round(float(p), 4) for c, p in zip(LETTERS, probs)}, "shots": len(examples)})
    answered = [it for it in items if it["answer"]]
    acc = sum(it["correct"] for it in answered) / len(answered) if answered else float("nan")
    return MCReport(accuracy=acc, n=len(answered), per_item=items)


# ---------------------------------------------------------------------------------------------
# CLI: python -m helpers evaluate
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="GGUF file or HF model folder to evaluate "
                        "(with --kld-ref: the quantized GGUF)")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--ppl", metavar="FILE", help="perplexity on this UTF-8 text file")
    mode.add_argument("--mc", metavar="CSV", help="multiple choice on a CSV with columns id,question,A,B,C,D,answer")
    mode.add_argument("--kld-ref", metavar="F16_GGUF", help="KL divergence of --model from this reference GGUF")
    parser.add_argument("--text", metavar="FILE", help="text for --kld-ref")
    parser.add_argument("--backend", default="auto", choices=["auto", "transformers", "llama.cpp"])
    parser.add_argument("--n-ctx", type=int, default=None, help="context window (default 512; 2048 for --mc)")
    parser.add_argument("--stride", type=int, default=256, help="window step for --ppl / --kld-ref")
    parser.add_argument("--shots", type=int, default=0, help="few-shot examples for --mc (the releases used 0 and 5)")
    parser.add_argument("--dev", metavar="CSV", help="few-shot examples for --mc (default: other items of --mc)")
    parser.add_argument("--subject", help="subject name in the few-shot header (default: from the CSV name)")
    parser.add_argument("--template", help="chat template for instruct models: alpaca, llama2-zh, llama3")
    parser.add_argument("--limit", type=int, help="score only the first N items of --mc")
    parser.add_argument("--json", metavar="OUT", help="also write the result as JSON")


def run(args: argparse.Namespace) -> int:
    if args.ppl:
        n_ctx = args.n_ctx or 512
        ppl = perplexity(args.model, Path(args.ppl), backend=args.backend, n_ctx=n_ctx, stride=min(args.stride, n_ctx))
        result: dict = {"model": args.model, "text": args.ppl, "n_ctx": n_ctx, "perplexity": ppl}
        print(f"perplexity {ppl:.4f} ({args.ppl}, n_ctx {n_ctx})")
    elif args.mc:
        rep = multiple_choice(args.model, args.mc, shots=args.shots, dev_csv=args.dev, subject=args.subject,
                              template=args.template, backend=args.backend, n_ctx=args.n_ctx or 2048, limit=args.limit)
        result = {"model": args.model, "csv": args.mc, "shots": args.shots, "accuracy": rep.accuracy, "n": rep.n,
                  "correct": rep.correct, "items": rep.per_item}
        print(f"accuracy {rep.accuracy:.4f} ({rep.correct}/{rep.n}, {args.shots}-shot)")
    else:
        if not args.text:
            raise UserError("--kld-ref needs --text FILE")
        n_ctx = args.n_ctx or 512
        rep = kl_divergence(args.kld_ref, args.model, Path(args.text), n_ctx=n_ctx, stride=min(args.stride, n_ctx),
                            backend=args.backend)
        result = {"reference": args.kld_ref, "model": args.model, **asdict(rep)}
        print(f"mean KLD {rep.mean_kld:.6f}  max {rep.max_kld:.6f}  top-1 agreement {rep.top1_agreement:.4f}  "
              f"PPL {rep.ppl_ref:.4f} -> {rep.ppl_quant:.4f} ({rep.n_tokens} tokens)")
    if args.json:
        write_json(args.json, result)
    return 0
