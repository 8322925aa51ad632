"""An OpenAI-compatible server over a GGUF (our engine over llama-cpp-python, :mod:`.openai_app`), and a
standard-library client for it.

:func:`serve` (``python -m helpers serve`` and the inference notebook) resolves a GGUF file, a catalog name or a
hub id, starts the server (what laptop users plug other tools into) and returns a :class:`Server` handle;
:func:`start_openai_server` starts it on a GGUF file; :func:`openai_chat` calls its ``/v1/chat/completions`` with
nothing but the standard library. The server listens on 127.0.0.1 unless told otherwise, and on any other
interface only with an API key; under load it queues a bounded number of requests and answers the rest 503 with
``Retry-After`` (:mod:`.admission`).
"""
from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
import uuid
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..disk import disk_errors
from ..gguf import server_extras_missing
from ..util import UserError, log_dir
from .admission import API_KEY_ENV, DEFAULT_QUEUE, DEFAULT_TIMEOUT
from .llamacpp import DEFAULT_N_CTX
from .load import resolve
from .options import ServeOptions

PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the folder holding ``helpers``, for the server process


def _port_in_use(host: str, port: int) -> bool:
    """True when something already listens on ``host:port`` (the check uvicorn's own bind would fail)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _instance(url: str, api_key: str | None = None) -> str | None:
    """The instance id the server at ``url`` reports (None: no answer, or not one of ours)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url + "/helpers/instance", headers=headers),
                                    timeout=2) as resp:
            return json.loads(resp.read().decode("utf-8")).get("instance")
    except (urllib.error.URLError, OSError, ValueError, AttributeError):
        return None


def is_loopback(host: str) -> bool:
    """True for an address only this machine reaches (``127.0.0.1``, ``::1``, ``localhost``)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, api_key: str | None) -> None:
    """Refuse to serve on an interface other machines reach without an API key.

    Raises:
        UserError: ``host`` is not a loopback address and there is no ``api_key``.
    """
    if not is_loopback(host) and not api_key:
        raise UserError(f"serving on {host} lets other machines use the model: pass an API key (--api-key KEY, "
                        "or api_key=...) that clients then send as 'Authorization: Bearer KEY', or serve on "
                        "127.0.0.1")


def start_openai_server(gguf_path: str | Path, *, port: int = 8000, host: str = "127.0.0.1",
                        template: str | None = None, n_ctx: int = DEFAULT_N_CTX, n_gpu_layers: int | None = None,
                        wait: float = 120.0, log_path: str | Path | None = None, api_key: str | None = None,
                        max_queue: int = DEFAULT_QUEUE, model_id: str | None = None,
                        timeout: float = DEFAULT_TIMEOUT) -> subprocess.Popen:
    """Start the OpenAI-compatible server (:mod:`.openai_app`) on a GGUF and wait until it answers.

    Without ``template`` the server formats chats with the release template the GGUF's ``tokenizer.chat_template`` is
    (our GGUFs carry it), one BOS first; a foreign GGUF's own template is rendered as llama.cpp renders it. A malformed
    request gets HTTP 400. It listens on ``host`` only (127.0.0.1 unless told otherwise), on another interface only
    with ``api_key``. Stop it with ``proc.terminate()``; ``proc.log_path`` is where its output goes.

    Args:
        gguf_path: the model file. port: TCP port; host: the interface (``0.0.0.0`` to serve other machines).
        template: a template id of :data:`helpers.tokens.TEMPLATES` (``llama2-zh``, ``llama3`` ...), if wanted.
        n_ctx: context length; n_gpu_layers: layers on the GPU (default: all when supported).
        wait: seconds to wait for the server to come up (0: do not wait).
        log_path: where the server's output goes (default: ``openai-server-<port>.log`` in
            :func:`helpers.util.log_dir`, so a model in a read-only folder can be served).
        api_key: clients must send ``Authorization: Bearer <api_key>`` (required for a non-loopback ``host``).
        max_queue: generation requests that may wait behind the one being answered; more get 503.
        model_id: the model's name in ``/v1/models`` and requests (default: the file name).
        timeout: seconds one generation may run before it ends with ``finish_reason: "length"``.

    Raises:
        UserError: llama-cpp-python or its server extras are missing, the port is taken, a public host has no key,
            the server exits or never answers (the error quotes the end of its log).
    """
    check_exposure(host, api_key)
    missing = [m for m in ("llama_cpp",) if importlib.util.find_spec(m) is None] + server_extras_missing()
    if missing:
        raise UserError(f"the OpenAI-compatible server needs llama-cpp-python's server extras (missing: "
                        f"{', '.join(missing)}); install them with: pip install 'llama-cpp-python[server]'")
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise UserError(f"GGUF file {gguf_path} not found")
    if _port_in_use(host, port):
        raise UserError(f"port {port} on {host} is already in use (another server?); stop it or choose another port")
    if n_gpu_layers is None:
        import llama_cpp

        n_gpu_layers = -1 if llama_cpp.llama_supports_gpu_offload() else 0
    instance = uuid.uuid4().hex
    cmd = [sys.executable, "-m", "helpers.chat.openai_app", "--model", str(gguf_path), "--host", host,
           "--port", str(port), "--n_ctx", str(n_ctx), "--n_gpu_layers", str(n_gpu_layers), "--instance", instance,
           "--max_queue", str(max_queue), "--model_id", model_id or gguf_path.name, "--timeout", str(timeout)]
    if template:
        cmd += ["--template", template]
    log = Path(log_path) if log_path else log_dir() / f"openai-server-{port}.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))}
    env.pop(API_KEY_ENV, None)
    if api_key:
        env[API_KEY_ENV] = api_key  # not on the command line, which every user of the machine can read
    with disk_errors(log.parent, what="the server log"), open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    proc.log_path = log  # type: ignore[attr-defined]
    if wait:
        _wait_until_up(proc, f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}", instance,
                       api_key=api_key, wait=wait, log=log)
    return proc


def _wait_until_up(proc: subprocess.Popen, url: str, instance: str, *, api_key: str | None, wait: float,
                   log: Path) -> None:
    """Wait until the server at ``url`` reports ``instance`` (ours, not another server on the port)."""
    deadline = time.monotonic() + wait
    while _instance(url, api_key) != instance:
        if proc.poll() is not None:
            tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
            raise UserError(f"the server exited with status {proc.returncode}: {' | '.join(tail)} (log: {log})")
        if time.monotonic() > deadline:
            proc.terminate()
            raise UserError(f"the server did not answer at {url} within {wait:.0f}s (log: {log})")
        time.sleep(0.5)


def openai_chat(base_url: str, messages: Sequence[dict], *, model: str | None = None, timeout: float = 300.0,
                api_key: str | None = None, **gen: Any) -> str:
    """Ask an OpenAI-compatible server for one chat reply (plain HTTP, no SDK).

    Args:
        base_url: ``http://host:port`` or ``http://host:port/v1``.
        messages: ``[{"role": "system"|"user"|"assistant", "content": ...}, ...]``.
        model: the model name to send (None: none; our server then answers with the model it serves).
        timeout: seconds to wait for the reply.
        api_key: sent as ``Authorization: Bearer <api_key>`` (a server started with one).
        **gen: request fields such as ``max_tokens``, ``temperature``, ``top_p``, ``top_k``, ``repeat_penalty``,
            ``stop`` (``max_new_tokens`` and ``repetition_penalty`` are translated).

    Returns:
        The assistant's reply text.
    """
    url = base_url.rstrip("/")
    if not url.endswith("/v1"):
        url += "/v1"
    if "max_new_tokens" in gen:
        gen["max_tokens"] = gen.pop("max_new_tokens")
    if "repetition_penalty" in gen:
        gen["repeat_penalty"] = gen.pop("repetition_penalty")
    body = {**({"model": model} if model else {}), "messages": list(messages), "stream": False, **gen}
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {api_key}"} if api_key else {})}
    req = urllib.request.Request(url + "/chat/completions", data=json.dumps(body).encode("utf-8"), headers=headers,
                                 method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            data = json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", errors="replace")[:300]
        raise UserError(f"the server at {base_url} answered {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise UserError(f"cannot reach {base_url} ({exc}); is the server running?") from None
    try:
        return data["choices"][0]["message"]["content"] or ""
    except (KeyError, IndexError, TypeError):
        raise UserError(f"unexpected answer from {base_url}: {str(data)[:300]}") from None


@dataclass
class Server:
    """A running OpenAI-compatible server (from :func:`serve`).

    Attributes:
        url: the base URL OpenAI clients take (``http://127.0.0.1:8000/v1``).
        model: the GGUF it serves. model_id: its name for clients (``/v1/models``; what requests send as ``model``).
        api_key: what clients must send as ``Authorization: Bearer <api_key>`` (None: nothing).
        process: the server process; log_path: where its output goes.
    """

    url: str
    model: Path
    api_key: str | None
    process: subprocess.Popen = field(repr=False)
    log_path: Path | None = None
    model_id: str = ""

    def chat(self, messages: Sequence[dict], **gen: Any) -> str:
        """One reply from the server (:func:`openai_chat` with this server's URL and key)."""
        return openai_chat(self.url, messages, api_key=self.api_key, model=self.model_id or None, **gen)

    def running(self) -> bool:
        """True while the server process is alive."""
        return self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout`` seconds) and wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(options: ServeOptions, *, wait: float = 120.0, log_path: str | Path | None = None) -> Server:
    """Serve ``options.model`` with the OpenAI API and return once it answers.

    Args:
        options: the model (a ``.gguf`` file, a folder holding GGUFs, a catalog name such as
            ``chinese-alpaca-2-7b-gguf`` or a hub id, downloaded and verified; ``gguf_quant`` picks the file of a repo
            that holds several), the interface (``host``: 127.0.0.1, this machine only, unless told otherwise; any
            other needs ``api_key``, what clients must send as ``Authorization: Bearer <api_key>``), ``port``,
            ``n_ctx``, ``n_gpu_layers``, ``template``, ``timeout`` (as :func:`start_openai_server`) and ``max_queue``
            (generation requests that may wait behind the one being answered; more get 503 with Retry-After).
        wait, log_path: as :func:`start_openai_server`.

    The model's id for clients is the name it was asked for when that is a catalog name or hub id, else the file name
    (never a path).

    Raises:
        UserError: a public ``host`` without ``api_key``, a model that is not a GGUF, or the server did not start.
    """
    o = options
    check_exposure(o.host, o.api_key)  # before any download
    path, _entry = resolve(o.model, gguf_quant=o.gguf_quant)
    if not (path.is_file() and path.suffix.lower() == ".gguf"):
        raise UserError(f"{o.model} is not a GGUF ({path}): the server runs GGUF files; convert it first "
                        "(python -m helpers to-gguf, or merge --format gguf) or give a GGUF release")
    model_id = path.name if Path(str(o.model)).exists() else str(o.model)
    proc = start_openai_server(path, port=o.port, host=o.host, template=o.template, n_ctx=o.n_ctx,
                               n_gpu_layers=o.n_gpu_layers, wait=wait, log_path=log_path, api_key=o.api_key,
                               max_queue=o.max_queue, model_id=model_id, timeout=o.timeout)
    shown = "127.0.0.1" if o.host in ("0.0.0.0", "::", "") else o.host
    shown = f"[{shown}]" if ":" in shown else shown
    return Server(f"http://{shown}:{o.port}/v1", path, o.api_key, proc, getattr(proc, "log_path", None), model_id)
