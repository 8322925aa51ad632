"""Inference: back-end parity, end-of-turn stops, long-context options, speculative decoding, CLI, notebook pieces."""
from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from helpers.util import UserError

ROOT = Path(__file__).resolve().parents[1]
GREEDY = {"temperature": 0, "repetition_penalty": 1.0}


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def llama2_dir(demo) -> Path:
    return demo / "Llama-2-7b-hf"


@pytest.fixture(scope="module")
def llama3_dir(demo) -> Path:
    return demo / "Meta-Llama-3-8B-Instruct"


def _convert(model_dir: Path, out: Path, **kw) -> Path:
    from helpers.gguf import convert_hf_to_gguf

    return convert_hf_to_gguf(model_dir, out, outtype="f16", **kw)


@pytest.fixture(scope="module")
def backends(llama2_dir, llama3_dir):
    from helpers.chat import load_backend

    cache: dict = {}

    def get(which: str):
        if which not in cache:
            path, template = {"llama2": (llama2_dir, "llama2-zh"), "llama3": (llama3_dir, None)}[which]
            cache[which] = load_backend(path, template=template)
        return cache[which]

    return get


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory, llama2_dir, llama3_dir):
    pytest.importorskip("llama_cpp")
    out = tmp_path_factory.mktemp("gguf")
    cache: dict = {}

    def get(which: str) -> Path:
        if which not in cache:
            src = {"llama2": llama2_dir, "llama3": llama3_dir}[which]
            cache[which] = _convert(src, out / f"{which}-f16.gguf", template="llama2-zh" if which == "llama2" else None)
        return cache[which]

    return get


def _has_llama_cpp() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def _eot_model(src: Path, dst: Path, stop_token: str) -> Path:
    """A copy of ``src`` whose every next-token choice is ``stop_token``.

    A large constant on hidden dimension 0 of every embedding row dominates the residual stream; the
    final norm keeps only that dimension and lm_head maps it to the stop token alone.
    """
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    if (dst / "tokenizer.json").is_file():
        vocab = json.loads((dst / "tokenizer.json").read_text(encoding="utf-8"))
        stop_id = next(t["id"] for t in vocab["added_tokens"] if t["content"] == stop_token)
    else:
        import sentencepiece as spm

        stop_id = spm.SentencePieceProcessor(model_file=str(dst / "tokenizer.model")).piece_to_id(stop_token)
    for shard in dst.glob("*.safetensors"):
        sd = load_file(str(shard))
        if "model.embed_tokens.weight" in sd:
            w = sd["model.embed_tokens.weight"].float()
            w[:, 0] += 50.0
            sd["model.embed_tokens.weight"] = w.to(sd["model.embed_tokens.weight"].dtype)
        if "model.norm.weight" in sd:
            norm = torch.zeros_like(sd["model.norm.weight"])
            norm[0] = 1.0
            sd["model.norm.weight"] = norm
        if "lm_head.weight" in sd:
            head = torch.zeros_like(sd["lm_head.weight"])
            head[stop_id, 0] = 1.0
            sd["lm_head.weight"] = head
        save_file(sd, str(shard), metadata={"format": "pt"})
    return dst


# ----------------------------------------------------------------------------- long context
def test_ntk_alpha_formula():
    from helpers.chat.longctx import ntk_alpha, ntk_rope_base

    assert ntk_alpha(4096, 4096) == 1.0  # no scaling within the native context
    assert ntk_alpha(1000, 4096) == 1.0
    assert ntk_alpha(8192, 4096) == 3.0  # 8192 / 2048 - 1
    assert ntk_alpha(12288, 4096) == 5.0
    assert ntk_alpha(16384, 4096, coeff=1.1) == pytest.approx(7 * 1.1)
    assert ntk_rope_base(10000.0, 1.0, 128) == 10000.0
    assert ntk_rope_base(10000.0, 2.0, 128) == pytest.approx(10000.0 * 2 ** (128 / 126))
    assert ntk_rope_base(10000.0, 4.0, 64) == pytest.approx(10000.0 * 4 ** (64 / 62))


def test_plan_rope_options():
    from helpers.chat.longctx import ntk_rope_base, choose_rope

    args = {"native_ctx": 4096, "base": 10000.0, "head_dim": 128}
    assert choose_rope(None, n_ctx=None, **args).kind == "config"
    assert choose_rope("auto", n_ctx=4096, **args).kind == "config"
    assert choose_rope("auto", n_ctx=16384, configured="linear", **args).kind == "config"
    auto = choose_rope("auto", n_ctx=8192, **args)
    assert (auto.kind, auto.factor, auto.n_ctx) == ("ntk", 3.0, 8192)
    assert auto.base == pytest.approx(ntk_rope_base(10000.0, 3.0, 128))
    fixed = choose_rope("ntk:4", n_ctx=None, **args)
    assert fixed.factor == 4.0 and fixed.base == pytest.approx(10000.0 * 4 ** (128 / 126))
    assert choose_rope("ntk", n_ctx=None, **args).factor == 3.0  # default target: twice the native context
    lin = choose_rope("linear:4", n_ctx=None, **args)
    assert (lin.kind, lin.factor, lin.n_ctx) == ("linear", 4.0, 16384)
    for bad in ("ntk:0.5", "ntk:x", "magic", "linear:0.5"):
        with pytest.raises(UserError):
            choose_rope(bad, n_ctx=None, **args)


def test_rope_scaling_reaches_transformers_rotary_embedding():
    """Catalog PI/YaRN scaling and NTK end up in the rotary frequencies transformers computes."""
    import torch
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    from helpers.chat.longctx import RopeScaling, apply_rope_to_config as _apply_rope_to_config, ntk_rope_base

    def inv_freq(cfg):
        return LlamaRotaryEmbedding(cfg).inv_freq.double()

    def config():
        return LlamaConfig(hidden_size=256, num_attention_heads=4, intermediate_size=768, num_hidden_layers=1,
                           max_position_embeddings=4096, vocab_size=64)

    d = 64
    plain = inv_freq(config())
    assert torch.allclose(plain, 1.0 / 10000.0 ** (torch.arange(0, d, 2).double() / d))
    linear = config()
    _apply_rope_to_config(linear, RopeScaling("config", native_ctx=4096), {"type": "linear", "factor": 4.0})
    assert linear.max_position_embeddings == 16384
    assert torch.allclose(inv_freq(linear), plain / 4)
    ntk = config()
    base = ntk_rope_base(10000.0, 3.0, d)
    _apply_rope_to_config(ntk, RopeScaling("ntk", 3.0, base, 4096, 8192), None)
    assert torch.allclose(inv_freq(ntk), 1.0 / base ** (torch.arange(0, d, 2).double() / d))
    assert ntk.max_position_embeddings == 8192
    yarn = config()
    _apply_rope_to_config(yarn, RopeScaling("config", native_ctx=4096),
                          {"type": "yarn", "factor": 16.0, "original_max_position_embeddings": 4096})
    emb = LlamaRotaryEmbedding(yarn)
    assert yarn.rope_parameters["rope_type"] == "yarn"
    assert emb.attention_scaling == pytest.approx(0.1 * math.log(16.0) + 1.0)
    assert emb.inv_freq[-1] < plain[-1].float()  # low frequencies interpolated


def test_ntk_option_on_both_backends(llama2_dir, ggufs):
    import torch

    from helpers.chat import load_backend
    from helpers.chat.longctx import ntk_rope_base

    hf = load_backend(llama2_dir, template="llama2-zh", rope="ntk:4")
    want = ntk_rope_base(10000.0, 4.0, 64)
    assert hf.model.config.rope_parameters["rope_theta"] == pytest.approx(want)
    assert hf.model.model.rotary_emb.inv_freq[1].item() == pytest.approx(want ** (-2 / 64), rel=1e-5)
    plain = load_backend(llama2_dir, template="llama2-zh")
    ids, _ = hf.encode("北京是中国的首都，也是一座历史悠久的城市。")
    with torch.inference_mode():
        scaled, unscaled = hf.model(input_ids=ids).logits[0], plain.model(input_ids=ids).logits[0]
    assert torch.allclose(scaled[0], unscaled[0], atol=1e-5)  # position 0 is not rotated
    assert not torch.allclose(scaled[1:], unscaled[1:], atol=1e-3)  # later positions see the new base
    cpp = load_backend(ggufs("llama2"), rope="auto", n_ctx=8192)
    assert cpp.n_ctx == 8192
    assert cpp.llm.context_params.rope_freq_base == pytest.approx(ntk_rope_base(10000.0, 3.0, 64), rel=1e-5)


# ----------------------------------------------------------------------------- back ends
def test_quantization_refused_on_cpu(llama2_dir, monkeypatch):
    import torch

    from helpers.chat import load_backend

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU runtime, even where a GPU is present
    for q in ("4bit", "8bit"):
        with pytest.raises(UserError, match="CUDA GPU"):
            load_backend(llama2_dir, quantization=q)


def test_bad_inputs(llama2_dir, tmp_path):
    from helpers.chat import load_backend

    with pytest.raises(UserError, match="merge it first"):
        load_backend("chinese-alpaca-2-7b-lora")
    with pytest.raises(UserError):
        load_backend(tmp_path / "missing")
    with pytest.raises(UserError, match="convert it first"):
        load_backend(llama2_dir, backend="llama.cpp")
    with pytest.raises(UserError, match="unknown backend"):
        load_backend(llama2_dir, backend="vllm")


@pytest.mark.parametrize("which", ["llama2", "llama3"])
def test_same_greedy_continuation_transformers_and_llama_cpp(which, backends, ggufs):
    """F16 GGUF through llama.cpp and the HF folder through transformers pick the same greedy tokens."""
    from helpers.chat import load_backend

    hf = backends(which)
    cpp = load_backend(ggufs(which), n_ctx=512)
    assert cpp.template == hf.template
    for prompt in ("The quick brown", "你好，请介绍一下自己"):
        a = hf.generate(prompt, max_new_tokens=12, **GREEDY)
        b = cpp.generate(prompt, max_new_tokens=12, **GREEDY)
        assert a and a == b, (prompt, a, b)
        assert hf.last_stats["new_tokens"] == cpp.last_stats["new_tokens"] == 12
    a = hf.chat("你好", history=[("1+1=?", "2")], max_new_tokens=10, **GREEDY)
    b = cpp.chat("你好", history=[("1+1=?", "2")], max_new_tokens=10, **GREEDY)
    assert a == b
    streamed = "".join(hf.chat("你好", history=[("1+1=?", "2")], max_new_tokens=10, stream=True, **GREEDY))
    assert streamed == a


@pytest.mark.parametrize("which, stop_token", [("llama3", "<|eot_id|>"), ("llama2", "</s>")])
def test_stops_at_end_of_turn_token(which, stop_token, llama2_dir, llama3_dir, tmp_path):
    from helpers.chat import load_backend

    src = {"llama2": llama2_dir, "llama3": llama3_dir}[which]
    folder = _eot_model(src, tmp_path / f"{which}-eot", stop_token)
    hf = load_backend(folder, template="llama2-zh" if which == "llama2" else None)
    candidates = [hf]
    if _has_llama_cpp():
        candidates.append(load_backend(_convert(folder, tmp_path / f"{which}-eot.gguf",
                                                template="llama2-zh" if which == "llama2" else None)))
        assert candidates[-1].template == hf.template
    for backend in candidates:
        for gen in (GREEDY, {}):  # greedy and the release's sampling defaults
            reply = backend.chat("你好，请介绍一下自己", max_new_tokens=32, **gen)
            assert reply == "", (backend.name, reply)
            assert backend.last_stats["new_tokens"] <= 1, (backend.name, backend.last_stats)
            assert stop_token not in reply


def test_stop_event_and_early_close(backends, llama2_dir, tmp_path):
    from helpers.chat import load_backend

    candidates = [backends("llama2")]
    if _has_llama_cpp():
        candidates.append(load_backend(_convert(llama2_dir, tmp_path / "stop.gguf", template="llama2-zh"), n_ctx=256))
    for backend in candidates:
        ev = threading.Event()
        ev.set()
        backend.generate("hello", stop_event=ev, max_new_tokens=50, **GREEDY)
        assert backend.last_stats["new_tokens"] <= 1, backend.name
        it = backend.chat("hello", stream=True, max_new_tokens=50, **GREEDY)
        next(it)
        it.close()  # closing the stream stops the generation
        assert backend.last_stats["new_tokens"] < 50, backend.name
    assert not [t for t in threading.enumerate() if t.name == "helpers-generate"]


def test_stop_filter():
    from helpers.chat.backend import StopFilter

    f = StopFilter(["### Instruction:", "</s>"])
    out = "".join(f.feed(p) for p in ["Hello", " wor", "ld\n\n##", "# Instr", "uction: more"]) + f.flush()
    assert out == "Hello world\n\n" and f.hit
    f = StopFilter(["</s>"])
    assert f.feed("a <") == "a " and f.feed("b") == "<b" and f.flush() == ""
    assert StopFilter(["</s>"]).feed("x</s>y") == "x"


def test_history_truncated_by_tokens(backends, monkeypatch):
    from helpers.tokens import build_prompt

    hf = backends("llama2")
    seen: list[str] = []

    def fake_stream(prompt, settings, stop_event):
        seen.append(prompt)
        yield "ok"

    monkeypatch.setattr(hf, "_stream", fake_stream)
    history = [(f"问题{i}" * 30, f"回答{i}" * 30) for i in range(20)]
    assert hf.chat("最后的问题", history=history) == "ok"
    prompt = seen[-1]
    assert hf.count_tokens(prompt) <= 1024 < hf.count_tokens(build_prompt("llama2-zh", "最后的问题", history=history))
    assert "问题19" in prompt and "问题0" not in prompt and prompt.endswith("最后的问题 [/INST]")
    hf.chat("q", history=history, max_history_tokens=100000)
    assert "问题0" in seen[-1]


def test_template_from_gguf_metadata(llama2_dir, tmp_path):
    pytest.importorskip("llama_cpp")
    from helpers.gguf import read_metadata as gguf_metadata
    from helpers.chat import load_backend

    for template in ("alpaca", "llama2-zh"):
        path = _convert(llama2_dir, tmp_path / f"model-{template}.gguf", template=template)
        assert gguf_metadata(path).get("tokenizer.chat_template")
        backend = load_backend(path, n_ctx=256)
        assert backend.template == template
        backend.close()


# ----------------------------------------------------------------------------- speculative decoding
def test_speculative_with_draft_equal_to_target(backends, capsys):
    from helpers.chat import speculative_generate

    from helpers.chat import load_backend

    hf = backends("llama2")
    twin = load_backend(hf.path, backend="transformers")  # the same weights, another instance
    with pytest.raises(UserError, match="another model"):
        speculative_generate(hf, hf, "hi", max_new_tokens=2)
    text, stats = speculative_generate(hf, twin, "[INST] 你好 [/INST]", max_new_tokens=24, **GREEDY)
    assert text == hf.generate("[INST] 你好 [/INST]", max_new_tokens=24, **GREEDY).strip()
    assert stats["tokens"] == stats["plain_tokens"] == 24 and stats["same_text"]
    assert stats["draft_proposed"] > 0 and stats["acceptance_rate"] == 1.0
    assert stats["target_passes"] < stats["tokens"]  # several tokens per verification pass
    assert stats["speedup"] > 0
    assert "speed-up" in capsys.readouterr().out


def test_speculative_refuses_other_vocabulary(backends, demo, monkeypatch):
    from helpers.chat import load_backend, speculative_generate

    monkeypatch.setenv("HELPERS_LOCAL_MODELS", str(demo))  # a catalog name resolves through the local mirror
    draft = load_backend("chinese-alpaca-2-1.3b")
    assert draft.template == "llama2-zh" and draft.path.name == "chinese-alpaca-2-1.3b"
    with pytest.raises(UserError, match="vocabulary"):
        speculative_generate(backends("llama2"), draft, "hi", max_new_tokens=4)


# ----------------------------------------------------------------------------- CLI
def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HELPERS_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "helpers", "chat", *args], input=stdin, capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=300)


def test_cli_chat_hf_folder_and_interactive(llama2_dir):
    r = _cli("--model", str(llama2_dir), "--prompt", "你好", "--max-new-tokens", "8", "--template", "llama2-zh")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    r = _cli("--model", str(llama2_dir), "--max-new-tokens", "4", stdin="你好\n/reset\n再见\n\n")
    assert r.returncode == 0, r.stderr
    assert "history cleared" in r.stderr and len(r.stdout.strip().splitlines()) >= 2
    r = _cli("--model", str(llama2_dir), "--prompt", "hi", "--4bit")
    assert r.returncode == 2 and r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1


def test_cli_chat_gguf(ggufs):
    r = _cli("--model", str(ggufs("llama3")), "--prompt", "你好", "--max-new-tokens", "8", "--temperature", "0")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()


# ----------------------------------------------------------------------------- notebook pieces
@pytest.mark.widget
def test_chat_widget_turns(backends):
    pytest.importorskip("ipywidgets")
    from helpers.chat import chat_widget

    hf = backends("llama2")
    box = chat_widget(hf, temperature=0, max_new_tokens=6)
    assert box.temperature.value == 0 and box.max_new_tokens.value == 6
    assert box.system.value.startswith("You are a helpful assistant.")
    settings = box.widget.children[3]
    assert settings.get_title(0) == "settings" and settings.selected_index is None  # titled, collapsed (7 and 8)
    reply = box.send("你好")
    assert reply == hf.chat("你好", temperature=0, max_new_tokens=6)
    assert box.history == [("你好", reply)] and "你好" in box.transcript.value
    assert "tok/s" in box.status.value
    box.send_button.click()  # empty question box: nothing happens
    box.question.value = "再见"
    box._on_send(box.send_button)
    box._thread.join()
    assert len(box.history) == 2
    box.reset()
    assert box.history == [] and box.transcript.value == ""


@pytest.mark.widget
def test_chat_widget_displays_in_a_kernel():
    """A notebook cell ending with the chat box shows the widget, not a traceback (ipywidgets 7 and 8)."""
    pytest.importorskip("ipywidgets")
    from jupyter_client.manager import start_new_kernel

    code = ("from pathlib import Path\nfrom helpers.chat import chat_widget\n"
            "class Stub:\n    name, template, path = 'stub', 'llama2-zh', Path('model')\n"
            "    def settings(self, **kw):\n"
            "        return {'temperature': 0.2, 'top_k': 40, 'top_p': 0.9, 'repetition_penalty': 1.1,"
            " 'max_new_tokens': 16, **kw}\n"
            "box = chat_widget(Stub())\nbox")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    km, kc = start_new_kernel(kernel_name="python3", env=env)
    shown: list[dict] = []
    printed: list[str] = []
    try:
        kc.execute_interactive(code, timeout=120, output_hook=shown.append)
        kc.execute_interactive("print(box.widget.model_id)", timeout=30,
                               output_hook=lambda m: printed.append(m["content"].get("text", "")
                                                                    if m["content"].get("name") == "stdout" else ""))
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    errors = [m["content"] for m in shown if m["msg_type"] == "error"]
    assert not errors, errors
    views = [m["content"]["data"]["application/vnd.jupyter.widget-view+json"] for m in shown
             if m["msg_type"] in ("display_data", "execute_result")
             and "application/vnd.jupyter.widget-view+json" in m["content"]["data"]]
    assert [v["model_id"] for v in views] == ["".join(printed).strip()], (views, printed)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_openai_server_round_trip(ggufs, tmp_path):
    for module in SERVER_EXTRAS:
        pytest.importorskip(module)
    from helpers.chat.server import openai_chat, start_openai_server

    proc = start_openai_server(ggufs("llama3"), port=_free_port(), n_ctx=512, log_path=tmp_path / "server.log")
    try:
        port = proc.args[proc.args.index("--port") + 1]
        reply = openai_chat(f"http://127.0.0.1:{port}", [{"role": "user", "content": "你好"}],
                            max_new_tokens=8, temperature=0)
        assert isinstance(reply, str) and reply
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    with pytest.raises(UserError, match="cannot reach"):
        openai_chat(f"http://127.0.0.1:{_free_port()}", [{"role": "user", "content": "x"}], timeout=5)


SERVER_EXTRAS = ("llama_cpp", "uvicorn", "fastapi")  # what helpers serve imports


@pytest.fixture(scope="module")
def served(ggufs):
    """One server for the request tests, started with HOST=0.0.0.0 in the environment (which must not matter)."""
    for module in SERVER_EXTRAS:
        pytest.importorskip(module)
    from helpers.chat.server import start_openai_server

    port, before = _free_port(), os.environ.get("HOST")
    os.environ["HOST"] = "0.0.0.0"
    try:
        proc = start_openai_server(ggufs("llama3"), port=port, n_ctx=256)
    finally:
        os.environ.pop("HOST") if before is None else os.environ.__setitem__("HOST", before)
    yield proc, port
    proc.terminate()
    proc.wait(timeout=30)


def _post(port: int, path: str, body: bytes) -> tuple[int, dict]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    try:
        return resp.status, json.loads(data)
    except ValueError:
        return resp.status, {}


_USER = [{"role": "user", "content": "x"}]
MALFORMED = {
    "not-json": ("/v1/chat/completions", b'{"messages": ['),
    "not-an-object": ("/v1/chat/completions", b"[1, 2]"),
    "no-messages": ("/v1/chat/completions", b"{}"),
    "messages-not-a-list": ("/v1/chat/completions", b'{"messages": "hi"}'),
    "empty-messages": ("/v1/chat/completions", b'{"messages": []}'),
    "unknown-role": ("/v1/chat/completions", json.dumps({"messages": [{"role": "robot", "content": "x"}]}).encode()),
    "no-content": ("/v1/chat/completions", json.dumps({"messages": [{"role": "user"}]}).encode()),
    "image-content": ("/v1/chat/completions", json.dumps({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}], "max_tokens": 2}).encode()),
    "temperature-not-a-number": ("/v1/chat/completions", json.dumps({"messages": _USER, "temperature": "hot"}).encode()),
    "negative-max-tokens": ("/v1/chat/completions", json.dumps({"messages": _USER, "max_tokens": -5}).encode()),
    "bad-grammar": ("/v1/chat/completions", json.dumps({"messages": _USER, "grammar": "root ::= ((",
                                                        "max_tokens": 2}).encode()),
    "bad-logit-bias": ("/v1/chat/completions", json.dumps({"messages": _USER, "logit_bias": {"abc": 1},
                                                           "max_tokens": 2}).encode()),
    "token-outside-vocabulary": ("/v1/completions", b'{"prompt": [999999], "max_tokens": 2}'),
    "completion-not-json": ("/v1/completions", b'{"prompt": '),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_openai_server_answers_400_to_malformed_requests(served, case):
    """Raw HTTP: a malformed body is the client's error (400, OpenAI-style), and the server lives on."""
    proc, port = served
    status, data = _post(port, *MALFORMED[case])
    assert status == 400, (status, data)
    assert data["error"]["type"] == "invalid_request_error" and data["error"]["message"]
    status, data = _post(port, "/v1/chat/completions", json.dumps({"messages": _USER, "max_tokens": 2}).encode())
    assert status == 200 and data["choices"][0]["message"]["role"] == "assistant"
    assert proc.poll() is None


def test_openai_server_listens_on_localhost_only(served):
    """Bound to 127.0.0.1 although HOST=0.0.0.0 was in its environment (llama-cpp-python's own main obeys HOST)."""
    proc, port = served
    table = Path("/proc/net/tcp")
    if not table.is_file():
        pytest.skip("needs Linux's /proc/net/tcp")
    listening = [line.split()[1] for line in table.read_text().splitlines()[1:]
                 if line.split()[3] == "0A" and int(line.split()[1].split(":")[1], 16) == port]
    assert listening == ["0100007F:%04X" % port], listening
    assert proc.log_path.is_file()


class _OtherServer:
    """Something else already serving HTTP on a port, answering 200 to every request (another OpenAI server)."""

    def __enter__(self) -> int:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                body = b'{"object": "list", "data": [{"id": "other"}]}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self.httpd.server_address[1]

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("checked", [True, False])
def test_openai_server_on_a_busy_port_reports_failure(ggufs, monkeypatch, checked):
    """A port another server answers on: refused before starting; and should the port be taken between the check
    and the bind, the answer of the other server is not mistaken for ours."""
    for module in SERVER_EXTRAS:
        pytest.importorskip(module)
    from helpers.chat import server
    from helpers.chat.server import start_openai_server

    with _OtherServer() as port:
        if not checked:
            monkeypatch.setattr(server, "_port_in_use", lambda host, port: False)
        with pytest.raises(UserError, match="already in use" if checked else "exited"):
            proc = start_openai_server(ggufs("llama3"), port=port, n_ctx=256, wait=60)
            proc.terminate()


def test_openai_server_serves_a_model_in_a_read_only_folder(ggufs, tmp_path):
    """The log goes to a writable place, not beside the model."""
    for module in SERVER_EXTRAS:
        pytest.importorskip(module)
    from faults import readonly_folder

    from helpers.chat.server import openai_chat, start_openai_server

    gguf = ggufs("llama3")
    with readonly_folder(tmp_path / "ro", files=[gguf]) as ro:
        port = _free_port()
        proc = start_openai_server(ro / gguf.name, port=port, n_ctx=256)
        try:
            assert ro not in proc.log_path.parents and proc.log_path.is_file()
            assert openai_chat(f"http://127.0.0.1:{port}", _USER, max_new_tokens=2, temperature=0) is not None
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def test_openai_server_needs_extras(monkeypatch, tmp_path):
    import importlib.util

    from helpers.chat import server as chatui

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real(name, *a))
    with pytest.raises(UserError, match=r"llama-cpp-python\[server\]"):
        chatui.start_openai_server(tmp_path / "x.gguf")


def test_speculative_with_small_draft_keeps_greedy_reply(demo, monkeypatch):
    """Chinese-Alpaca-2-7B with the 1.3B draft (stand-ins): the same greedy reply as the target alone."""
    from helpers.chat import load_backend, speculative_generate

    monkeypatch.setenv("HELPERS_LOCAL_MODELS", str(demo))
    target, draft = load_backend("chinese-alpaca-2-7b"), load_backend("chinese-alpaca-2-1.3b")
    assert target.template == draft.template == "llama2-zh"
    prompt = "[INST] <<SYS>>\nYou are a helpful assistant. 你是一个乐于助人的助手。\n<</SYS>>\n\n你好 [/INST]"
    assert target.prompt("你好") == prompt  # what chat() sends, and what the notebook hands to speculative decoding
    text, stats = speculative_generate(target, draft, prompt, max_new_tokens=16, num_assistant_tokens=4,
                                       verbose=False, **GREEDY)
    assert stats["same_text"] and text == target.generate(prompt, max_new_tokens=16, **GREEDY).strip()
    assert stats["draft_proposed"] > 0 and 0.0 <= stats["acceptance_rate"] <= 1.0
    assert stats["draft_accepted"] + stats["target_passes"] == stats["tokens"]
    assert stats["draft_accepted"] < stats["draft_proposed"]  # the random stand-ins disagree now and then
