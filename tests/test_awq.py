"""``merge --awq``: llm-awq's search results applied as the merge streams.

The reference is llm-awq's own procedure, written independently on a transformers ``LlamaForCausalLM``: its
modules found by name, the previous norm's weight (or linear's last output rows) divided by the scales, the
following linears' input columns multiplied, then each clipped weight viewed as ``[rows, groups, -1]`` and clamped.
"""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from awqstandin import standin_results
from reference import reference_awq, torch_state

from helpers.merge import MergeOptions, Recipe, merge
from helpers.merge.awq import awq_adjustment, load_awq_results
from helpers.util import UserError

ROOT = Path(__file__).resolve().parents[1]
CASES = {  # (base, LoRA): Llama-2 (v_proj -> o_proj is scaled) and Llama-3 (grouped-query attention: it is not)
    "v2": ("Llama-2-7b-hf", "chinese-alpaca-2-lora-7b"),
    "v3-gqa": ("Meta-Llama-3-8B-Instruct", "llama-3-chinese-8b-instruct-v2-lora"),
}


def logits(model, vocab: int) -> torch.Tensor:
    ids = torch.randint(0, vocab, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.fixture(scope="module")
def plain(demo, tmp_path_factory):
    """Each case merged without AWQ (HF, float32), once."""
    cache: dict[str, Path] = {}

    def get(case: str) -> Path:
        if case not in cache:
            base, lora = CASES[case]
            out = tmp_path_factory.mktemp("plain") / case
            merge(Recipe(demo / base, [demo / lora]), out, MergeOptions(outtype="f32", progress=False))
            cache[case] = out
        return cache[case]

    return get


def _results_file(tmp_path: Path, results) -> Path:
    path = tmp_path / "awq-results.pt"
    torch.save(results, path)
    return path


@pytest.mark.parametrize("case", list(CASES))
def test_merged_weights_equal_llm_awq_applied_to_the_model(demo, plain, tmp_path, case):
    base, lora = CASES[case]
    sd = torch_state(plain(case))
    results = standin_results(sd)
    if case == "v3-gqa":
        assert not any(prev.endswith("v_proj") for prev, _, _ in results["scale"])
    out = tmp_path / "awq"
    merge(Recipe(demo / base, [demo / lora]), out,
          MergeOptions(outtype="f32", awq=_results_file(tmp_path, results), progress=False))
    ours = torch_state(out)
    ref = reference_awq(plain(case), results).state_dict()
    assert set(ours) <= set(ref)
    changed = 0
    for name, w in ours.items():
        assert torch.equal(w, ref[name]), name
        changed += not torch.equal(w, sd[name])
    layers = len({n.split(".")[2] for n in sd if n.startswith("model.layers.")})
    assert changed == layers * 9  # two norms and seven linears per layer; nothing else


def test_scales_alone_leave_the_outputs_unchanged(demo, plain, tmp_path):
    from transformers import AutoModelForCausalLM

    base, lora = CASES["v2"]
    sd = torch_state(plain("v2"))
    results = standin_results(sd, clip=False)
    out = tmp_path / "awq"
    merge(Recipe(demo / base, [demo / lora]), out,
          MergeOptions(outtype="f32", awq=_results_file(tmp_path, results), progress=False))
    load = lambda p: AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32).eval()  # noqa: E731
    scaled, unscaled = load(out), load(plain("v2"))
    w_old = unscaled.model.layers[0].mlp.down_proj.weight
    assert not torch.allclose(scaled.model.layers[0].mlp.down_proj.weight, w_old, rtol=0.1)
    vocab = sd["model.embed_tokens.weight"].shape[0]
    a, b = logits(scaled, vocab), logits(unscaled, vocab)
    assert float((a - b).abs().max() / b.abs().max()) < 1e-5


def test_gguf_output_carries_the_adjusted_weights(demo, plain, tmp_path):
    import gguf

    base, lora = CASES["v2"]
    sd = torch_state(plain("v2"))
    results = standin_results(sd)
    path = merge(Recipe(demo / base, [demo / lora]), tmp_path / "m.gguf",
                 MergeOptions(fmt="gguf", outtype="f32", awq=_results_file(tmp_path, results), progress=False,
                              write_sha256=False)).outputs[0]
    ref = reference_awq(plain("v2"), results).state_dict()
    tensors = {t.name: t for t in gguf.GGUFReader(str(path)).tensors}
    for hf, name in (("model.layers.1.mlp.down_proj.weight", "blk.1.ffn_down.weight"),
                     ("model.layers.1.post_attention_layernorm.weight", "blk.1.ffn_norm.weight"),
                     ("model.layers.0.self_attn.v_proj.weight", "blk.0.attn_v.weight")):
        got = torch.from_numpy(tensors[name].data.copy()).reshape(ref[hf].shape)
        assert torch.equal(got, ref[hf]), name


class Evil:
    """Pickles to a call that creates a marker file when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _bad(name: str, sd: dict, tmp: Path) -> tuple[Path, str]:
    """A malformed or mismatched results file, and what its one error line must say."""
    results = standin_results(sd)
    if name == "missing-layer":
        prev, layers, s = results["scale"][0]
        results["scale"][0] = ("model.layers.7.input_layernorm", layers, s)
        return _results_file(tmp, results), "scale entry 1 (model.layers.7.input_layernorm): this model has no model.layers.7.input_layernorm.weight"
    if name == "wrong-size":
        prev, layers, s = results["scale"][2]
        results["scale"][2] = (prev, layers, s[:-8])
        return _results_file(tmp, results), f"scale entry 3 ({prev}) has {s.numel() - 8} scales"
    if name == "clip-shape":
        layer, m = results["clip"][4]
        results["clip"][4] = (layer, m.view(m.shape[0], -1)[:, :1].repeat(1, 5).unsqueeze(-1))
        return _results_file(tmp, results), f"clip entry 5 ({layer})'s max_val is"
    if name == "not-positive":
        prev, layers, s = results["scale"][1]
        results["scale"][1] = (prev, layers, -s)
        return _results_file(tmp, results), "scale entry 2 (model.layers.0.self_attn.v_proj)'s scales are not all"
    if name == "not-llm-awq":
        return _results_file(tmp, {"scales": results["scale"]}), "are not llm-awq's format"
    if name == "not-torch":
        path = tmp / "awq.pt"
        path.write_text("scale clip\n")
        return path, "are not a torch file"
    if name == "code":
        path = tmp / "awq.pt"
        torch.save({"scale": [], "clip": [], "x": Evil(tmp / "pwned")}, path)
        return path, "hold more than tensors and lists"
    raise ValueError(name)


@pytest.mark.parametrize("name", ["missing-layer", "wrong-size", "clip-shape", "not-positive", "not-llm-awq",
                                  "not-torch", "code"])
def test_bad_results_fail_early_in_one_line(demo, plain, tmp_path, name):
    base, lora = CASES["v2"]
    path, expected = _bad(name, torch_state(plain("v2")), tmp_path)
    out = tmp_path / "out"
    env = {**os.environ, "HELPERS_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "helpers", "merge", "--base", demo / base, "--lora", demo / lora,
                           "--out", out, "--outtype", "f32", "--awq", path], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert expected in lines[0], lines[0]
    assert not out.exists() and not any(p.name.startswith(".out") for p in tmp_path.iterdir())
    assert not (tmp_path / "pwned").exists()


def test_weights_only_loading_never_runs_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with path.open("wb") as f:
        pickle.dump({"scale": [], "clip": [], "x": Evil(marker)}, f)
    with pytest.raises(UserError, match="not loaded"):
        load_awq_results(path)
    assert not marker.exists()
    with pytest.raises(UserError, match="not found"):
        load_awq_results(tmp_path / "none.pt")


def test_a_hub_file_reference_is_told_from_a_path(tmp_path):
    from helpers.merge.awq import is_hub_file

    assert is_hub_file("hfl/chinese-llama-alpaca-2-awq/chinese-alpaca-2-7b-w4-g128.pt")
    assert not is_hub_file("hfl/chinese-llama-alpaca-2-awq")
    assert not is_hub_file("./a/b/c.pt") and not is_hub_file("/a/b/c.pt")
    with pytest.raises(UserError, match="not found"):
        MergeOptions(awq=str(tmp_path / "a.pt"))
    assert MergeOptions(awq="").awq is None


def test_steps_follow_the_files_order_on_a_tensor_scaled_twice():
    up = torch.randn(6, 4)
    shapes = {"n.weight": (4,), "up.weight": (6, 4), "down.weight": (4, 6)}
    s1, s2 = torch.rand(4) + 0.5, torch.rand(6) + 0.5
    adj = awq_adjustment({"scale": [("n", ["up"], s1), ("up", ["down"], s2)], "clip": []}, shapes)
    got = adj.apply("up.weight", up.clone())
    assert torch.equal(got, up * s1.view(1, -1) / s2.view(-1, 1))
    assert [s.kind for s in adj.steps["up.weight"]] == ["scale_columns", "divide_rows"]
