"""An AWQ search on a transformers Llama model, after mit-han-lab/llm-awq's ``run_awq`` (``auto_scale_block``,
``auto_clip_block``), used by ``awq_quality.py`` to make results for SmolLM2 (the authors' are for 7B/13B).

As llm-awq does, the calibration batch goes through the model's embeddings once; then layer by layer:

1. the inputs of every linear are recorded while the *unchanged* layer runs, and its outputs are the next layer's
   inputs (nothing is recomputed from the embeddings);
2. for each Llama scale group (``input_layernorm -> q/k/v`` judged on the attention's output; ``v_proj -> o_proj``
   only without grouped-query attention; ``post_attention_layernorm -> gate/up`` judged on the MLP's output;
   ``up_proj -> down_proj``) the scales ``mean|x|^a`` (normalised by ``sqrt(max*min)``) are grid-searched over
   ``a = 0, 1/20, ... 19/20`` for the smallest output error after 4-bit asymmetric fake quantization in groups;
   all groups are searched on the unscaled layer, then applied (``apply_scale``, the recorded inputs divided too);
3. the clipping range of every linear but q/k is grid-searched per row and group (shrink 0 ... 45%) on 512 of the
   recorded tokens and applied (``auto_clip_layer``, ``apply_clip``).

Faster than llm-awq's own code on a CPU, with the same objectives: the clip search's error (the tokens' mean squared
change of each group's partial products) is the quadratic form of the group's Gram matrix, computed once per layer,
instead of a broadcast ``[rows, tokens, groups, group]`` product per grid point; everything runs under
``torch.inference_mode``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

N_GRID = 20  # llm-awq's n_grid (scales and clipping)
MAX_SHRINK = 0.5  # llm-awq's max_shrink: clipping ranges of 100% ... 55% of the largest magnitude
CLIP_TOKENS = 512  # llm-awq's n_sample_token
CLIP_ROWS = 256  # output rows searched at once (llm-awq's oc_batch_size)
SKIP_CLIP = ("q_", "k_")  # llm-awq leaves the query and key projections unclipped


def fake_quantize(w: torch.Tensor, group: int, bits: int = 4) -> torch.Tensor:
    """llm-awq's ``pseudo_quantize_tensor``: asymmetric min-max quantization in groups of ``group`` inputs."""
    shape = w.shape
    w = w.reshape(-1, group)
    hi, lo = w.amax(dim=1, keepdim=True), w.amin(dim=1, keepdim=True)
    scale = (hi - lo).clamp(min=1e-5) / (2 ** bits - 1)
    zero = (-torch.round(lo / scale)).clamp(0, 2 ** bits - 1)
    return ((torch.clamp(torch.round(w / scale) + zero, 0, 2 ** bits - 1) - zero) * scale).reshape(shape)


def _output(module: torch.nn.Module, x: torch.Tensor, kwargs: dict) -> torch.Tensor:
    out = module(x, **kwargs)
    return out[0] if isinstance(out, tuple) else out


def search_scale(module: torch.nn.Module, linears: list, x: torch.Tensor, kwargs: dict, group: int) -> torch.Tensor:
    """llm-awq's ``_search_module_scale``: the scales whose fake-quantized ``linears`` change ``module``'s output on
    ``x`` least; the weights are left as they were."""
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


def _group_grams(x: torch.Tensor, group: int) -> torch.Tensor:
    """``[groups, group, group]``: per group of inputs, the recorded tokens' mean outer product ``X_g^T X_g / n``."""
    xg = x.reshape(x.shape[0], -1, group).transpose(0, 1)  # [groups, tokens, group]
    return torch.bmm(xg.transpose(1, 2), xg) / x.shape[0]


def search_clip(w: torch.Tensor, x: torch.Tensor, group: int) -> torch.Tensor:
    """llm-awq's ``auto_clip_layer``: per row and group of ``w``, the clipping range whose fake-quantized products
    with the recorded inputs ``x`` (every ``n/512``-th token) change least; ``[rows, groups, 1]``.

    llm-awq's error, the tokens' mean of ``((q - w)_g · x_g)^2``, is computed as the quadratic form
    ``d_g^T (X_g^T X_g / n) d_g`` of each group's Gram matrix: the same number without a
    ``[rows, tokens, groups]`` tensor per grid point."""
    x = x.reshape(-1, x.shape[-1])
    gram = _group_grams(x[:: max(1, x.shape[0] // CLIP_TOKENS)], group)
    best_all = []
    for r in range(0, w.shape[0], CLIP_ROWS):
        wb = w[r:r + CLIP_ROWS].reshape(-1, w.shape[1] // group, group)  # [rows, groups, group]
        original = wb.abs().amax(dim=-1, keepdim=True)  # [rows, groups, 1]
        best, least = original.clone(), torch.full_like(original, float("inf"))
        for i in range(int(MAX_SHRINK * N_GRID)):
            m = original * (1 - i / N_GRID)
            d = (fake_quantize(torch.clamp(wb, -m, m), group) - wb).transpose(0, 1)  # [groups, rows, group]
            err = (torch.bmm(d, gram) * d).sum(-1).T.unsqueeze(-1)  # [rows, groups, 1]
            better = err < least
            least[better], best[better] = err[better], m[better]
        best_all.append(best)
    return torch.cat(best_all)


def _record(layer: torch.nn.Module, x: torch.Tensor, kwargs: dict) -> tuple[dict, dict, torch.Tensor]:
    """Run the unchanged ``layer`` once: every linear's input, the attention's keyword arguments, the output."""
    feats: dict = {}
    attn_kwargs: dict = {}
    hooks = [m.register_forward_hook(lambda _m, a, _o, n=n: feats.__setitem__(n, a[0]))
             for n, m in layer.named_modules() if isinstance(m, torch.nn.Linear)]
    hooks.append(layer.self_attn.register_forward_pre_hook(
        lambda _m, _a, kw: attn_kwargs.update({k: v for k, v in kw.items() if k != "hidden_states"}),
        with_kwargs=True))
    try:
        out = _output(layer, x, kwargs)
    finally:
        for h in hooks:
            h.remove()
    return feats, attn_kwargs, out


def _scale_groups(layer: torch.nn.Module, attn_kwargs: dict) -> list[tuple]:
    """llm-awq's Llama groups: (previous op's name, previous op, linears, their names, module judged, kwargs)."""
    attn, mlp = layer.self_attn, layer.mlp
    groups = [("input_layernorm", layer.input_layernorm, [attn.q_proj, attn.k_proj, attn.v_proj],
               ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], attn, attn_kwargs)]
    if attn.v_proj.weight.shape == attn.o_proj.weight.shape:
        groups.append(("self_attn.v_proj", attn.v_proj, [attn.o_proj], ["self_attn.o_proj"], attn.o_proj, {}))
    return groups + [("post_attention_layernorm", layer.post_attention_layernorm, [mlp.gate_proj, mlp.up_proj],
                      ["mlp.gate_proj", "mlp.up_proj"], mlp, {}),
                     ("mlp.up_proj", mlp.up_proj, [mlp.down_proj], ["mlp.down_proj"], mlp.down_proj, {})]


def _apply_scale(prev: torch.nn.Module, linears: list, names: list, s: torch.Tensor, feats: dict) -> None:
    """llm-awq's ``apply_scale``: ``prev`` divided by ``s`` (a norm, or a linear's last rows), the linears' input
    columns multiplied, their recorded inputs divided."""
    if isinstance(prev, torch.nn.Linear):
        prev.weight[-s.numel():].div_(s.view(-1, 1))
    else:
        prev.weight.div_(s)
    for fc, n in zip(linears, names):
        fc.weight.mul_(s.view(1, -1))
        feats[n] = feats[n] / s.view(1, -1)


def search_layer(layer: torch.nn.Module, prefix: str, x: torch.Tensor, kwargs: dict, group: int,
                 results: dict) -> torch.Tensor:
    """Search, apply and record (into ``results``) one decoder layer's scales and clipping; returns the inputs of
    the next layer (the unchanged layer's outputs, as llm-awq does)."""
    feats, attn_kwargs, nxt = _record(layer, x, kwargs)
    groups = _scale_groups(layer, attn_kwargs)
    found = [search_scale(inspect, linears, feats[names[0]], kw, group)
             for _, _, linears, names, inspect, kw in groups]
    for (prev_name, prev, linears, names, _, _), s in zip(groups, found):
        _apply_scale(prev, linears, names, s, feats)
        results["scale"].append((prefix + prev_name, tuple(prefix + n for n in names), s))
    for n, m in layer.named_modules():
        if isinstance(m, torch.nn.Linear) and not any(t in n for t in SKIP_CLIP):
            max_val = search_clip(m.weight.data, feats[n], group)
            m.weight.data = torch.clamp(m.weight.data.reshape(*max_val.shape[:2], -1), -max_val,
                                        max_val).reshape(m.weight.shape)
            results["clip"].append((prefix + n, max_val))
    return nxt


class _Caught(Exception):
    """Stops the model once the first layer's inputs are recorded."""


def first_layer_inputs(model: torch.nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """The first decoder layer's hidden states and keyword arguments (rotary embeddings, mask) for ``ids``."""
    caught: dict = {}

    def catch(_module, args, kwargs):
        caught["x"] = args[0] if args else kwargs.pop("hidden_states")
        caught["kwargs"] = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        raise _Caught

    handle = model.model.layers[0].register_forward_pre_hook(catch, with_kwargs=True)
    try:
        model(input_ids=ids, use_cache=False)
    except _Caught:
        pass
    finally:
        handle.remove()
    return caught["x"], caught["kwargs"]


def awq_search(hf: Path, text: str, out: Path, *, samples: int, seqlen: int, group: int) -> Path:
    """Search AWQ scales and clipping ranges for the model in ``hf`` on ``samples`` x ``seqlen`` tokens of
    ``text``; saves them in llm-awq's format (``{"scale": [...], "clip": [...]}``) at ``out``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if out.is_file():
        return out
    model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()
    ids = AutoTokenizer.from_pretrained(hf)(text, return_tensors="pt").input_ids[0]
    if len(ids) < samples * seqlen:
        raise SystemExit(f"error: calibration text has {len(ids)} tokens, fewer than {samples} x {seqlen}")
    results: dict = {"scale": [], "clip": []}
    layers = model.model.layers
    start = time.perf_counter()
    with torch.inference_mode():
        x, kwargs = first_layer_inputs(model, ids[: samples * seqlen].view(samples, seqlen))
        for i, layer in enumerate(layers):
            t0 = time.perf_counter()
            x = search_layer(layer, f"model.layers.{i}.", x, kwargs, group, results)
            print(f"  AWQ search: layer {i + 1}/{len(layers)} ({time.perf_counter() - t0:.0f} s)", flush=True)
    record = {"samples": samples, "seqlen": seqlen, "group": group, "seconds": time.perf_counter() - start,
              "threads": torch.get_num_threads()}
    search_record(out).write_text(json.dumps(record))
    partial = out.with_name(out.name + ".partial")
    torch.save(results, partial)
    partial.replace(out)
    return out


def search_record(out: Path) -> Path:
    """Where the search's settings and time are kept beside its results (a later run reports them)."""
    return out.with_suffix(".json")
