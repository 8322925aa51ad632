"""``python -m helpers serve`` / :func:`helpers.chat.serve`: the OpenAI-compatible server as a command, on a GGUF, a
catalog name or a hub id; loopback unless told otherwise, and then only with an API key; many concurrent clients
(streaming and not) each get a complete answer or 503 with Retry-After, malformed bodies 400, and the server stays
up."""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hubtwin import free_port

from faults import assert_error_line, cli
from helpers.util import UserError

ROOT = Path(__file__).resolve().parents[1]
SERVER_EXTRAS = ("llama_cpp", "uvicorn", "fastapi")  # what helpers serve imports
USER = [{"role": "user", "content": "你好"}]



@pytest.fixture(scope="module")
def gguf(demo, tmp_path_factory) -> Path:
    for module in SERVER_EXTRAS:
        pytest.importorskip(module)
    from helpers.gguf import convert_hf_to_gguf

    return convert_hf_to_gguf(demo / "Meta-Llama-3-8B-Instruct", tmp_path_factory.mktemp("serve") / "m.gguf",
                              outtype="f16")


def post(port: int, body: bytes | dict, *, key: str | None = None, path: str = "/v1/chat/completions"
         ) -> tuple[int, dict[str, str], bytes]:
    """Raw HTTP POST: ``(status, headers, body)``."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def complete(status: int, headers: dict[str, str], body: bytes, *, stream: bool) -> bool:
    """A whole answer: a chat completion with a message, or an event stream whose last event is [DONE] after a
    chunk that gives a finish reason."""
    if status != 200:
        return False
    if not stream:
        return json.loads(body)["choices"][0]["message"]["role"] == "assistant"
    events = [line[len("data: "):] for line in body.decode().splitlines() if line.startswith("data: ")]
    return events[-1] == "[DONE]" and json.loads(events[-2])["choices"][0]["finish_reason"] is not None


# ------------------------------------------------------------------------------------------------ who may connect
def test_a_public_host_needs_an_api_key():
    from helpers.chat.server import check_exposure, is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.org")
    check_exposure("127.0.0.1", None)
    check_exposure("0.0.0.0", "a-key")
    r = cli("serve", "--model", "hfl/chinese-alpaca-2-7b-gguf", "--host", "0.0.0.0", timeout=120)
    assert_error_line(r, "0.0.0.0", "--api-key")  # refused before any download or start


def test_the_command_serves_a_gguf_with_its_key_until_sigterm(gguf):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HELPERS_NO_PROGRESS": "1", "HELPERS_API_KEY": "s3cret"}
    p = subprocess.Popen([sys.executable, "-m", "helpers", "serve", "--model", str(gguf), "--port", str(port),
                          "--n-ctx", "256"], cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)  # the key from the environment, as --api-key would give it
    try:
        line = p.stdout.readline()
        assert f"at http://127.0.0.1:{port}/v1" in line and "key required" in line, (line, p.poll())
        assert "s3cret" not in " ".join(_cmdlines())  # the key is in no process's command line
        status, _, body = post(port, {"messages": USER, "max_tokens": 4})
        assert status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"
        assert post(port, {"messages": USER, "max_tokens": 4}, key="wrong")[0] == 401
        status, headers, body = post(port, {"messages": USER, "max_tokens": 4}, key="s3cret")
        assert complete(status, headers, body, stream=False), body
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=60) == 0, p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    with pytest.raises(OSError):  # the server went with the command
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def _cmdlines() -> list[str]:
    out = []
    for proc in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            out.append(proc.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            pass
    return out


def test_serve_refuses_a_model_that_is_not_a_gguf(demo):
    from helpers.chat import serve
    from helpers.chat.options import ServeOptions

    with pytest.raises(UserError, match="not a GGUF"):
        serve(ServeOptions(model=demo / "Meta-Llama-3-8B-Instruct", port=free_port()))


# ------------------------------------------------------------------------------------------------ under load
def test_many_clients_each_get_an_answer_or_503_and_the_server_stays_up(gguf):
    """24 clients at once (streaming and not, and some malformed bodies) against a queue of 2: every well-formed
    request is answered in full or refused with 503 and a Retry-After; malformed ones get 400 whatever the load."""
    from helpers.chat import serve
    from helpers.chat.options import ServeOptions

    with serve(ServeOptions(model=gguf, port=free_port(), n_ctx=256, max_queue=2)) as server:
        port = int(server.url.rsplit(":", 1)[1].split("/")[0])
        for _ in range(3):  # the clients race; a round where none was refused proves nothing about the queue
            results: list[tuple[str, int, dict, bytes]] = []
            start = threading.Barrier(24)

            def client(i: int) -> None:
                kind = "malformed" if i % 6 == 5 else ("stream" if i % 2 else "plain")
                body = b'{"messages": [' if kind == "malformed" else {"messages": USER, "max_tokens": 48,
                                                                       "stream": kind == "stream"}
                start.wait()
                results.append((kind, *post(port, body)))

            threads = [threading.Thread(target=client, args=(i,)) for i in range(24)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=300)
            assert len(results) == 24
            for kind, status, headers, body in results:
                if kind == "malformed":
                    assert status == 400 and json.loads(body)["error"]["type"] == "invalid_request_error"
                elif status == 503:
                    assert int(headers["retry-after"]) >= 1 and json.loads(body)["error"]["type"] == "server_busy"
                else:
                    assert complete(status, headers, body, stream=kind == "stream"), (kind, status, body[-300:])
            answered = [r for r in results if r[0] != "malformed" and r[1] == 200]
            if any(r[1] == 503 for r in results):
                break
        else:
            pytest.fail("no request was ever refused: the queue bound was not reached")
        assert len(answered) >= 3  # one answered and two queued at least
        assert server.running() and server.chat(USER, max_tokens=4) is not None


# ------------------------------------------------------------------------------------------------ from the hub
def test_serve_a_catalog_name_through_the_hub_twin(hub_env):
    from helpers.chat import serve
    from helpers.chat.options import ServeOptions

    since = hub_env.log_size()
    with serve(ServeOptions(model="chinese-alpaca-2-7b-gguf", port=free_port(), n_ctx=256)) as server:
        assert server.model.name == "ggml-model-q4_k.gguf"
        assert isinstance(server.chat(USER, max_tokens=4), str)
    assert ("hfl/chinese-alpaca-2-7b-gguf", "ggml-model-q4_k.gguf") in hub_env.downloads(since)
    assert not server.running()
