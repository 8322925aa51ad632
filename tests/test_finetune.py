"""LoRA fine-tuning on the tiny demo models: loss goes down, labels mask the prompt, the adapter merges
back to PEFT's logits, runs resume from their checkpoint, and the memory estimate refuses what cannot fit."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.util import UserError

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(demo, out, **kw):
    from helpers.train import FinetuneConfig

    settings = dict(base=str(demo / "Llama-2-7b-hf"), data=str(demo / "data" / "sft_zh.json"), out=str(out),
                    lr=2e-3, lora_r=8, lora_alpha=16, lora_dropout=0.0, batch_size=4, grad_accum=1,
                    save_steps=10, max_steps=30, live_plot=False)
    settings.update(kw)
    return FinetuneConfig(**settings)


@pytest.fixture(scope="module")
def trained(demo, tmp_path_factory):
    from helpers.train import finetune

    out = tmp_path_factory.mktemp("ft") / "adapter"
    return finetune(_config(demo, out))


def _batch(demo, n=16):
    from helpers.tokens import load_tokenizer
    from helpers.train.data import DataCollator, build_dataset, pad_id_of

    cfg = _config(demo, "/unused", template="llama2-zh")
    tok = load_tokenizer(demo / "Llama-2-7b-hf")
    from helpers.tokens import get_template

    examples = build_dataset(cfg, tok, get_template("llama2-zh"))[:n]
    return DataCollator(pad_id_of(tok))(examples)


def _load(path, adapter=None):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        if len(json.loads((Path(adapter) / "adapter_config.json").read_text()).get("modules_to_save") or []):
            from helpers.tokens import load_tokenizer

            model.resize_token_embeddings(len(load_tokenizer(adapter)))
        model = PeftModel.from_pretrained(model, str(adapter))
    return model.eval()


# ----------------------------------------------------------------------------- training


def test_training_lowers_the_loss(trained, demo):
    import torch

    batch = _batch(demo)
    with torch.no_grad():
        before = _load(demo / "Llama-2-7b-hf")(**batch).loss.item()
        after = _load(demo / "Llama-2-7b-hf", trained.out)(**batch).loss.item()
    assert after < before - 1.0, (before, after)
    losses = [v for _, v in trained.losses]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0, losses
    assert trained.global_step == 30 and trained.resumed_from is None
    assert trained.template == "llama2-zh"  # a base Llama-2 gets the Chinese-Alpaca-2 template
    assert trained.modules_to_save == ()  # same vocabulary: no full embeddings
    assert trained.tokens_per_second > 0 and trained.steps_per_second > 0
    print(f"\nloss on 16 examples {before:.3f} -> {after:.3f}; logged {losses[0]:.3f} -> {losses[-1]:.3f}; "
          f"{trained.steps_per_second:.2f} steps/s, {trained.tokens_per_second:.0f} tokens/s")


def test_output_layout(trained, demo):
    from safetensors import safe_open

    from helpers.train.callbacks import read_loss_csv

    out = trained.out
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == 8 and cfg["lora_alpha"] == 16 and cfg["peft_type"] == "LORA"
    assert set(cfg["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert cfg["base_model_name_or_path"] == str(demo / "Llama-2-7b-hf")
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert len([k for k in keys if "lora_A" in k]) == 2 * 7 and not [k for k in keys if "embed_tokens" in k]
    assert (out / "tokenizer.model").read_bytes() == (demo / "Llama-2-7b-hf" / "tokenizer.model").read_bytes()
    assert (out / "tokenizer_config.json").is_file()
    assert read_loss_csv(out / "loss.csv") == [(s, pytest.approx(v, abs=1e-5)) for s, v in trained.losses]
    assert (out / "loss.csv").read_text().splitlines()[0] == "step,loss"
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    info = json.loads((out / "finetune.json").read_text())
    assert info["global_step"] == 30 and info["template"] == "llama2-zh"
    assert (out / "checkpoints" / "checkpoint-30").is_dir()
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "no temporary files left"


def test_merged_adapter_reproduces_peft_logits(trained, demo, tmp_path):
    import torch

    merged = tmp_path / "merged"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "helpers", "merge", "--base", str(demo / "Llama-2-7b-hf"), "--lora",
                        str(trained.out), "--out", str(merged), "--format", "hf"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    batch = _batch(demo, 4)
    with torch.no_grad():
        ref = _load(demo / "Llama-2-7b-hf", trained.out)(input_ids=batch["input_ids"]).logits
        got = _load(merged)(input_ids=batch["input_ids"]).logits
        base = _load(demo / "Llama-2-7b-hf")(input_ids=batch["input_ids"]).logits
    scale = ref.abs().max()
    assert (got - ref).abs().max() / scale < 2e-3
    assert (base - ref).abs().max() / scale > 5e-2, "the adapter must have changed the model"


def _stop_at(step):
    from transformers import TrainerCallback

    class StopAt(TrainerCallback):
        """Ends the run after ``step`` with a checkpoint, as an interrupted run leaves it."""

        def on_step_end(self, args, state, control, **kw):
            if state.global_step == step:
                control.should_save = control.should_training_stop = True

    return StopAt()


def test_resume_continues_the_same_job_and_restarts_a_changed_one(demo, tmp_path, capfd):
    from helpers.train import finetune
    from helpers.train.callbacks import read_loss_csv

    out = tmp_path / "run"
    first = finetune(_config(demo, out, max_steps=7, save_steps=2), callbacks=[_stop_at(4)])
    assert first.global_step == 4 and (out / "checkpoints" / "checkpoint-4").is_dir()
    rows4 = read_loss_csv(out / "loss.csv")
    assert [s for s, _ in rows4] == [1, 2, 3, 4]
    second = finetune(_config(demo, out, max_steps=7, save_steps=2))  # the same job: resumed
    assert second.resumed_from is not None and Path(second.resumed_from).name == "checkpoint-4"
    assert second.global_step == 7
    rows = read_loss_csv(out / "loss.csv")
    assert [s for s, _ in rows] == list(range(1, 8))
    assert rows[:4] == rows4, "the earlier rows are kept, not restarted"
    state = json.loads((out / "checkpoints" / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    capfd.readouterr()
    third = finetune(_config(demo, out, max_steps=3, lora_r=4, save_steps=2))  # auto: another job starts fresh
    assert third.resumed_from is None and [s for s, _ in third.losses] == [1, 2, 3]
    assert "another job (changed: lora_r, max_steps): starting fresh" in capfd.readouterr().err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-3", "job.json"]
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 4
    other = tmp_path / "other.json"
    other.write_text(json.dumps(json.loads((demo / "data" / "sft_zh.json").read_text())[:40]), encoding="utf-8")
    with pytest.raises(UserError, match=r"resume=yes, but .* another job \(changed: data\)"):
        finetune(_config(demo, out, max_steps=3, lora_r=4, save_steps=2, resume="yes", data=str(other)))
    with pytest.raises(UserError, match="no checkpoint"):
        finetune(_config(demo, tmp_path / "fresh", max_steps=2, resume=True))
    fourth = finetune(_config(demo, out, max_steps=3, lora_r=4, save_steps=2, resume="no"))  # --restart
    assert fourth.resumed_from is None and [s for s, _ in fourth.losses] == [1, 2, 3]


def test_a_rerun_with_new_data_trains_from_scratch(demo, tmp_path, capfd):
    """Issue 18: notebook 04 rerun with new DATA used to resume at MAX_STEPS, train 0 steps and return the old
    adapter; the job now names its data by content, so new data (even at the same path) starts fresh."""
    from safetensors.torch import load_file

    from helpers.train import finetune

    data = tmp_path / "data.json"
    records = json.loads((demo / "data" / "sft_zh.json").read_text(encoding="utf-8"))
    data.write_text(json.dumps(records[:32], ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "run"
    first = finetune(_config(demo, out, data=str(data), max_steps=3, save_steps=3))
    old = load_file(str(out / "adapter_model.safetensors"))
    capfd.readouterr()
    again = finetune(_config(demo, out, data=str(data), max_steps=3, save_steps=3))  # same job: nothing to train
    assert "already holds this job's adapter (3 steps)" in capfd.readouterr().err
    assert again.global_step == 3 and again.train_seconds == 0
    assert again.losses == [(s, pytest.approx(v, abs=1e-5)) for s, v in first.losses]
    data.write_text(json.dumps(records[32:64], ensure_ascii=False), encoding="utf-8")
    capfd.readouterr()
    new = finetune(_config(demo, out, data=str(data), max_steps=3, save_steps=3))
    assert "changed: data" in capfd.readouterr().err
    assert new.resumed_from is None and [s for s, _ in new.losses] == [1, 2, 3]
    assert new.losses[0][1] != pytest.approx(first.losses[0][1])
    fresh = load_file(str(out / "adapter_model.safetensors"))
    assert any((fresh[k] - old[k]).abs().max() > 1e-4 for k in old)


# ----------------------------------------------------------------------------- data


def test_labels_mask_the_prompt_exactly(demo):
    from helpers.tokens import load_tokenizer
    from helpers.train.data import IGNORE, tokenize_sft
    from helpers.tokens import build_prompt

    tok = load_tokenizer(demo / "Llama-2-7b-hf")
    record = {"instruction": "请把下面这句话复述一遍。", "input": "今天天气很好。", "output": "今天天气很好。"}
    for name in ("llama2-zh", "alpaca"):
        ex = tokenize_sft(record, tok, name, max_seq_length=512)
        prompt = build_prompt(name, "请把下面这句话复述一遍。\n今天天气很好。")
        prompt_ids = tok(prompt)["input_ids"]
        target = tok("今天天气很好。", add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids("</s>")]
        assert prompt_ids[0] == tok.bos_token_id
        n = len(prompt_ids)
        assert ex["labels"][:n] == [IGNORE] * n
        assert ex["labels"][n:] == target and IGNORE not in ex["labels"][n:]
        assert ex["input_ids"] == prompt_ids + target
        assert ex["labels"][-1] == 2  # </s>
    short = tokenize_sft(record, tok, "llama2-zh", max_seq_length=20)
    assert len(short["input_ids"]) == len(short["labels"]) == 20


def test_llama3_target_ends_with_eot(demo):
    from helpers.tokens import load_tokenizer
    from helpers.train.data import IGNORE, tokenize_sft
    from helpers.tokens import build_prompt

    tok = load_tokenizer(demo / "Meta-Llama-3-8B-Instruct")
    record = {"instruction": "你好", "input": "", "output": "你好！"}
    ex = tokenize_sft(record, tok, "llama3", max_seq_length=512)
    prompt_ids = tok(build_prompt("llama3", "你好"), add_special_tokens=False)["input_ids"]
    eot = tok.convert_tokens_to_ids("<|eot_id|>")
    assert ex["labels"] == [IGNORE] * len(prompt_ids) + tok("你好！", add_special_tokens=False)["input_ids"] + [eot]
    assert ex["input_ids"][0] != tok.convert_tokens_to_ids("<|begin_of_text|>")  # as the v3 SFT: no BOS


def test_collator_pads_ids_and_labels():
    from helpers.train.data import DataCollator

    batch = DataCollator(7)([{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [1], "labels": [5]}])
    assert batch["input_ids"].tolist() == [[1, 2, 3], [1, 7, 7]]
    assert batch["labels"].tolist() == [[-100, 2, 3], [5, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_pt_mode_groups_text_into_blocks(demo):
    from helpers.tokens import load_tokenizer
    from helpers.train.data import build_dataset, group_texts

    assert group_texts([[1, 2, 3], [4, 5], [6, 7, 8]], 3) == [[1, 2, 3], [4, 5, 6]]
    tok = load_tokenizer(demo / "Llama-2-7b-hf")
    cfg = _config(demo, "/unused", mode="pt", data=str(demo / "data" / "pt_zh.txt"), block_size=64)
    blocks = build_dataset(cfg, tok)
    lines = [ln for ln in (demo / "data" / "pt_zh.txt").read_text(encoding="utf-8").splitlines() if ln.strip()]
    flat = [t for ln in lines for t in tok(ln)["input_ids"]]
    assert len(blocks) == len(flat) // 64 >= 2
    assert all(b["input_ids"] == b["labels"] and len(b["input_ids"]) == 64 for b in blocks)
    assert [t for b in blocks for t in b["input_ids"]] == flat[: 64 * len(blocks)]
    with pytest.raises(UserError, match="block_size"):
        build_dataset(_config(demo, "/unused", mode="pt", data=str(demo / "data" / "pt_zh.txt"), block_size=10 ** 6),
                      tok)


def test_pt_training_runs(demo, tmp_path):
    from helpers.train import finetune

    res = finetune(_config(demo, tmp_path / "pt", mode="pt", data=str(demo / "data" / "pt_zh.txt"), block_size=64,
                           max_steps=3))
    assert res.global_step == 3 and res.template is None and len(res.losses) == 3


def test_bad_sft_records_are_refused(tmp_path):
    from helpers.train.data import load_sft_records

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"instruction": "x"}]), encoding="utf-8")
    with pytest.raises(UserError, match="record 1"):  # as an editor counts (issue 26)
        load_sft_records(bad)
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(UserError, match="not valid JSON"):
        load_sft_records(bad)


# ----------------------------------------------------------------------------- vocabulary expansion


def test_expanded_vocabulary_trains_embeddings_and_merges(demo, tmp_path):
    import torch

    from helpers.tokens import load_tokenizer
    from helpers.train import finetune

    tok_dir = demo / "chinese-alpaca-lora-7b"
    res = finetune(_config(demo, tmp_path / "v1", base=str(demo / "llama-7b"), tokenizer=str(tok_dir), max_steps=3))
    n = len(load_tokenizer(tok_dir))
    assert n > json.loads((demo / "llama-7b" / "config.json").read_text())["vocab_size"]
    assert res.modules_to_save == ("embed_tokens", "lm_head") and res.template == "alpaca"
    cfg = json.loads((res.out / "adapter_config.json").read_text())
    assert set(cfg["modules_to_save"]) == {"embed_tokens", "lm_head"}
    assert (res.out / "added_tokens.json").is_file()
    merged = tmp_path / "merged"
    r = subprocess.run([sys.executable, "-m", "helpers", "merge", "--base", str(demo / "llama-7b"), "--lora",
                        str(res.out), "--out", str(merged), "--format", "hf"], capture_output=True, text=True,
                       timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    assert json.loads((merged / "config.json").read_text())["vocab_size"] == n
    ids = torch.tensor([[1, 5, n - 2, 30, n - 1]])
    with torch.no_grad():
        ref = _load(demo / "llama-7b", res.out)(input_ids=ids).logits
        got = _load(merged)(input_ids=ids).logits
    assert (got - ref).abs().max() / ref.abs().max() < 2e-3


# ----------------------------------------------------------------------------- memory, config, CLI


LLAMA_13B = {"hidden_size": 5120, "intermediate_size": 13824, "num_hidden_layers": 40, "num_attention_heads": 40,
             "num_key_value_heads": 40, "vocab_size": 32000}
LLAMA_7B = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
            "num_key_value_heads": 32, "vocab_size": 55296}
T4 = 15 * 1024 ** 3


def test_memory_estimate_refuses_13b_16bit_on_a_t4():
    from helpers.train import estimate_memory

    est = estimate_memory(LLAMA_13B, load_in_4bit=False, lora_r=64, seq_len=512, batch_size=1, device_bytes=T4,
                          device_name="T4")
    assert 12.5e9 < est.params < 13.5e9
    assert est.weights_bytes == est.params * 2 and not est.fits
    with pytest.raises(UserError, match=r"needs about \d+\.\d GB, the T4 has 15\.0 GB: use --4bit"):
        est.check()
    q = estimate_memory(LLAMA_7B, load_in_4bit=True, lora_r=64, seq_len=512, batch_size=1, device_bytes=T4,
                        device_name="T4")
    assert q.fits and 5e9 < q.total_bytes < 12e9, str(q)
    q.check()
    assert 150e6 < q.trainable_params < 170e6  # r=64 on the 7 projections of a 7B: ~160M
    q13 = estimate_memory(LLAMA_13B, load_in_4bit=True, lora_r=64, seq_len=512, batch_size=1, device_bytes=T4,
                          device_name="T4")
    assert q13.fits  # 13B QLoRA fits a T4 too
    big = estimate_memory(LLAMA_13B, load_in_4bit=True, lora_r=64, seq_len=512, batch_size=1, device_bytes=4 << 30,
                          device_name="GPU")
    with pytest.raises(UserError, match="smaller model"):
        big.check()
    emb = estimate_memory(LLAMA_7B, load_in_4bit=True, modules_to_save=("embed_tokens", "lm_head"),
                          device_bytes=T4, device_name="T4")
    assert emb.trainable_params - q.trainable_params == 2 * 55296 * 4096


def test_memory_estimate_from_a_folder_and_the_catalog(demo):
    from helpers.train import estimate_memory

    est = estimate_memory(str(demo / "Llama-2-7b-hf"), load_in_4bit=False, lora_r=8, seq_len=64, device_bytes=T4,
                          device_name="T4")
    assert est.fits and est.params == 640 * 256 * 2 + 2 * (4 * 256 * 256 + 3 * 256 * 768 + 2 * 256) + 256
    cat = estimate_memory("chinese-alpaca-2-13b", load_in_4bit=False, device_bytes=T4, device_name="T4")
    assert not cat.fits


def test_config_validation(demo, tmp_path):
    from helpers.train import FinetuneConfig

    ok = dict(base="b", data=str(demo / "data" / "sft_zh.json"), out=str(tmp_path / "o"))
    cfg = FinetuneConfig(**ok)
    assert cfg.learning_rate == 1e-4 and cfg.warmup == 0.03 and cfg.lora_r == 64 and cfg.lora_alpha == 128
    assert FinetuneConfig(**ok, mode="pt").learning_rate == 2e-4 and FinetuneConfig(**ok, mode="pt").warmup == 0.05
    assert FinetuneConfig(**ok, target_modules="q_proj, v_proj").target_modules == ("q_proj", "v_proj")
    for bad, match in [(dict(mode="rl"), "mode"), (dict(lr=5.0), "lr"), (dict(lora_r=0), "lora_r"),
                       (dict(max_steps=0), "max_steps"), (dict(template="nope"), "template"),
                       (dict(data=str(tmp_path / "missing.json")), "not found"),
                       (dict(load_in_4bit=True, precision="fp32"), "4-bit")]:
        with pytest.raises(UserError, match=match):
            FinetuneConfig(**{**ok, **bad})


def test_4bit_without_gpu_is_refused(demo, tmp_path, monkeypatch):
    import torch

    from helpers.train import finetune

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU runtime, even where a GPU is present
    with pytest.raises(UserError, match="CUDA"):
        finetune(_config(demo, tmp_path / "q", load_in_4bit=True))


def test_cli_trains_and_resumes(demo, tmp_path, capsys):
    from helpers.__main__ import main

    out = tmp_path / "cli"
    args = ["finetune", "--base", str(demo / "Llama-2-7b-hf"), "--data", str(demo / "data" / "sft_zh.json"),
            "--out", str(out), "--lora-r", "4", "--lora-alpha", "8", "--lr", "1e-3", "--batch-size", "2",
            "--grad-accum", "1", "--save-steps", "2", "--max-samples", "8"]
    assert main(args + ["--max-steps", "2"]) == 0
    printed = capsys.readouterr().out
    assert "adapter written to" in printed and "helpers merge" in printed
    assert main(args + ["--max-steps", "2", "--resume"]) == 0  # the same job again: its outputs are reused
    assert "already holds this job's adapter (2 steps)" in capsys.readouterr().err
    assert main(args + ["--max-steps", "3", "--resume"]) == 2  # resume=yes refuses another job
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: resume=yes") and "changed: max_steps" in errors[0]
    assert main(args + ["--max-steps", "3"]) == 0
    capsys.readouterr()
    assert [ln.split(",")[0] for ln in (out / "loss.csv").read_text().splitlines()[1:]] == ["1", "2", "3"]
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 4
    assert main(["finetune", "--base", str(demo / "Llama-2-7b-hf"), "--data", str(tmp_path / "none.json"),
                 "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.startswith("error: finetune: data")


def test_compare_answers_loads_the_base_in_4bit_on_a_gpu(trained, demo, monkeypatch):
    """Right after training on a 15 GB T4 an unquantized 7B base would not fit: the default is NF4 on a GPU."""
    import torch

    from helpers.train import compare as compare_module

    seen = {}

    def fake_load_base(base_dir, *, dtype, load_in_4bit, skip_modules=()):
        seen["4bit"] = load_in_4bit
        raise RuntimeError("stop here")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 5))  # a T4
    monkeypatch.setattr(compare_module, "load_base", fake_load_base)
    with pytest.raises(RuntimeError, match="stop here"):
        compare_module.compare_answers(str(demo / "Llama-2-7b-hf"), trained.out, "你好")
    assert seen == {"4bit": True}


def test_compare_answers(trained, demo):
    from helpers.train import compare_answers

    cmp = compare_answers(str(demo / "Llama-2-7b-hf"), trained.out, "请计算三加五等于多少？", max_new_tokens=6)
    before, after = cmp
    assert isinstance(before, str) and isinstance(after, str) and cmp.prompt
    assert before != after  # 30 steps at lr 2e-3 change the greedy reply of a random model


def test_sample_data(tmp_path):
    from helpers.train.data import load_sft_records
    from helpers.demo import sample_data

    path = sample_data(tmp_path)
    assert len(load_sft_records(path)) >= 64
    assert sample_data(tmp_path, mode="pt").suffix == ".txt"


def test_live_plot_updates_one_notebook_image(monkeypatch):
    ipd = pytest.importorskip("IPython.display")
    from helpers.train.callbacks import trainer_callbacks as _callbacks

    shown = []

    class Handle:
        def update(self, obj):
            shown.append(("update", obj))

    def fake_display(obj, display_id=False):
        shown.append(("display", obj))
        return Handle()

    monkeypatch.setattr(ipd, "display", fake_display)
    _, LivePlot = _callbacks()
    rows = []
    cb = LivePlot(rows, every=2, notebook=True)

    class State:
        global_step = 0

    for step in range(1, 6):
        rows.append((step, 5.0 / step))
        State.global_step = step
        cb.on_log(None, State, None, logs={"loss": 5.0 / step})
    assert [kind for kind, _ in shown] == ["display", "update"]  # steps 2 and 4, one output updated in place
    assert all(obj.data[:8] == b"\x89PNG\r\n\x1a\n" for _, obj in shown)


# ----------------------------------------------------------------------------- issue 18 / 22 additions


def test_two_stage_recipe_trains_only_new_embedding_rows_first(demo, tmp_path):
    """--embedding-stage-steps 2: during the first 2 steps only the rows of embed_tokens/lm_head past the base
    vocabulary move (LoRA and the base's rows stay put); from step 3 on LoRA and every row train."""
    import torch
    from transformers import TrainerCallback

    from helpers.train import finetune

    seen: dict[int, dict] = {}

    class Snapshot(TrainerCallback):
        def _take(self, step, model):
            seen[step] = {n: p.detach().clone() for n, p in model.named_parameters()
                          if p.requires_grad and ("lora_B" in n or "modules_to_save" in n)}

        def on_train_begin(self, args, state, control, model=None, **kw):
            self._take(0, model)

        def on_step_end(self, args, state, control, model=None, **kw):
            self._take(state.global_step, model)

    base_vocab = json.loads((demo / "llama-7b" / "config.json").read_text())["vocab_size"]
    finetune(_config(demo, tmp_path / "v", base=str(demo / "llama-7b"), tokenizer=str(demo / "chinese-alpaca-lora-7b"),
                     max_steps=3, embedding_stage_steps=2), callbacks=[Snapshot()])
    emb = [n for n in seen[0] if "modules_to_save" in n]
    lora_b = [n for n in seen[0] if "lora_B" in n]
    assert len(emb) == 2 and lora_b
    for n in lora_b:
        assert torch.equal(seen[2][n], torch.zeros_like(seen[2][n])), n
        assert seen[3][n].abs().max() > 0, n
    for n in emb:
        assert torch.equal(seen[2][n][:base_vocab], seen[0][n][:base_vocab]), n
        assert not torch.equal(seen[2][n][base_vocab:], seen[0][n][base_vocab:]), n
        assert not torch.equal(seen[3][n][:base_vocab], seen[0][n][:base_vocab]), n
    with pytest.raises(UserError, match="expanded tokenizer"):
        finetune(_config(demo, tmp_path / "w", max_steps=3, embedding_stage_steps=1))


def test_run_reports_memory_and_time_after_loading_and_training(trained):
    load, train = trained.stats
    assert (load.stage, train.stage) == ("load", "train") and load.device == train.device == "CPU"
    assert 50 << 20 < load.peak_bytes <= train.peak_bytes < train.total_bytes
    assert train.seconds == pytest.approx(trained.train_seconds) and load.seconds > 0
    assert "CPU peak RSS" in train.summary() and "%" in train.summary()
    info = json.loads((trained.out / "finetune.json").read_text())
    assert [s["stage"] for s in info["stats"]] == ["load", "train"]


def test_pt_sample_is_plain_text_and_pt_refuses_json(demo, tmp_path):
    """Issue 18: MODE="pt" with the sample data trained on the SFT JSON as raw text; the PT sample is a text corpus
    (sample_data(..., mode="pt")) and PT refuses a JSON file in one line."""
    from helpers.demo import sample_data
    from helpers.tokens import load_tokenizer
    from helpers.train.data import build_dataset

    text = sample_data(tmp_path, mode="pt").read_text(encoding="utf-8")
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    assert not text.lstrip().startswith(("[", "{")) and len(text.splitlines()) >= 32
    tok = load_tokenizer(demo / "Llama-2-7b-hf")
    with pytest.raises(UserError, match="is JSON .* --mode pt trains on plain text"):
        build_dataset(_config(demo, "/unused", mode="pt", data=str(sample_data(tmp_path)), block_size=64), tok)
