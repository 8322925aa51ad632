"""A Colab user's session, notebooks run as Colab runs them (kernels, smoke mode, the hub twin), with a folder standing
in for Google Drive as the workspace: 01 -> 02 -> 03 read each other's outputs from it; a new runtime (empty local
disk and download cache) finds the merge there and downloads nothing; every notebook run twice in a row reuses its
outputs and downloads nothing the second time, leaving what it read unchanged byte for byte."""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
pytestmark = [pytest.mark.slow, pytest.mark.hub]


def run(name: str, folder: Path, **form) -> float:
    """Run notebook ``name`` as Colab would, its form set to ``form`` after its parameters cell (as papermill injects
    parameters); returns the seconds it took."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in form.items())))
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute()
    return time.perf_counter() - start


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".")}


def models_downloaded(twin, since: int) -> list[str]:
    """Model files downloaded whole since ``since`` (a header read before planning is a 206 of a few kB)."""
    return sorted({"/".join(r.file) for r in twin.requests(since) if r.method == "GET" and r.status == 200 and r.file
                   and not r.file[1].endswith((".md", ".json"))})


@pytest.fixture
def session(hub_env, tmp_path, monkeypatch):
    """Smoke mode through the twin, kernels inheriting it; a stand-in Drive folder."""
    monkeypatch.setenv("NOTEBOOK_SMOKE", "1")
    return hub_env, tmp_path / "drive"


def test_notebooks_find_each_others_outputs_in_the_workspace(session, tmp_path, monkeypatch):
    twin, drive = session
    run("01_merge_lora", tmp_path / "rt1", OUTTYPE="f16", OUTPUT_DIR=str(tmp_path / "rt1" / "merged"),
        WORKSPACE=str(drive))
    assert (drive / "chinese-alpaca-2-7b-f16.gguf").is_file()
    since = twin.log_size()
    run("02_quantize_gguf", tmp_path / "rt1", INPUT_PATH="chinese-alpaca-2-7b-f16.gguf", QUANT_TYPES="q4_k_m",
        QUALITY_TABLE=False, OUTPUT_DIR=str(tmp_path / "rt1" / "gguf"), WORKSPACE=str(drive))
    assert (drive / "chinese-alpaca-2-7b-q4_k_m.gguf").is_file() and models_downloaded(twin, since) == []
    run("03_inference_chat", tmp_path / "rt1", MODEL="chinese-alpaca-2-7b-q4_k_m.gguf", START_SERVER=False,
        DRAFT_MODEL="", WORKSPACE=str(drive))
    assert models_downloaded(twin, since) == []  # 02 and 03 read the workspace only
    saved = digests(drive)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "rt2" / "hf-home"))  # a new runtime: nothing local, nothing cached
    since = twin.log_size()
    seconds = run("01_merge_lora", tmp_path / "rt2", OUTTYPE="f16", OUTPUT_DIR=str(tmp_path / "rt2" / "merged"),
                  WORKSPACE=str(drive))
    print(f"01 in a new runtime, the merge found in the workspace: {seconds:.1f} s")
    assert models_downloaded(twin, since) == [] and digests(drive) == saved
    assert not (tmp_path / "rt2" / "merged" / "chinese-alpaca-2-7b-f16.gguf").exists()


@pytest.mark.parametrize("name, form", [
    ("01_merge_lora", {}),
    ("02_quantize_gguf", {}),
    ("03_inference_chat", {"START_SERVER": False}),
    ("04_finetune_lora", {}),
    ("05_vocab_and_eval", {}),
], ids=lambda v: v if isinstance(v, str) else "")
def test_a_second_run_reuses_its_outputs_and_downloads_nothing(session, tmp_path, name, form):
    twin, drive = session
    form = {"WORKSPACE": str(drive), **form}
    first = run(name, tmp_path / "rt", **form)
    before = digests(tmp_path / "rt") | {f"drive/{k}": v for k, v in digests(drive).items()}
    since = twin.log_size()
    second = run(name, tmp_path / "rt", **form)
    print(f"{name}: first run {first:.1f} s, second run {second:.1f} s")
    assert models_downloaded(twin, since) == []
    after = digests(tmp_path / "rt") | {f"drive/{k}": v for k, v in digests(drive).items()}
    changed = [k for k in before if after.get(k) != before[k] and not k.endswith((".png", ".csv", ".json", ".log"))]
    assert changed == [], changed


def test_other_data_is_another_job_that_keeps_the_first_jobs_outputs(session, tmp_path, demo):
    """Notebook 04 rerun with other data in the same place and workspace (issue 26): a job of its own, with its own
    adapter and GGUF, trained from step 1 on the new data (which the run records); the first job's adapter and GGUF
    stay in the workspace byte for byte."""
    import json

    twin, drive = session
    run("04_finetune_lora", tmp_path / "rt", WORKSPACE=str(drive))
    first = digests(drive)
    (adapter_a,) = drive.glob("*-lora")
    records = json.loads((demo / "data" / "sft_zh.json").read_text())[::-1][:40]  # other data, other order
    (drive / "mine.json").write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    run("04_finetune_lora", tmp_path / "rt", WORKSPACE=str(drive), DATA="mine.json")  # found in the workspace
    assert {k: v for k, v in digests(drive).items() if k in first} == first
    (adapter_b,) = set(drive.glob("*-lora")) - {adapter_a}
    assert "-sft-mine-" in adapter_b.name and "-sft-sample-" in adapter_a.name
    assert {p.name for p in drive.glob("*.gguf")} == {f"{a.name.removesuffix('-lora')}-q4_k_m.gguf"
                                                      for a in (adapter_a, adapter_b)}
    a, b = (json.loads((x / "finetune.json").read_text()) for x in (adapter_a, adapter_b))
    assert b["resumed_from"] is None and b["global_step"] == a["global_step"]
    assert b["config"]["data"].endswith("mine.json") and b["first_loss"] != a["first_loss"]


def test_the_merge_is_pushed_with_its_model_card(hub_env, hub_standin, tmp_path, monkeypatch):
    """PUSH_TO_HUB: the output and a model card naming the base, the LoRA, the type and the licence, uploaded to the
    user's repo (the upload stand-in records what it receives; through git LFS, which it speaks)."""
    from huggingface_hub import constants

    from helpers.stages import MergeStage

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_ENDPOINT", hub_env.endpoint)
    plan = MergeStage(output_dir=str(tmp_path / "out"), workspace=str(tmp_path / "drive")).check()
    result = plan.run()
    monkeypatch.setenv("HF_ENDPOINT", hub_standin.endpoint)  # uploads go to the write side
    monkeypatch.setenv("HF_TOKEN", "hf_alice_write_token")
    stage = MergeStage(output_dir=str(tmp_path / "out"), workspace=str(tmp_path / "drive"), push_to_hub="mine")
    stage.keep(plan.job)
    files = {k: v.data for k, v in hub_standin.repos["alice/mine"].files.items()}
    assert files[result.outputs[0].name] == result.outputs[0].read_bytes()
    card = files["README.md"].decode()
    for fact in ("meta-llama/Llama-2-7b-hf", "hfl/chinese-alpaca-2-lora-7b", "q4_k_m", "llama2"):
        assert fact in card, fact
