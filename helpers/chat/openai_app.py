"""The OpenAI-compatible server process that :func:`helpers.chat.start_openai_server` starts.

``python -m helpers.chat.openai_app --model M.gguf --port P [--host H] [--n_ctx N] [--n_gpu_layers L]
[--chat_format F] [--instance ID] [--max_queue Q]``; the API key, if any, comes in the environment variable
``HELPERS_SERVER_API_KEY`` (not on the command line, which other users of the machine can read).

It is llama-cpp-python's own app (``llama_cpp.server.app.create_app``) with these differences:

- it binds exactly to ``--host`` / ``--port`` (llama-cpp-python's ``__main__`` lets the ``HOST`` and ``PORT``
  environment variables override them, which could expose the model on every interface);
- a request-validation layer answers a malformed body with HTTP 400 and an OpenAI-style error, where
  llama-cpp-python answers 500 (its route handler turns every exception into one) or, for a grammar that does not
  parse or a token id outside the vocabulary, crashes the process;
- ``GET /helpers/instance`` returns the ``--instance`` id, so the starter knows that the server answering on the
  port is the one it started;
- the API key and a bounded request queue (:mod:`.admission`): over ``1 + --max_queue`` generation requests at once,
  503 with ``Retry-After``; and a streaming reply is never cut short by the next request (llama-cpp-python's
  ``interrupt_requests`` is off);
- it exits when the process that started it is gone (a notebook kernel restarted, a CLI killed).
"""
from __future__ import annotations

import argparse
import json
import os
import threading
import time
from typing import Any

from .admission import DEFAULT_QUEUE, Admission, ApiKey

API_KEY_ENV = "HELPERS_SERVER_API_KEY"

ENDPOINTS = {"/v1/chat/completions": "CreateChatCompletionRequest", "/v1/completions": "CreateCompletionRequest",
             "/v1/embeddings": "CreateEmbeddingRequest"}
ROLES = ("system", "user", "assistant", "tool", "function")


def _model():
    """The loaded ``llama_cpp.Llama`` (None before the app is created)."""
    from llama_cpp.server import app as server_app

    proxy = getattr(server_app, "_llama_proxy", None)
    return proxy() if proxy is not None else None


def _check_grammar(grammar: str) -> str | None:
    import llama_cpp

    llm = _model()
    vocab = getattr(getattr(llm, "_model", None), "vocab", None)
    if vocab is None:
        return None
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
    if not sampler:
        return "grammar: not a valid GBNF grammar (see llama.cpp's grammars/README.md)"
    llama_cpp.llama_sampler_free(sampler)
    return None


def _check_tokens(prompt: Any) -> str | None:
    items = prompt if isinstance(prompt, list) else []
    ids = [t for t in items if isinstance(t, int)] + [t for p in items if isinstance(p, list) for t in p]
    llm = _model()
    if ids and llm is not None:
        n = llm.n_vocab()
        bad = [t for t in ids if not 0 <= t < n]
        if bad:
            return f"prompt: token id {bad[0]} is outside the vocabulary (0 to {n - 1})"
    return None


def request_problem(path: str, body: bytes) -> str | None:
    """What is wrong with a request body for ``path`` (None: nothing this layer can see)."""
    from llama_cpp.server import types
    from pydantic import ValidationError

    try:
        data = json.loads(body or b"null")
    except ValueError as exc:
        return f"the request body is not valid JSON ({exc})"
    if not isinstance(data, dict):
        return "the request body must be a JSON object"
    try:
        getattr(types, ENDPOINTS[path])(**data)
    except ValidationError as exc:
        err = exc.errors()[0]
        return f"{'.'.join(str(x) for x in err.get('loc', ())) or 'body'}: {err.get('msg', 'invalid')}"
    except TypeError as exc:
        return f"the request body does not fit {path}: {exc}"
    if path == "/v1/chat/completions":
        messages = data.get("messages")
        if not isinstance(messages, list) or not messages:
            return "messages: a non-empty list of {role, content} objects is required"
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ROLES:
                return f"messages[{i}].role: one of {', '.join(ROLES)} is required"
            if not isinstance(m.get("content"), str) and not (m["role"] == "assistant" and m.get("content") is None):
                return f"messages[{i}].content: a string is required (this server takes text)"
    if isinstance(data.get("max_tokens"), int) and data["max_tokens"] < 1:
        return "max_tokens: at least 1 (or null for as many as the context allows)"
    bias = data.get("logit_bias")
    if isinstance(bias, dict) and data.get("logit_bias_type") != "tokens":
        if not all(str(k).lstrip("-").isdigit() for k in bias):
            return "logit_bias: keys must be token ids (or set logit_bias_type to 'tokens')"
    if isinstance(data.get("grammar"), str) and (problem := _check_grammar(data["grammar"])):
        return problem
    return _check_tokens(data.get("prompt")) if path == "/v1/completions" else None


class RequestValidation:
    """ASGI middleware: a POST to an OpenAI endpoint whose body :func:`request_problem` refuses gets a 400."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") not in ENDPOINTS:
            await self.app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        problem = request_problem(scope["path"], body)
        if problem is not None:
            from starlette.responses import JSONResponse

            error = {"message": problem, "type": "invalid_request_error", "param": None, "code": None}
            await JSONResponse({"error": error}, status_code=400)(scope, receive, send)
            return
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def build_app(args: argparse.Namespace):
    """llama-cpp-python's app over ``args.model`` with the validation layer and the instance endpoint."""
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    model = {"model": args.model, "n_ctx": args.n_ctx, "n_gpu_layers": args.n_gpu_layers}
    if args.chat_format:
        model["chat_format"] = args.chat_format
    key = os.environ.get(API_KEY_ENV) or None
    app = create_app(server_settings=ServerSettings(host=args.host, port=args.port, api_key=key,
                                                    interrupt_requests=False),
                     model_settings=[ModelSettings(**model)])
    app.add_api_route("/helpers/instance", lambda: {"instance": args.instance, "pid": os.getpid()}, methods=["GET"])
    app.add_middleware(Admission, max_queue=args.max_queue)  # added first: innermost
    app.add_middleware(RequestValidation)
    app.add_middleware(ApiKey, api_key=key)
    return app


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
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--n_ctx", type=int, default=4096)
    p.add_argument("--n_gpu_layers", type=int, default=0)
    p.add_argument("--chat_format", default=None)
    p.add_argument("--instance", default="")
    p.add_argument("--max_queue", type=int, default=DEFAULT_QUEUE)
    args = p.parse_args(argv)
    _exit_with_parent()
    uvicorn.run(build_app(args), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
