"""A GGUF run over a text in chunks, exactly as llama.cpp's ``llama-perplexity`` and ``llama-imatrix`` run it.

Both tools tokenize the whole text once (with the model's special tokens, special-token text not parsed),
cut it into chunks of ``n_ctx`` tokens (the tail that does not fill a chunk is dropped), replace each chunk's
first token by BOS when the model adds one, clear the KV cache and evaluate ``n_batch // n_ctx`` chunks side by
side in one batch (each its own sequence, positions from 0). :class:`ChunkRunner` does the same through
llama-cpp-python's low-level API (model and context parameters, ``llama_batch``, ``llama_decode``), so the
logits, and the activations an eval callback sees, are the tools' own:

- ``llama-perplexity`` asks for the logits of the second half of each chunk (positions ``n_ctx // 2`` on) and
  scores the tokens after them: :meth:`ChunkRunner.run` with ``outputs="scored"``;
- ``llama-imatrix`` asks for every position's logits, so that the last layer computes every row (llama.cpp
  skips rows nobody reads), and reads activations through the context's eval callback (``cb_eval``):
  ``outputs="all"``.

The context holds ``n_batch // n_ctx`` sequences of ``n_ctx`` (the tools' ``n_parallel``), a batch of
``min(n_batch, that)`` tokens and llama.cpp's default micro-batch (512) and flash-attention choice (auto).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..util import UserError
from ..util.params import param

DEFAULT_BATCH = 2048  # the tools' default -b


@dataclass(frozen=True)
class ChunkSettings:
    """How a text is cut and evaluated (the tools' ``-c``, ``--chunks``, ``-b``, ``-t``, ``-ngl``).

    Attributes:
        n_ctx: tokens per chunk.
        chunks: evaluate at most this many chunks (None: as many as the text fills).
        n_batch: tokens per ``llama_decode`` call; ``n_batch // n_ctx`` chunks run side by side. Below ``n_ctx`` it
            must divide into it the tools' way (``n_batch < n_ctx``), else be a multiple of ``n_ctx``.
        threads: CPU threads (default: every core this process may use).
        n_gpu_layers: layers offloaded to the GPU with a CUDA build (-1: all; ignored by a CPU build).
    """

    n_ctx: int = param(512, "tokens per chunk (llama.cpp's -c)", flag="--ctx", parse=int, metavar="N")
    chunks: int | None = param(None, "at most this many chunks (default: all the text)", parse=int, metavar="K")
    n_batch: int = param(DEFAULT_BATCH, "tokens per batch; batch/ctx chunks run side by side", flag="--batch",
                         parse=int, metavar="N")
    threads: int | None = param(None, "CPU threads (default: all cores)", parse=int, metavar="N")
    n_gpu_layers: int = param(-1, "layers on the GPU with a CUDA build (-1: all)", flag="--gpu-layers", parse=int,
                              metavar="N")

    def __post_init__(self) -> None:
        if self.n_ctx < 8:
            raise UserError(f"the chunk size (context) must be at least 8 tokens, got {self.n_ctx}")
        if self.chunks is not None and self.chunks < 1:
            raise UserError(f"chunks must be at least 1, got {self.chunks}")
        if self.n_batch < 1 or (self.n_batch >= self.n_ctx and self.n_batch % self.n_ctx):
            raise UserError(f"the batch ({self.n_batch}) must be smaller than the chunk size ({self.n_ctx}) or a "
                            "multiple of it")

    @property
    def n_seq(self) -> int:
        """Chunks evaluated side by side."""
        return max(1, self.n_batch // self.n_ctx)


def chunk_count(n_tokens: int, settings: ChunkSettings, *, what: str) -> int:
    """How many chunks the tools evaluate on ``n_tokens`` tokens (they need at least two chunks' worth).

    Raises:
        UserError: the text is shorter than two chunks.
    """
    if n_tokens < 2 * settings.n_ctx:
        raise UserError(f"{what} needs at least {2 * settings.n_ctx} tokens for chunks of {settings.n_ctx}, but the "
                        f"text has {n_tokens}: give a longer text or a smaller context (--ctx)")
    n = n_tokens // settings.n_ctx
    return n if settings.chunks is None else min(settings.chunks, n)


class ChunkRunner:
    """A GGUF loaded with llama-cpp-python's low-level API for chunked runs (a context manager).

    Args:
        model: the GGUF file.
        settings: chunking, batch, threads, GPU layers.
        cb_eval: an eval callback (``llama_cpp.ggml_backend_sched_eval_callback``) the context calls for every
            graph node (keep it alive as long as the runner).

    Raises:
        UserError: llama-cpp-python is missing, or llama.cpp cannot load the file.
    """

    def __init__(self, model: str | Path, settings: ChunkSettings, *, cb_eval: Any = None) -> None:
        from ..gguf import llama_cpp_available
        from ..gguf.llamacpp import install_hint, quiet_llama_log
        from ..gguf.metadata import check_gguf
        from ..util import log_dir

        if not llama_cpp_available():
            raise UserError(install_hint())
        import llama_cpp

        self.path, self.settings, self.lib = Path(model), settings, llama_cpp
        check_gguf(self.path)
        self.model = self.ctx = None
        log_file = log_dir() / f"load-{self.path.stem}.log"
        with quiet_llama_log(log_file=log_file):
            llama_cpp.llama_backend_init()
            mparams = llama_cpp.llama_model_default_params()
            mparams.n_gpu_layers = 0x7FFFFFFF if settings.n_gpu_layers < 0 else settings.n_gpu_layers
            self.model = llama_cpp.llama_model_load_from_file(str(self.path).encode(), mparams)
            if not self.model:
                raise UserError(f"llama.cpp could not load {self.path}; its log is in {log_file}")
            self.ctx = llama_cpp.llama_init_from_model(self.model, self._context_params(cb_eval))
            if not self.ctx:
                self.close()
                raise UserError(f"llama.cpp could not create a context for {self.path}; its log is in {log_file}")
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self.vocab))
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))
        self.bos = int(llama_cpp.llama_vocab_bos(self.vocab))

    def _context_params(self, cb_eval: Any):
        from ..gguf.ggml import default_threads

        s, lib = self.settings, self.lib
        params = lib.llama_context_default_params()
        params.n_ctx = s.n_seq * s.n_ctx
        params.n_batch = min(s.n_batch, params.n_ctx)
        params.n_ubatch = min(params.n_ubatch, params.n_batch)
        params.n_seq_max = s.n_seq
        params.n_threads = params.n_threads_batch = s.threads or default_threads()
        if cb_eval is not None:
            params.cb_eval = cb_eval
            params.cb_eval_user_data = None
        return params

    def __enter__(self) -> "ChunkRunner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Free the context and the model (llama.cpp's farewell lines are not printed)."""
        from ..gguf.llamacpp import quiet_llama_log

        with quiet_llama_log():
            if self.ctx:
                self.lib.llama_free(self.ctx)
            if self.model:
                self.lib.llama_model_free(self.model)
        self.ctx = self.model = None

    def tokenize(self, text: str) -> list[int]:
        """The text's tokens as the tools make them: special tokens added (BOS where the model adds one), text
        that looks like a special token kept as text."""
        data = text.encode("utf-8")
        cap = len(data) + 8
        buf = (self.lib.llama_token * cap)()
        n = self.lib.llama_tokenize(self.vocab, data, len(data), buf, cap, True, False)
        if n < 0:
            raise RuntimeError(f"llama.cpp asked for {-n} token slots, more than {cap}")
        return list(buf[:n])

    def run(self, tokens: list[int], n_chunks: int, *, outputs: str,
            on_chunk: Callable[[int, Any], None] | None = None, progress: Callable | None = None) -> None:
        """Evaluate the first ``n_chunks`` chunks of ``tokens``.

        Args:
            tokens: from :meth:`tokenize`.
            n_chunks: from :func:`chunk_count`.
            outputs: ``"scored"``: logits of positions ``n_ctx // 2`` on (llama-perplexity); ``"all"``: every
                position's (llama-imatrix).
            on_chunk: called with ``(chunk index, logits)`` after each chunk: a float32 array ``(outputs, n_vocab)``
                valid only during the call.
            progress: wraps the iterable of chunk groups (e.g. :func:`helpers.util.progress`).
        """
        s = self.settings
        first = s.n_ctx // 2 if outputs == "scored" else 0
        groups = range(0, n_chunks, s.n_seq)
        batch = self.lib.llama_batch_init(min(s.n_batch, s.n_seq * s.n_ctx), 0, s.n_seq)
        try:
            for i in (progress(groups) if progress else groups):
                self._run_group(batch, tokens, i, min(s.n_seq, n_chunks - i), first, on_chunk)
        finally:
            self.lib.llama_batch_free(batch)

    def _run_group(self, batch, tokens: list[int], i: int, n_seq: int, first: int, on_chunk) -> None:
        """Chunks ``i .. i + n_seq - 1`` side by side (in several batches when a chunk is longer than one)."""
        import numpy as np

        s, lib = self.settings, self.lib
        lib.llama_memory_clear(lib.llama_get_memory(self.ctx), True)
        n_batches = math.ceil(s.n_ctx / s.n_batch)
        rows: list[list] = [[] for _ in range(n_seq)]
        for j in range(n_batches):
            positions = range(j * s.n_batch, min(s.n_ctx, (j + 1) * s.n_batch))
            batch.n_tokens = 0
            for seq in range(n_seq):
                start = (i + seq) * s.n_ctx
                for pos in positions:
                    tok = self.bos if (self.add_bos and pos == 0) else tokens[start + pos]
                    self._add(batch, tok, pos, seq, pos >= first)
            if lib.llama_decode(self.ctx, batch) != 0:
                raise UserError(f"llama.cpp failed to evaluate chunk {i + 1} of {self.path}")
            outs = sum(1 for pos in positions if pos >= first)
            if on_chunk is not None and outs:
                flat = np.ctypeslib.as_array(lib.llama_get_logits(self.ctx), shape=(n_seq * outs * self.n_vocab,))
                block = flat.reshape(n_seq, outs, self.n_vocab)
                for seq in range(n_seq):  # the next batch overwrites llama.cpp's buffer: copy when there is one
                    rows[seq].append(np.array(block[seq]) if n_batches > 1 else block[seq])
        if on_chunk is not None:
            for seq in range(n_seq):
                on_chunk(i + seq, rows[seq][0] if len(rows[seq]) == 1 else np.concatenate(rows[seq]))

    @staticmethod
    def _add(batch, token: int, pos: int, seq: int, logits: bool) -> None:
        n = batch.n_tokens
        batch.token[n] = token
        batch.pos[n] = pos
        batch.n_seq_id[n] = 1
        batch.seq_id[n][0] = seq
        batch.logits[n] = logits
        batch.n_tokens = n + 1

