"""Streaming merge: outputs equal an independent first-principles merge; bad inputs fail cleanly."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from reference import torch_state

from helpers.merge import MergeOptions, Recipe, merge
from helpers.checkpoint import open_checkpoint
from helpers.util import UserError, sha256_file

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# the reference: plain torch, whole state dicts, W + alpha/r * B @ A
def load_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    return {k: v.float() for k, v in torch_state(folder).items()}


def reference_merge(base: Path, loras: list[Path], patch: Path | None = None, *,
                    deltas: bool = True) -> dict[str, torch.Tensor]:
    sd = load_state_dict(base)
    for d in loras:
        cfg = json.loads((d / "adapter_config.json").read_text())
        scale = cfg["lora_alpha"] / cfg["r"] if deltas else 0.0
        ad = {k.removeprefix("base_model.model."): v for k, v in load_state_dict(d).items()}
        for k, v in ad.items():
            if ".lora_A." in k:
                name = k.replace(".lora_A.weight", ".weight")
                sd[name] = sd[name] + scale * ad[k.replace(".lora_A.", ".lora_B.")] @ v
            elif ".lora_B." not in k:
                sd[k.replace(".modules_to_save.default", "")] = v.clone()
    if patch is not None and deltas:
        for k, v in load_state_dict(patch).items():
            sd[k] = sd[k] + v
    return sd


def model_from_state(config_dir: Path, sd: dict[str, torch.Tensor]):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = json.loads((config_dir / "config.json").read_text())
    cfg["vocab_size"] = sd["model.embed_tokens.weight"].shape[0]
    model = LlamaForCausalLM(LlamaConfig(**cfg)).float().eval()
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    return model


def logits(model, vocab: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (3, 10), generator=g)
    ids[:, -3:] = torch.arange(vocab - 9, vocab).view(3, 3)  # rows that only the expanded vocabulary has
    with torch.no_grad():
        return model(input_ids=ids).logits


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def load_merged(folder: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


CASES = {
    "v1": ("llama-7b", ["chinese-llama-lora-7b"], None),
    "v1-plus": ("llama-7b", ["chinese-llama-plus-lora-7b", "chinese-alpaca-plus-lora-7b"], None),
    "v2": ("Llama-2-7b-hf", ["chinese-alpaca-2-lora-7b"], None),
    "v2-bin": ("Llama-2-7b-hf", ["chinese-llama-2-lora-7b"], None),
    "v3-gqa": ("Meta-Llama-3-8B-Instruct", ["llama-3-chinese-8b-instruct-v2-lora"], None),
    "patch": ("llama-7b", [], "open-chinese-llama-7b-patch"),
}


@pytest.fixture(scope="module")
def merged(demo, tmp_path_factory):
    """Merge each case once (HF, f16) and cache the output folder."""
    cache: dict[str, Path] = {}

    def get(case: str) -> Path:
        if case not in cache:
            base, loras, patch = CASES[case]
            out = tmp_path_factory.mktemp("merged") / case
            merge(Recipe(demo / base, [demo / x for x in loras], patch=demo / patch if patch else None), out,
                  MergeOptions(progress=False))
            cache[case] = out
        return cache[case]

    return get


@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_reference_merge(demo, merged, case):
    base, loras, patch = CASES[case]
    out = merged(case)
    sd = reference_merge(demo / base, [demo / x for x in loras], demo / patch if patch else None)
    ref = model_from_state(demo / base, sd)
    vocab = sd["model.embed_tokens.weight"].shape[0]
    got = load_merged(out)
    assert got.config.vocab_size == vocab
    err = rel_err(logits(got, vocab), logits(ref, vocab))
    assert err < 2e-3, err
    # a merge that forgot the LoRA deltas (or the patch) is far off: the comparison can fail
    plain = model_from_state(demo / base, reference_merge(demo / base, [demo / x for x in loras], deltas=False))
    assert rel_err(logits(plain, vocab), logits(ref, vocab)) > 0.05
    # the output is self-contained: the tokenizer of the last LoRA (or the base), no PEFT files
    tok_src = demo / (loras[-1] if loras else base)
    for f in ("tokenizer.model", "tokenizer.json", "added_tokens.json"):
        assert (out / f).is_file() == (tok_src / f).is_file()
        if (out / f).is_file():
            assert (out / f).read_bytes() == (tok_src / f).read_bytes()
    assert not list(out.glob("adapter_*"))


def test_peft_merge_and_unload_agrees(demo, merged):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    lora = demo / "chinese-alpaca-2-lora-7b"
    model = AutoModelForCausalLM.from_pretrained(demo / "Llama-2-7b-hf", dtype=torch.float32)
    from safetensors.torch import load_file

    rows = load_file(lora / "adapter_model.safetensors")["base_model.model.model.embed_tokens.weight"].shape[0]
    model.resize_token_embeddings(rows)
    peft_model = PeftModel.from_pretrained(model, lora).merge_and_unload().eval()
    got = load_merged(merged("v2"))
    assert rel_err(logits(got, rows), logits(peft_model, rows)) < 2e-3


def _hf_tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    sd = {}
    for f in folder.glob("model*.safetensors"):
        sd.update(load_file(f))
    return sd


@pytest.mark.parametrize("case,shards", [("v3-gqa", 2), ("v1", None)])
def test_pth_output_round_trips(demo, merged, tmp_path, case, shards):
    base, loras, _ = CASES[case]
    out = tmp_path / "pth"
    merge(Recipe(demo / base, [demo / x for x in loras]), out,
          MergeOptions(fmt="pth", pth_shards=shards, progress=False))
    n = shards or 1
    assert sorted(p.name for p in out.glob("consolidated.*.pth")) == [f"consolidated.{i:02d}.pth" for i in range(n)]
    params = json.loads((out / "params.json").read_text())
    cfg = json.loads((demo / base / "config.json").read_text())
    assert params["dim"] == cfg["hidden_size"] and params["n_layers"] == cfg["num_hidden_layers"]
    assert params["vocab_size"] == -1 and params["norm_eps"] == cfg["rms_norm_eps"]
    if cfg["num_key_value_heads"] != cfg["num_attention_heads"]:
        assert params["n_kv_heads"] == cfg["num_key_value_heads"] and params["rope_theta"] == cfg["rope_theta"]
    else:
        assert "n_kv_heads" not in params
    hf = _hf_tensors(merged(case))
    back = open_checkpoint(out)
    assert sorted(back.names()) == sorted(hf)
    for name in hf:
        assert torch.equal(back.get(name), hf[name]), name
    # Meta's own layout, stated independently: rows (2i, 2i+1) of each head hold HF rows (i, i + head_dim/2)
    parts = [torch.load(out / f"consolidated.{i:02d}.pth", weights_only=True) for i in range(n)]
    wk = torch.cat([p["layers.0.attention.wk.weight"] for p in parts], 0)
    wo = torch.cat([p["layers.0.attention.wo.weight"] for p in parts], 1)
    k_hf = hf["model.layers.0.self_attn.k_proj.weight"]
    hd = cfg["hidden_size"] // cfg["num_attention_heads"]
    for h in range(cfg["num_key_value_heads"]):
        for i in range(hd // 2):
            assert torch.equal(wk[h * hd + 2 * i], k_hf[h * hd + i])
            assert torch.equal(wk[h * hd + 2 * i + 1], k_hf[h * hd + hd // 2 + i])
    assert torch.equal(wo, hf["model.layers.0.self_attn.o_proj.weight"])
    assert (out / "tokenizer.model").is_file() or (out / "tokenizer.json").is_file()
    # and a Meta checkpoint is a base like any other: merging nothing into it gives the HF tensors back
    again = tmp_path / "again"
    merge(Recipe(out, []), again, MergeOptions(progress=False))
    assert json.loads((again / "config.json").read_text())["num_key_value_heads"] == cfg["num_key_value_heads"]
    back_hf = _hf_tensors(again)
    assert sorted(back_hf) == sorted(hf) and all(torch.equal(back_hf[k], hf[k]) for k in hf)


def test_rslora_fan_in_fan_out_and_embedding_lora(demo, tmp_path):
    """Less common adapter options, against first principles."""
    from safetensors.torch import load_file, save_file

    g = torch.Generator().manual_seed(5)
    base = demo / "Llama-2-7b-hf"
    sd = load_state_dict(base)
    r, alpha = 4, 8.0
    q = "model.layers.0.self_attn.q_proj"
    h = sd[q + ".weight"].shape[0]
    vocab = sd["model.embed_tokens.weight"].shape[0]
    a, b = torch.randn(r, h, generator=g), torch.randn(h, r, generator=g)
    ea, eb = torch.randn(r, vocab, generator=g), torch.randn(h, r, generator=g)
    d = tmp_path / "lora"
    d.mkdir()
    save_file({f"base_model.model.{q}.lora_A.weight": a, f"base_model.model.{q}.lora_B.weight": b,
               "base_model.model.model.embed_tokens.lora_embedding_A": ea,
               "base_model.model.model.embed_tokens.lora_embedding_B": eb}, str(d / "adapter_model.safetensors"))
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": r, "lora_alpha": alpha,
                                                       "use_rslora": True, "fan_in_fan_out": True,
                                                       "base_model_name_or_path": "meta-llama/Llama-2-7b-hf"}))
    out = tmp_path / "out"
    merge(Recipe(base, [d]), out, MergeOptions(outtype="f32", progress=False))
    got = load_file(out / "model.safetensors")
    s = alpha / math.sqrt(r)
    assert torch.allclose(got[q + ".weight"], sd[q + ".weight"] + s * (b @ a).T, atol=1e-5)
    assert torch.allclose(got["model.embed_tokens.weight"], sd["model.embed_tokens.weight"] + s * (eb @ ea).T,
                          atol=1e-5)
    assert torch.equal(got["lm_head.weight"], sd["lm_head.weight"])


def test_sha256_verification_and_listing(demo, tmp_path):
    lora = demo / "chinese-alpaca-2-lora-7b"
    good = {"adapter_model.safetensors": sha256_file(lora / "adapter_model.safetensors")}
    out = tmp_path / "ok"
    res = merge(Recipe(demo / "Llama-2-7b-hf", [lora]), out, MergeOptions(verify_sha256=good, progress=False))
    listing = dict(line.split("  ")[::-1] for line in (out / "SHA256SUMS").read_text().splitlines())
    files = {p.name for p in out.iterdir()} - {"SHA256SUMS"}
    assert set(listing) == files
    assert all(sha256_file(out / n) == h for n, h in listing.items())
    assert res.vocab_size == 1357 and res.tensors_written == len(open_checkpoint(out).names())
    with pytest.raises(UserError, match="download it again"):
        merge(Recipe(demo / "Llama-2-7b-hf", [lora]), tmp_path / "bad",
              MergeOptions(progress=False,
                           verify_sha256={"chinese-alpaca-2-lora-7b/adapter_model.safetensors": "0" * 64}))
    assert not (tmp_path / "bad").exists()


def test_sha256_listing_parser(tmp_path):
    from helpers.merge.inputs import parse_sha256_file

    f = tmp_path / "SHA256"
    f.write_text(f"{'a' * 64}  adapter_model.bin\n{'b' * 64} *adapter_model.bin\n\n{'c' * 64}  ./x/config.json\n")
    assert parse_sha256_file(f) == {"adapter_model.bin": {"a" * 64, "b" * 64}, "x/config.json": {"c" * 64}}
    f.write_text("not a listing\n")
    with pytest.raises(UserError, match="SHA256:1"):
        parse_sha256_file(f)
    with pytest.raises(UserError, match="not found"):  # the API call, not only the CLI, gets a clean error
        parse_sha256_file(tmp_path / "missing.sha256")


def test_nan_in_input_is_refused_and_leaves_nothing(demo, tmp_path):
    from safetensors.torch import load_file, save_file

    base = shutil.copytree(demo / "Llama-2-7b-hf", tmp_path / "base")
    shard = base / "model-00002-of-00002.safetensors"
    sd = load_file(shard)
    name = next(k for k in sd if "mlp.up_proj" in k)
    sd[name][3, 5] = float("nan")
    save_file(sd, str(shard), metadata={"format": "pt"})
    with pytest.raises(UserError, match=f"{name} contains NaN"):
        merge(Recipe(base, [demo / "chinese-alpaca-2-lora-7b"]), tmp_path / "out",
              MergeOptions(max_shard_bytes=1 << 20, progress=False))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base"]


def test_gguf_output(demo, tmp_path):
    from gguf import GGUFReader

    out = tmp_path / "m.gguf"
    merge(Recipe(demo / "Llama-2-7b-hf", [demo / "chinese-alpaca-2-lora-7b"]), out,
          MergeOptions(fmt="gguf", progress=False))
    reader = GGUFReader(out)
    emb = next(t for t in reader.tensors if t.name == "token_embd.weight")
    assert 1357 in [int(x) for x in emb.shape]
    assert (tmp_path / "m.gguf.sha256").read_text().split()[0] == sha256_file(out)


def test_gguf_output_comes_with_the_modelfile_ollama_needs(demo, tmp_path, capsys):
    """The notebooks tell users to run `ollama create NAME -f <stem>.Modelfile`: that file must exist beside
    the merged GGUF, point at it, and carry the release's template."""
    from helpers.gguf import export_file
    from helpers.gguf.export import ollama_command
    from helpers.tokens import ollama_template

    out = tmp_path / "chinese-alpaca-2-7b-f16.gguf"
    result = merge(Recipe(demo / "Llama-2-7b-hf", [demo / "chinese-alpaca-2-lora-7b"]), out,
                   MergeOptions(fmt="gguf", progress=False))
    modelfile = tmp_path / "chinese-alpaca-2-7b-f16.Modelfile"
    assert modelfile in result.outputs
    text = modelfile.read_text(encoding="utf-8")
    assert text.startswith(f"FROM ./{out.name}\n") and ollama_template("llama2-zh") in text
    command = ollama_command(out)
    assert command == "ollama create chinese-alpaca-2-7b-f16 -f chinese-alpaca-2-7b-f16.Modelfile"
    export_file(out)
    assert command in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# the CLI: bad inputs, resume, idempotence
def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {**os.environ, "HELPERS_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "helpers", "merge", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, env=e, timeout=300)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


class Evil:
    """Pickles to a call that creates a marker file when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _bad_case(name: str, demo: Path, tmp: Path) -> tuple[list, str]:
    l2, v1 = demo / "Llama-2-7b-hf", demo / "llama-7b"
    if name == "truncated-safetensors":
        base = _copy(l2, tmp / "Llama-2-7b-hf")
        _truncate(base / "model-00002-of-00002.safetensors")
        return ["--base", base, "--lora", demo / "chinese-alpaca-2-lora-7b"], "model-00002-of-00002.safetensors"
    if name == "truncated-bin":
        base = _copy(v1, tmp / "llama-7b")
        _truncate(base / "pytorch_model-00001-of-00002.bin")
        return ["--base", base, "--lora", demo / "chinese-llama-lora-7b"], "pytorch_model-00001-of-00002.bin"
    if name == "wrong-base":
        return ["--base", l2, "--lora", demo / "chinese-llama-lora-7b"], "huggyllama/llama-7b"
    if name == "no-adapter-config":
        lora = _copy(demo / "chinese-alpaca-2-lora-7b", tmp / "lora")
        (lora / "adapter_config.json").unlink()
        return ["--base", l2, "--lora", lora], "adapter_config.json"
    if name == "pickled-code":
        lora = _copy(demo / "chinese-llama-2-lora-7b", tmp / "lora")
        sd = torch.load(lora / "adapter_model.bin", weights_only=True)
        sd["base_model.model.extra"] = Evil(tmp / "PWNED")
        torch.save(sd, lora / "adapter_model.bin")
        return ["--base", l2, "--lora", lora], "refused"
    if name == "nonexistent":
        return ["--base", tmp / "no-such-model", "--lora", demo / "chinese-llama-lora-7b"], "not found"
    if name == "plus-wrong-order":
        return (["--base", v1, "--lora", demo / "chinese-alpaca-plus-lora-7b", "--lora",
                 demo / "chinese-llama-plus-lora-7b"], "apply chinese-llama-plus-lora-7b before chinese-alpaca-plus-lora-7b")
    if name == "mixed-tokenizer":
        lora = _copy(demo / "chinese-alpaca-lora-7b", tmp / "chinese-alpaca-lora-7b")
        for f in ("tokenizer.model", "special_tokens_map.json", "tokenizer_config.json"):
            shutil.copyfile(demo / "chinese-llama-lora-7b" / f, lora / f)
        (lora / "added_tokens.json").unlink()
        return ["--base", v1, "--lora", lora], "must not be mixed"
    if name == "lora-too-big":  # a LoRA from another model size: shapes differ
        lora = _copy(demo / "chinese-alpaca-2-lora-7b", tmp / "lora")
        from safetensors.torch import load_file, save_file

        sd = load_file(lora / "adapter_model.safetensors")
        k = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"
        sd[k] = torch.zeros(sd[k].shape[0] * 2, sd[k].shape[1], dtype=sd[k].dtype)
        save_file(sd, str(lora / "adapter_model.safetensors"))
        return ["--base", l2, "--lora", lora], "another model size"
    raise AssertionError(name)


BAD = ["truncated-safetensors", "truncated-bin", "wrong-base", "no-adapter-config", "pickled-code", "nonexistent",
       "plus-wrong-order", "mixed-tokenizer", "lora-too-big"]


@pytest.mark.parametrize("name", BAD)
def test_bad_input_gives_one_error_line(demo, tmp_path, name):
    args, expected = _bad_case(name, demo, tmp_path)
    out = tmp_path / "out"
    p = cli(*args, "--out", out)
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert "Traceback" not in p.stderr + p.stdout
    assert expected in lines[0], lines[0]
    assert not out.exists() and not list(tmp_path.glob(".out*"))
    if name == "pickled-code":
        assert not (tmp_path / "PWNED").exists()
        # the payload is live: an unsafe load would have run it
        torch.load(tmp_path / "lora" / "adapter_model.bin", weights_only=False)
        assert (tmp_path / "PWNED").exists()


def test_resume_after_interruption_and_idempotent_rerun(demo, tmp_path):
    args = ["--base", demo / "llama-7b", "--lora", demo / "chinese-llama-plus-lora-7b", "--lora",
            demo / "chinese-alpaca-plus-lora-7b", "--shard-size", "800KB"]
    out = tmp_path / "out"
    p = cli(*args, "--out", out, env={"HELPERS_MERGE_INTERRUPT_AFTER": "6"})
    assert p.returncode == 130 and "rerun the same command to resume" in p.stderr
    assert not out.exists()
    partial = tmp_path / ".out.partial"
    state = json.loads((partial / ".merge-state.json").read_text())
    assert len(state["shards"]) >= 1
    first = sorted(state["shards"])[0]
    before = (partial / first).stat()
    p = cli(*args, "--out", out)
    assert p.returncode == 0, p.stderr
    assert "resumed" in p.stdout and not partial.exists()
    after = (out / first).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert len(list(out.glob("model-*.safetensors"))) >= 3
    # identical to an uninterrupted merge
    clean = tmp_path / "clean"
    merge(Recipe(demo / "llama-7b", [demo / "chinese-llama-plus-lora-7b", demo / "chinese-alpaca-plus-lora-7b"]), clean,
          MergeOptions(max_shard_bytes=800 << 10, progress=False))
    for f in clean.glob("model*"):
        assert f.read_bytes() == (out / f.name).read_bytes(), f.name
    p = cli(*args, "--out", out)
    assert p.returncode == 0 and "already merged" in p.stdout and "--overwrite" in p.stdout
    p = cli("--base", demo / "llama-7b", "--lora", demo / "chinese-llama-lora-7b", "--out", out)
    assert p.returncode == 2 and "different merge" in p.stderr
