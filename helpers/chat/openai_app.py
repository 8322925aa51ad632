"""The OpenAI-compatible server process that :func:`helpers.chat.start_openai_server` starts.

``python -m helpers.chat.openai_app --model M.gguf --port P [--host H] [--n_ctx N] [--n_gpu_layers L]
[--template T] [--model_id ID] [--instance ID] [--max_queue Q] [--timeout S]``; the API key, if any, comes in the
environment variable ``HELPERS_API_KEY`` (not on the command line, which other users of the machine can read).

Its own engine (:mod:`.engine`) over llama-cpp-python's token loop, behind FastAPI:

- ``POST /v1/chat/completions``, ``/v1/completions`` (streamed or not, ``n`` choices, logprobs, ``stop``, ``seed``,
  ``logit_bias``, ``response_format`` json_object / json_schema, GBNF ``grammar``, ``stream_options.include_usage``),
  ``/v1/embeddings`` (float or base64); ``GET /v1/models``, ``/v1/models/{id}``, ``/health``;
- the chat prompt is the release's format with one BOS (:meth:`.engine.Engine.chat_tokens`);
  ``POST /helpers/prompt`` returns that text and its token ids for a chat request (llama-server's
  ``/apply-template`` and ``/tokenize`` in one);
- generation runs in one worker thread, one request at a time in arrival order, so ``/v1/models`` and ``/health``
  answer while it runs; a client that disconnects stops its generation at the next token (or before it starts); no
  generation runs longer than ``--timeout`` seconds (it ends with ``finish_reason: "length"``);
- the model id is ``--model_id`` (the release or file name, never a path); a request naming another model gets 404
  ``model_not_found``; one naming none is served;
- every refusal is OpenAI's error object (:mod:`.openai_types`), 404 and 405 too; the API key and a bounded queue
  (:mod:`.admission`: more than ``1 + --max_queue`` generation requests at once get 503 with ``Retry-After``);
- ``GET /helpers/instance`` returns ``--instance``, so the starter knows the server on the port is the one it started;
  ``GET /helpers/stats``: whether a generation runs, and how many finished, were cancelled (client gone) or failed;
- it exits when the process that started it is gone (a notebook kernel restarted, a CLI killed).
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from ..util import UserError
from .admission import API_KEY_ENV, DEFAULT_QUEUE, DEFAULT_TIMEOUT, Admission, ApiKey
from .engine import Cancelled, Engine, Sampling, Token
from .openai_types import (ApiError, ChatRequest, CompletionRequest, EmbeddingRequest, chat_messages, error_body,
                           parse)


class Service:
    """The engine, the worker thread it runs in, and what the routes share."""

    def __init__(self, engine: Engine, *, model_id: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.engine, self.model_id, self.timeout = engine, model_id, timeout
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")
        self.names = {model_id, engine.path.name, engine.path.stem}
        self.stats = {"generating": False, "finished": 0, "cancelled": 0, "failed": 0}  # GET /helpers/stats

    def check_model(self, name: str | None) -> None:
        """Accept the served model's id (or its file name), or no name; else 404 ``model_not_found``."""
        if name and name not in self.names:
            raise ApiError(404, f"The model '{name}' does not exist; this server serves '{self.model_id}'",
                           param="model", code="model_not_found")

    async def run(self, request: Any, work: Callable[[Callable[[Any], None], threading.Event], None]
                  ) -> AsyncIterator[Any]:
        """Run ``work(emit, cancel)`` in the worker thread and yield what it emits, until it returns.

        A client that disconnects sets ``cancel`` (the engine stops at its next token, or never starts) and raises
        :class:`Cancelled` here; so does leaving the iteration early (a streamed response whose client went away).
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()
        end = object()

        def emit(item: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def job() -> None:
            outcome = "failed"
            self.stats["generating"] = True
            try:
                work(emit, cancel)
                outcome = "finished"
            except Cancelled as exc:
                outcome = "cancelled"
                emit(exc)
            except BaseException as exc:  # noqa: BLE001 - handed to the event loop, which answers it
                emit(exc)
            finally:
                self.stats["generating"] = False
                self.stats[outcome] += 1
                emit(end)

        self.pool.submit(job)
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            while True:
                get = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({get, gone}, return_when=asyncio.FIRST_COMPLETED)
                if get not in done:
                    get.cancel()
                    cancel.set()
                    raise Cancelled()
                item = get.result()
                if item is end:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            cancel.set()  # a no-op once the work is done
            gone.cancel()

    def deadline(self) -> float:
        return time.monotonic() + self.timeout

    def generate(self, prompt: list[int], sampling: Sampling, n: int) -> Callable:
        """The work of ``n`` replies to ``prompt``, emitting ``(choice, Token | Finish)``."""

        def work(emit: Callable[[Any], None], cancel: threading.Event) -> None:
            deadline = self.deadline()
            for choice in range(n):
                for item in self.engine.generate(prompt, sampling, cancel=cancel, deadline=deadline):
                    emit((choice, item))

        return work


async def _disconnected(request: Any) -> None:
    """Return once the client has gone (the request body was read before)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


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


# ---------------------------------------------------------------------------------------------- the app
def create_app(service: Service, *, api_key: str | None = None, max_queue: int = DEFAULT_QUEUE,
               instance: str = ""):
    """The FastAPI app over ``service`` with the API key and admission layers."""
    app = FastAPI(title="helpers serve", docs_url=None, redoc_url=None, openapi_url=None)
    engine = service.engine

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        message = {404: f"Invalid URL ({request.method} {request.url.path})",
                   405: f"Method {request.method} is not allowed for {request.url.path}"}.get(exc.status_code,
                                                                                             str(exc.detail))
        return JSONResponse(error_body(message, code="not_found" if exc.status_code == 404 else None),
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError):
        return JSONResponse(error_body("the request does not fit this endpoint"), status_code=400)

    @app.exception_handler(Exception)
    async def server_error(_request: Request, exc: Exception):
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return JSONResponse(error_body(f"the server failed on this request ({type(exc).__name__}); see its log",
                                       type="server_error"), status_code=500)

    def model_card() -> dict:
        return {"id": service.model_id, "object": "model", "created": int(engine.path.stat().st_mtime),
                "owned_by": "helpers"}

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/helpers/instance")
    async def helpers_instance():
        return {"instance": instance, "pid": os.getpid()}

    @app.get("/helpers/stats")
    async def helpers_stats():
        return dict(service.stats)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{name:path}")
    async def model(name: str):
        service.check_model(name)
        return model_card()

    @app.post("/helpers/prompt")
    async def prompt(request: Request):
        req = parse(ChatRequest, await request.body())
        text, tokens = _chat_prompt(service, req)
        return {"prompt": text, "tokens": tokens}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
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
            return StreamingResponse(_chat_stream(service, request, work, head, n, len(prompt_ids), usage,
                                                  sampling.logprobs),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        texts, tokens, reasons, completion = [""] * n, [[] for _ in range(n)], ["stop"] * n, 0
        try:
            async for choice, item in service.run(request, work):
                texts[choice] += item.text
                if isinstance(item, Token):
                    tokens[choice].append(item)
                else:
                    reasons[choice] = item.reason
                    completion += item.completion_tokens
        except Cancelled:
            return Response(status_code=499)  # nobody reads it: the client has gone
        choices = [{"index": i, "message": {"role": "assistant", "content": texts[i]},
                    "logprobs": _chat_logprobs(engine, tokens[i]) if sampling.logprobs else None,
                    "finish_reason": reasons[i]} for i in range(n)]
        return {**head, "object": "chat.completion", "choices": choices, "usage": _usage(len(prompt_ids), completion)}

    @app.post("/v1/completions")
    async def completions(request: Request):
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
        echoes = [engine.llm.detokenize(ids[1:] if ids and ids[0] == engine.llm.token_bos() else ids)
                  .decode("utf-8", "replace") if req.echo else "" for ids in prompts]

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
            return StreamingResponse(_completion_stream(service, request, work, head, n, echoes, prompt_tokens,
                                                        usage, sampling.logprobs),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        texts, tokens, reasons, completion = [echoes[i // n] for i in range(count)], [[] for _ in range(count)], \
            ["stop"] * count, 0
        try:
            async for index, item in service.run(request, work):
                texts[index] += item.text
                if isinstance(item, Token):
                    tokens[index].append(item)
                else:
                    reasons[index] = item.reason
                    completion += item.completion_tokens
        except Cancelled:
            return Response(status_code=499)
        choices = [{"index": i, "text": texts[i], "finish_reason": reasons[i],
                    "logprobs": _completion_logprobs(engine, tokens[i], len(echoes[i // n]))
                    if sampling.logprobs else None} for i in range(count)]
        return {**head, "choices": choices, "usage": _usage(prompt_tokens, completion)}

    @app.post("/v1/embeddings")
    async def embeddings(request: Request):
        req = parse(EmbeddingRequest, await request.body())
        service.check_model(req.model)
        inputs = [req.input] if isinstance(req.input, str) or (req.input and isinstance(req.input[0], int)) \
            else list(req.input)
        if not inputs:
            raise ApiError(400, "input: at least one text is required", param="input")
        for x in inputs:
            if not isinstance(x, str):
                _prompts(engine, list(x))

        def work(emit: Callable[[Any], None], cancel: threading.Event) -> None:
            if not cancel.is_set():
                emit(engine.embed(inputs))

        result = None
        try:
            async for item in service.run(request, work):
                result = item
        except Cancelled:
            return Response(status_code=499)
        vectors, count = result
        if req.dimensions is not None and req.dimensions != len(vectors[0]):
            raise ApiError(400, f"dimensions: this model's embeddings have {len(vectors[0])}", param="dimensions")
        data = [{"object": "embedding", "index": i, "embedding": _encode(v, req.encoding_format)}
                for i, v in enumerate(vectors)]
        return {"object": "list", "data": data, "model": service.model_id,
                "usage": {"prompt_tokens": count, "total_tokens": count}}

    app.add_middleware(Admission, max_queue=max_queue)  # added first: innermost
    app.add_middleware(ApiKey, api_key=api_key)
    return app


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


def _exit_with_parent() -> None:
    """End this process when the one that started it is gone (so a server never outlives its notebook or CLI)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    """Serve until stopped, on exactly the host and port given."""
    import uvicorn

    p = argparse.ArgumentParser(prog="python -m helpers.chat.openai_app", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--model_id", default=None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--n_ctx", type=int, default=4096)
    p.add_argument("--n_gpu_layers", type=int, default=0)
    p.add_argument("--template", default=None)
    p.add_argument("--instance", default="")
    p.add_argument("--max_queue", type=int, default=DEFAULT_QUEUE)
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    args = p.parse_args(argv)
    _exit_with_parent()
    try:
        engine = Engine(args.model, n_ctx=args.n_ctx, n_gpu_layers=args.n_gpu_layers, template=args.template)
    except (UserError, ValueError) as exc:
        print(f"error: cannot load {args.model}: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    service = Service(engine, model_id=args.model_id or Path(args.model).name, timeout=args.timeout)
    print(f"serving {args.model} as '{service.model_id}', template {engine.template or 'from the GGUF'}, context "
          f"{engine.n_ctx}", file=sys.stderr, flush=True)
    app = create_app(service, api_key=os.environ.get(API_KEY_ENV) or None, max_queue=args.max_queue,
                     instance=args.instance)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
