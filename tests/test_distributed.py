"""Fine-tuning on N processes (issue 22), run for real with torchrun and gloo on this machine's CPUs.

- 2 processes with batch b give the adapter 1 process gives with batch 2b, and with batch b and 2 accumulation
  steps, within float rounding (records of different lengths, so averaging per-process means would not);
- a run interrupted on 2 processes resumes on 1 and ends with the uninterrupted run's adapter;
- a PT corpus streamed from a hub data set through the hub twin, each process reading its own share;
- bad launches stop with one ``error:`` line before any process trains.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _env(**extra) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HELPERS_NO_PROGRESS": "1"}
    env.pop("HELPERS_FAULT_KILL", None)
    return {**env, **extra}


def _finetune(out: Path, *args, nproc: int = 1, env: dict | None = None, timeout: int = 600,
              launcher: str = "torchrun"):
    if nproc == 1:
        launcher = [sys.executable]
    elif launcher == "accelerate":  # its multi-GPU launcher; on a CPU machine the processes train on CPUs (gloo)
        launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(nproc),
                    "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    else:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    cmd = [*launcher, "-m", "helpers", "finetune", "--out", str(out), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env or _env(), cwd=ROOT)


@pytest.fixture(scope="module")
def mixed_lengths(demo, tmp_path_factory) -> Path:
    """SFT records ordered two short, two long, ...: with 2 processes x batch 2, one process holds far fewer
    target tokens than the other in every global batch."""
    records = json.loads((demo / "data" / "sft_zh.json").read_text(encoding="utf-8"))
    short, long = records[:12], records[64:76]
    ordered = [r for i in range(0, 12, 2) for r in (short[i], short[i + 1], long[i], long[i + 1])]
    path = tmp_path_factory.mktemp("ddp-data") / "mixed.json"
    path.write_text(json.dumps(ordered, ensure_ascii=False), encoding="utf-8")
    return path


def _common(demo: Path, data: Path) -> list:
    return ["--base", demo / "Llama-2-7b-hf", "--data", data, "--template", "llama2-zh", "--lora-r", "4",
            "--lora-alpha", "8", "--lora-dropout", "0", "--lr", "1e-3", "--no-shuffle", "--save-steps", "2",
            "--max-steps", "4"]


def _adapter(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "adapter_model.safetensors"))


def _assert_same_adapter(a: Path, b: Path, rtol: float = 1e-4) -> None:
    wa, wb = _adapter(a), _adapter(b)
    assert wa.keys() == wb.keys()
    scale = max(float(t.abs().max()) for t in wa.values())
    diff = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    assert diff <= rtol * scale, (diff, scale)
    la = [float(ln.split(",")[1]) for ln in (a / "loss.csv").read_text().splitlines()[1:]]
    lb = [float(ln.split(",")[1]) for ln in (b / "loss.csv").read_text().splitlines()[1:]]
    assert la == pytest.approx(lb, rel=1e-5)


def test_the_global_batch_loss_is_not_a_mean_of_process_means(demo, mixed_lengths):
    """What makes the equivalence test able to fail: in the first global batch the two processes' halves hold
    different numbers of target tokens, so the mean of their means differs from the mean over all tokens."""
    import torch
    from transformers import AutoModelForCausalLM

    from helpers.tokens import get_template, load_tokenizer
    from helpers.train import FinetuneConfig
    from helpers.train.data import DataCollator, build_dataset, pad_id_of

    tok = load_tokenizer(demo / "Llama-2-7b-hf")
    cfg = FinetuneConfig(base="b", data=str(mixed_lengths), out="/unused", template="llama2-zh")
    ex = build_dataset(cfg, tok, get_template("llama2-zh"))[:4]
    collate = DataCollator(pad_id_of(tok))
    model = AutoModelForCausalLM.from_pretrained(str(demo / "Llama-2-7b-hf"), dtype=torch.float32).eval()

    def token_losses(batch):
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"][:, 1:]
        losses = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels, ignore_index=-100,
                                                   reduction="none")
        return losses[labels != -100]

    halves = [token_losses(collate(ex[:2])), token_losses(collate(ex[2:]))]
    assert len(halves[0]) * 2 < len(halves[1])
    global_mean = torch.cat(halves).mean()
    mean_of_means = (halves[0].mean() + halves[1].mean()) / 2
    assert abs(float(global_mean - mean_of_means)) > 1e-2 * float(global_mean)


@pytest.fixture(scope="module")
def one_process_batch4(demo, mixed_lengths, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one") / "b4"
    r = _finetune(out, *_common(demo, mixed_lengths), "--batch-size", "4", "--grad-accum", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_two_gloo_processes_equal_one_process_with_twice_the_batch(demo, mixed_lengths, one_process_batch4,
                                                                   tmp_path):
    two = tmp_path / "two"
    r = _finetune(two, *_common(demo, mixed_lengths), "--batch-size", "2", "--grad-accum", "1", nproc=2)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("adapter written to") == 1 and "on 2 processes" in r.stdout  # rank 0 alone reports
    _assert_same_adapter(two, one_process_batch4)
    info = json.loads((two / "finetune.json").read_text())
    assert info["world_size"] == 2 and info["global_batch"] == 4
    assert info["stats"][0]["stage"] == "load" and info["stats"][1]["device"] == "CPU"
    ckpt = two / "checkpoints" / "checkpoint-4"
    assert sorted(p.name for p in ckpt.glob("rng_state*")) == ["rng_state_0.pth", "rng_state_1.pth"]
    accum = tmp_path / "accum"
    r = _finetune(accum, *_common(demo, mixed_lengths), "--batch-size", "2", "--grad-accum", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    _assert_same_adapter(accum, one_process_batch4)
    assert not [p for p in two.iterdir() if p.name.startswith(".")], "no temporary files left"


def test_accelerate_launch_runs_the_same_command(demo, mixed_lengths, one_process_batch4, tmp_path):
    out = tmp_path / "accelerate"
    r = _finetune(out, *_common(demo, mixed_lengths), "--batch-size", "2", "--grad-accum", "1", nproc=2,
                  launcher="accelerate")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("adapter written to") == 1 and "on 2 processes" in r.stdout
    _assert_same_adapter(out, one_process_batch4)


@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_deepspeed_zero_on_two_processes_equals_one_process(demo, mixed_lengths, one_process_batch4, tmp_path,
                                                            stage):
    """DeepSpeed on CPU (gloo): ZeRO-2 partitions the gradients and Adam moments, ZeRO-3 the weights too; the
    adapter, gathered on rank 0, has the single-process run's format and values."""
    pytest.importorskip("deepspeed")
    out = tmp_path / stage
    r = _finetune(out, *_common(demo, mixed_lengths), "--batch-size", "2", "--grad-accum", "1", "--deepspeed", stage,
                  nproc=2)
    assert r.returncode == 0, r.stderr[-3000:]
    _assert_same_adapter(out, one_process_batch4)
    assert json.loads((out / "finetune.json").read_text())["deepspeed_zero_stage"] == int(stage[-1])
    assert list((out / "checkpoints" / "checkpoint-4").glob("global_step4/*optim_states.pt"))  # DeepSpeed's own


def test_a_run_interrupted_on_two_processes_resumes_on_one(demo, mixed_lengths, tmp_path):
    args = [*_common(demo, mixed_lengths)[:-2], "--max-steps", "6"]
    clean = tmp_path / "clean"
    assert _finetune(clean, *args, "--batch-size", "4", "--grad-accum", "1").returncode == 0
    out = tmp_path / "run"
    killed = _finetune(out, *args, "--batch-size", "2", "--grad-accum", "1", nproc=2,
                       env=_env(HELPERS_FAULT_KILL="finetune.save:2"))  # every rank dies after checkpoint-4
    assert killed.returncode != 0 and not (out / "adapter_model.safetensors").exists()
    assert (out / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file()
    r = _finetune(out, *args, "--batch-size", "4", "--grad-accum", "1")  # same global batch: the same job
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from checkpoint-" in r.stdout
    _assert_same_adapter(out, clean)


def test_bad_input_under_torchrun_is_one_error_line(demo, tmp_path):
    r = _finetune(tmp_path / "x", "--base", demo / "Llama-2-7b-hf", "--data", demo / "data" / "pt_zh.txt",
                  "--mode", "pt", "--streaming", nproc=2, timeout=300)
    lines = (r.stdout + r.stderr).splitlines()
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert r.returncode != 0 and len(errors) == 1 and "give --max-steps" in errors[0], lines[-20:]
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------- streamed corpora
PT_STREAM_REPO = "cllama-test/zh-pt-stream"


def _shards(demo: Path, n: int) -> dict[str, str]:
    lines = [ln for ln in (demo / "data" / "pt_zh.txt").read_text(encoding="utf-8").splitlines() if ln.strip()]
    per = len(lines) // n
    return {f"data/train-{i:05d}.jsonl": "".join(json.dumps({"text": t, "id": f"{i}-{j}"}, ensure_ascii=False) + "\n"
                                                  for j, t in enumerate(lines[i * per:(i + 1) * per]))
            for i in range(n)}


def test_a_streamed_pt_run_reads_a_hub_data_set_through_the_twin(demo, hub_twin, tmp_path):
    import hubtwin

    files = _shards(demo, 4)
    hubtwin.add_dataset_repo(hub_twin.mirror, PT_STREAM_REPO, files)
    since = hub_twin.log_size()
    env = _env(HF_ENDPOINT=hub_twin.endpoint, HF_HOME=str(tmp_path / "hf-home"), HF_HUB_OFFLINE="0",
               NO_PROXY=hubtwin.no_proxy_for_loopback())
    out = tmp_path / "pt"
    r = _finetune(out, "--base", demo / "Llama-2-7b-hf", "--data", PT_STREAM_REPO, "--mode", "pt", "--streaming",
                  "--max-steps", "3", "--block-size", "32", "--batch-size", "2", "--grad-accum", "1",
                  "--lora-r", "4", "--lora-alpha", "8", "--save-steps", "10", nproc=2, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = (out / "loss.csv").read_text().splitlines()[1:]
    assert [ln.split(",")[0] for ln in rows] == ["1", "2", "3"]
    prefix = f"/datasets/{PT_STREAM_REPO}/resolve/"
    fetched = {r.path.split("?")[0].split("/", 6)[-1] for r in hub_twin.requests(since)
               if r.method == "GET" and r.status in (200, 206) and r.path.startswith(prefix)}
    assert fetched == set(files), fetched
    assert json.loads((out / "finetune.json").read_text())["world_size"] == 2


def test_a_hub_data_set_is_fine_tuning_data(demo, hub_twin, tmp_path):
    """Issue 18: DATA="org/name" with the Alpaca columns (SFT) is downloaded through datasets and trained on; a data
    set without the columns the mode reads is one error line naming the columns it has."""
    import hubtwin

    records = json.loads((demo / "data" / "sft_zh.json").read_text(encoding="utf-8"))[:16]
    repo = "cllama-test/alpaca-zh-mini"
    hubtwin.add_dataset_repo(hub_twin.mirror, repo, {"train.json": json.dumps(records, ensure_ascii=False)})
    env = _env(HF_ENDPOINT=hub_twin.endpoint, HF_HOME=str(tmp_path / "hf-home"), HF_HUB_OFFLINE="0",
               NO_PROXY=hubtwin.no_proxy_for_loopback())
    common = ["--base", demo / "Llama-2-7b-hf", "--data", repo, "--max-steps", "2", "--batch-size", "4",
              "--grad-accum", "1", "--lora-r", "4", "--lora-alpha", "8"]
    r = _finetune(tmp_path / "sft", *common, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "adapter written to" in r.stdout and (tmp_path / "sft" / "adapter_model.safetensors").is_file()
    r = _finetune(tmp_path / "pt", *common, "--mode", "pt", env=env)
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1 and "has no column text (it has" in errors[0], r.stderr[-2000:]


@pytest.mark.parametrize("shards,world", [(3, 2), (4, 2), (3, 3), (2, 3)])
def test_each_process_streams_its_own_share(demo, tmp_path, shards, world, monkeypatch):
    """Within a pass no record (and no block) goes to two processes and none is skipped. When the shards divide
    among the processes each reads only its own shards and packs its own records; otherwise ``datasets`` gives
    each process every N-th block of the one packing of the whole stream."""
    import datasets

    # ``datasets`` runs in this process: its cache goes to this test's folder, not the session's shared HF_HOME
    # (which tests/test_hubenv.py expects empty)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")
    from helpers.tokens import load_tokenizer
    from helpers.train import FinetuneConfig
    from helpers.train.stream import pack_batch, streamed_examples
    from helpers.train.stream import open_records

    for name, text in _shards(demo, shards).items():
        (tmp_path / "corpus").mkdir(exist_ok=True)
        (tmp_path / "corpus" / Path(name).name).write_text(text, encoding="utf-8")
    cfg = FinetuneConfig(base="b", data=str(tmp_path / "corpus"), out="/unused", mode="pt", streaming=True,
                         max_steps=1, block_size=16)
    every = [json.loads(ln)["text"] for f in sorted((tmp_path / "corpus").iterdir())
             for ln in f.read_text(encoding="utf-8").splitlines()]
    shares = [[r["text"] for r in open_records(cfg, rank=rank, world_size=world)[0]] for rank in range(world)]
    assert sorted(t for share in shares for t in share) == sorted(every)
    assert len({t for share in shares for t in share}) == len(every) == sum(map(len, shares))
    tok = load_tokenizer(demo / "Llama-2-7b-hf")
    blocks = [[e["input_ids"] for e in streamed_examples(cfg, tok, rank=r, world_size=world, repeat=False)]
              for r in range(world)]
    if shards % world == 0:
        assert blocks == [pack_batch(tok(share)["input_ids"], 16) for share in shares]
    else:
        whole = pack_batch(tok(every)["input_ids"], 16)
        assert blocks == [whole[r::world] for r in range(world)]
    endless = iter(streamed_examples(cfg, tok, rank=0, world_size=world))
    n = 3 * len(blocks[0]) + 1
    assert len([next(endless) for _ in range(n)]) == n  # pass after pass: a process never runs dry
