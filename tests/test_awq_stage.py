"""Notebook 01's AWQ entry through the hub twin (``tests/awqstandin.py`` serves the authors' repo): ``auto`` downloads
the release's published results first, counts them in the plan and applies exactly llm-awq's procedure; a release
the authors published nothing for is merged without AWQ and the check says so; ``plan --awq`` counts the file."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from reference import reference_awq, torch_state

from helpers.merge.awq import AWQ_REPO, published_awq
from helpers.stages import MergeStage
from helpers.util import human_bytes

pytestmark = [pytest.mark.hub]
ROOT = Path(__file__).resolve().parents[1]
RELEASE_AWQ = "chinese-alpaca-2-7b-w4-g128.pt"  # the default release's file in the authors' repo


def _published(twin, tmp_path: Path) -> tuple[dict, int]:
    """The twin's results file for the default release, fetched into a cache of the test's own, and its size."""
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(AWQ_REPO, RELEASE_AWQ, cache_dir=tmp_path / "own-cache", endpoint=twin.endpoint)
    return torch.load(path, map_location="cpu", weights_only=True), Path(path).stat().st_size


def test_auto_applies_the_authors_results_downloaded_first(twin_env, tmp_path):
    plain = MergeStage(output_dir=str(tmp_path / "plain"), workspace=str(tmp_path / "drive-plain"),
                       output_format="hf", outtype="f32")
    awq = dataclasses.replace(plain, awq="auto", output_dir=str(tmp_path / "awq"),
                              workspace=str(tmp_path / "drive-awq"))
    assert published_awq("chinese-alpaca-2-7b") == f"{AWQ_REPO}/{RELEASE_AWQ}"
    plan, plain_plan = awq.plan(), plain.plan()  # both before anything is downloaded
    results, size = _published(twin_env, tmp_path)
    note = next(n for n in plan.notes if n.startswith("AWQ:"))
    assert f"{AWQ_REPO}/{RELEASE_AWQ} ({human_bytes(size)}), downloaded at the start of the run, before the " \
           "weights" in note
    assert plan.job.options.awq == f"{AWQ_REPO}/{RELEASE_AWQ}" and plain_plan.job.options.awq is None
    resources = plan.job.resources
    assert resources.awq.to_download == size and AWQ_REPO in resources.summary()
    assert resources.download_bytes == sum(s.to_download for s in resources.sources) + size
    since = twin_env.log_size()
    plan.run()
    target, reference_target = plan.job.target, plain_plan.job.target
    got = [f for _, f in twin_env.downloads(since)]
    weights = [i for i, f in enumerate(got) if f.endswith((".safetensors", ".bin"))]
    assert RELEASE_AWQ in got and weights and got.index(RELEASE_AWQ) < min(weights), got
    plain_plan.run()
    ours, sd = torch_state(target), torch_state(reference_target)
    ref = reference_awq(reference_target, results).state_dict()
    changed = 0
    for name, w in ours.items():
        assert torch.equal(w, ref[name]), name
        changed += not torch.equal(w, sd[name])
    layers = len({n.split(".")[2] for n in sd if n.startswith("model.layers.")})
    assert changed == layers * 9  # two norms and seven linears per layer, as the reference changes them


def test_a_release_without_published_results_is_merged_without_and_told(twin_env, tmp_path):
    stage = MergeStage(model="chinese-alpaca-2-7b-64k-lora", awq="auto", output_dir=str(tmp_path))
    assert published_awq("chinese-alpaca-2-7b-64k") is None
    plan = stage.plan()
    assert plan.fits and plan.job.options.awq is None and plan.job.resources.awq is None
    note = next(n for n in plan.notes if n.startswith("AWQ:"))
    assert "published no AWQ results for chinese-alpaca-2-7b-64k" in note and "merged without AWQ" in note
    assert AWQ_REPO not in plan.job.resources.summary()


def test_plan_cli_counts_the_results_file(twin_env, tmp_path):
    _, size = _published(twin_env, tmp_path)

    def plan(*extra: str) -> dict:  # each in a fresh runtime: nothing cached
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HOME": str(tmp_path / f"fresh-home-{len(extra)}")}
        proc = subprocess.run([sys.executable, "-m", "helpers", "plan", "chinese-alpaca-2-7b-lora", "--json",
                               "--out", str(tmp_path), *extra], capture_output=True, text=True, env=env, cwd=ROOT,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    with_awq, without = plan("--awq", f"{AWQ_REPO}/{RELEASE_AWQ}"), plan()
    assert with_awq["awq_bytes"] == with_awq["awq_to_download"] == size and "awq_bytes" not in without
    assert with_awq["download_bytes"] - without["download_bytes"] == size


def test_the_route_merges_its_intermediate_with_the_results(twin_env, tmp_path):
    """A low-bit type with AWQ: the importance matrix is computed on, and the type quantized from, the AWQ merge (the
    job the GGUF records holds the results; without them it would be another job)."""
    from helpers.merge import made_from

    stage = MergeStage(awq="auto", outtype="iq3_xxs", imatrix_chunks=2, output_dir=str(tmp_path / "out"),
                       workspace=str(tmp_path / "drive"))
    plan = stage.plan()
    assert plan.job.route is not None and plan.job.options.awq == f"{AWQ_REPO}/{RELEASE_AWQ}"
    plan.run()
    options, sources = plan.job.options, plan.job.resources.sources
    assert made_from(plan.job.target, options, sources)
    assert not made_from(plan.job.target, dataclasses.replace(options, awq=None), sources)
