"""CFG sampling (classifier-free guidance): greedy tokens equal transformers' own ``generate(guidance_scale=...,
negative_prompt_ids=...)`` and a first-principles computation of the guided log-probabilities; llama.cpp's second
context gives the same tokens; scale 1 is plain decoding; the negative prompt is built as the authors' scripts build
it; the CLI and notebook 03's form reach it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.tokens import build_prompt
from helpers.util import UserError

ROOT = Path(__file__).resolve().parents[1]
GREEDY = {"temperature": 0, "repetition_penalty": 1.0}
QUESTION = "你好，请介绍一下自己"
NEGATIVE = "用英文回答，越短越好。"
SAFE_MARGIN = 0.05  # guided log-prob gap between the best two tokens that float16 GGUF weights cannot overturn


# ----------------------------------------------------------------------------- fixtures and references
@pytest.fixture(scope="module")
def llama2_dir(demo) -> Path:
    return demo / "Llama-2-7b-hf"


@pytest.fixture(scope="module")
def hf(llama2_dir, one_torch_thread):
    from helpers.chat import load_backend

    return load_backend(llama2_dir, template="llama2-zh")


@pytest.fixture(scope="module")
def cpp(llama2_dir, tmp_path_factory):
    pytest.importorskip("llama_cpp")
    from helpers.chat import load_backend
    from helpers.gguf import convert_hf_to_gguf

    path = convert_hf_to_gguf(llama2_dir, tmp_path_factory.mktemp("cfg") / "llama2-f16.gguf", outtype="f16",
                              template="llama2-zh")
    backend = load_backend(path, n_ctx=512)
    yield backend
    backend.close()


def first_principles(model, cond: list[int], uncond: list[int], scale: float, steps: int,
                     stops: list[int]) -> tuple[list[int], list[float]]:
    """Greedy CFG from its definition: at every step a full forward of each branch (no KV cache), log-softmax in
    float64, ``uncond + scale * (cond - uncond)``, argmax; both branches then take the chosen token. Returns the tokens
    (up to and with a stop token) and each step's gap between the best two guided log-probabilities."""
    import torch

    cond, uncond, tokens, margins = list(cond), list(uncond), [], []
    with torch.no_grad():
        for _ in range(steps):
            lc = torch.log_softmax(model(torch.tensor([cond]), use_cache=False).logits[0, -1].double(), -1)
            lu = torch.log_softmax(model(torch.tensor([uncond]), use_cache=False).logits[0, -1].double(), -1)
            top = torch.topk(lu + scale * (lc - lu), 2)
            token = int(top.indices[0])
            tokens.append(token)
            margins.append(float(top.values[0] - top.values[1]))
            if token in stops:
                break
            cond.append(token)
            uncond.append(token)
    return tokens, margins


def authors_inputs(hf, negative: str | None) -> tuple[list[int], list[int] | None]:
    """The prompt and negative prompt ids as the authors' ``inference_hf.py --with_prompt`` builds them: the Alpaca-2
    template with the default system prompt, and the same template with the negative prompt as the system prompt."""
    system = "You are a helpful assistant. 你是一个乐于助人的助手。"
    template = "[INST] <<SYS>>\n{}\n<</SYS>>\n\n{} [/INST]"
    prompt = hf.tokenizer(template.format(system, QUESTION))["input_ids"]
    neg = hf.tokenizer(template.format(negative, QUESTION))["input_ids"] if negative else None
    return prompt, neg


def spy_generate(hf, monkeypatch) -> list:
    """Record what the transformers back end's ``model.generate`` calls return (and their keyword arguments)."""
    seen: list = []
    real = hf.model.generate

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        seen.append((kwargs, out[0, kwargs["input_ids"].shape[1]:].tolist()))
        return out

    monkeypatch.setattr(hf.model, "generate", spy)
    return seen


# ----------------------------------------------------------------------------- transformers
@pytest.mark.parametrize("scale, negative", [(1.5, NEGATIVE), (2.0, None), (0.5, NEGATIVE)])
def test_greedy_cfg_equals_transformers_generate_and_first_principles(hf, monkeypatch, scale, negative):
    import torch

    steps = 16
    seen = spy_generate(hf, monkeypatch)
    text = hf.chat(QUESTION, max_new_tokens=steps, guidance_scale=scale, negative_prompt=negative, **GREEDY)
    kwargs, ours = seen[-1]
    prompt, neg = authors_inputs(hf, negative)
    assert kwargs["input_ids"][0].tolist() == prompt
    assert (kwargs["negative_prompt_ids"][0].tolist() if "negative_prompt_ids" in kwargs else None) == neg

    with torch.inference_mode():  # transformers' own CFG, called as the authors' script calls it
        extra = {"negative_prompt_ids": torch.tensor([neg]), "negative_prompt_attention_mask": torch.ones(1, len(neg),
                 dtype=torch.long)} if neg else {}
        out = hf.model.generate(input_ids=torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                do_sample=False, max_new_tokens=steps, guidance_scale=scale, eos_token_id=hf.stop_ids,
                                pad_token_id=hf.stop_ids[0], **extra)
    theirs = out[0, len(prompt):].tolist()
    mine, margins = first_principles(hf.model, prompt, neg or prompt[-1:], scale, steps, hf.stop_ids)
    assert ours == theirs == mine
    assert min(margins) > 1e-4, margins  # no near tie: the equality above says something
    plain = hf.chat(QUESTION, max_new_tokens=steps, **GREEDY)
    assert seen[-1][1] != ours and plain != text  # the guidance changed the reply
    assert text == hf.tokenizer.decode(ours, skip_special_tokens=True).replace("\ufffd", "").strip()


def test_scale_one_is_plain_decoding(hf, monkeypatch):
    seen = spy_generate(hf, monkeypatch)
    plain = hf.chat(QUESTION, max_new_tokens=12, **GREEDY)
    one = hf.chat(QUESTION, max_new_tokens=12, guidance_scale=1.0, negative_prompt=NEGATIVE, **GREEDY)
    assert one == plain and seen[0][1] == seen[1][1]
    assert "negative_prompt_ids" not in seen[1][0] and seen[1][0]["generation_config"].guidance_scale is None


def test_guidance_set_when_loading_is_the_default_of_every_reply(llama2_dir, hf):
    """``load_backend(..., guidance_scale=S, negative_prompt=P)`` (what notebook 03 does) guides every reply."""
    from helpers.chat import load_backend

    guided = load_backend(llama2_dir, template="llama2-zh", guidance_scale=1.5, negative_prompt=NEGATIVE)
    expected = hf.chat(QUESTION, max_new_tokens=10, guidance_scale=1.5, negative_prompt=NEGATIVE, **GREEDY)
    assert guided.chat(QUESTION, max_new_tokens=10, **GREEDY) == expected
    assert guided.chat(QUESTION, max_new_tokens=10, guidance_scale=1, **GREEDY) == hf.chat(QUESTION, max_new_tokens=10,
                                                                                         **GREEDY)


# ----------------------------------------------------------------------------- the negative prompt
def test_negative_prompt_takes_the_system_prompts_place_with_the_same_turns(hf, monkeypatch):
    """As the authors' gradio demo: the prompt with its system block replaced, history included; the turns kept are
    those the prompt keeps. ``generate`` (templated text) takes the negative prompt as given."""
    seen: list = []

    def capture(prompt, settings, stop_event):
        seen.append((prompt, settings["negative_prompt"]))
        yield "ok"

    monkeypatch.setattr(hf, "_stream", capture)
    hf.chat(QUESTION, guidance_scale=1.5, negative_prompt=NEGATIVE)
    assert seen[-1][1] == f"[INST] <<SYS>>\n{NEGATIVE}\n<</SYS>>\n\n{QUESTION} [/INST]"
    history = [(f"问题{i}" * 30, f"回答{i}" * 30) for i in range(20)]
    hf.chat("最后的问题", history=history, system="你是助手。", guidance_scale=1.5, negative_prompt=NEGATIVE)
    prompt, negative = seen[-1]
    assert "问题19" in prompt and "问题0" not in prompt
    assert negative == prompt.replace("<<SYS>>\n你是助手。\n<</SYS>>", f"<<SYS>>\n{NEGATIVE}\n<</SYS>>")
    hf.generate("[INST] 你好 [/INST]", guidance_scale=1.5, negative_prompt="raw text")
    assert seen[-1][1] == "raw text"
    hf.chat(QUESTION, guidance_scale=1.0, negative_prompt=NEGATIVE)
    assert seen[-1][1] is None  # off: no negative branch


def test_negative_prompt_in_each_template():
    from helpers.chat.guidance import negative_chat_text

    assert negative_chat_text("raw", "q", [], "neg") == "neg"  # no template: as given, as the authors' raw mode
    assert negative_chat_text("alpaca", "q", [], "neg") == build_prompt("alpaca", "q", system="neg")
    assert negative_chat_text("alpaca", "q", [], "neg").startswith("neg\n\n### Instruction:\nq")
    llama3 = negative_chat_text("llama3", "q", [("a", "b")], "neg")
    assert llama3.startswith("<|start_header_id|>system<|end_header_id|>\n\nneg<|eot_id|>")
    assert llama3 == build_prompt("llama3", "q", history=[("a", "b")], system="neg")


@pytest.mark.parametrize("bad", [-0.5, "much", None])
def test_bad_scales_are_refused(hf, bad):
    with pytest.raises(UserError, match="guidance_scale"):
        hf.settings(guidance_scale=bad) if bad is not None else hf.settings(guidance_scale=float("nan"))


def test_speculative_decoding_refuses_cfg(hf, llama2_dir):
    from helpers.chat import load_backend, speculative_generate

    twin = load_backend(llama2_dir, backend="transformers")
    with pytest.raises(UserError, match="CFG"):
        speculative_generate(hf, twin, "[INST] 你好 [/INST]", max_new_tokens=4, guidance_scale=1.5, **GREEDY)


# ----------------------------------------------------------------------------- llama.cpp
def _safe_steps(hf, scale: float, negative: str | None, steps: int = 12) -> int:
    """Leading greedy steps whose guided choice no float16 rounding can flip (first principles on the HF model)."""
    prompt, neg = authors_inputs(hf, negative)
    tokens, margins = first_principles(hf.model, prompt, neg or prompt[-1:], scale, steps, hf.stop_ids)
    safe = next((i for i, m in enumerate(margins) if m < SAFE_MARGIN), len(margins))
    assert safe >= 4, margins  # enough tokens for the comparison to mean something
    return safe


@pytest.mark.parametrize("scale, negative", [(1.5, NEGATIVE), (2.0, None)])
def test_llama_cpp_cfg_gives_transformers_tokens(hf, cpp, scale, negative):
    """A second llama.cpp context over the same F16 GGUF guides as transformers does: the same greedy reply."""
    n = _safe_steps(hf, scale, negative)
    a = hf.chat(QUESTION, max_new_tokens=n, guidance_scale=scale, negative_prompt=negative, **GREEDY)
    b = cpp.chat(QUESTION, max_new_tokens=n, guidance_scale=scale, negative_prompt=negative, **GREEDY)
    assert a and a == b
    assert b != cpp.chat(QUESTION, max_new_tokens=n, **GREEDY)  # the guidance acted
    again = cpp.chat(QUESTION, max_new_tokens=n, guidance_scale=scale, negative_prompt=negative, **GREEDY)
    assert again == b  # the negative context starts afresh every reply


def test_llama_cpp_scale_one_is_plain_decoding(cpp):
    plain = cpp.chat(QUESTION, max_new_tokens=10, **GREEDY)
    assert cpp.chat(QUESTION, max_new_tokens=10, guidance_scale=1, negative_prompt=NEGATIVE, **GREEDY) == plain


def test_llama_cpp_refuses_a_negative_prompt_longer_than_the_context(cpp):
    with pytest.raises(UserError, match="negative prompt has"):
        cpp.chat(QUESTION, max_new_tokens=4, guidance_scale=1.5, negative_prompt="长" * 2000, **GREEDY)


# ----------------------------------------------------------------------------- CLI and notebook 03
def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HELPERS_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "helpers", "chat", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)


def test_cli_guidance_scale_and_negative_prompt(hf, llama2_dir):
    r = _cli("--model", str(llama2_dir), "--template", "llama2-zh", "--prompt", QUESTION, "--max-new-tokens", "10",
             "--temperature", "0", "--repetition-penalty", "1", "--guidance-scale", "1.5", "--negative-prompt", NEGATIVE)
    assert r.returncode == 0, r.stderr
    expected = hf.chat(QUESTION, max_new_tokens=10, guidance_scale=1.5, negative_prompt=NEGATIVE, **GREEDY)
    assert r.stdout == expected + "\n"
    for args in (["--negative-prompt", NEGATIVE], ["--guidance-scale", "-1"]):
        r = _cli("--model", str(llama2_dir), "--prompt", "hi", *args)
        assert r.returncode == 2 and r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
        assert "loaded" not in r.stderr  # refused before the model loads


def test_notebook_check_refuses_a_negative_scale_and_skips_speculative_decoding(monkeypatch):
    from helpers.colab import NO, Runtime
    from helpers.stages import ChatStage

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t4 = Runtime.free_colab(gpu=True, setup=ChatStage.SETUP)
    refused = ChatStage(cfg_scale=-1.0).plan(t4)
    assert not refused.fits and next(n for n in refused.needs if n.what == "CFG sampling").status == NO
    assert "CFG_SCALE=1.0" in refused.refusal()
    draft = "chinese-alpaca-2-1.3b"
    guided = ChatStage(cfg_scale=1.5, negative_prompt=NEGATIVE, draft_model=draft).plan(t4)
    assert guided.fits and guided.job.draft is None and ChatStage(draft_model=draft).plan(t4).job.draft == draft
    assert any("speculative decoding does not combine with CFG" in n for n in guided.notes)
    assert any(f"NEGATIVE_PROMPT={NEGATIVE!r}" in n for n in guided.notes)
    off = ChatStage(negative_prompt=NEGATIVE).plan(t4)
    assert any("ignored while CFG sampling is off" in n for n in off.notes)


@pytest.mark.parametrize("model", ["chinese-alpaca-2-7b", "chinese-alpaca-2-7b-gguf"])
def test_the_check_counts_the_negative_branchs_kv_cache(monkeypatch, model):
    """CFG keeps a second KV cache (transformers' negative batch row, llama.cpp's second context): on a T4 the check's
    memory row grows by exactly one more KV cache of the chat's size (llama.cpp: and one more context's overhead)."""
    from helpers.colab import Runtime
    from helpers.colab.sizing import kv_cache_bytes, model_files
    from helpers.stages import ChatStage
    from helpers.stages.memory import CHAT_CONTEXT, RUNTIME_OVERHEAD

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t4 = Runtime.free_colab(gpu=True, setup=ChatStage.SETUP)

    def memory(scale: float):
        plan = ChatStage(model=model, cfg_scale=scale, draft_model="", start_server=False).plan(t4)
        return next(n for n in plan.needs if n.what in ("GPU memory", "RAM") and "KV cache" in n.need)

    plain, guided = memory(1.0), memory(1.5)
    config = model_files("chinese-alpaca-2-7b").config
    gguf = model.endswith("-gguf")
    extra = kv_cache_bytes(config, CHAT_CONTEXT, **({} if gguf else {"bytes_per_value": 2}))
    extra += RUNTIME_OVERHEAD if gguf else 0
    assert guided.amount - plain.amount == extra
    assert f"2 x {CHAT_CONTEXT}-token KV cache (CFG)" in guided.need


def test_notebook_form_reaches_the_chat(demo):
    """CFG_SCALE and NEGATIVE_PROMPT: the reply notebook 03 streams is the guided one (Chinese-Alpaca-2's stand-in,
    the release's sampling defaults with the same random draws)."""
    import torch

    from helpers.chat import load_backend
    from helpers.stages import ChatStage

    folder = demo / "chinese-alpaca-2-7b"
    stage = ChatStage(model=str(folder), quantization="none", prompt=QUESTION, max_new_tokens=8, draft_model="",
                      start_server=False, cfg_scale=1.5, negative_prompt=NEGATIVE)
    plan = stage.check()
    assert any("CFG sampling (scale 1.5)" in n for n in plan.notes)
    session = plan.run()
    reference = load_backend(folder)
    try:
        assert session.bot.template == reference.template == "llama2-zh"
        torch.manual_seed(0)
        reply = session.reply()
        torch.manual_seed(0)
        assert reply == reference.chat(QUESTION, max_new_tokens=8, guidance_scale=1.5, negative_prompt=NEGATIVE)
        torch.manual_seed(0)
        assert reply != reference.chat(QUESTION, max_new_tokens=8)
    finally:
        session.bot.close()
        reference.close()
