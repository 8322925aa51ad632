"""The planner's figures against measured runs: output size, peak disk (normal and low-disk, downloading through
the hub twin) and peak RAM (a child process on a wider synthetic model), each within 15%; and its verdicts."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from helpers.merge import Recipe, merge
from helpers.merge.options import MergeOptions
from helpers.merge import plan_resources

ROOT = Path(__file__).resolve().parents[1]
BASE, LORA = "meta-llama/Llama-2-7b-hf", "hfl/chinese-alpaca-2-lora-7b"


def apparent_bytes(*folders: Path) -> int:
    return sum(p.stat().st_size for f in folders if f.exists() for p in f.rglob("*") if p.is_file()
               and not p.is_symlink())


class DiskSampler:
    """The peak of the bytes under some folders while a block runs (every 2 ms)."""

    def __init__(self, *folders: Path) -> None:
        self.folders, self.peak, self._stop = folders, 0, threading.Event()

    def __enter__(self) -> "DiskSampler":
        self.start = apparent_bytes(*self.folders)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, apparent_bytes(*self.folders) - self.start)
            except FileNotFoundError:  # a file renamed or deleted while it was listed
                pass
            time.sleep(0.002)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, apparent_bytes(*self.folders) - self.start)


@pytest.mark.parametrize("fmt, outtype", [("gguf", "q4_k_m"), ("gguf", "q8_0"), ("gguf", "f16"), ("hf", "f16")])
def test_output_size_is_predicted(demo, tmp_path, fmt, outtype):
    out = tmp_path / ("m.gguf" if fmt == "gguf" else "m")
    base, loras = demo / "Llama-2-7b-hf", [demo / "chinese-alpaca-2-lora-7b"]
    plan = plan_resources(str(base), [str(x) for x in loras], options=MergeOptions(fmt=fmt, outtype=outtype), out=out)
    merge(Recipe(base, loras), out, MergeOptions(fmt=fmt, outtype=outtype, progress=False))
    written = apparent_bytes(tmp_path)
    assert plan.download_bytes == 0 and abs(plan.output_bytes - written) <= 0.15 * written, (plan.output_bytes, written)


def test_what_an_interrupted_run_left_is_not_counted_again(demo, tmp_path):
    from helpers.util import partial_path

    out, base, lora = tmp_path / "m.gguf", str(demo / "Llama-2-7b-hf"), str(demo / "chinese-alpaca-2-lora-7b")
    options = MergeOptions(fmt="gguf", outtype="f16")
    fresh = plan_resources(base, [lora], options=options, out=out).output_bytes
    partial_path(out).mkdir()
    (partial_path(out) / "shard").write_bytes(b"x" * (fresh // 3))
    assert plan_resources(base, [lora], options=options, out=out).output_bytes == fresh - fresh // 3


@pytest.mark.parametrize("low_disk", [False, True])
def test_peak_disk_is_predicted_through_the_hub(hub_env, tmp_path, low_disk):
    from helpers.hub import hub_cache_dir

    out = tmp_path / "out" / "m.gguf"
    options = MergeOptions(fmt="gguf", outtype="q4_k_m")
    plan = plan_resources(BASE, [LORA], options=options, out=out)
    predicted = plan.peak_disk_low if low_disk else plan.peak_disk
    assert plan.download_bytes > plan.output_bytes > 0 and plan.peak_disk_low < plan.peak_disk
    hub_cache_dir().mkdir(parents=True, exist_ok=True)
    with DiskSampler(hub_cache_dir(), tmp_path / "out") as disk:
        merge(Recipe(BASE, [LORA]), out, MergeOptions(fmt="gguf", outtype="q4_k_m", low_disk=low_disk, progress=False))
    assert abs(disk.peak - predicted) <= 0.15 * disk.peak, (disk.peak, predicted)


# RAM: a model wide enough that its tensors, not the libraries, decide the peak
WIDE = {"hidden": 2048, "intermediate": 5632, "heads": 16, "vocab": 32000, "lora_vocab": 55296}
RUNNER = r"""
import json, os, subprocess, sys
p = subprocess.Popen(sys.argv[2:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
_, status, usage = os.wait4(p.pid, 0)
json.dump({"rc": os.waitstatus_to_exitcode(status), "maxrss": usage.ru_maxrss * 1024,
           "stderr": p.stderr.read().decode()[-2000:]}, open(sys.argv[1], "w"))
"""


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """A one-layer base of 2048 width and a LoRA that expands its vocabulary to Chinese-LLaMA-2's 55296 (a 453 MB
    float32 tensor), with that tokenizer, as the v2 LoRAs ship it."""
    from helpers.demo.weights import TinySpec, base_state_dict, hf_config, lora_state_dict, write_hf_model, write_lora

    d = tmp_path_factory.mktemp("wide")
    spec = TinySpec(hidden=WIDE["hidden"], intermediate=WIDE["intermediate"], layers=1, heads=WIDE["heads"],
                    kv_heads=WIDE["heads"])
    sd = base_state_dict(spec, WIDE["vocab"], seed=7)
    (d / "base").mkdir()
    write_hf_model(d / "base", sd, hf_config(spec, WIDE["vocab"]), fmt="safetensors", single=True)
    tok = ROOT / "tests" / "data" / "chinese-llama-2-tokenizer"
    (d / "lora").mkdir()
    write_lora(d / "lora", lora_state_dict(sd, spec, r=8, vocab=WIDE["lora_vocab"], seed=8), r=8, alpha=16.0,
               base_name="meta-llama/Llama-2-7b-hf", old_peft=False, fmt="safetensors")
    for f in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        (d / "lora" / f).write_bytes((tok / f).read_bytes())
    return d


@pytest.mark.parametrize("fmt, outtype", [("gguf", "q4_k_m"), ("gguf", "f16"), ("hf", "f16")])
def test_peak_ram_is_predicted(wide, tmp_path, fmt, outtype):
    out = tmp_path / ("m.gguf" if fmt == "gguf" else "m")
    plan = plan_resources(str(wide / "base"), [str(wide / "lora")], options=MergeOptions(fmt=fmt, outtype=outtype),
                          out=out)
    result = tmp_path / "rss.json"
    cmd = [sys.executable, "-m", "helpers", "merge", "--base", str(wide / "base"), "--lora", str(wide / "lora"),
           "--out", str(out), "--format", fmt, "--outtype", outtype, "--no-progress"]
    subprocess.run([sys.executable, "-c", RUNNER, str(result), *cmd], check=True, cwd=ROOT,
                   env={**os.environ, "HELPERS_NO_PROGRESS": "1"})
    measured = json.loads(result.read_text())
    assert measured["rc"] == 0, measured["stderr"]
    assert abs(plan.ram_bytes - measured["maxrss"]) <= 0.15 * measured["maxrss"], (plan.ram_bytes, measured)


def test_every_release_fits_free_colab_at_q4_k_m_33b_in_low_disk_mode():
    """The README's table: every LoRA / patch release to Q4_K_M fits 12.7 GB of RAM and 78 GB of disk, the 33B
    ones only in low-disk mode (their base alone is 60 GB)."""
    from helpers import catalog

    gb = 1 << 30
    for name in catalog.names(kind="lora") + catalog.names(kind="patch"):
        entry = catalog.get(name)
        base, loras = catalog.release_recipe(name)
        patch = loras.pop() if entry.kind == "patch" else None
        plan = plan_resources(base, loras, patch, options=MergeOptions(fmt="gguf", outtype="q4_k_m"),
                              out="/content/out.gguf", offline=True, free_disk=78 * gb, free_ram=int(12.7 * gb))
        assert plan.ram_fits, name
        if entry.size == "33B":
            assert not plan.fits and plan.fits_low_disk, name
        else:
            assert plan.fits, name


def test_plan_command(tmp_path):
    r = subprocess.run([sys.executable, "-m", "helpers", "plan", "chinese-alpaca-plus-33b-lora", "--offline",
                        "--disk-gb", "78", "--ram-gb", "12.7", "--out", str(tmp_path), "--json"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["fits"] is False and data["fits_low_disk"] is True and data["peak_disk_low_disk"] < data["peak_disk"]
    r = subprocess.run([sys.executable, "-m", "helpers", "plan", "chinese-alpaca-plus-33b-lora", "--offline",
                        "--disk-gb", "20", "--out", str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 1 and "does NOT fit" in r.stdout


def test_readme_colab_table_is_current():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "colab_table.py"), "--check"], capture_output=True,
                       text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
