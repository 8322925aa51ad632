"""GGUF export: tensor for tensor against llama.cpp's own converter, logits and tokenization in llama.cpp.

The reference converter comes from the llama-cpp-python sdist (the llama.cpp it vendors), downloaded once
into ``~/.cache/cllama/sdist`` (``CLLAMA_CACHE`` overrides); those tests skip when it cannot be fetched.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from helpers.util import UserError  # noqa: E402

CACHE = Path(os.environ.get("CLLAMA_CACHE", Path.home() / ".cache" / "cllama"))
DEFAULT_LCP_VERSION = "0.3.36"
PROMPTS = ["北京是中国的首都，也是一座有三千多年历史的古城。", "The quick brown fox jumps over the lazy dog.",
           "请介绍一下长城的历史。It was built over 2000 years."]
# keys that name the file differently (the converter derives them from the folder name / model card)
NAMING_KEYS = {"general.name", "general.basename", "general.finetune", "general.size_label", "general.version",
               "GGUF.kv_count"}
# what we add on top of the converter
OUR_EXTRA_KEYS = {"tokenizer.ggml.eot_token_id", "tokenizer.ggml.unknown_token_id",
                  "tokenizer.ggml.padding_token_id", "tokenizer.chat_template"}

# runs llama.cpp's convert_hf_to_gguf.py; the demo's BPE tokenizer is trained on a tiny corpus, so the
# converter's pre-tokenizer hash cannot know it: it uses Llama-3's regex, so tell the converter "llama-bpe"
RUN_REFERENCE = r"""
import runpy, sys
root = sys.argv[1]
sys.path[:0] = [root, root + "/gguf-py"]
import conversion.base as base
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "llama-bpe"
sys.argv = ["convert_hf_to_gguf.py", *sys.argv[2:]]
runpy.run_path(root + "/convert_hf_to_gguf.py", run_name="__main__")
"""


# ------------------------------------------------------------------------------------------------ fixtures
def _lcp_version() -> str:
    try:
        from importlib.metadata import version

        return version("llama-cpp-python")
    except Exception:  # noqa: BLE001
        return DEFAULT_LCP_VERSION


@pytest.fixture(scope="session")
def reference_converter() -> Path:
    """vendor/llama.cpp from the llama-cpp-python sdist (converter + its gguf-py), fetched once."""
    version = _lcp_version()
    root = CACHE / "sdist" / f"llama.cpp-{version}"
    if (root / "convert_hf_to_gguf.py").is_file():
        return root
    sdist_dir = CACHE / "sdist"
    sdist_dir.mkdir(parents=True, exist_ok=True)
    archive = sdist_dir / f"llama_cpp_python-{version}.tar.gz"
    if not archive.is_file():  # download into a private folder, then move (parallel test workers)
        dl = sdist_dir / f".download-{os.getpid()}"
        try:
            proc = subprocess.run([sys.executable, "-m", "pip", "download", f"llama-cpp-python=={version}", "--no-deps",
                                   "--no-binary", ":all:", "-d", str(dl)], capture_output=True, text=True, timeout=300)
            if proc.returncode != 0 or not (dl / archive.name).is_file():
                pytest.skip(f"cannot download the llama-cpp-python sdist: {proc.stderr.strip()[-300:]}")
            os.replace(dl / archive.name, archive)
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"cannot download the llama-cpp-python sdist: {exc}")
        finally:
            shutil.rmtree(dl, ignore_errors=True)
    prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
    tmp = root.with_name(root.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(archive) as tar:
        for m in tar.getmembers():
            rel = m.name[len(prefix):] if m.name.startswith(prefix) else None
            if rel and m.isfile() and (rel == "convert_hf_to_gguf.py" or rel.startswith(("conversion/", "gguf-py/"))):
                m.name = rel
                try:
                    tar.extract(m, tmp, filter="data")
                except TypeError:  # Python without extraction filters
                    tar.extract(m, tmp)
    if not (tmp / "convert_hf_to_gguf.py").is_file():
        shutil.rmtree(tmp, ignore_errors=True)
        pytest.skip(f"the llama-cpp-python {version} sdist has no convert_hf_to_gguf.py")
    try:
        os.replace(tmp, root)
    except OSError:  # another worker got there first
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def run_reference(root: Path, model_dir: Path, out: Path, outtype: str = "f16") -> Path:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NO_LOCAL_GGUF")}
    proc = subprocess.run([sys.executable, "-c", RUN_REFERENCE, str(root), str(model_dir), "--outfile", str(out),
                           "--outtype", outtype], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


@pytest.fixture(scope="session")
def alpaca_v1(demo, tmp_path_factory) -> Path:
    """A merged v1 Alpaca-style HF folder: LLaMA-1 demo weights resized to the Alpaca tokenizer (+ ``[PAD]``)."""
    import torch
    from safetensors.torch import save_file

    from helpers.tokens import piece_count

    src, tok = demo / "llama-7b", demo / "chinese-alpaca-lora-7b"
    out = tmp_path_factory.mktemp("alpaca") / "chinese-alpaca-lora-7b"  # the release's name: the catalog knows it
    out.mkdir()
    sd = {}
    for shard in sorted(src.glob("pytorch_model-*.bin")):
        sd.update(torch.load(shard, map_location="cpu", weights_only=True))
    added = json.loads((tok / "added_tokens.json").read_text())
    vocab = max(piece_count((tok / "tokenizer.model").read_bytes()), *(i + 1 for i in added.values()))
    g = torch.Generator().manual_seed(7)
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        old = sd[key]
        new = torch.randn(vocab, old.shape[1], generator=g).to(old.dtype) * float(old.float().std())
        new[: old.shape[0]] = old
        sd[key] = new
    save_file({k: v.contiguous() for k, v in sd.items()}, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((src / "config.json").read_text())
    config["vocab_size"] = vocab
    (out / "config.json").write_text(json.dumps(config))
    for f in ("tokenizer.model", "added_tokens.json", "special_tokens_map.json", "tokenizer_config.json"):
        shutil.copy(tok / f, out / f)
    return out


@pytest.fixture(scope="session")
def ours(demo, alpaca_v1, tmp_path_factory):
    """Our GGUFs: {(model, outtype): path} for the demo Llama-2, Llama-3 and the v1 Alpaca folder."""
    from helpers.gguf import convert_hf_to_gguf

    d = tmp_path_factory.mktemp("ours")
    models = {"llama2": demo / "Llama-2-7b-hf", "llama3": demo / "Meta-Llama-3-8B-Instruct", "alpaca": alpaca_v1}
    cache: dict = {}

    def get(model: str, outtype: str = "f16") -> Path:
        if (model, outtype) not in cache:
            cache[model, outtype] = convert_hf_to_gguf(models[model], d / f"{model}-{outtype}.gguf", outtype=outtype)
        return cache[model, outtype]

    get.models = models
    return get


def fields(path: Path) -> dict:
    r = gguf.GGUFReader(str(path))
    return {k: f.contents() for k, f in r.fields.items()}


def tensors(path: Path) -> dict:
    return {t.name: t for t in gguf.GGUFReader(str(path)).tensors}


def assert_same_gguf(ours_path: Path, ref_path: Path) -> None:
    a, b = tensors(ours_path), tensors(ref_path)
    assert sorted(a) == sorted(b)
    for name, t in a.items():
        r = b[name]
        assert t.tensor_type == r.tensor_type, name
        assert list(t.shape) == list(r.shape), name
        assert np.array_equal(np.asarray(t.data).view(np.uint8), np.asarray(r.data).view(np.uint8)), name
    fa, fb = fields(ours_path), fields(ref_path)
    for key in set(fb) - NAMING_KEYS:
        assert key in fa, f"missing {key}"
        if key == "tokenizer.chat_template" and fa[key] != fb[key]:
            # the converter copies the folder's template, which leaves the BOS to the tokenizer; ours gives it, so
            # that llama-cpp-python's chat path (no BOS added) feeds one too (tests/test_prompt_paths.py)
            assert fa[key] == "{{ bos_token }}" + fb[key], key
            continue
        assert fa[key] == fb[key], key
    assert set(fa) - set(fb) - NAMING_KEYS <= OUR_EXTRA_KEYS


# ------------------------------------------------------------------------------------------------ vs converter
@pytest.mark.parametrize("model,outtype", [("llama2", "f16"), ("llama3", "f16"), ("alpaca", "f16"), ("llama3", "q8_0")])
def test_matches_llama_cpp_converter(ours, reference_converter, tmp_path, model, outtype):
    ref = run_reference(reference_converter, ours.models[model], tmp_path / "ref.gguf", outtype)
    mine = ours(model, outtype)
    assert_same_gguf(mine, ref)
    f = fields(mine)
    if model == "llama3":
        assert f["tokenizer.ggml.model"] == "gpt2" and f["tokenizer.ggml.pre"] == "llama-bpe"
        assert len(f["tokenizer.ggml.merges"]) > 100
        tokens = f["tokenizer.ggml.tokens"]
        assert f["tokenizer.ggml.eot_token_id"] == tokens.index("<|eot_id|>")
        assert f["tokenizer.ggml.token_type"][tokens.index("<|eot_id|>")] == gguf.TokenType.CONTROL
        assert f["llama.attention.head_count_kv"] == 2 and f["llama.rope.freq_base"] == 500000.0
    else:
        assert f["tokenizer.ggml.model"] == "llama" and f["tokenizer.ggml.pre"] == "default"
        assert f["tokenizer.ggml.bos_token_id"] == 1 and f["tokenizer.ggml.eos_token_id"] == 2
    if model == "alpaca":
        tokens = f["tokenizer.ggml.tokens"]
        assert tokens[-1] == "[PAD]" and f["tokenizer.ggml.token_type"][-1] == gguf.TokenType.USER_DEFINED
        from helpers.tokens import gguf_chat_template

        assert f["tokenizer.chat_template"] == gguf_chat_template("alpaca")  # from the catalog entry
    assert f["general.file_type"] == {"f16": 1, "q8_0": 7}[outtype]


def test_qk_permutation_is_llama_cpp_interleaving():
    """Rotate-half (HF) pairs (i, i + d/2) become adjacent rows (2i, 2i + 1) in each head."""
    import torch

    from helpers.gguf.sink import permute_qk

    n_head, head_dim = 2, 8
    w = torch.arange(n_head * head_dim, dtype=torch.float32)[:, None].repeat(1, 3)
    p = permute_qk(w, n_head)
    for h in range(n_head):
        for i in range(head_dim // 2):
            assert p[h * head_dim + 2 * i, 0] == h * head_dim + i
            assert p[h * head_dim + 2 * i + 1, 0] == h * head_dim + head_dim // 2 + i


# ------------------------------------------------------------------------------------------------ logits
def _hf_logits(model_dir: Path, token_lists):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return [model(torch.tensor([toks])).logits[0].numpy() for toks in token_lists]


def _llama_logits(path: Path, texts):
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), logits_all=True, n_ctx=128, n_threads=2, verbose=False)
    out = []
    for text in texts:
        toks = llm.tokenize(text.encode(), add_bos=True, special=False)
        llm.reset()
        llm.eval(toks)
        out.append((toks, np.array(llm.scores[: len(toks)], dtype=np.float32)))
    return out


def rel_err(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("model", ["llama2", "llama3"])
def test_logits_match_transformers(ours, tmp_path, model):
    pytest.importorskip("llama_cpp")
    from helpers.gguf import QuantizeOptions, quantize

    errors = {}
    for outtype, bound in (("f16", 2e-3), ("q8_0", 3e-2)):
        res = _llama_logits(ours(model, outtype), PROMPTS)
        refs = _hf_logits(ours.models[model], [t for t, _ in res])
        errors[outtype] = max(rel_err(lg, ref) for (_, lg), ref in zip(res, refs))
        assert errors[outtype] <= bound, (outtype, errors)
    q4 = quantize(ours(model, "f16"), tmp_path / "q4_k_m.gguf", QuantizeOptions(qtype="q4_k_m", threads=2))
    assert q4.stat().st_size < ours(model, "q8_0").stat().st_size
    res = _llama_logits(q4, PROMPTS)
    assert all(np.isfinite(lg).all() for _, lg in res)
    refs = _hf_logits(ours.models[model], [t for t, _ in res])
    errors["q4_k_m"] = max(rel_err(lg, ref) for (_, lg), ref in zip(res, refs))
    print(f"\n{model} relative logits error vs transformers fp32: "
          + ", ".join(f"{k} {v:.2e}" for k, v in errors.items()))


# ------------------------------------------------------------------------------------------------ tokenization
def tiny_config(vocab: int, **extra) -> dict:
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "vocab_size": vocab, "bos_token_id": 1, "eos_token_id": 2,
            **extra}


def tiny_gguf(tokenizer_dir: Path, out: Path, vocab: int, *, name: str | None = None, template: str | None = None,
              split_max_size: int = 0, outtype: str = "f16", parts: int = 0, **config_extra) -> list[Path]:
    """A 1-layer, 64-wide GGUF with ``tokenizer_dir``'s vocabulary (random weights, seeded: for vocab / metadata
    checks); with ``parts`` the embeddings and the head are written that many rows at a time."""
    import torch

    from helpers.checkpoint import TensorSpec
    from helpers.gguf import GGUFSink
    from helpers.gguf.card import describe_model

    cfg = tiny_config(vocab, **config_extra)
    h, f = 64, 128
    shapes = {"model.embed_tokens.weight": (vocab, h)}
    for k, s in (("self_attn.q_proj", (h, h)), ("self_attn.k_proj", (h, h)), ("self_attn.v_proj", (h, h)),
                 ("self_attn.o_proj", (h, h)), ("mlp.gate_proj", (f, h)), ("mlp.up_proj", (f, h)),
                 ("mlp.down_proj", (h, f)), ("input_layernorm", (h,)), ("post_attention_layernorm", (h,))):
        shapes[f"model.layers.0.{k}.weight"] = s
    shapes.update({"model.norm.weight": (h,), "lm_head.weight": (vocab, h)})
    card = describe_model(cfg, tokenizer_dir, name=name, template=template)
    sink = GGUFSink(out, outtype=outtype, card=card, split_max_size=split_max_size)
    sink.open(config=cfg, tokenizer_dir=tokenizer_dir, tensors=[TensorSpec(k, s) for k, s in shapes.items()])
    torch.manual_seed(0)
    for k, s in shapes.items():
        w = torch.ones(s) if len(s) == 1 else torch.randn(s) * 0.02
        if parts and k in ("model.embed_tokens.weight", "lm_head.weight"):
            for first in range(0, s[0], parts):
                sink.write_rows(k, first, w[first:first + parts], last=first + parts >= s[0])
        else:
            sink.write(k, w)
    return sink.close()


@pytest.mark.parametrize("outtype", ["f32", "f16", "bf16", "q8_0", "q4_k_m", "q6_k"])
def test_rows_written_in_parts_give_the_bytes_of_the_whole_tensor(demo, tmp_path, outtype):
    """What a merge does with a LoRA's saved head while it downloads (GGUFSink.write_rows): the same file."""
    tok = demo / "chinese-alpaca-2-lora-7b"
    vocab = sp_vocab_size(tok)
    (whole,) = tiny_gguf(tok, tmp_path / "whole.gguf", vocab, outtype=outtype, name="tiny")
    (parts,) = tiny_gguf(tok, tmp_path / "parts.gguf", vocab, outtype=outtype, name="tiny", parts=500)
    assert parts.read_bytes() == whole.read_bytes()


def sp_vocab_size(tokenizer_dir: Path) -> int:
    from helpers.tokens import piece_count

    n = piece_count((tokenizer_dir / "tokenizer.model").read_bytes())
    added = tokenizer_dir / "added_tokens.json"
    if added.is_file():
        n = max(n, *(i + 1 for i in json.loads(added.read_text()).values()))
    return n


def zh_lines() -> list[str]:
    from helpers.demo.tokenizers import corpus

    lines = corpus("zh")
    return lines + ["详细介绍一下北京的历史", "我喜欢吃苹果和香蕉，你呢？", "2024年，ChatGPT 很火。", "  两个空格 开头",
                    "混合 English 和中文 123456 😀", "一\n二\n\n三"]


def assert_llama_cpp_matches_sentencepiece(gguf_path: Path, tokenizer_model: Path, lines: list[str]) -> None:
    import sentencepiece as spm
    from llama_cpp import Llama

    sp = spm.SentencePieceProcessor(model_file=str(tokenizer_model))
    llm = Llama(model_path=str(gguf_path), vocab_only=True, verbose=False)
    bad = [t for t in lines if llm.tokenize(t.encode(), add_bos=True, special=False) != [sp.bos_id(), *sp.encode(t)]]
    assert not bad, f"{len(bad)}/{len(lines)} lines differ, e.g. {bad[:3]}"


@pytest.mark.parametrize("folder", ["Llama-2-7b-hf", "chinese-alpaca-2-lora-7b", "chinese-alpaca-lora-7b"])
def test_chinese_tokenization_matches_sentencepiece(demo, tmp_path, folder):
    pytest.importorskip("llama_cpp")
    tok = demo / folder
    (path,) = tiny_gguf(tok, tmp_path / "vocab.gguf", sp_vocab_size(tok))
    assert_llama_cpp_matches_sentencepiece(path, tok / "tokenizer.model", zh_lines())


@pytest.mark.parametrize("fixture,vocab", [("chinese-llama-2-tokenizer", 55296), ("llama-2-tokenizer-32k", 32000)])
def test_released_tokenizer_matches_sentencepiece(request, released_tokenizers, tmp_path, fixture, vocab):
    pytest.importorskip("llama_cpp")
    tok = released_tokenizers.get(fixture) or request.getfixturevalue("shared_fixtures") / fixture
    if not (tok / "tokenizer.model").is_file():
        pytest.skip(f"{fixture} not in the shared fixtures")
    (path,) = tiny_gguf(tok, tmp_path / "vocab.gguf", vocab)
    f = fields(path)
    assert len(f["tokenizer.ggml.tokens"]) == vocab
    assert_llama_cpp_matches_sentencepiece(path, tok / "tokenizer.model", zh_lines())


def test_llama3_tokenization_matches_hf(ours, demo):
    pytest.importorskip("llama_cpp")
    from llama_cpp import Llama
    from tokenizers import Tokenizer

    hf = Tokenizer.from_file(str(demo / "Meta-Llama-3-8B-Instruct" / "tokenizer.json"))
    llm = Llama(model_path=str(ours("llama3")), vocab_only=True, verbose=False)
    lines = zh_lines() + ["Hello, world! It's 2024 and we're testing.", "  spaces   and\ttabs\n"]
    for text in lines:
        assert llm.tokenize(text.encode(), add_bos=True, special=False) == hf.encode(text).ids, text
    from helpers.tokens import get_template

    chat = get_template("llama3").render([{"role": "user", "content": "你好，请介绍一下自己。"}])
    assert llm.tokenize(chat.encode(), add_bos=True, special=True) == hf.encode(chat).ids
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    eot = hf.token_to_id("<|eot_id|>")
    assert llama_cpp.llama_vocab_eot(vocab) == eot and llama_cpp.llama_vocab_is_eog(vocab, eot)


# ------------------------------------------------------------------------------------------------ metadata
def test_chat_template_and_catalog(demo, tmp_path):
    from helpers.tokens import gguf_chat_template

    tok = demo / "chinese-alpaca-2-lora-7b"
    (p,) = tiny_gguf(tok, tmp_path / "a.gguf", sp_vocab_size(tok))  # catalog: chinese-alpaca-2 -> llama2-zh
    assert fields(p)["tokenizer.chat_template"] == gguf_chat_template("llama2-zh")
    (p,) = tiny_gguf(tok, tmp_path / "b.gguf", sp_vocab_size(tok), template="alpaca")
    assert fields(p)["tokenizer.chat_template"] == gguf_chat_template("alpaca")
    (p,) = tiny_gguf(demo / "Llama-2-7b-hf", tmp_path / "c.gguf", sp_vocab_size(demo / "Llama-2-7b-hf"))
    assert "tokenizer.chat_template" not in fields(p)  # a base model gets none


@pytest.mark.parametrize("name,scaling,ctx,expect", [
    ("chinese-alpaca-2-7b-16k", {"type": "linear", "factor": 4.0}, 4096, ("linear", 4.0, None, 16384)),
    ("chinese-alpaca-2-7b-64k", {"type": "yarn", "factor": 16.0, "original_max_position_embeddings": 4096}, 4096,
     ("yarn", 16.0, 4096, 65536)),
    ("chinese-alpaca-2-7b-16k", None, 4096, ("linear", 4.0, None, 16384)),  # config without it: from the catalog
    (None, {"rope_type": "linear", "factor": 2.0}, 8192, ("linear", 2.0, None, 8192)),  # transformers-5 key names
])
def test_rope_scaling(demo, tmp_path, name, scaling, ctx, expect):
    tok = demo / "Llama-2-7b-hf"
    (p,) = tiny_gguf(tok, tmp_path / "r.gguf", sp_vocab_size(tok), name=name, rope_scaling=scaling,
                     max_position_embeddings=ctx)
    f = fields(p)
    kind, factor, orig, n_ctx = expect
    assert f["llama.rope.scaling.type"] == kind and f["llama.rope.scaling.factor"] == factor
    assert f.get("llama.rope.scaling.original_context_length") == orig
    assert f["llama.context_length"] == n_ctx
    # the merge tells the Modelfile the context it wrote instead of reading the GGUF back: the same line
    from helpers.gguf import write_modelfile
    from helpers.gguf.card import describe_model
    from helpers.gguf.hparams import context_length

    cfg = tiny_config(sp_vocab_size(tok), rope_scaling=scaling, max_position_embeddings=ctx)
    told = context_length(cfg, describe_model(cfg, tok, name=name))
    assert told == n_ctx
    assert (write_modelfile(p, template="llama2-zh", context_length=told).read_text()
            == write_modelfile(p, template="llama2-zh").read_text())


def test_bad_inputs_leave_nothing(demo, tmp_path):
    from helpers.__main__ import main

    tok = demo / "chinese-alpaca-2-lora-7b"  # more pieces than the base vocabulary
    with pytest.raises(UserError, match="do not belong together"):
        tiny_gguf(tok, tmp_path / "x.gguf", sp_vocab_size(demo / "Llama-2-7b-hf"))
    assert list(tmp_path.iterdir()) == []
    from helpers.gguf import GGUFSink

    with pytest.raises(UserError, match="unknown GGUF output type"):
        GGUFSink(tmp_path / "x.gguf", outtype="q4_k_z")
    with pytest.raises(UserError, match="needs an importance matrix"):
        GGUFSink(tmp_path / "x.gguf", outtype="iq3_xxs")
    assert main(["to-gguf", "--model", str(tok), "--out", str(tmp_path / "x.gguf")]) == 2
    assert list(tmp_path.iterdir()) == []


def test_cli_to_gguf(demo, tmp_path, capsys):
    from helpers.__main__ import main

    out = tmp_path / "l1.gguf"
    assert main(["to-gguf", "--model", str(demo / "llama-7b"), "--out", str(out), "--outtype", "bf16"]) == 0
    assert fields(out)["general.file_type"] == 32
    assert (tmp_path / "l1.Modelfile").read_text().startswith("FROM ./l1.gguf\n")
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert (tmp_path / "l1.gguf.sha256").read_text() == f"{digest}  l1.gguf\n"


def test_cli_modelfile_uses_the_embedded_template(demo, tmp_path):
    """A folder named freely whose config names a catalog release: GGUF and Modelfile agree on the template."""
    from helpers.__main__ import main
    from helpers.tokens import gguf_chat_template, ollama_template

    model = tmp_path / "my-merged-model"
    shutil.copytree(demo / "chinese-alpaca-2-7b", model)
    config = json.loads((model / "config.json").read_text(encoding="utf-8"))
    config["_name_or_path"] = "hfl/chinese-alpaca-2-7b"
    (model / "config.json").write_text(json.dumps(config), encoding="utf-8")
    out = tmp_path / "m.gguf"
    assert main(["to-gguf", "--model", str(model), "--out", str(out)]) == 0
    assert fields(out)["tokenizer.chat_template"] == gguf_chat_template("llama2-zh")
    modelfile = (tmp_path / "m.Modelfile").read_text(encoding="utf-8")
    assert ollama_template("llama2-zh") in modelfile
    assert f"PARAMETER num_ctx {min(fields(out)['llama.context_length'], 8192)}\n" in modelfile
    # quantizing it keeps both: the template and context the GGUF carries, read from the quantized file
    assert main(["quantize", "--model", str(out), "--out", str(tmp_path / "q.gguf"), "--type", "q8_0"]) == 0
    assert (tmp_path / "q.Modelfile").read_text(encoding="utf-8") == modelfile.replace("./m.gguf", "./q.gguf")


# ------------------------------------------------------------------------------------------------ Modelfile, split
@pytest.mark.parametrize("template", ["alpaca", "llama2-zh", "llama3"])
def test_modelfile(ours, tmp_path, template):
    from helpers.gguf import write_modelfile
    from helpers.tokens import get_template, ollama_template

    src = ours("llama3" if template == "llama3" else "llama2")
    g = tmp_path / "m.gguf"
    shutil.copy(src, g)
    text = write_modelfile(g, template=template).read_text()
    assert text.startswith("FROM ./m.gguf\n")
    assert f'TEMPLATE """{ollama_template(template)}"""' in text
    t = get_template(template)
    assert f'SYSTEM """{t.default_system}"""' in text
    stops = [line.split(" ", 2)[2] for line in text.splitlines() if line.startswith("PARAMETER stop ")]
    assert [json.loads(s) for s in stops] == list(dict.fromkeys([*t.stop_strings, t.eot_token]))
    assert "PARAMETER temperature 0.2" in text
    assert "PARAMETER num_ctx 4096" in text or "PARAMETER num_ctx 8192" in text


def test_split_and_export(ours, tmp_path, capsys):
    from helpers.gguf import export_file
    from helpers.gguf.export import split_gguf, write_checksum

    g = tmp_path / "model.gguf"
    shutil.copy(ours("llama2"), g)
    write_checksum(g)
    files = export_file(g, split_gb=1.5 / 1024)  # 1.5 MiB shards of a 4 MB file
    out = capsys.readouterr().out
    assert re.match(r"model\.gguf: [0-9.]+ MB\n", out)  # the size comes first
    n = len(files)
    assert n >= 3 and [f.name for f in files] == [f"model-{i:05d}-of-{n:05d}.gguf" for i in range(1, n + 1)]
    assert all((f.parent / (f.name + ".sha256")).is_file() for f in files)
    assert split_gguf(g, 1 << 30) == [g]  # fits: unchanged
    # the shards hold the same tensors and metadata; llama.cpp loads them from the first one
    a = tensors(g)
    merged = {}
    for f in files:
        merged.update(tensors(f))
    assert sorted(a) == sorted(merged)
    assert all(np.array_equal(np.asarray(a[k].data), np.asarray(merged[k].data)) for k in a)
    assert fields(files[0])["split.count"] == n
    if importlib.util.find_spec("llama_cpp") is not None:
        whole = _llama_logits(g, PROMPTS[:1])[0][1]
        split = _llama_logits(files[0], PROMPTS[:1])[0][1]
        assert np.array_equal(whole, split)


def test_streaming_split_sink(demo, tmp_path):
    tok = demo / "Llama-2-7b-hf"
    files = tiny_gguf(tok, tmp_path / "s.gguf", sp_vocab_size(tok), split_max_size=60_000)
    n = len(files)
    assert n > 1 and [f.name for f in files] == [f"s-{i:05d}-of-{n:05d}.gguf" for i in range(1, n + 1)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f.name for f in files]  # no temporary left
