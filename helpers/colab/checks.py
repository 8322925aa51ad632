"""One dry run per notebook: what its parameters need (GPU, GPU memory, RAM, disk, wheels) on a :class:`Runtime`.

Each ``check_*`` takes the notebook's parameters (its ``parameters`` cell, overridden, or a running notebook's
globals) and the runtime, downloads nothing but small ``config.json`` files, and returns a :class:`CheckReport`.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

from .. import catalog
from ..gguf import BITS_PER_WEIGHT, FLOAT_TYPES, qtype_name
from ..merge import MergeOptions, ResourcePlan, plan_resources
from ..pipeline import f16_target, plan_release, release_target
from ..evaluate import MC_WINDOW, PPL_WINDOW
from ..train import estimate_memory
from ..util import UserError, human_bytes
from .report import NO, OK, SLOW, CheckReport, Need, bytes_need, wheel_need
from .runtime import Runtime
from .sizing import (CHAT_CONTEXT, LIBRARIES, RUNTIME_OVERHEAD, GGUFFile, gguf_file, kv_cache_bytes, model_files,
                     weight_bytes)

GET_GPU = "Runtime > Change runtime type > T4 GPU"
GET_LLAMA = "run the setup cell (it installs llama-cpp-python), or pip install llama-cpp-python"
MORE_RAM = "close other notebooks or choose a smaller model"


def _fresh(plan: ResourcePlan, rt: Runtime) -> ResourcePlan:
    """On a described runtime nothing is downloaded yet: every input file counts."""
    if not rt.assumed:
        return plan
    return dataclasses.replace(plan, sources=[dataclasses.replace(s, missing=dict(s.files)) for s in plan.sources])


def _planned(plan: Callable[..., ResourcePlan], rt: Runtime, notes: list[str], **kw: Any) -> ResourcePlan:
    """Run a planner against ``rt``; when the hub cannot be listed, estimate catalog releases instead (said)."""
    kw.update(free_disk=rt.disk, free_ram=rt.ram)
    try:
        return _fresh(plan(**kw), rt)
    except UserError as exc:
        notes.append(f"note: the hub could not be listed ({str(exc)[:120]}...); sizes are estimated from the catalog")
        return _fresh(plan(offline=True, **kw), rt)


def _merge_disk(plan: ResourcePlan, low_disk: str) -> Need:
    """The disk a merge plan needs, in the mode LOW_DISK picks."""
    low = low_disk == "yes" or (low_disk == "auto" and not plan.fits and plan.fits_low_disk)
    peak = plan.peak_disk_low if low and plan.peak_disk_low is not None else plan.peak_disk
    detail = (f"{human_bytes(plan.download_bytes)} download + {human_bytes(plan.output_bytes)} output"
              + (", low-disk mode" if peak != plan.peak_disk else ""))
    return bytes_need("disk", peak, plan.free_disk, fix=plan.disk_fixes(low_disk=low), detail=detail)


def _merge_ram(plan: ResourcePlan) -> Need:
    return bytes_need("RAM", plan.ram_bytes, plan.free_ram, fix=MORE_RAM, detail="peak of the streaming merge")


def _quantized(outtype: str) -> bool:
    return outtype.lower() not in FLOAT_TYPES


def check_merge(p: dict[str, Any], rt: Runtime) -> CheckReport:
    """``01_merge_lora``: the merge plan's disk and RAM; llama.cpp's kernels for a quantized GGUF; no GPU."""
    fmt, outtype, notes = p["OUTPUT_FORMAT"], p["OUTTYPE"], []
    target = release_target(p["MODEL"], p["OUTPUT_DIR"], fmt, outtype)
    plan = _planned(plan_release, rt, notes, name=p["MODEL"], out=target, fmt=fmt, outtype=outtype,
                    base=p.get("BASE_MODEL") or None)
    needs = [Need("GPU", "no GPU", rt.gpu or "none"), _merge_disk(plan, p.get("LOW_DISK", "auto")), _merge_ram(plan)]
    if fmt == "gguf" and _quantized(outtype):
        needs.append(wheel_need("llama.cpp", rt.llama_cpp, fix=GET_LLAMA))
    return CheckReport("01_merge_lora", rt, f"{p['MODEL']} -> {fmt} {outtype}", needs, notes + [plan.summary()])


def _quant_types(text: str) -> list[str]:
    return [qtype_name(t) for t in str(text).split(",") if t.strip()]


def check_quantize(p: dict[str, Any], rt: Runtime) -> CheckReport:
    """``02_quantize_gguf``: the F16 GGUF (merged or converted, or given), the quantized files, llama.cpp, and
    the RAM to score the F16 model."""
    ref, out_dir, notes = p.get("INPUT_PATH") or p["MODEL"], Path(p["OUTPUT_DIR"]), []
    types = _quant_types(p["QUANT_TYPES"])
    path = Path(ref).expanduser()
    needs = [Need("GPU", "no GPU", rt.gpu or "none"), wheel_need("llama.cpp", rt.llama_cpp, fix=GET_LLAMA)]
    if path.suffix == ".gguf" and path.is_file():
        f16, peak, merge_ram = path.stat().st_size, 0, []
    else:
        entry = None if path.exists() else catalog.get(ref)
        if entry is not None and entry.kind == "gguf":
            raise UserError(f"{entry.name} is already quantized: 02 starts from a full, LoRA or patch release, or "
                            "an F16 GGUF file (INPUT_PATH)")
        f16_out = f16_target(ref, out_dir)
        if entry is not None and entry.kind in ("lora", "patch"):
            plan = _planned(plan_release, rt, notes, name=entry.name, out=f16_out, fmt="gguf", outtype="f16")
        else:
            plan = _planned(plan_resources, rt, notes, base=str(path) if path.exists() else entry.hub_id,
                            options=MergeOptions(fmt="gguf", outtype="f16"), out=f16_out)
        f16, peak, merge_ram = plan.output_bytes, plan.peak_disk, [_merge_ram(plan)]
        notes.append(plan.summary())
    quants = sum(int(f16 * BITS_PER_WEIGHT[t] / 16) for t in types)
    disk = bytes_need("disk", peak + quants, rt.disk, fix="fewer types, or another runtime with more free space",
                      detail=f"F16 GGUF and {len(types)} quantized file(s): {', '.join(types)}")
    needs += [disk, *merge_ram]
    needs.append(bytes_need("RAM", f16 + LIBRARIES, rt.ram, detail="scoring the F16 GGUF with llama.cpp",
                            slow_fix="llama.cpp maps the file and reads what does not fit from disk: the comparison "
                                     "runs, slowly"))
    return CheckReport("02_quantize_gguf", rt, f"{ref} -> F16 -> {', '.join(types)}", needs, notes)


def _llama_cpp_needs(gguf: GGUFFile, rt: Runtime, what: str) -> tuple[list[Need], int]:
    """llama.cpp running ``gguf``: the wheel, and its memory on the GPU (CUDA wheel) or in RAM; the download."""
    config = gguf.config or {}
    n_ctx = min(int(config.get("max_position_embeddings") or CHAT_CONTEXT), CHAT_CONTEXT)
    mem = gguf.size + (kv_cache_bytes(config, n_ctx) if config else 0) + RUNTIME_OVERHEAD
    detail = f"{what} {gguf.name} {human_bytes(gguf.size)} + {n_ctx}-token KV cache"
    if rt.llama_cpp_gpu:
        need = bytes_need("GPU memory", mem, rt.vram, detail=detail, slow_fix="fewer layers on the GPU (n_gpu_layers)")
    else:
        need = bytes_need("RAM", mem, rt.ram, detail=detail, slow_fix="llama.cpp maps the file and reads what does "
                                                                        "not fit from disk: it runs, slowly")
    return [wheel_need("llama.cpp", rt.llama_cpp, fix=GET_LLAMA), need], 0 if gguf.local else gguf.size


def _transformers_memory(ref: str, quantization: str | None, rt: Runtime) -> tuple[int, int, str, dict]:
    """(bytes in GPU memory or RAM, bytes to download, description, config) of a model loaded by transformers."""
    files = model_files(ref)
    on_gpu = rt.gpu is not None
    quant = quantization if on_gpu and quantization in ("4bit", "8bit") else None
    weights = weight_bytes(files.config, quant, bytes_per_value=2 if on_gpu else 4)
    precision = quant or ("16-bit" if on_gpu else "float32")
    return (weights, files.download(fresh=rt.assumed),
            f"{Path(ref).name} {precision} {human_bytes(weights)}" + (" (estimated)" if files.estimated else ""),
            files.config)


def _model_gguf(p: dict[str, Any]) -> GGUFFile | None:
    """The GGUF that ``MODEL`` names when the notebook runs it with llama.cpp (None: transformers loads it)."""
    return gguf_file(p["MODEL"]) if p.get("BACKEND", "auto") in ("auto", "llama.cpp") else None


def _model_needs(p: dict[str, Any], rt: Runtime, quantization: str, gguf: GGUFFile | None, *, draft: str = "",
                 n_ctx: int = CHAT_CONTEXT, logits: bool = False) -> tuple[list[Need], int]:
    """Loading ``MODEL`` as the notebook does (``gguf``: with llama.cpp, else transformers; 4/8-bit only on a GPU),
    with an optional draft model, for ``n_ctx`` tokens (``logits``: the float32 logits of a whole window too, as
    scoring keeps them): the memory rows and the bytes to download."""
    if gguf is not None:
        return _llama_cpp_needs(gguf, rt, "model")
    needs: list[Need] = []
    if quantization in ("4bit", "8bit"):
        if rt.gpu is None:
            needs.append(Need("GPU", f"a CUDA GPU for {quantization}", "none", SLOW,
                              f"without a GPU the notebook loads in float32 on the CPU; for {quantization}: {GET_GPU}"))
        else:
            needs.append(wheel_need("bitsandbytes", rt.bitsandbytes, fix="pip install bitsandbytes"))
    mem, download, detail, config = _transformers_memory(p["MODEL"], quantization, rt)
    if draft:
        d_mem, d_download, d_detail, _ = _transformers_memory(draft, None, rt)
        mem, download, detail = mem + d_mem, download + d_download, f"{detail} + draft {d_detail}"
    n_ctx = min(int(config.get("max_position_embeddings") or n_ctx), n_ctx)
    on_gpu = rt.gpu is not None
    mem += kv_cache_bytes(config, n_ctx, bytes_per_value=2 if on_gpu else 4) + RUNTIME_OVERHEAD
    mem += n_ctx * int(config["vocab_size"]) * 4 if logits else 0
    detail += f" + {n_ctx}-token KV cache" + (" and logits" if logits else "")
    if on_gpu:
        needs.append(bytes_need("GPU memory", mem, rt.vram, detail=detail,
                                fix="QUANTIZATION='4bit', a smaller model, or its GGUF with llama.cpp"))
        needs.append(bytes_need("RAM", LIBRARIES, rt.ram, fix=MORE_RAM, detail="libraries; weights stream to the GPU"))
    else:
        needs.append(bytes_need("RAM", mem + LIBRARIES, rt.ram, detail=detail,
                                fix=f"a GGUF of the model (llama.cpp), a smaller model, or a GPU ({GET_GPU})"))
    return needs, download


def check_chat(p: dict[str, Any], rt: Runtime) -> CheckReport:
    """``03_inference_chat``: the model (and draft) in GPU memory or RAM, bitsandbytes, llama.cpp and its server."""
    gguf = _model_gguf(p)
    needs, download = _model_needs(p, rt, p.get("QUANTIZATION", "none"), gguf, draft=p.get("DRAFT_MODEL", ""))
    if p.get("START_SERVER"):
        needs.append(wheel_need("llama.cpp server", rt.llama_cpp_server,
                                fix="pip install 'llama-cpp-python[server]', or START_SERVER=False"))
        server = None if gguf is not None else gguf_file(p.get("SERVER_MODEL") or "")  # else it serves MODEL
        if server is not None:
            server_needs, server_download = _llama_cpp_needs(server, dataclasses.replace(rt, llama_cpp_gpu=False),
                                                             "server")
            needs.append(dataclasses.replace(server_needs[1], what="RAM (server)"))
            download += server_download
    needs.insert(0, bytes_need("disk", download, rt.disk, fix="another runtime with more free space",
                               detail="downloads"))
    return CheckReport("03_inference_chat", rt, f"{p['MODEL']} ({p.get('BACKEND', 'auto')}, "
                                                f"{p.get('QUANTIZATION', 'none')})", needs)


def check_finetune(p: dict[str, Any], rt: Runtime) -> CheckReport:
    """``04_finetune_lora``: QLoRA needs a GPU and bitsandbytes; the training memory estimate; the download."""
    files = model_files(p["BASE_MODEL"])
    qlora, on_gpu = bool(p["LOAD_IN_4BIT"]), rt.gpu is not None
    needs = []
    if qlora:
        needs.append(Need("GPU", "a CUDA GPU for LOAD_IN_4BIT (bitsandbytes)", rt.gpu or "none", OK if on_gpu else NO,
                          "" if on_gpu else f"{GET_GPU}, or LOAD_IN_4BIT=False (16-bit LoRA, slow on a CPU)"))
        needs.append(wheel_need("bitsandbytes", rt.bitsandbytes, fix="pip install bitsandbytes"))
    est = estimate_memory(files.config, load_in_4bit=qlora, lora_r=int(p["LORA_R"]),
                          bytes_per_value=2 if on_gpu else 4, device_bytes=rt.vram if on_gpu else rt.ram,
                          device_name=rt.gpu or "RAM")
    what = "GPU memory" if on_gpu else "RAM"
    fix = ("LOAD_IN_4BIT=True (QLoRA)" if not qlora else "a smaller model or a lower LORA_R")
    needs.append(bytes_need(what, est.total_bytes, est.device_bytes, fix=fix,
                            detail=f"weights {human_bytes(est.weights_bytes)}, LoRA + Adam "
                                   f"{human_bytes(est.trainable_bytes)}, "
                                   f"activations {human_bytes(est.activation_bytes)}"))
    adapter = est.trainable_params * 4 * 4  # the adapter and a checkpoint with its two Adam moments
    needs.insert(0, bytes_need("disk", files.download(fresh=rt.assumed) + adapter, rt.disk,
                               fix="another runtime with more free space", detail="base download + adapter"))
    mode = "QLoRA 4-bit" if qlora else "LoRA 16-bit" if on_gpu else "LoRA float32"
    return CheckReport("04_finetune_lora", rt, f"{p['BASE_MODEL']} ({mode}, r={p['LORA_R']})", needs)


def check_eval(p: dict[str, Any], rt: Runtime) -> CheckReport:
    """``05_vocab_and_eval``: the scored model in GPU memory or RAM (no quantization) and its download."""
    window = MC_WINDOW if p.get("MC_CSV") else PPL_WINDOW
    needs, download = _model_needs(p, rt, "none", _model_gguf(p), n_ctx=window, logits=True)
    needs.insert(0, bytes_need("disk", download, rt.disk, fix="another runtime with more free space",
                               detail="downloads; the tokenizers are a few MB"))
    return CheckReport("05_vocab_and_eval", rt, f"{p['MODEL']} (perplexity, multiple choice)", needs)


CHECKS: dict[str, Callable[[dict[str, Any], Runtime], CheckReport]] = {
    "01_merge_lora": check_merge, "02_quantize_gguf": check_quantize, "03_inference_chat": check_chat,
    "04_finetune_lora": check_finetune, "05_vocab_and_eval": check_eval,
}
