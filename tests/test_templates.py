"""Prompt templates: byte-exact strings, Jinja/Ollama exports that agree with render(), truncation, lookup."""
from __future__ import annotations

import json
import re

import pytest

from helpers import tokens as T
from helpers.tokens.templates import TEMPLATES, GenerationDefaults, truncate_history
from helpers.util import UserError

HEADER = "Below is an instruction that describes a task. Write a response that appropriately completes the request."
SYS = "You are a helpful assistant. 你是一个乐于助人的助手。"
HIST = [("你好", "你好！有什么可以帮你？")]
Q = "介绍一下北京"


# ----------------------------------------------------------------------------- byte-exact prompts

EXPECTED = {
    ("alpaca", "single"): HEADER + "\n\n### Instruction:\n介绍一下北京\n\n### Response: ",
    ("alpaca", "multi"): HEADER
    + "\n\n### Instruction:\n你好\n\n### Response: 你好！有什么可以帮你？\n\n### Instruction:\n介绍一下北京\n\n### Response: ",
    ("llama2-zh", "single"): "[INST] <<SYS>>\nYou are a helpful assistant. 你是一个乐于助人的助手。\n<</SYS>>\n\n介绍一下北京 [/INST]",
    ("llama2-zh", "multi"): "[INST] <<SYS>>\nYou are a helpful assistant. 你是一个乐于助人的助手。\n<</SYS>>\n\n"
    "你好 [/INST] 你好！有什么可以帮你？</s><s>[INST] 介绍一下北京 [/INST]",
    ("llama2-zh-long", "single"): "[INST] <<SYS>>\nYou are a helpful assistant. 你是一个乐于助人的助手。"
    "请你提供专业、有逻辑、内容真实、有价值的详细回复。\n<</SYS>>\n\n介绍一下北京 [/INST]",
    ("llama3", "single"): "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant. 你是一个乐于助人的助手。"
    "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n介绍一下北京<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n",
    ("llama3", "multi"): "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant. 你是一个乐于助人的助手。"
    "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n你好<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n你好！有什么可以帮你？<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\n介绍一下北京<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    ("raw", "single"): "介绍一下北京",
    ("raw", "multi"): "你好你好！有什么可以帮你？介绍一下北京",
}


@pytest.mark.parametrize("key", sorted(EXPECTED), ids=lambda k: "-".join(k))
def test_build_prompt_exact(key):
    name, kind = key
    history = HIST if kind == "multi" else ()
    assert T.build_prompt(name, Q, history=history) == EXPECTED[key]


def test_system_prompts():
    assert T.build_prompt("alpaca", "你好", system="你是翻译。") == "你是翻译。\n\n### Instruction:\n你好\n\n### Response: "
    assert T.build_prompt("llama2-zh", "你好", system="") == "[INST] 你好 [/INST]"
    assert T.build_prompt("llama2-zh", "你好", system="S") == "[INST] <<SYS>>\nS\n<</SYS>>\n\n你好 [/INST]"
    assert T.build_prompt("llama3", "你好", system="") == (
        "<|start_header_id|>user<|end_header_id|>\n\n你好<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert TEMPLATES["alpaca"].default_system == HEADER
    assert TEMPLATES["llama2-zh"].default_system == SYS == TEMPLATES["llama3"].default_system


def test_render_training_form_and_stops():
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    assert T.get_template("llama2-zh").render(msgs, add_generation_prompt=False) == (
        "[INST] <<SYS>>\n" + SYS + "\n<</SYS>>\n\nq [/INST] a</s>"
    )
    assert T.get_template("alpaca").render(msgs[:1], add_generation_prompt=False) == HEADER + "\n\n### Instruction:\nq\n\n"
    assert T.get_template("llama3").eot_token == "<|eot_id|>"
    assert T.get_template("llama3").stop_strings == ("<|eot_id|>", "<|end_of_text|>")
    assert T.get_template("alpaca").stop_strings == ("</s>", "### Instruction:")
    assert T.get_template("llama2-zh").eot_token == "</s>"


def test_bad_messages_and_unknown_template():
    with pytest.raises(UserError, match="llama2-zh"):
        T.get_template("vicuna")
    with pytest.raises(UserError):
        T.build_prompt("chatml", "hi")
    with pytest.raises(UserError, match="first"):
        T.get_template("llama3").render([{"role": "user", "content": "q"}, {"role": "system", "content": "s"}])
    with pytest.raises(UserError, match="role"):
        T.get_template("llama3").render([{"role": "tool", "content": "q"}])


# ----------------------------------------------------------------------------- truncation


def test_truncate_history_drops_oldest_first():
    history = [(f"问题{i}" * 5, f"回答{i}" * 5) for i in range(6)]

    def count(text: str) -> int:
        return len(text)

    full = len(T.build_prompt("llama2-zh", Q, history=history))
    limit = full - 30  # just too long for all six turns
    kept = truncate_history("llama2-zh", Q, history, count_tokens=count, max_tokens=limit)
    assert kept == history[1:]
    assert count(T.build_prompt("llama2-zh", Q, history=kept)) <= limit
    kept = truncate_history("llama3", Q, history, count_tokens=count, max_tokens=len(T.build_prompt("llama3", Q)) + 1)
    assert kept == []
    # the current question is kept even when it alone is too long
    assert truncate_history("alpaca", Q * 100, history, count_tokens=count, max_tokens=10) == []
    assert truncate_history("alpaca", Q, history, count_tokens=count, max_tokens=10**6) == history


# ----------------------------------------------------------------------------- Jinja export

CONVERSATIONS = [
    [{"role": "user", "content": "你好"}],
    [{"role": "system", "content": "你是一个翻译。"}, {"role": "user", "content": "hello {{ x }}"}],
    [{"role": "system", "content": ""}, {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
    [
        {"role": "user", "content": "第一问\n有换行"},
        {"role": "assistant", "content": "  第一答  "},
        {"role": "user", "content": "第二问"},
        {"role": "assistant", "content": "第二答"},
        {"role": "user", "content": "第三问 \"quoted\" 'single' \\ back"},
    ],
]


def _jinja_env():
    jinja2 = pytest.importorskip("jinja2")
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = raise_exception
    return env


@pytest.mark.parametrize("name", list(TEMPLATES))
@pytest.mark.parametrize("gen", [True, False])
def test_jinja_matches_render(name, gen):
    env = _jinja_env()
    template = env.from_string(T.jinja_chat_template(name))
    for messages in CONVERSATIONS:
        got = template.render(messages=messages, bos_token="<s>", eos_token="</s>", add_generation_prompt=gen)
        assert got == T.get_template(name).render(messages, add_generation_prompt=gen), messages
    # the BOS comes from the tokenizer, never from the template
    first = template.render(messages=CONVERSATIONS[0], bos_token="<s>", eos_token="</s>", add_generation_prompt=gen)
    assert not first.startswith("<s>") and "<|begin_of_text|>" not in first


def test_jinja_rejects_misplaced_system():
    jinja2 = pytest.importorskip("jinja2")
    template = _jinja_env().from_string(T.jinja_chat_template("llama3"))
    with pytest.raises(jinja2.exceptions.TemplateError):
        template.render(messages=[{"role": "user", "content": "q"}, {"role": "system", "content": "s"}])


def test_jinja_through_transformers_renderer():
    """transformers' own renderer (the one apply_chat_template uses) gives the same text."""
    utils = pytest.importorskip("transformers.utils.chat_template_utils")
    for name in TEMPLATES:
        rendered, _ = utils.render_jinja_template(
            conversations=[CONVERSATIONS[3]], chat_template=T.jinja_chat_template(name),
            add_generation_prompt=True, bos_token="<s>", eos_token="</s>",
        )
        assert rendered[0] == T.get_template(name).render(CONVERSATIONS[3]), name


# ----------------------------------------------------------------------------- Ollama export


class _Cut(Exception):
    pass


def _go_render(template: str, values: dict[str, str], *, cut_after_response: bool = False) -> str:
    """Evaluate the Go-template subset used here: {{ .X }}, {{ if .X }}..{{ else }}..{{ end }}.

    With ``cut_after_response`` nothing after an executed ``{{ .Response }}`` is emitted (Ollama, generating).
    """
    tokens = re.split(r"({{.*?}})", template)
    out: list[str] = []

    def run(i: int, emit: bool) -> int:
        while i < len(tokens):
            tok = tokens[i]
            action = tok[2:-2].strip() if tok.startswith("{{") else None
            if action is None:
                if emit:
                    out.append(tok)
            elif action.startswith("if "):
                cond = bool(values.get(action[3:].strip().lstrip(".")))
                i = run(i + 1, emit and cond)
                if tokens[i][2:-2].strip() == "else":
                    i = run(i + 1, emit and not cond)
            elif action in ("else", "end"):
                return i
            elif emit:
                out.append(values.get(action.lstrip("."), ""))
                if cut_after_response and action == ".Response":
                    raise _Cut
            i += 1
        return i

    try:
        run(0, True)
    except _Cut:
        pass
    return "".join(out)


@pytest.mark.parametrize("name", ["alpaca", "llama2-zh", "llama3", "raw"])
def test_ollama_template_matches_render(name):
    """Per-turn rendering (System on the first turn, reply cut at .Response) reproduces render()."""
    t = T.get_template(name)
    template = T.ollama_template(name)
    turns = [*HIST, ("再问一次", "好的。"), (Q, "")]
    text = ""
    for i, (prompt, response) in enumerate(turns):
        values = {"System": t.default_system or "" if i == 0 else "", "Prompt": prompt, "Response": response}
        text += _go_render(template, values, cut_after_response=not response)
    assert text == T.build_prompt(name, Q, history=turns[:-1])


# ----------------------------------------------------------------------------- defaults and detection


def test_generation_defaults():
    for key in ("v1", "v2", "v3", "alpaca", "llama2-zh", "llama3", "raw"):
        d = T.generation_defaults(key)
        assert (d.temperature, d.top_k, d.top_p, d.repetition_penalty, d.max_new_tokens, d.do_sample) == (
            0.2, 40, 0.9, 1.1, 400, True,
        )
    assert T.generation_defaults("v2").as_kwargs()["top_k"] == 40
    with pytest.raises(UserError):
        T.generation_defaults("v9")
    with pytest.raises(ValueError):
        GenerationDefaults(temperature=0.2, top_k=40, top_p=1.5, repetition_penalty=1.1, max_new_tokens=10)


def test_template_for_model_from_gguf_and_folder(tmp_path, capsys):
    meta = {"tokenizer.chat_template": T.jinja_chat_template("llama3")}
    assert T.template_for_model("/nowhere/model.gguf", gguf_metadata=meta) == "llama3"
    meta = {"tokenizer.chat_template": T.jinja_chat_template("llama2-zh")}
    assert T.template_for_model("/nowhere/model.gguf", gguf_metadata=meta) == "llama2-zh"
    meta = {"tokenizer.chat_template": T.jinja_chat_template("alpaca")}
    assert T.template_for_model("/nowhere/model.gguf", gguf_metadata=meta) == "alpaca"

    llama3 = tmp_path / "folder-with-eot"
    llama3.mkdir()
    (llama3 / "tokenizer.json").write_text(json.dumps({"added_tokens": [{"id": 128009, "content": "<|eot_id|>"}]}))
    assert T.template_for_model(str(llama3)) == "llama3"
    v1 = tmp_path / "folder-49954"
    v1.mkdir()
    (v1 / "config.json").write_text(json.dumps({"vocab_size": 49954}))
    assert T.template_for_model(str(v1)) == "alpaca"
    v2 = tmp_path / "folder-55296"
    v2.mkdir()
    (v2 / "config.json").write_text(json.dumps({"vocab_size": 55296}))
    assert T.template_for_model(str(v2)) == "llama2-zh"
    cfg = tmp_path / "folder-chat-template"
    cfg.mkdir()
    (cfg / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ '[INST] ' }}"}))
    assert T.template_for_model(str(cfg)) == "llama2-zh"

    capsys.readouterr()
    assert T.template_for_model(str(tmp_path / "no-such-model-xyz")) == "raw"
    assert "raw" in capsys.readouterr().err


def test_template_for_model_fixture_vocab(released_tokenizers):
    assert T.template_for_model(str(released_tokenizers["chinese-llama-2-tokenizer"])) == "llama2-zh"
