"""The server's engine: one GGUF through llama-cpp-python's token loop, with the prompt the model was trained on.

:class:`Engine` turns a chat into token ids with the release's template (:mod:`helpers.tokens.templates`, one BOS
first, as the tokenizer adds it) and generates one token at a time (``Llama.generate``), so that it can

- decode incrementally: each token's bytes (``Llama.detokenize([token])``) go through an incremental UTF-8 decoder
  that holds back only an incomplete character, so a reply costs the same streamed or not and a lone byte such as
  ``0xCC`` never stalls the stream;
- stop exactly at ``max_tokens`` (EOS and stop strings earlier), at the end of the context, at a time limit, or at
  the next token once its client has gone (``cancel``);
- give each token's log-probability from the logits llama.cpp just computed (no ``logits_all`` copy of every row).

One generation runs at a time (llama.cpp's context is one sequence); :mod:`.openai_app` runs it in a worker thread so
that the event loop keeps answering. Embeddings use a second context over the same memory-mapped weights, made on the
first ``/v1/embeddings`` request (:meth:`Engine.embed`).
"""
from __future__ import annotations

import codecs
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ..tokens import TEMPLATES, get_template, template_from_chat_template
from ..util import UserError
from .backend import StopFilter

EMBEDDING_CTX = 2048  # the embedding context's length (inputs are cut to it, as llama-cpp-python's embed does)


@dataclass(frozen=True)
class Sampling:
    """How to sample one reply (OpenAI's names where OpenAI has one; llama.cpp's defaults otherwise)."""

    max_tokens: int | None = None  # None: until EOS, a stop string or the end of the context
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logit_bias: dict[int, float] = field(default_factory=dict)
    min_tokens: int = 0
    grammar: str | None = None  # GBNF
    logprobs: bool = False
    top_logprobs: int = 0


@dataclass
class Token:
    """One generated token: its id, the text it completes (may be empty: an incomplete character or text held back
    because it may start a stop string), and its log-probability with the ``top`` alternatives when asked for."""

    id: int
    text: str
    piece: bytes
    logprob: float | None = None
    top: list[tuple[int, float]] | None = None


@dataclass
class Finish:
    """The end of one reply: the text still held back, why it ended and how many tokens it generated."""

    text: str
    reason: str  # "stop" (EOS or a stop string) or "length" (max_tokens, the context, the time limit)
    completion_tokens: int


class Cancelled(Exception):
    """The client went away; the generation stopped at its next token."""


class Engine:
    """A GGUF loaded once, answering one generation at a time (see the module docstring).

    Args:
        path: the GGUF. n_ctx, n_gpu_layers: as llama-cpp-python's ``Llama``.
        template: a template id of :data:`helpers.tokens.TEMPLATES` (default: the one the GGUF's chat template is);
            a GGUF whose chat template is none of ours is formatted with that template, as llama.cpp does.
        llm: an already loaded ``llama_cpp.Llama`` (tests).
    """

    def __init__(self, path: str | Path, *, n_ctx: int = 4096, n_gpu_layers: int = 0, template: str | None = None,
                 llm: Any = None) -> None:
        import llama_cpp

        self.path = Path(path)
        self.n_gpu_layers = n_gpu_layers
        self.llm = llm or llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_gpu_layers=n_gpu_layers,
                                          verbose=False)
        self.n_ctx = self.llm.n_ctx()
        self.n_vocab = self.llm.n_vocab()
        self.vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self.gguf_template = self.llm.metadata.get("tokenizer.chat_template")
        if template is not None and template not in TEMPLATES:
            raise UserError(f"unknown template {template!r}; choose one of: {', '.join(TEMPLATES)}")
        self.template = template or template_from_chat_template(self.gguf_template) or (
            None if self.gguf_template else "raw")
        self._embedder: Any = None
        self._lock = threading.Lock()  # one generation (or embedding) at a time

    # ------------------------------------------------------------------------------------------ prompts
    def chat_text(self, messages: Sequence[dict]) -> str:
        """The prompt text of ``messages`` (``[{"role", "content": str}]``, roles system/user/assistant), without the
        BOS the tokenizer adds.

        Raises:
            UserError: the messages break the template's rules (a system message not first, ...).
        """
        if self.template is not None:
            return get_template(self.template).render(messages, add_generation_prompt=True)
        return self._gguf_jinja_text(messages)

    def _gguf_jinja_text(self, messages: Sequence[dict]) -> str:
        """A foreign GGUF's own template, rendered as llama.cpp does (a leading ``bos_token`` stripped: the tokenizer
        adds it)."""
        from jinja2.exceptions import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        bos, eos = (self.token_text(self.llm.token_bos()), self.token_text(self.llm.token_eos()))

        def raise_exception(message: str) -> None:
            raise UserError(f"the model's chat template refused the messages: {message}")

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        try:
            text = env.from_string(self.gguf_template).render(messages=list(messages), add_generation_prompt=True,
                                                              bos_token=bos, eos_token=eos,
                                                              raise_exception=raise_exception)
        except TemplateError as exc:
            raise UserError(f"the model's chat template cannot render these messages: {exc}") from None
        return text[len(bos):] if bos and text.startswith(bos) else text

    def token_text(self, token: int) -> str:
        """A token's text with special tokens spelled out (``<s>``)."""
        return self.llm.detokenize([token], special=True).decode("utf-8", "replace")

    def tokenize(self, text: str) -> list[int]:
        """Token ids of a prompt: the BOS the vocabulary asks for first, special tokens in the text parsed."""
        return self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)

    def chat_tokens(self, messages: Sequence[dict]) -> list[int]:
        """What the model is fed for ``messages``: :meth:`chat_text` tokenized with one BOS first."""
        return self.tokenize(self.chat_text(messages))

    def check_room(self, prompt: Sequence[int]) -> None:
        """Raise :class:`UserError` when ``prompt`` leaves no room to generate in the context."""
        if len(prompt) >= self.n_ctx:
            raise UserError(f"the prompt has {len(prompt)} tokens; this model's context is {self.n_ctx} tokens "
                            "(prompt and reply together): shorten the messages or serve with a larger --n-ctx")

    def grammar(self, text: str | None):
        """A GBNF grammar for llama.cpp (None: none).

        Raises:
            UserError: it does not parse (llama.cpp would otherwise fail in the middle of a reply).
        """
        if text is None:
            return None
        import llama_cpp
        from llama_cpp.llama_grammar import LlamaGrammar

        sampler = llama_cpp.llama_sampler_init_grammar(self.vocab, text.encode("utf-8"), b"root")
        if not sampler:
            raise UserError("grammar: not a valid GBNF grammar with a 'root' rule (see llama.cpp's grammars/README.md)")
        llama_cpp.llama_sampler_free(sampler)
        return LlamaGrammar.from_string(text, verbose=False)

    # ------------------------------------------------------------------------------------------ generation
    def is_end(self, token: int) -> bool:
        """True for a token that ends a turn (EOS, ``<|eot_id|>``, ...)."""
        import llama_cpp

        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    def generate(self, prompt: Sequence[int], sampling: Sampling, *, cancel: threading.Event | None = None,
                 deadline: float | None = None) -> Iterator[Token | Finish]:
        """Sample one reply to ``prompt`` token by token; the last item is a :class:`Finish`.

        Raises:
            Cancelled: ``cancel`` was set (checked before each token).
            UserError: the prompt fills the context, or the grammar does not parse.
        """
        import llama_cpp

        self.check_room(prompt)
        with self._lock:
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            self.llm.set_seed(sampling.seed if sampling.seed is not None else int.from_bytes(os.urandom(4), "little"))
            grammar = self.grammar(sampling.grammar)
            limit = self.n_ctx - len(prompt)
            if sampling.max_tokens is not None:
                limit = min(limit, sampling.max_tokens)
            processors = self._processors(sampling)
            tokens = self.llm.generate(
                list(prompt), top_k=sampling.top_k, top_p=sampling.top_p, min_p=sampling.min_p,
                temp=sampling.temperature, repeat_penalty=sampling.repeat_penalty,
                frequency_penalty=sampling.frequency_penalty, presence_penalty=sampling.presence_penalty,
                logits_processor=llama_cpp.LogitsProcessorList(processors) if processors else None, grammar=grammar)
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            stops = StopFilter(sampling.stop)
            n = 0
            reason = "length"
            try:
                while n < limit:
                    if cancel is not None and cancel.is_set():
                        raise Cancelled()
                    if deadline is not None and time.monotonic() > deadline:
                        break
                    token = next(tokens)
                    if self.is_end(token):
                        reason = "stop"
                        break
                    n += 1
                    piece = self.llm.detokenize([token])
                    out = Token(token, stops.feed(decoder.decode(piece)), piece)
                    if sampling.logprobs:
                        out.logprob, out.top = self._logprobs(token, sampling.top_logprobs)
                    yield out
                    if stops.hit:
                        reason = "stop"
                        break
            finally:
                tokens.close()
            tail = "" if stops.hit else stops.feed(decoder.decode(b"", final=True))
            yield Finish(tail + stops.flush(), reason, n)

    def _processors(self, sampling: Sampling) -> list[Callable]:
        """Logit biases, and EOS held off until ``min_tokens`` tokens, as llama-cpp-python logits processors."""
        import numpy as np

        out: list[Callable] = []
        if sampling.logit_bias:
            ids = np.array(list(sampling.logit_bias), dtype=np.intc)
            values = np.array(list(sampling.logit_bias.values()), dtype=np.single)

            def bias(_input_ids, scores):
                scores[ids] += values
                return scores

            out.append(bias)
        if sampling.min_tokens:
            ends = np.array([t for t in (self.llm.token_eos(), _eot(self)) if t is not None and t >= 0],
                            dtype=np.intc)
            start = [None]

            def hold_eos(input_ids, scores):
                if start[0] is None:
                    start[0] = len(input_ids)
                if len(input_ids) - start[0] < sampling.min_tokens:
                    scores[ends] = -np.inf
                return scores

            out.append(hold_eos)
        return out

    def _logprobs(self, token: int, top: int) -> tuple[float, list[tuple[int, float]]]:
        """Log-probability of ``token`` and the ``top`` most likely tokens, from the logits of the last position."""
        import llama_cpp
        import numpy as np

        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.llm.ctx, -1), shape=(self.n_vocab,))
        logits = logits.astype(np.float64)
        m = logits.max()
        logz = m + math.log(float(np.exp(logits - m).sum()))
        best = np.argpartition(-logits, top)[:top] if top else np.array([], dtype=int)
        best = best[np.argsort(-logits[best])]
        return float(logits[token] - logz), [(int(t), float(logits[t] - logz)) for t in best]

    # ------------------------------------------------------------------------------------------ embeddings
    def embed(self, inputs: Sequence[str | Sequence[int]]) -> tuple[list[list[float]], int]:
        """Unit-length mean-pooled embeddings of ``inputs`` (texts or token ids) and the tokens they took.

        The first call makes a second llama.cpp context (``embedding=True``, mean pooling, :data:`EMBEDDING_CTX`
        tokens) over the same GGUF; its weights are the same memory-mapped file, so it costs its own context's memory
        (KV cache and compute buffers), not a second copy of the model.
        """
        import llama_cpp

        with self._lock:
            if self._embedder is None:
                self._embedder = llama_cpp.Llama(model_path=str(self.path), embedding=True,
                                                 n_ctx=min(self.n_ctx, EMBEDDING_CTX), n_batch=min(self.n_ctx,
                                                                                                   EMBEDDING_CTX),
                                                 n_ubatch=min(self.n_ctx, EMBEDDING_CTX),
                                                 pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                                                 n_gpu_layers=self.n_gpu_layers, verbose=False)
            texts = [x if isinstance(x, str) else self.llm.detokenize(list(x)).decode("utf-8", "replace")
                     for x in inputs]
            vectors, count = self._embedder.embed(texts, normalize=True, truncate=True, return_count=True)
            return [list(map(float, v)) for v in vectors], int(count)

    def close(self) -> None:
        """Free both llama.cpp contexts."""
        for llm in (self._embedder, self.llm):
            if llm is not None and hasattr(llm, "close"):
                llm.close()
        self._embedder = self.llm = None


def _eot(engine: Engine) -> int | None:
    import llama_cpp

    token = llama_cpp.llama_vocab_eot(engine.vocab)
    return None if token < 0 else int(token)


