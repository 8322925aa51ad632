"""Outgrowing one GPU (issue 22): launch files for an N-GPU machine, the per-GPU memory estimate under DDP / ZeRO /
FSDP, and the launches that cannot work refused with one error line before anything is loaded."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.util import UserError

ROOT = Path(__file__).resolve().parents[1]
LLAMA_7B = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
            "num_key_value_heads": 32, "vocab_size": 55296}
GB = 1024 ** 3


def _config(demo, out, **kw):
    from helpers.train import FinetuneConfig

    settings = dict(base=str(demo / "Llama-2-7b-hf"), data=str(demo / "data" / "sft_zh.json"), out=str(out),
                    lora_r=4, lora_alpha=8, lora_dropout=0.0, lr=1e-3, batch_size=2, grad_accum=1, max_steps=2,
                    save_steps=10, max_samples=8, shuffle=False, template="llama2-zh", live_plot=False)
    return FinetuneConfig(**{**settings, **kw})


# ---------------------------------------------------------------------------------------------- configs, script
def test_deepspeed_presets_follow_the_authors_zero2(tmp_path):
    from helpers.train.launch import deepspeed_config, deepspeed_preset

    z2 = deepspeed_preset(2)
    zero = z2["zero_optimization"]
    assert zero["stage"] == 2 and zero["allgather_bucket_size"] == zero["reduce_bucket_size"] == 1e8
    assert zero["overlap_comm"] and zero["reduce_scatter"] and zero["contiguous_gradients"]
    assert z2["fp16"] == {"enabled": "auto", "loss_scale": 0, "loss_scale_window": 100, "initial_scale_power": 16,
                          "hysteresis": 2, "min_loss_scale": 1}
    assert all(z2[k] == "auto" for k in ("gradient_accumulation_steps", "gradient_clipping", "train_batch_size",
                                         "train_micro_batch_size_per_gpu"))
    z3 = deepspeed_preset(3, offload=True)["zero_optimization"]
    assert z3["stage"] == 3 and z3["stage3_gather_16bit_weights_on_model_save"] is True
    assert z3["offload_param"]["device"] == z3["offload_optimizer"]["device"] == "cpu"
    assert deepspeed_config("zero3") == deepspeed_preset(3)
    good = tmp_path / "ds.json"
    good.write_text(json.dumps({"zero_optimization": {"stage": 1}}))
    assert deepspeed_config(str(good))["zero_optimization"]["stage"] == 1
    for text, match in [("{not json", "not a DeepSpeed JSON"), ('{"zero_optimization": {"stage": 5}}', "stage must"),
                        ("[1, 2]", "stage must")]:
        good.write_text(text)
        with pytest.raises(UserError, match=match):
            deepspeed_config(str(good))


def test_config_to_args_round_trips(demo, tmp_path):
    from helpers.__main__ import build_parser
    from helpers.train import FinetuneConfig
    from helpers.util.params import from_arguments, to_arguments

    for cfg in (_config(demo, tmp_path / "o"),
                _config(demo, tmp_path / "o", mode="pt", data=str(demo / "data" / "pt_zh.txt"), load_in_4bit=True,
                        precision="bf16", modules_to_save=(), target_modules="q_proj,v_proj", resume="no",
                        gradient_checkpointing=False, check_memory=False, embedding_stage_steps=1, streaming=True,
                        deepspeed="zero2", data_workers=2, text_column="content")):
        args = build_parser("finetune").parse_args(["finetune", *to_arguments(cfg)])
        assert from_arguments(FinetuneConfig, args, live_plot=False) == cfg


@pytest.mark.parametrize("strategy", ["ddp", "zero2", "zero3", "fsdp"])
def test_launch_files_are_valid(demo, tmp_path, strategy):
    import yaml

    from helpers.train import write_launch_files

    stage = {"zero2": 2, "zero3": 3}.get(strategy)
    files = write_launch_files(_config(demo, tmp_path / "adapter"), nproc=8, out_dir=tmp_path / "launch",
                               zero_stage=stage, fsdp=strategy == "fsdp")
    script = files.script.read_text()
    assert subprocess.run(["bash", "-n", str(files.script)], capture_output=True).returncode == 0
    assert os.access(files.script, os.X_OK) and "NPROC=${NPROC:-8}" in script
    assert ("accelerate launch --config_file" in script) == (strategy == "fsdp")
    assert ("--deepspeed" in script) == strategy.startswith("zero") and "--check-only" in script
    acc = yaml.safe_load(files.accelerate.read_text())
    assert acc["num_processes"] == 8 and acc["distributed_type"] == {"ddp": "MULTI_GPU", "fsdp": "FSDP"}.get(
        strategy, "DEEPSPEED")
    if strategy.startswith("zero"):
        assert json.loads(files.deepspeed.read_text())["zero_optimization"]["stage"] == stage
        assert acc["deepspeed_config"]["deepspeed_config_file"] == files.deepspeed.name
    assert files.memory is not None and files.memory.num_gpus == 8 and "per GPU" in script


def test_launch_script_runs_torchrun_in_smoke_mode(demo, tmp_path):
    """The DDP script on this CPU machine (NPROC=2): its one-process check, then torchrun with 2 gloo processes."""
    from helpers.train import write_launch_files

    out = tmp_path / "adapter"
    files = write_launch_files(_config(demo, out), nproc=8, out_dir=tmp_path / "launch", zero_stage=None)
    env = {**os.environ, "NPROC": "2", "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run(["bash", str(files.script)], capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "checked for 2 process(es)" in r.stdout and "on 2 processes" in r.stdout
    assert json.loads((out / "finetune.json").read_text())["world_size"] == 2


# ---------------------------------------------------------------------------------------------- memory per GPU
def test_memory_per_gpu_shrinks_with_each_zero_stage():
    from helpers.train import estimate_memory

    def est(stage, gpus=8):
        return estimate_memory(LLAMA_7B, load_in_4bit=False, modules_to_save=("embed_tokens", "lm_head"),
                               zero_stage=stage, num_gpus=gpus, device_bytes=24 * GB, device_name="GPU")

    one, ddp, z1, z2, z3 = est(0, 1), est(0), est(1), est(2), est(3)
    t = one.trainable_params
    assert one.trainable_bytes == 16 * t  # fp32 weights, gradients, two Adam moments
    assert ddp.trainable_bytes == 20 * t  # + DDP's gradient buckets
    assert z1.trainable_bytes == 8 * t + 8 * t // 8 + 8 * 100_000_000
    assert z2.trainable_bytes == 4 * t + 4 * t // 8 + 8 * t // 8 + 8 * 100_000_000
    assert z3.trainable_bytes == (4 * t) // 8 + (4 * t) // 8 + (8 * t) // 8 + 8 * 100_000_000
    assert z2.weights_bytes == one.weights_bytes and z3.weights_bytes < one.weights_bytes / 4
    assert ddp.total_bytes > z1.total_bytes > z2.total_bytes > z3.total_bytes
    assert not ddp.fits and z3.fits  # a 7B with trained embeddings: ZeRO-3 fits 24 GB GPUs, plain DDP does not
    assert "per GPU (ZeRO-3 on 8 GPUs)" in z3.summary()


def test_memory_per_gpu_of_a_run(demo, tmp_path):
    from helpers.train import FinetuneConfig
    from helpers.train.memory import memory_per_gpu

    cfg = FinetuneConfig(base="chinese-alpaca-2-13b", data=str(demo / "data" / "sft_zh.json"), out=str(tmp_path))
    ddp = memory_per_gpu(cfg, nproc=8, gpu_bytes=40 * GB)
    z3 = memory_per_gpu(cfg, nproc=8, zero_stage=3, gpu_bytes=40 * GB)
    fsdp = memory_per_gpu(cfg, nproc=8, fsdp=True, gpu_bytes=40 * GB)
    assert 12e9 < ddp.params < 14e9 and ddp.weights_bytes == ddp.params * 2
    assert z3.total_bytes == fsdp.total_bytes < ddp.total_bytes
    unknown = FinetuneConfig(base="someone/unknown-model", data=str(demo / "data" / "sft_zh.json"), out=str(tmp_path))
    assert memory_per_gpu(unknown, nproc=8) is None


# ---------------------------------------------------------------------------------------------- bad launches
def _main_error(capsys, args) -> str:
    from helpers.__main__ import main

    assert main(["finetune", *map(str, args)]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 1, err
    return err[0]


def test_launches_that_cannot_work_are_one_error_line(demo, tmp_path, capsys, monkeypatch):
    """Each before any model is loaded: nothing is written."""
    import torch

    from helpers.train import plan as plan_module

    base = ["--base", demo / "Llama-2-7b-hf", "--data", demo / "data" / "sft_zh.json", "--out", tmp_path / "o"]
    monkeypatch.setattr(plan_module, "deepspeed_installed", lambda: False)
    assert "needs the deepspeed package" in _main_error(capsys, [*base, "--deepspeed", "zero2"])
    monkeypatch.setattr(plan_module, "deepspeed_installed", lambda: True)
    assert "ZeRO-3 partitions the weights" in _main_error(capsys, [*base, "--deepspeed", "zero3", "--4bit"])
    assert "give --max-steps" in _main_error(capsys, [*base, "--streaming"])
    assert "zero2, zero3 or a DeepSpeed JSON" in _main_error(capsys, [*base, "--deepspeed", "zero9"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    for name, value in {"RANK": "0", "WORLD_SIZE": "3", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "3"}.items():
        monkeypatch.setenv(name, value)
    assert "3 processes per machine on 2 GPUs" in _main_error(capsys, base)
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert "on 3 GPUs" in _main_error(capsys, [*base, "--check-only", "--nproc", "2"])
    assert not (tmp_path / "o").exists()


def test_check_launch_rules():
    from helpers.train.dist import Launch, check_launch, launch_context

    ok = dict(deepspeed_stage=None, load_in_4bit=False, deepspeed_installed=True)
    check_launch(Launch(0, 8, 0, 8), gpus=8, **ok)
    check_launch(Launch(0, 4, 0, 4), gpus=8, **ok)  # 2 GPUs idle, but the count divides
    check_launch(Launch(0, 2, 0, 2), gpus=0, **ok)  # CPU processes (gloo)
    for launch, gpus in ((Launch(0, 3, 0, 3), 8), (Launch(0, 16, 0, 16), 8)):
        with pytest.raises(UserError, match="processes per machine"):
            check_launch(launch, gpus=gpus, **ok)
    assert launch_context({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == Launch(1, 2, 1, 2)
    with pytest.raises(UserError, match="inconsistent launch"):
        launch_context({"RANK": "2", "WORLD_SIZE": "2"})
