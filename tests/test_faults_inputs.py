"""Fault injection on the inputs, through the CLI: inputs that contradict each other, damaged files, stale
outputs, and the other cases that must end in one ``error:`` line (never a silently wrong model)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from faults import assert_error_line, cli, hidden, run_all

L2, V2_LORA, V3 = "Llama-2-7b-hf", "chinese-alpaca-2-lora-7b", "Meta-Llama-3-8B-Instruct"


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(changes)
    path.write_text(json.dumps(data), encoding="utf-8")


def _drop_tensors(path: Path, needle: str) -> None:
    from safetensors.torch import load_file, save_file

    sd = load_file(path)
    save_file({k: v for k, v in sd.items() if needle not in k}, str(path))


def _copy(demo: Path, name: str, dst: Path) -> Path:
    return Path(shutil.copytree(demo / name, dst / name))


BASE_CONFIG = {  # case -> (a size the base's config.json states, a wrong value, what the weights have)
    "base-config-vocab": ("vocab_size", 999, "640"),
    "base-config-hidden": ("hidden_size", 512, "256"),
    "head-count": ("num_attention_heads", 3, "q_proj"),
    "layers": ("num_hidden_layers", 3, "2"),
    "ffn": ("intermediate_size", 1024, "768"),
}


# case -> (what to build from the demo into a folder; words the error line must contain: both sources named)
def _contradiction(case: str, demo: Path, tmp: Path) -> tuple[list, list[str]]:
    base, lora = demo / L2, demo / V2_LORA
    if case in ("rank-vs-config", "rank-pattern", "pattern-without-module", "target-missing", "target-extra",
                "saved-not-declared", "vocab-without-tokenizer", "lora-config-json", "lora-config-vocab"):
        lora = _copy(demo, V2_LORA, tmp)
    if case in BASE_CONFIG:
        base = _copy(demo, L2, tmp)
    cfg = lora / "adapter_config.json"
    if case == "rank-vs-config":
        _edit_json(cfg, r=8)
        need = ["r=8", "rank 16", "adapter_config.json", "adapter_model.safetensors"]
    elif case == "rank-pattern":
        _edit_json(cfg, rank_pattern={"q_proj": 4})
        need = ["q_proj", "rank 4", "rank 16", "adapter_config.json"]
    elif case == "pattern-without-module":
        _edit_json(cfg, alpha_pattern={"w_pack": 64})
        need = ["w_pack", "adapter_config.json", "adapter_model.safetensors"]
    elif case == "target-missing":
        _drop_tensors(lora / "adapter_model.safetensors", "k_proj.lora")
        need = ["k_proj", "target_modules", "adapter_model.safetensors"]
    elif case == "target-extra":
        _edit_json(cfg, target_modules=["q_proj", "v_proj", "k_proj", "gate_proj", "down_proj", "up_proj"])
        need = ["o_proj", "target_modules", "adapter_model.safetensors"]
    elif case == "saved-not-declared":  # PEFT would ignore the saved lm_head; merging it would differ from PEFT
        _edit_json(cfg, modules_to_save=["embed_tokens"])
        need = ["lm_head", "modules_to_save", "adapter_model.safetensors"]
    elif case == "vocab-without-tokenizer":
        for f in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
            (lora / f).unlink()
        need = ["1357", "640", V2_LORA, "tokenizer"]
    elif case == "lora-config-json":  # a long-context LoRA's config.json must describe the same model
        cfg_json = json.loads((demo / L2 / "config.json").read_text())
        (lora / "config.json").write_text(json.dumps({**cfg_json, "vocab_size": 1357, "hidden_size": 512}))
        need = ["hidden_size", "512", "256", V2_LORA]
    elif case == "lora-config-vocab":
        cfg_json = json.loads((demo / L2 / "config.json").read_text())
        (lora / "config.json").write_text(json.dumps({**cfg_json, "vocab_size": 640}))
        need = ["vocab_size", "640", "1357", V2_LORA]
    elif case in BASE_CONFIG:
        key, value, actual = BASE_CONFIG[case]
        _edit_json(base / "config.json", **{key: value})
        need = [key, str(value), actual, "config.json"]
    elif case == "gqa-heads":
        base = _copy(demo, V3, tmp)
        _edit_json(base / "config.json", num_key_value_heads=4)
        lora = demo / "llama-3-chinese-8b-instruct-v2-lora"
        need = ["num_key_value_heads", "4", "k_proj", "128", "config.json"]
    else:
        raise AssertionError(case)
    return ["merge", "--base", base, "--lora", lora, "--no-progress"], need


CONTRADICTIONS = ["rank-vs-config", "rank-pattern", "pattern-without-module", "target-missing", "target-extra",
                  "saved-not-declared", "vocab-without-tokenizer", "lora-config-json", "lora-config-vocab", "base-config-vocab",
                  "base-config-hidden", "head-count", "layers", "ffn", "gqa-heads"]


@pytest.fixture(scope="module")
def contradictions(demo, tmp_path_factory):
    """Every contradiction case, run concurrently through the CLI."""
    cases, runs = {}, {}
    for case in CONTRADICTIONS:
        tmp = tmp_path_factory.mktemp(case)
        args, need = _contradiction(case, demo, tmp)
        cases[case] = (tmp, need)
        runs[case] = [*args, "--out", tmp / "out", "--format", "gguf" if case == "gqa-heads" else "hf"]
    done = run_all(runs)
    return {case: (done[case], *cases[case]) for case in CONTRADICTIONS}


@pytest.mark.parametrize("case", CONTRADICTIONS)
def test_contradictory_inputs_are_refused(contradictions, case):
    p, tmp, need = contradictions[case]
    assert_error_line(p, *need)
    assert not (tmp / "out").exists() and not [n for n in hidden(tmp) if n.startswith(".out")]


# ------------------------------------------------------------------------------------------------ damaged inputs
def _truncated(src: Path, dst: Path, n: int) -> Path:
    dst.write_bytes(src.read_bytes()[:n])
    return dst


@pytest.fixture(scope="module")
def f16(demo, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("f16") / "l2-f16.gguf"
    assert cli("to-gguf", "--model", demo / L2, "--out", out).returncode == 0
    return out


@pytest.fixture(scope="module")
def q4(f16) -> Path:
    out = f16.with_name("l2-q4.gguf")
    assert cli("quantize", "--model", f16, "--out", out, "--threads", "2").returncode == 0
    return out


def _damaged(case: str, demo: Path, tmp: Path, f16: Path, q4: Path) -> tuple[list, list[str]]:
    if case.startswith("gguf-truncated-"):
        n = {"header": 100, "metadata": 5000, "tensors": 4_000_000, "last-bytes": f16.stat().st_size - 10}
        src = _truncated(f16, tmp / "t.gguf", n[case.removeprefix("gguf-truncated-")])
        return ["quantize", "--model", src, "--out", tmp / "out.gguf"], ["t.gguf", "is truncated"]
    if case == "gguf-garbage":
        (tmp / "g.gguf").write_bytes(b"GGUF" + bytes(range(256)) * 64)
        return ["quantize", "--model", tmp / "g.gguf", "--out", tmp / "out.gguf"], ["g.gguf", "corrupt"]
    if case == "requantize":
        return ["quantize", "--model", q4, "--out", tmp / "out.gguf", "--type", "q2_k"], ["Q4_K_M", "F16"]
    if case == "lora-tokenizer-garbage":
        lora = _copy(demo, V2_LORA, tmp)
        (lora / "tokenizer.model").write_bytes(b"\x00garbage" * 100)
        return ["merge", "--base", demo / L2, "--lora", lora, "--out", tmp / "out"], ["tokenizer.model"]
    if case == "finetune-binary-data":
        (tmp / "data.json").write_bytes(bytes(range(256)) * 8)
        return (["finetune", "--base", demo / L2, "--data", tmp / "data.json", "--out", tmp / "out", "--max-steps", "1"],
                ["data.json", "UTF-8"])
    if case == "perplexity-whitespace":
        (tmp / "blank.txt").write_text("  \n\t\n   \n", encoding="utf-8")
        return ["evaluate", "--model", f16, "--ppl", tmp / "blank.txt"], ["blank.txt", "no text"]
    raise AssertionError(case)


DAMAGED = ["gguf-truncated-header", "gguf-truncated-metadata", "gguf-truncated-tensors", "gguf-truncated-last-bytes",
           "gguf-garbage", "requantize", "lora-tokenizer-garbage", "finetune-binary-data", "perplexity-whitespace"]


@pytest.fixture(scope="module")
def damaged(demo, tmp_path_factory, f16, q4):
    cases, runs = {}, {}
    for case in DAMAGED:
        tmp = tmp_path_factory.mktemp(case)
        runs[case], need = _damaged(case, demo, tmp, f16, q4)
        cases[case] = (tmp, need)
    done = run_all(runs)
    return {case: (done[case], *cases[case]) for case in DAMAGED}


@pytest.mark.parametrize("case", DAMAGED)
def test_damaged_inputs_are_one_error_line(damaged, case):
    p, tmp, need = damaged[case]
    line = assert_error_line(p, *need)
    assert "reshape" not in line and "llama_model_loader" not in p.stderr
    assert not (tmp / "out").exists() and not (tmp / "out.gguf").exists()
    assert not [n for n in hidden(tmp) if n.startswith(".out")]


def test_unreachable_hub_says_how_to_fix_it(demo, tmp_path):
    """No DNS: one line with what to do, at once (no minute of retries)."""
    import time

    t0 = time.time()
    p = cli("merge", "--base", "someone/some-model", "--lora", demo / V2_LORA, "--out", tmp_path / "out",
            env={"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "https://no-such-host.invalid"})
    assert_error_line(p, "cannot reach", "HF_ENDPOINT", "local folder")
    assert time.time() - t0 < 20
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------ stale outputs
def _merge(demo: Path, lora: Path | str, out: Path, *extra) -> list:
    return ["merge", "--base", demo / L2, "--lora", lora, "--out", out, "--no-progress", *extra]


def test_stale_outputs_are_not_taken_for_finished(demo, tmp_path):
    """An output is "already merged" only for the same inputs (by content) and options; anything else needs
    --overwrite."""
    lora = _copy(demo, V2_LORA, tmp_path)
    (tmp_path / "junk.gguf").write_bytes(b"not a model")
    first = run_all({
        "gguf": _merge(demo, lora, tmp_path / "a.gguf", "--format", "gguf"),
        "other-gguf": _merge(demo, demo / "chinese-llama-2-lora-7b", tmp_path / "b.gguf", "--format", "gguf"),
        "hf": _merge(demo, lora, tmp_path / "hf")})
    assert all(p.returncode == 0 for p in first.values()), {k: p.stderr for k, p in first.items()}
    for copy in ("b2.gguf", "b3.gguf"):  # the record travels inside the GGUF: copies are the same merge
        shutil.copyfile(tmp_path / "b.gguf", tmp_path / copy)
    before = {n: (tmp_path / n).read_bytes() for n in ("junk.gguf", "b.gguf")}
    # the LoRA folder changes between runs: another training written over it (same names and sizes)
    from safetensors.torch import load_file, save_file

    sd = load_file(lora / "adapter_model.safetensors")
    save_file({k: v * 1.5 for k, v in sd.items()}, str(lora / "adapter_model.safetensors"))
    again = run_all({
        "same-gguf": _merge(demo, demo / "chinese-llama-2-lora-7b", tmp_path / "b.gguf", "--format", "gguf"),
        "unrelated-file": _merge(demo, demo / V2_LORA, tmp_path / "junk.gguf", "--format", "gguf"),
        "gguf-of-another-lora": _merge(demo, demo / V2_LORA, tmp_path / "b2.gguf", "--format", "gguf"),
        "lora-changed-gguf": _merge(demo, lora, tmp_path / "a.gguf", "--format", "gguf"),
        "lora-changed-hf": _merge(demo, lora, tmp_path / "hf"),
        "other-outtype": _merge(demo, demo / "chinese-llama-2-lora-7b", tmp_path / "b3.gguf", "--format", "gguf",
                                "--outtype", "f32")})
    assert again["same-gguf"].returncode == 0 and "already merged" in again["same-gguf"].stdout
    for case in ("unrelated-file", "gguf-of-another-lora", "lora-changed-gguf", "lora-changed-hf", "other-outtype"):
        line = assert_error_line(again[case], "--overwrite")
        if case.startswith("lora-changed"):
            assert "adapter_model.safetensors" in line, line
    assert {n: (tmp_path / n).read_bytes() for n in ("junk.gguf", "b.gguf")} == before
    p = cli(*_merge(demo, lora, tmp_path / "hf", "--overwrite"))
    assert p.returncode == 0 and "already merged" not in p.stdout
    assert hidden(tmp_path) == []
