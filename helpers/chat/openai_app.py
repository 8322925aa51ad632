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
import os
import sys
import threading
import time
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from . import openai_routes as routes
from ..util import UserError
from .admission import API_KEY_ENV, DEFAULT_QUEUE, DEFAULT_TIMEOUT, ApiKey
from .engine import Engine
from .openai_service import Service
from .openai_types import ApiError, error_body

# ---------------------------------------------------------------------------------------------- the app
def create_app(service: Service, *, api_key: str | None = None, instance: str = ""):
    """The FastAPI app over ``service``, behind the API key."""
    app = FastAPI(title="helpers serve", docs_url=None, redoc_url=None, openapi_url=None)
    engine = service.engine
    _answer_errors(app)

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
        return await routes.prompt(service, request)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await routes.chat(service, request)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await routes.completions(service, request)

    @app.post("/v1/embeddings")
    async def embeddings(request: Request):
        return await routes.embeddings(service, request)

    app.add_middleware(ApiKey, api_key=api_key)
    return app


def _answer_errors(app: FastAPI) -> None:
    """Every error as OpenAI's error object: ours (:class:`ApiError`), FastAPI's 404/405, and the unexpected (500,
    without the request's content)."""

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

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
    service = Service(engine, model_id=args.model_id or Path(args.model).name, timeout=args.timeout,
                      max_queue=args.max_queue)
    print(f"serving {args.model} as '{service.model_id}', template {engine.template or 'from the GGUF'}, context "
          f"{engine.n_ctx}", file=sys.stderr, flush=True)
    app = create_app(service, api_key=os.environ.get(API_KEY_ENV) or None, instance=args.instance)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
