"""``helpers serve`` through the clients people plug into it: the ``openai`` package, LangChain's ``ChatOpenAI`` /
``OpenAIEmbeddings`` (langchain-openai) and litellm, against a real server on 127.0.0.1 serving the demo's
Chinese-Alpaca-2 stand-in (random weights: its greedy reply to 你好 has a lone ``0xCC`` byte as second token, the
partial character that stalled llama-cpp-python's stream). Issue 27, case by case:

1. no stall: the stream gives the unstreamed reply, token by token, past the partial byte; ``/v1/models`` and
   ``/health`` answer while a generation runs; a client that hangs up cancels its generation; ``--timeout``;
2. ``max_completion_tokens`` is ``max_tokens``, and a limit is exact;
3. the chat prompt is the authors' format with its BOS (every other path: ``tests/test_prompt_paths.py``);
4. OpenAI's errors, before a stream starts;
5. the model id, ``stream_options.include_usage``, content parts, the ``developer`` role, ``/v1/embeddings``.
"""
from __future__ import annotations

import http.client
import json
import math
import os
import socket
import time
from pathlib import Path

import pytest
from hubtwin import free_port

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm would fetch its price list at import

openai = pytest.importorskip("openai")
for _module in ("llama_cpp", "fastapi", "uvicorn"):
    pytest.importorskip(_module)

HELLO = [{"role": "user", "content": "你好"}]
EOS = 2  # </s> of the Llama-2 vocabulary
NO_EOS = {str(EOS): -100}  # so that a reply runs to its limit



@pytest.fixture(scope="module")
def gguf(alpaca2_gguf) -> Path:
    return alpaca2_gguf


@pytest.fixture(scope="module")
def server(gguf):
    from helpers.chat import serve
    from helpers.chat.options import ServeOptions

    with serve(ServeOptions(model=gguf, port=free_port(), n_ctx=2048)) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url, api_key="none", max_retries=0, timeout=120)


def port_of(server) -> int:
    return int(server.url.rsplit(":", 1)[1].split("/")[0])


def raw(server, method: str, path: str, body: bytes | None = None, content_type: str = "application/json"
        ) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port_of(server), timeout=120)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": content_type} if body is not None else {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, json.loads(data) if data else {}
    finally:
        conn.close()


def stats(server) -> dict:
    return raw(server, "GET", "/helpers/stats")[1]


def idle(server) -> dict:
    """The stats once no generation runs (an earlier test's cancelled one may still be stopping)."""
    deadline = time.monotonic() + 30
    while stats(server)["generating"] and time.monotonic() < deadline:
        time.sleep(0.05)
    return stats(server)


def is_partial_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


# ------------------------------------------------------------------------------------------------ 1. no stall
def test_the_stream_is_the_reply_token_by_token_past_a_partial_character(client):
    whole = client.chat.completions.create(model="chinese-alpaca-2-7b-demo.gguf", messages=HELLO,
                                           temperature=0, max_tokens=300, logprobs=True, logit_bias=NO_EOS)
    pieces = [bytes(t.bytes) for t in whole.choices[0].logprobs.content]
    assert len(pieces) == whole.usage.completion_tokens == 300
    assert is_partial_utf8(pieces[1]) and pieces[1] == b"\xcc"  # the stall's cause, reproduced
    chunks = list(client.chat.completions.create(model="chinese-alpaca-2-7b-demo.gguf", messages=HELLO,
                                                 temperature=0, max_tokens=300, logit_bias=NO_EOS, stream=True,
                                                 stream_options={"include_usage": True}))
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(texts) == whole.choices[0].message.content
    assert len(texts) > 200  # one chunk per completed character or token, not the reply at the end
    assert chunks[-1].usage.completion_tokens == 300
    assert b"".join(pieces).decode("utf-8", "replace") == whole.choices[0].message.content


def test_models_and_health_answer_while_a_generation_runs(server):
    conn = http.client.HTTPConnection("127.0.0.1", port_of(server), timeout=120)
    try:
        conn.request("POST", "/v1/chat/completions", body=json.dumps(
            {"messages": HELLO, "stream": True, "logit_bias": NO_EOS}), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.readline().startswith(b"data: ")
        for path in ("/v1/models", "/health"):
            t0 = time.monotonic()
            status, body = raw(server, "GET", path)
            assert status == 200 and time.monotonic() - t0 < 2.0, (path, body)
        assert stats(server)["generating"]
    finally:
        conn.close()


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_hangs_up_cancels_its_generation(server, stream):
    before = idle(server)["cancelled"]
    sock = socket.create_connection(("127.0.0.1", port_of(server)), timeout=30)
    body = json.dumps({"messages": HELLO, "stream": stream, "logit_bias": NO_EOS}).encode()
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    if stream:
        received = b""
        while b"data: " not in received:
            received += sock.recv(4096)
    else:
        deadline = time.monotonic() + 10
        while not stats(server)["generating"] and time.monotonic() < deadline:
            time.sleep(0.05)
    sock.close()
    deadline = time.monotonic() + 10  # the whole reply (the context's 2000 tokens) takes longer
    while (stats(server)["cancelled"] == before or stats(server)["generating"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stats(server)["cancelled"] == before + 1 and not stats(server)["generating"]


def test_no_generation_runs_past_the_timeout(gguf):
    from helpers.chat import serve
    from helpers.chat.options import ServeOptions

    with serve(ServeOptions(model=gguf, port=free_port(), n_ctx=4096, timeout=1.0)) as s:
        c = openai.OpenAI(base_url=s.url, api_key="none", max_retries=0)
        t0 = time.monotonic()
        reply = c.chat.completions.create(model=s.model_id, messages=HELLO, logit_bias=NO_EOS)
        took = time.monotonic() - t0
    assert reply.choices[0].finish_reason == "length" and took < 5
    assert 0 < reply.usage.completion_tokens < 4096 - reply.usage.prompt_tokens


# ------------------------------------------------------------------------------------------------ 2. limits
@pytest.mark.parametrize("limit", [1, 2, 3, 4, 5, 8])
def test_max_completion_tokens_and_max_tokens_are_exact(client, limit):
    for key in ("max_tokens", "max_completion_tokens"):
        reply = client.chat.completions.create(model="chinese-alpaca-2-7b-demo.gguf", messages=HELLO,
                                               logit_bias=NO_EOS, **{key: limit})
        assert reply.usage.completion_tokens == limit and reply.choices[0].finish_reason == "length", key
    text = client.completions.create(model="chinese-alpaca-2-7b-demo.gguf", prompt="你好", max_tokens=limit,
                                     logit_bias=NO_EOS)
    assert text.usage.completion_tokens == limit


def test_logit_bias_and_min_tokens_steer_the_sampler(client):
    """``logit_bias`` reaches llama.cpp's sampler (a +100 token is always chosen), and ``min_tokens`` holds EOS off
    (EOS at +100 ends the reply right after it)."""
    forced = client.chat.completions.create(model="chinese-alpaca-2-7b-demo.gguf", messages=HELLO, max_tokens=4,
                                            logit_bias={"100": 100}, logprobs=True)
    assert [bytes(t.bytes) for t in forced.choices[0].logprobs.content] == [bytes(forced.choices[0].logprobs
                                                                                  .content[0].bytes)] * 4
    ended = client.chat.completions.create(model="chinese-alpaca-2-7b-demo.gguf", messages=HELLO, max_tokens=20,
                                           logit_bias={str(EOS): 100}, extra_body={"min_tokens": 3})
    assert ended.usage.completion_tokens == 3 and ended.choices[0].finish_reason == "stop"


def test_langchain_max_tokens_is_honoured(server):
    langchain_openai = pytest.importorskip("langchain_openai")
    llm = langchain_openai.ChatOpenAI(base_url=server.url, api_key="none", model=server.model_id, max_tokens=8,
                                      max_retries=0, logit_bias=NO_EOS)
    assert llm.invoke("你好").usage_metadata["output_tokens"] == 8


# ------------------------------------------------------------------------------------------------ 3. the prompt
def test_the_chat_prompt_is_the_authors_format_with_its_bos(server, client, demo):
    from helpers.tokens import build_prompt, load_tokenizer

    tokenizer = load_tokenizer(demo / "chinese-alpaca-2-7b")
    authors = tokenizer(build_prompt("llama2-zh", "你好"))["input_ids"]
    status, body = raw(server, "POST", "/helpers/prompt", json.dumps({"messages": HELLO}).encode())
    assert status == 200 and body["tokens"] == authors and authors[0] == tokenizer.bos_token_id
    reply = client.chat.completions.create(model=server.model_id, messages=HELLO, max_tokens=1)
    assert reply.usage.prompt_tokens == len(authors)


# ------------------------------------------------------------------------------------------------ 4. errors
def test_a_streamed_prompt_over_the_context_is_refused_before_the_stream(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="chinese-alpaca-2-7b-demo.gguf", stream=True,
                                       messages=[{"role": "user", "content": "你好" * 3000}])
    assert err.value.code == "context_length_exceeded" and "context" in err.value.message


def test_an_unknown_model_is_404_model_not_found(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=1)
    assert err.value.code == "model_not_found" and err.value.status_code == 404


@pytest.mark.parametrize("fields,where", [({"temperature": -1}, "temperature"), ({"n": 0}, "n"),
                                          ({"top_p": 1.5}, "top_p"), ({"max_completion_tokens": 0},
                                                                      "max_completion_tokens")])
def test_values_out_of_range_are_400(client, fields, where):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="chinese-alpaca-2-7b-demo.gguf", messages=HELLO, **fields)
    assert err.value.param == where and err.value.body["type"] == "invalid_request_error"


def test_completions_without_a_prompt_are_400(server):
    status, body = raw(server, "POST", "/v1/completions", json.dumps({"max_tokens": 2}).encode())
    assert status == 400 and body["error"]["param"] == "prompt"


def test_n_choices(client):
    reply = client.chat.completions.create(model="chinese-alpaca-2-7b-demo.gguf", messages=HELLO, n=2, max_tokens=3,
                                           logit_bias=NO_EOS, seed=1)
    assert [c.index for c in reply.choices] == [0, 1] and reply.usage.completion_tokens == 6
    chunks = list(client.chat.completions.create(model="chinese-alpaca-2-7b-demo.gguf", messages=HELLO, n=2,
                                                 max_tokens=3, stream=True))
    assert {c.choices[0].index for c in chunks if c.choices and c.choices[0].finish_reason} == {0, 1}


def test_json_as_text_plain_is_read_and_a_bad_body_is_not_echoed(server):
    status, body = raw(server, "POST", "/v1/chat/completions",
                       json.dumps({"messages": HELLO, "max_tokens": 2}).encode(), content_type="text/plain")
    assert status == 200 and body["usage"]["completion_tokens"] <= 2
    secret = b'{"messages": "sk-very-secret-1234", '
    status, body = raw(server, "POST", "/v1/chat/completions", secret, content_type="text/plain")
    assert status == 400 and "sk-very-secret" not in json.dumps(body) and body["error"]["message"]


def test_404_and_405_are_openai_error_objects(server):
    for method, path, code in (("GET", "/v1/nothing", 404), ("GET", "/v1/chat/completions", 405)):
        status, body = raw(server, method, path)
        assert status == code and set(body["error"]) == {"message", "type", "param", "code"}, body


def test_bad_content_is_reported_as_content(server):
    status, body = raw(server, "POST", "/v1/chat/completions",
                       json.dumps({"messages": [{"role": "user", "content": 123}]}).encode())
    assert status == 400 and "content" in body["error"]["message"] and "role" not in body["error"]["message"]


# ------------------------------------------------------------------------------------------------ 5. gaps
def test_the_model_id_is_the_file_name_and_is_accepted_back(server, client, gguf):
    ids = [m.id for m in client.models.list()]
    assert ids == [gguf.name] == [server.model_id] and str(gguf.parent) not in ids[0]
    assert client.models.retrieve(gguf.name).id == gguf.name
    assert client.chat.completions.create(model=ids[0], messages=HELLO, max_tokens=1).model == gguf.name


def test_langchain_stream_usage(server):
    langchain_openai = pytest.importorskip("langchain_openai")
    llm = langchain_openai.ChatOpenAI(base_url=server.url, api_key="none", model=server.model_id, max_tokens=4,
                                      stream_usage=True, max_retries=0, logit_bias=NO_EOS)
    total = None
    for chunk in llm.stream("你好"):
        total = chunk if total is None else total + chunk
    assert total.usage_metadata["output_tokens"] == 4 and total.usage_metadata["input_tokens"] > 0


def test_content_parts_and_the_developer_role(server):
    def tokens(messages):
        status, body = raw(server, "POST", "/helpers/prompt", json.dumps({"messages": messages}).encode())
        assert status == 200, body
        return body["tokens"]

    parts = [{"type": "text", "text": "你好"}, {"type": "text", "text": "北京"}]
    assert tokens([{"role": "user", "content": parts}]) == tokens([{"role": "user", "content": "你好\n北京"}])
    assert tokens([{"role": "developer", "content": "导游"}, *HELLO]) == tokens(
        [{"role": "system", "content": "导游"}, *HELLO])
    status, body = raw(server, "POST", "/v1/chat/completions", json.dumps(
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}).encode())
    assert status == 400 and "text" in body["error"]["message"]


def test_embeddings_through_openai_langchain_and_litellm(server, client):
    langchain_openai = pytest.importorskip("langchain_openai")
    litellm = pytest.importorskip("litellm")
    texts = ["北京是中国的首都。", "今天天气很好。"]
    a = [d.embedding for d in client.embeddings.create(model=server.model_id, input=texts).data]  # base64 on the wire
    b = langchain_openai.OpenAIEmbeddings(base_url=server.url, api_key="none", model=server.model_id,
                                          check_embedding_ctx_length=False).embed_documents(texts)
    c = [d["embedding"] for d in litellm.embedding(model=f"openai/{server.model_id}", input=texts,
                                                   api_base=server.url, api_key="none").data]
    for vectors in (a, b, c):
        assert len(vectors) == 2 and all(abs(math.hypot(*v) - 1) < 1e-3 for v in vectors)
        assert all(abs(x - y) < 1e-4 for x, y in zip(vectors[0], a[0]))
    assert max(abs(x - y) for x, y in zip(a[0], a[1])) > 1e-3


def test_litellm_chat_and_stream(server):
    litellm = pytest.importorskip("litellm")
    kwargs = {"model": f"openai/{server.model_id}", "api_base": server.url, "api_key": "none", "messages": HELLO,
              "max_tokens": 6, "logit_bias": NO_EOS, "temperature": 0}
    reply = litellm.completion(**kwargs)
    assert reply.usage.completion_tokens == 6 and reply.choices[0].message.content
    streamed = "".join(c.choices[0].delta.content or "" for c in litellm.completion(stream=True, **kwargs))
    assert streamed == reply.choices[0].message.content
