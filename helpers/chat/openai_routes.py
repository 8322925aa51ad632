"""The OpenAI routes of :mod:`.openai_app`: requests checked and turned into engine work, answers in OpenAI's shapes
(chat completions, legacy completions, embeddings; streamed as server-sent events with the usage chunk when asked)."""
from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from typing import Any, AsyncIterator, Callable

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from ..util import UserError
from .engine import Cancelled, Engine, Sampling, Token
from .openai_service import Service
from .openai_types import (ApiError, ChatRequest, CompletionRequest, EmbeddingRequest, chat_messages, error_body,
                           parse)


# ---------------------------------------------------------------------------------------------- requests to work
def _sampling(req: Any, *, max_tokens: int | None, logprobs: bool, top_logprobs: int, engine: Engine,
              grammar: str | None = None) -> Sampling:
    """The request's sampling settings, llama.cpp's defaults where it gives none. Raises :class:`ApiError`."""
    bias: dict[int, float] = {}
    for key, value in (req.logit_bias or {}).items():
        if not key.lstrip("-").isdigit() or not 0 <= int(key) < engine.n_vocab:
            raise ApiError(400, f"logit_bias: keys must be token ids (0 to {engine.n_vocab - 1})", param="logit_bias")
        bias[int(key)] = max(-100.0, min(100.0, float(value)))
    if grammar is not None and req.grammar is not None:
        raise ApiError(400, "grammar and response_format cannot both be given", param="grammar")
    grammar = grammar if grammar is not None else req.grammar
    try:
        engine.grammar(grammar)
    except UserError as exc:
        raise ApiError(400, str(exc), param="grammar") from None
    stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
    defaults = Sampling()
    pick = (lambda name: getattr(req, name) if getattr(req, name) is not None else getattr(defaults, name))
    return Sampling(max_tokens=max_tokens, temperature=pick("temperature"), top_p=pick("top_p"), top_k=pick("top_k"),
                    min_p=pick("min_p"), repeat_penalty=pick("repeat_penalty"),
                    frequency_penalty=pick("frequency_penalty"), presence_penalty=pick("presence_penalty"),
                    seed=req.seed, stop=stop, logit_bias=bias, min_tokens=req.min_tokens or 0, grammar=grammar,
                    logprobs=logprobs, top_logprobs=top_logprobs)


def _response_grammar(fmt: dict | None) -> str | None:
    """The GBNF grammar of a ``response_format`` (None: plain text)."""
    if not fmt or fmt.get("type") in (None, "text"):
        return None
    from llama_cpp import llama_grammar

    if fmt.get("type") == "json_object":
        schema = fmt.get("schema")
        return llama_grammar.json_schema_to_gbnf(json.dumps(schema)) if schema else llama_grammar.JSON_GBNF
    if fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise ApiError(400, "response_format.json_schema.schema: a JSON schema object is required",
                           param="response_format")
        try:
            return llama_grammar.json_schema_to_gbnf(json.dumps(schema))
        except Exception as exc:  # noqa: BLE001 - llama-cpp-python's converter raises several kinds
            raise ApiError(400, f"response_format.json_schema.schema: not supported ({type(exc).__name__}: {exc})",
                           param="response_format") from None
    raise ApiError(400, "response_format.type: one of text, json_object, json_schema", param="response_format")


def _room(engine: Engine, prompt: list[int]) -> None:
    try:
        engine.check_room(prompt)
    except UserError as exc:
        raise ApiError(400, str(exc), param="messages", code="context_length_exceeded") from None


def _chat_prompt(service: Service, req: ChatRequest) -> tuple[str, list[int]]:
    messages = chat_messages(req.messages)
    try:
        text = service.engine.chat_text(messages)
    except UserError as exc:
        raise ApiError(400, f"messages: {exc}", param="messages") from None
    return text, service.engine.tokenize(text)


def _chat_logprobs(engine: Engine, tokens: list[Token]) -> dict:
    def entry(token: int, logprob: float, piece: bytes | None = None) -> dict:
        piece = engine.llm.detokenize([token]) if piece is None else piece
        return {"token": piece.decode("utf-8", "replace"), "logprob": logprob, "bytes": list(piece)}

    return {"content": [{**entry(t.id, t.logprob, t.piece), "top_logprobs": [entry(i, lp) for i, lp in t.top or []]}
                        for t in tokens]}


def _completion_logprobs(engine: Engine, tokens: list[Token], offset: int) -> dict:
    out: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for t in tokens:
        text = t.piece.decode("utf-8", "replace")
        out["tokens"].append(text)
        out["token_logprobs"].append(t.logprob)
        out["top_logprobs"].append({engine.llm.detokenize([i]).decode("utf-8", "replace"): lp
                                    for i, lp in t.top or []})
        out["text_offset"].append(offset)
        offset += len(text)
    return out


def _usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


# ---------------------------------------------------------------------------------------------- routes
async def prompt(service: Service, request: Request) -> Any:
    """``POST /helpers/prompt``: the prompt text and token ids a chat request is fed."""
    req = parse(ChatRequest, await request.body())
    text, tokens = _chat_prompt(service, req)
    return {"prompt": text, "tokens": tokens}


async def chat(service: Service, request: Request) -> Any:
    """``POST /v1/chat/completions``."""
    engine = service.engine
    req = parse(ChatRequest, await request.body())
    service.check_model(req.model)
    if req.tools:
        raise ApiError(400, "tools: this server does not call tools", param="tools")
    if req.max_tokens is not None and req.max_completion_tokens is not None \
            and req.max_tokens != req.max_completion_tokens:
        raise ApiError(400, "max_tokens and max_completion_tokens differ; give one", param="max_tokens")
    _text, prompt_ids = _chat_prompt(service, req)
    _room(engine, prompt_ids)
    sampling = _sampling(req, max_tokens=req.max_completion_tokens or req.max_tokens,
                         logprobs=bool(req.logprobs), top_logprobs=req.top_logprobs or 0, engine=engine,
                         grammar=_response_grammar(req.response_format))
    n, rid, created = req.n or 1, f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    work = service.generate(prompt_ids, sampling, n)
    head = {"id": rid, "created": created, "model": service.model_id}
    if req.stream:
        usage = bool(req.stream_options and req.stream_options.include_usage)
        return _Stream(service, _chat_stream(service, request, work, head, n, len(prompt_ids), usage,
                                             sampling.logprobs))
    items = await _collect(service, request, work)
    if items is None:
        return Response(status_code=499)  # nobody reads it: the client has gone
    texts, tokens, reasons, completion = _gathered(items, [""] * n)
    choices = [{"index": i, "message": {"role": "assistant", "content": texts[i]},
                "logprobs": _chat_logprobs(engine, tokens[i]) if sampling.logprobs else None,
                "finish_reason": reasons[i]} for i in range(n)]
    return {**head, "object": "chat.completion", "choices": choices, "usage": _usage(len(prompt_ids), completion)}


def _gathered(items: list, starts: list[str]) -> tuple[list[str], list[list[Token]], list[str], int]:
    """The collected ``(choice, item)`` pairs of an unstreamed reply: each choice's text (after its ``start``), its
    tokens, its finish reason, and the completion tokens of all choices."""
    texts, tokens, reasons, completion = list(starts), [[] for _ in starts], ["stop"] * len(starts), 0
    for choice, item in items:
        texts[choice] += item.text
        if isinstance(item, Token):
            tokens[choice].append(item)
        else:
            reasons[choice] = item.reason
            completion += item.completion_tokens
    return texts, tokens, reasons, completion


async def completions(service: Service, request: Request) -> Any:
    """``POST /v1/completions``."""
    engine = service.engine
    req = parse(CompletionRequest, await request.body())
    service.check_model(req.model)
    if req.suffix:
        raise ApiError(400, "suffix: not supported by this server", param="suffix")
    prompts = _prompts(engine, req.prompt)
    for ids in prompts:
        _room(engine, ids)
    sampling = _sampling(req, max_tokens=req.max_tokens or 16, logprobs=req.logprobs is not None,
                         top_logprobs=req.logprobs or 0, engine=engine)
    n, rid, created = req.n or 1, f"cmpl-{uuid.uuid4().hex}", int(time.time())
    head = {"id": rid, "object": "text_completion", "created": created, "model": service.model_id}
    sent = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt) if isinstance(req.prompt[0], str) \
        else [engine.llm.detokenize(ids).decode("utf-8", "replace") for ids in prompts]
    echoes = sent if req.echo else [""] * len(prompts)  # the prompt as sent

    def work(emit: Callable[[Any], None], cancel: threading.Event) -> None:
        deadline = service.deadline()
        for p, ids in enumerate(prompts):
            for j in range(n):
                for item in engine.generate(ids, sampling, cancel=cancel, deadline=deadline):
                    emit((p * n + j, item))

    count = len(prompts) * n
    prompt_tokens = sum(len(ids) for ids in prompts)
    if req.stream:
        usage = bool(req.stream_options and req.stream_options.include_usage)
        return _Stream(service, _completion_stream(service, request, work, head, n, echoes, prompt_tokens, usage,
                                                   sampling.logprobs))
    items = await _collect(service, request, work)
    if items is None:
        return Response(status_code=499)
    texts, tokens, reasons, completion = _gathered(items, [echoes[i // n] for i in range(count)])
    choices = [{"index": i, "text": texts[i], "finish_reason": reasons[i],
                "logprobs": _completion_logprobs(engine, tokens[i], len(echoes[i // n]))
                if sampling.logprobs else None} for i in range(count)]
    return {**head, "choices": choices, "usage": _usage(prompt_tokens, completion)}


async def embeddings(service: Service, request: Request) -> Any:
    """``POST /v1/embeddings``."""
    engine = service.engine
    req = parse(EmbeddingRequest, await request.body())
    service.check_model(req.model)
    inputs = [req.input] if isinstance(req.input, str) or (req.input and isinstance(req.input[0], int)) \
        else list(req.input)
    if not inputs:
        raise ApiError(400, "input: at least one text is required", param="input")
    for x in inputs:
        if not isinstance(x, str):
            _prompts(engine, list(x))
    if req.dimensions is not None and req.dimensions != engine.llm.n_embd():
        raise ApiError(400, f"dimensions: this model's embeddings have {engine.llm.n_embd()}", param="dimensions")

    def work(emit: Callable[[Any], None], cancel: threading.Event) -> None:
        if not cancel.is_set():
            emit(engine.embed(inputs))

    items = await _collect(service, request, work)
    if not items:
        return Response(status_code=499)
    vectors, count = items[0]
    data = [{"object": "embedding", "index": i, "embedding": _encode(v, req.encoding_format)}
            for i, v in enumerate(vectors)]
    return {"object": "list", "data": data, "model": service.model_id,
            "usage": {"prompt_tokens": count, "total_tokens": count}}


async def _collect(service: Service, request: Request, work: Callable) -> list | None:
    """Admit the request, run its work and return all it emitted (None: the client went away)."""
    release = service.admit()
    try:
        return [item async for item in service.run(request, work)]
    except Cancelled:
        return None
    finally:
        release()


class _Stream(StreamingResponse):
    """A streamed answer (server-sent events) admitted until it has been sent or its client has gone."""

    def __init__(self, service: Service, events: AsyncIterator[str]) -> None:
        self._release = service.admit()
        super().__init__(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


def _encode(vector: list[float], fmt: str | None) -> Any:
    if fmt == "base64":
        import numpy as np

        return base64.b64encode(np.asarray(vector, dtype=np.float32).tobytes()).decode("ascii")
    return vector


def _prompts(engine: Engine, prompt: Any) -> list[list[int]]:
    """A completion request's prompts as token ids (a text gets the BOS, token ids are taken as they are)."""
    if isinstance(prompt, str):
        return [engine.tokenize(prompt)]
    if not prompt:
        raise ApiError(400, "prompt: an empty list", param="prompt")
    if isinstance(prompt[0], int):
        prompt = [prompt]
    out = []
    for p in prompt:
        if isinstance(p, str):
            out.append(engine.tokenize(p))
            continue
        bad = [t for t in p if not 0 <= t < engine.n_vocab]
        if bad or not p:
            raise ApiError(400, f"prompt: token id {bad[0]} is outside the vocabulary (0 to {engine.n_vocab - 1})"
                           if bad else "prompt: an empty list of token ids", param="prompt")
        out.append(list(p))
    return out


def _event(data: Any) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _chat_stream(service: Service, request: Any, work: Callable, head: dict, n: int, prompt_tokens: int,
                       usage: bool, logprobs: bool) -> AsyncIterator[str]:
    """Server-sent events of a streamed chat completion (OpenAI's chunks; the usage chunk when asked for)."""
    chunk = {**head, "object": "chat.completion.chunk"}
    extra = {"usage": None} if usage else {}
    for i in range(n):
        yield _event({**chunk, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                            "logprobs": None, "finish_reason": None}], **extra})
    completion = 0
    try:
        async for choice, item in service.run(request, work):
            if isinstance(item, Token):
                if item.text or logprobs:
                    yield _event({**chunk, "choices": [{
                        "index": choice, "delta": {"content": item.text},
                        "logprobs": _chat_logprobs(service.engine, [item]) if logprobs else None,
                        "finish_reason": None}], **extra})
            else:
                completion += item.completion_tokens
                delta = {"content": item.text} if item.text else {}
                yield _event({**chunk, "choices": [{"index": choice, "delta": delta, "logprobs": None,
                                                    "finish_reason": item.reason}], **extra})
    except (ApiError, UserError, Cancelled) as exc:
        yield _event(error_body(getattr(exc, "message", str(exc)) or "cancelled"))
        return
    if usage:
        yield _event({**chunk, "choices": [], "usage": _usage(prompt_tokens, completion)})
    yield "data: [DONE]\n\n"


async def _completion_stream(service: Service, request: Any, work: Callable, head: dict, n: int, echoes: list[str],
                             prompt_tokens: int, usage: bool, logprobs: bool) -> AsyncIterator[str]:
    """Server-sent events of a streamed legacy completion."""
    extra = {"usage": None} if usage else {}
    for index, echo in enumerate(e for e in echoes for _ in range(n)):
        if echo:
            yield _event({**head, "choices": [{"index": index, "text": echo, "logprobs": None,
                                               "finish_reason": None}], **extra})
    completion, offsets = 0, {}
    try:
        async for index, item in service.run(request, work):
            if isinstance(item, Token):
                if item.text or logprobs:
                    offset = offsets.get(index, len(echoes[index // n]))
                    lp = _completion_logprobs(service.engine, [item], offset) if logprobs else None
                    offsets[index] = offset + len(item.piece.decode("utf-8", "replace"))
                    yield _event({**head, "choices": [{"index": index, "text": item.text, "logprobs": lp,
                                                       "finish_reason": None}], **extra})
            else:
                completion += item.completion_tokens
                yield _event({**head, "choices": [{"index": index, "text": item.text, "logprobs": None,
                                                   "finish_reason": item.reason}], **extra})
    except (ApiError, UserError, Cancelled) as exc:
        yield _event(error_body(getattr(exc, "message", str(exc)) or "cancelled"))
        return
    if usage:
        yield _event({**head, "choices": [], "usage": _usage(prompt_tokens, completion)})
    yield "data: [DONE]\n\n"
