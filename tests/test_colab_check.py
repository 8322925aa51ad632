"""The Colab dry run (``helpers.colab``, ``python -m helpers colab-check``): parameters read from the real
notebooks, sizes against independent references, and the verdicts on free Colab's runtimes."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.colab import (CHECKS, FREE_COLAB_DISK, NO, OK, SLOW, Runtime, apply_overrides, check_notebook,
                           notebook_params, notebook_setup)
from helpers.colab.cli import find_notebook
from helpers.colab.sizing import kv_cache_bytes, weight_bytes
from helpers.catalog import config_of, get
from helpers.pipeline import plan_release, release_target
from helpers.util import UserError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
T4 = Runtime.free_colab(gpu=True, setup=frozenset({"llama_cpp", "gpu", "server"}))
CPU = Runtime.free_colab(gpu=False)


def params(name: str, **overrides) -> dict:
    return {**notebook_params(NOTEBOOKS / f"{name}.ipynb"), **overrides}


def row(report, what: str):
    return next(n for n in report.needs if n.what == what)


# ------------------------------------------------------------------------------------------------ parameters
def test_parameters_come_from_the_parameters_cell_without_the_smoke_overrides():
    p = notebook_params(NOTEBOOKS / "01_merge_lora.ipynb")
    assert p["MODEL"] == "chinese-alpaca-2-7b-lora" and p["OUTTYPE"] == "q4_k_m"
    assert p["OUTPUT_DIR"] == "/content/merged"  # the smoke block's override is inside an if: left out
    assert p["SAVE_TO_DRIVE"] is False
    assert notebook_params(NOTEBOOKS / "04_finetune_lora.ipynb")["LEARNING_RATE"] == pytest.approx(1e-4)


def test_every_notebook_has_a_check_cell_named_after_it():
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        assert path.stem in CHECKS, path.name
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        tagged = next(i for i, c in enumerate(cells) if "parameters" in c["metadata"].get("tags", []))
        calls = [i for i, c in enumerate(cells) if f'colab_check("{path.stem}", globals())' in "".join(c["source"])]
        assert len(calls) == 1 and calls[0] > tagged, path.name
        downloads = [i for i, c in enumerate(cells) if any(k in "".join(c["source"]) for k in
                                                          ("resolve_model(", "merge_release(", "f16_gguf(INPUT",
                                                           "load_backend(MODEL"))]
        assert all(calls[0] < i for i in downloads), f"{path.name}: the check must come before any download"


def test_setup_cells_say_what_they_install():
    assert notebook_setup(NOTEBOOKS / "01_merge_lora.ipynb") == {"llama_cpp"}
    assert notebook_setup(NOTEBOOKS / "03_inference_chat.ipynb") == {"llama_cpp", "gpu", "server"}
    assert notebook_setup(NOTEBOOKS / "04_finetune_lora.ipynb") == frozenset()


def test_overrides_take_the_defaults_types_and_refuse_unknown_names():
    p = notebook_params(NOTEBOOKS / "04_finetune_lora.ipynb")
    out = apply_overrides(p, ["LOAD_IN_4BIT=false", "LORA_R=16", "LEARNING_RATE=2e-4", "BASE_MODEL=x=y"])
    assert out["LOAD_IN_4BIT"] is False and out["LORA_R"] == 16 and out["LEARNING_RATE"] == 2e-4
    assert out["BASE_MODEL"] == "x=y"
    with pytest.raises(UserError, match="no parameter LORA_RANK; its parameters are: BASE_MODEL, DATA"):
        apply_overrides(p, ["LORA_RANK=8"])
    with pytest.raises(UserError, match="whole number"):
        apply_overrides(p, ["LORA_R=8.5"])
    with pytest.raises(UserError, match="yes/no"):
        apply_overrides(p, ["LOAD_IN_4BIT=maybe"])
    with pytest.raises(UserError, match="NAME=VALUE"):
        apply_overrides(p, ["LORA_R"])


def test_notebooks_are_found_by_name_number_or_word():
    os.chdir(ROOT)
    assert find_notebook("01").name == "01_merge_lora.ipynb"
    assert find_notebook("finetune").name == "04_finetune_lora.ipynb"
    assert find_notebook(str(NOTEBOOKS / "05_vocab_and_eval.ipynb")).name == "05_vocab_and_eval.ipynb"
    with pytest.raises(UserError, match="no notebook"):
        find_notebook("99")


# ------------------------------------------------------------------------------------------------ sizes
def test_weight_bytes_match_a_transformers_model_built_from_the_same_config():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = config_of(get("chinese-alpaca-2-7b"))
    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**config))
    params = sum(p.numel() for p in model.parameters())
    assert weight_bytes(config, None) == params * 2
    assert weight_bytes(config, None, bytes_per_value=4) == params * 4
    linear = sum(m.weight.numel() for n, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and n != "lm_head")
    assert weight_bytes(config, "8bit") == linear + (params - linear) * 2
    assert linear * 0.5 < weight_bytes(config, "4bit") - (params - linear) * 2 < linear * 0.52


def test_kv_cache_bytes_match_the_cache_transformers_keeps():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": 4,
              "num_key_value_heads": 2, "vocab_size": 100, "max_position_embeddings": 256}
    model = LlamaForCausalLM(LlamaConfig(**config)).eval()
    with torch.no_grad():
        cache = model(torch.arange(37)[None], use_cache=True).past_key_values
    held = sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)
    assert kv_cache_bytes(config, 37, bytes_per_value=4) == held


def test_this_machine_is_measured(tmp_path):
    rt = Runtime.detect(tmp_path / "not" / "made" / "yet")
    assert rt.disk is not None and 0 < rt.disk and rt.ram is not None and rt.ram > 0
    assert not rt.assumed and "this" in rt.describe()


# ------------------------------------------------------------------------------------------------ verdicts
def test_a_7b_q4_k_m_merge_fits_free_colab_and_matches_the_planner():
    report = check_notebook("01_merge_lora", params("01_merge_lora"), CPU)
    assert report.fits and row(report, "llama.cpp").status == OK
    plan = plan_release("chinese-alpaca-2-7b-lora", release_target("chinese-alpaca-2-7b-lora", "/content/merged"),
                        offline=True, free_disk=FREE_COLAB_DISK)
    assert row(report, "disk").amount == plan.peak_disk and row(report, "RAM").amount == plan.ram_bytes


def test_a_33b_merge_fits_free_colab_only_in_low_disk_mode():
    auto = check_notebook("01_merge_lora", params("01_merge_lora", MODEL="chinese-alpaca-33b-lora"), CPU)
    assert auto.fits and "low-disk mode" in row(auto, "disk").need
    plan = plan_release("chinese-alpaca-33b-lora", "/content/merged/x.gguf", offline=True)
    assert row(auto, "disk").amount == plan.peak_disk_low < FREE_COLAB_DISK < plan.peak_disk
    full = check_notebook("01_merge_lora", params("01_merge_lora", MODEL="chinese-alpaca-33b-lora", LOW_DISK="no"),
                          CPU)
    assert not full.fits and row(full, "disk").status == NO
    assert "low-disk mode" in full.refusal() and "q8_0" in full.refusal()
    with pytest.raises(UserError, match="will not fit free Colab, CPU runtime"):
        full.check()


def test_a_quantized_gguf_without_llama_cpp_is_refused_with_the_install_hint():
    bare = dataclasses.replace(CPU, llama_cpp=False)
    report = check_notebook("01_merge_lora", params("01_merge_lora"), bare)
    assert not report.fits and "setup cell" in row(report, "llama.cpp").fix
    f16 = check_notebook("01_merge_lora", params("01_merge_lora", OUTTYPE="f16"), bare)
    assert f16.fits and all(n.what != "llama.cpp" for n in f16.needs)


def test_finetuning_13b_in_16_bit_on_a_t4_is_refused_and_qlora_7b_fits():
    big = check_notebook("04_finetune_lora", params("04_finetune_lora", BASE_MODEL="chinese-alpaca-2-13b",
                                                    LOAD_IN_4BIT=False), T4)
    assert not big.fits and "LOAD_IN_4BIT=True" in row(big, "GPU memory").fix
    small = check_notebook("04_finetune_lora", params("04_finetune_lora"), T4)
    assert small.fits and row(small, "bitsandbytes").status == OK


def test_qlora_without_a_gpu_is_refused_naming_the_t4_runtime():
    report = check_notebook("04_finetune_lora", params("04_finetune_lora"), CPU)
    assert row(report, "GPU").status == NO and "T4 GPU" in report.refusal()


def test_chat_on_a_t4_fits_4bit_and_not_16_bit_with_a_long_context():
    four = check_notebook("03_inference_chat", params("03_inference_chat"), T4)
    assert four.fits, four.summary()
    sixteen = check_notebook("03_inference_chat", params("03_inference_chat", QUANTIZATION="none", DRAFT_MODEL=""),
                             T4)
    assert row(sixteen, "GPU memory").status == NO and "4bit" in row(sixteen, "GPU memory").fix


def test_4bit_chat_on_a_cpu_runtime_is_slow_in_float32_and_too_big_for_its_ram():
    report = check_notebook("03_inference_chat", params("03_inference_chat"), CPU)
    assert row(report, "GPU").status == SLOW
    ram = row(report, "RAM")
    assert "float32" in ram.need and ram.status == NO


def test_a_gguf_release_runs_in_llama_cpp_and_the_server_needs_its_extras():
    p = params("03_inference_chat", MODEL="chinese-alpaca-2-13b-gguf")
    report = check_notebook("03_inference_chat", p, T4)
    assert report.fits and row(report, "GPU memory").status == OK and "q4_k" in row(report, "GPU memory").need
    no_server = dataclasses.replace(T4, llama_cpp_server=False)
    refused = check_notebook("03_inference_chat", p, no_server)
    assert "START_SERVER=False" in refused.refusal()
    assert check_notebook("03_inference_chat", {**p, "START_SERVER": False}, no_server).fits


# ------------------------------------------------------------------------------------------------ the CLI
def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "helpers", "colab-check", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_cli_prints_the_report_and_exits_non_zero_with_one_error_line():
    out = _cli("04", "--colab", "cpu")
    assert out.returncode != 0 and "[NO  ] GPU" in out.stdout
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: 04_finetune_lora will not fit")
    ok = _cli("01_merge_lora", "--colab", "t4", "--json")
    assert ok.returncode == 0, ok.stderr
    data = json.loads(ok.stdout)
    assert data["fits"] and data["runtime"]["gpu"] == "T4" and {n["what"] for n in data["needs"]} >= {"disk", "RAM"}
    bad = _cli("01", "--set", "NOPE=1")
    assert bad.returncode != 0 and bad.stderr.startswith("error: the notebook has no parameter NOPE") and not bad.stdout


def test_the_check_reads_the_hub_listing_through_the_twin(hub_env, tmp_path):
    report = check_notebook("01_merge_lora", params("01_merge_lora", OUTPUT_DIR=str(tmp_path)), CPU)
    assert report.fits and not any("estimated" in n for n in report.notes)
    plan = plan_release("chinese-alpaca-2-7b-lora", release_target("chinese-alpaca-2-7b-lora", tmp_path),
                        free_disk=FREE_COLAB_DISK)
    assert plan.download_bytes > 0 and str(plan.sources[0].ref) in report.notes[-1]
