"""Scoring back ends: text -> token ids -> next-token logits, on transformers or llama.cpp.

:func:`open_model` wraps whatever it is given (a GGUF path, an HF folder, a ``llama_cpp.Llama``, a
``(model, tokenizer)`` pair or a chat back end) in a scorer with ``encode``, ``token_text`` and ``logits``.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

from ..chat import load_hf_model, resolve
from ..util import UserError

PPL_WINDOW = 512  # tokens per perplexity / KL window (and the context a scorer opens with)


class HFScorer:
    """transformers model + tokenizer."""

    backend = "transformers"
    owned = False  # True when open_model loaded the model itself (then close() frees it)

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

    def close(self) -> None:
        """Free the model (GPU memory included) when this scorer loaded it."""
        if self.owned and self.model is not None:
            import gc

            import torch

            self.model = None
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


class LlamaCppScorer:
    """llama-cpp-python ``Llama`` created with ``logits_all=True``; reuses the KV cache of a shared prefix."""

    backend = "llama.cpp"
    owned = False  # True when open_model loaded the model itself (then close() frees it)

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

    def close(self) -> None:
        """Free the model when this scorer loaded it."""
        if self.owned and self.llm is not None:
            self.llm.close()
            self.llm = None


@contextlib.contextmanager
def scoring(model: Any, **kwargs: Any) -> Iterator[HFScorer | LlamaCppScorer]:
    """:func:`open_model` as a context: a model loaded here is freed on exit (a model passed in stays loaded)."""
    scorer = open_model(model, **kwargs)
    try:
        yield scorer
    finally:
        scorer.close()


def is_llama(obj: Any) -> bool:
    """Whether ``obj`` is a ``llama_cpp.Llama`` (checked without importing llama_cpp)."""
    return type(obj).__name__ == "Llama" and type(obj).__module__.startswith("llama_cpp")


def open_model(model: Any, *, backend: str = "auto", n_ctx: int = PPL_WINDOW, dtype: str | None = None,
               n_threads: int | None = None, quantization: str | None = None):
    """Wrap ``model`` for scoring: a GGUF path, an HF folder, a ``llama_cpp.Llama``, ``(model, tokenizer)``
    or a :func:`helpers.infer.load_backend` object.

    Args:
        model: what to evaluate.
        backend: ``auto`` (GGUF -> llama.cpp, folder -> transformers), ``transformers`` or ``llama.cpp``.
        n_ctx: context to allocate for llama.cpp.
        dtype: torch dtype for transformers (default float32 on CPU, float16 on GPU).
        n_threads: llama.cpp CPU threads (default: half the logical cores).
        quantization: transformers on a GPU: ``None``, ``"8bit"`` or ``"4bit"`` (bitsandbytes).
    """
    if backend not in ("auto", "transformers", "llama.cpp"):
        raise UserError(f"unknown backend {backend!r}; use auto, transformers or llama.cpp")
    if isinstance(model, (HFScorer, LlamaCppScorer)):
        return model
    if isinstance(model, tuple) and len(model) == 2:
        return HFScorer(*model)
    llm = model if is_llama(model) else next(
        (getattr(model, a) for a in ("llm", "llama", "_llm") if is_llama(getattr(model, a, None))), None)
    if llm is not None:  # a Llama, or a helpers.infer back end holding one
        if getattr(llm, "_logits_all", True) or not getattr(llm, "model_path", None):
            return LlamaCppScorer(llm)
        model, backend, n_ctx = llm.model_path, "llama.cpp", max(n_ctx, int(llm.n_ctx()))  # reopen with logits_all
    if hasattr(model, "model") and hasattr(model, "tokenizer") and not isinstance(model, (str, Path)):
        return HFScorer(model.model, model.tokenizer)
    path = Path(model)
    if not path.exists():  # a catalog name or hub id
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
        scorer = LlamaCppScorer(llm)
        scorer.owned = True
        return scorer
    if gguf or not (path / "config.json").is_file():
        raise UserError(f"{path} is not a Hugging Face model folder; use backend='llama.cpp' for GGUF files")
    import torch

    net, tokenizer, _, _ = load_hf_model(path, dtype=dtype or ("float16" if torch.cuda.is_available() else "float32"),
                                         quantization=quantization)
    scorer = HFScorer(net, tokenizer)
    scorer.owned = True
    return scorer
