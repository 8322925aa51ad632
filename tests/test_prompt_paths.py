"""One conversation, the same token ids along every path a user can take (issue 27): for each template family of
the catalog (v1 Alpaca, v2 Llama-2 chat, v3 Llama-3), with the default system prompt, an explicit one, an explicitly
empty one, one turn and several, the ids equal the authors' format tokenized with its BOS
(``tokenizer(Template.render(...))``, our transformers path) along

- ``helpers serve`` (:meth:`helpers.chat.engine.Engine.chat_tokens`; through HTTP in ``tests/test_serve_clients.py``);
- llama-cpp-python's ``create_chat_completion`` with the GGUF's own chat template (its Jinja formatter, called for
  real, the prompt caught where it reaches ``create_completion``);
- llama.cpp's own template application (``common/chat.cpp``, ``common_chat_template_direct_apply``: the template
  rendered, a leading ``bos_token`` stripped, then tokenized with the BOS added and special tokens parsed);
- Ollama's Modelfile (``TEMPLATE`` and ``SYSTEM`` as :func:`helpers.gguf.write_modelfile` writes them) rendered by
  Go's ``text/template`` turn by turn as Ollama does (``tests/ollama_render/main.go``), tokenized as Ollama's runner
  does (``Tokenize(prompt, addSpecial=true, parseSpecial=true)``).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers.tokens import build_prompt, get_template, load_tokenizer, ollama_template

HERE = Path(__file__).resolve().parent
CASES = {  # merged release -> (base, LoRAs, template)
    "chinese-alpaca-7b": ("llama-7b", ["chinese-alpaca-lora-7b"], "alpaca"),
    "chinese-alpaca-2-7b": ("Llama-2-7b-hf", ["chinese-alpaca-2-lora-7b"], "llama2-zh"),
    "llama-3-chinese-8b-instruct": ("Meta-Llama-3-8B-Instruct", ["llama-3-chinese-8b-instruct-v2-lora"], "llama3"),
}
SYSTEMS = {"default": None, "explicit": "你是一个导游。", "empty": ""}
HISTORIES = {"one turn": [], "three turns": [("你好", "你好！有什么可以帮你？"), ("1+1=?", "2")]}
QUESTION = "请介绍一下北京。"


def conversation(system: str | None, history: list) -> list[dict]:
    out = [] if system is None else [{"role": "system", "content": system}]
    for q, a in history:
        out += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return out + [{"role": "user", "content": QUESTION}]


@pytest.fixture(scope="module")
def release(demo, tmp_path_factory):
    """Each release merged by notebook 01's merge: ``(HF folder, GGUF, template id)``, made once."""
    from helpers.merge import MergeOptions, Recipe, merge

    out = tmp_path_factory.mktemp("paths")
    cache: dict = {}

    def get(name: str):
        if name not in cache:
            base, loras, template = CASES[name]
            folder, gguf = out / name, out / f"{name}.gguf"
            for target, fmt in ((folder, "hf"), (gguf, "gguf")):
                merge(Recipe(demo / base, tuple(demo / x for x in loras)), target,
                      MergeOptions(fmt=fmt, outtype="f16", progress=False))
            cache[name] = folder, gguf, template
        return cache[name]

    return get


@pytest.fixture(scope="module")
def ollama_render(tmp_path_factory):
    """The Go renderer, built once (skips without Go: scripts/setup.sh installs golang-go for the tests)."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("Go is not installed (scripts/setup.sh installs golang-go)")
    out = tmp_path_factory.mktemp("ollama") / "ollama_render"
    subprocess.run([go, "build", "-o", str(out), str(HERE / "ollama_render" / "main.go")], check=True,
                   env={**os.environ, "GO111MODULE": "off", "GOFLAGS": "",
                        "GOCACHE": str(out.parent / "cache")}, capture_output=True, timeout=600)
    return out


def llama_cpp_python_ids(llm, messages: list[dict]) -> list[int]:
    """The prompt llama-cpp-python's ``create_chat_completion`` feeds for ``messages`` (its default chat handler, from
    the GGUF's template), caught where it calls ``create_completion``."""
    caught = {}

    class Caught(Exception):
        pass

    def create_completion(prompt, **_kwargs):
        caught["prompt"] = prompt
        raise Caught

    llm.create_completion = create_completion
    with pytest.raises(Caught):
        llm.create_chat_completion(messages=messages, max_tokens=1)
    return list(caught["prompt"])


def llama_cpp_template_ids(llm, messages: list[dict]) -> list[int]:
    """llama.cpp's own path: the GGUF template rendered with its BOS/EOS text (``trim_blocks``, ``lstrip_blocks``, as
    minja does), a leading BOS text stripped, then tokenized with ``add_special`` and ``parse_special``."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    bos = llm.detokenize([llm.token_bos()], special=True).decode()
    eos = llm.detokenize([llm.token_eos()], special=True).decode()
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    text = env.from_string(llm.metadata["tokenizer.chat_template"]).render(
        messages=messages, add_generation_prompt=True, bos_token=bos, eos_token=eos)
    if text.startswith(bos):
        text = text[len(bos):]
    return llm.tokenize(text.encode(), add_bos=True, special=True)


@pytest.mark.parametrize("name", CASES)
def test_every_path_feeds_the_authors_prompt_with_one_bos(release, name, ollama_render):
    import llama_cpp

    from helpers.chat.engine import Engine
    from helpers.gguf import write_modelfile

    folder, gguf, template = release(name)
    tokenizer = load_tokenizer(folder)
    modelfile = write_modelfile(gguf, template=template).read_text(encoding="utf-8")  # as the merge writes it
    ollama_tmpl = re.search(r'^TEMPLATE """(.*?)"""$', modelfile, re.S | re.M).group(1)
    found = re.search(r'^SYSTEM """(.*?)"""$', modelfile, re.S | re.M)
    modelfile_system = found.group(1) if found else ""
    assert ollama_tmpl == ollama_template(template) and modelfile_system == (get_template(template).default_system
                                                                              or "")
    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=512, verbose=False)
    engine = Engine(gguf, llm=llm)
    try:
        assert engine.template == template
        for system_kind, system in SYSTEMS.items():
            for history_kind, history in HISTORIES.items():
                messages = conversation(system, history)
                text = build_prompt(template, QUESTION, history=history, system=system)
                authors = tokenizer(text)["input_ids"]
                assert authors[0] == tokenizer.bos_token_id != authors[1], (system_kind, history_kind)
                ollama_text = subprocess.run(
                    [str(ollama_render)], input=json.dumps({"template": ollama_tmpl,
                                                           "system": modelfile_system, "messages": messages}),
                    capture_output=True, text=True, check=True).stdout
                paths = {
                    "helpers serve": engine.chat_tokens(messages),
                    "llama-cpp-python create_chat_completion": llama_cpp_python_ids(llm, messages),
                    "llama.cpp common/chat.cpp": llama_cpp_template_ids(llm, messages),
                    "Ollama Modelfile": llm.tokenize(ollama_text.encode(), add_bos=True, special=True),
                }
                for path, ids in paths.items():
                    assert ids == authors, (path, system_kind, history_kind)
    finally:
        llm.close()


def builtin_template_text(template: str, messages: list[dict]) -> str:
    """llama.cpp's built-in (non-Jinja) template for ``template`` text, as ``llama-server --no-jinja`` and
    ``llama_chat_apply_template`` apply it ("" when llama.cpp recognizes none)."""
    import ctypes

    import llama_cpp

    chat = (llama_cpp.llama_chat_message * len(messages))(
        *[llama_cpp.llama_chat_message(role=m["role"].encode(), content=m["content"].encode()) for m in messages])
    buf = ctypes.create_string_buffer(8192)
    n = llama_cpp.llama_chat_apply_template(template.encode(), chat, len(messages), True, buf, len(buf))
    return buf.raw[:n].decode() if n > 0 else ""


def test_llama_cpp_builtin_llama3_template_is_the_authors():
    """Without Jinja, llama.cpp recognizes the Llama-3 template and renders the authors' format (system given)."""
    from helpers.tokens import gguf_chat_template

    messages = conversation("你是一个导游。", HISTORIES["three turns"])
    assert builtin_template_text(gguf_chat_template("llama3"), messages) == build_prompt(
        "llama3", QUESTION, history=HISTORIES["three turns"], system="你是一个导游。")


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="llama.cpp's built-in (non-Jinja) Llama-2 template puts no space before a reply and no <s> "
                   "between turns, and it has no Alpaca template; llama-server renders the GGUF's Jinja template by "
                   "default since llama.cpp PR 17524 (Nov 2025): README, 'Serving' says to keep --jinja")
@pytest.mark.parametrize("template", ["llama2-zh", "alpaca"])
def test_llama_cpp_builtin_template_without_jinja(template):
    from helpers.tokens import gguf_chat_template

    messages = conversation("你是一个导游。", HISTORIES["three turns"])
    assert builtin_template_text(gguf_chat_template(template), messages) == build_prompt(
        template, QUESTION, history=HISTORIES["three turns"], system="你是一个导游。")
