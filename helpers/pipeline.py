"""The offline demo job, end to end: demo assets -> merge -> GGUF -> quantize -> a reply.

It runs the same functions as the notebooks, with the notebooks' real defaults
(``meta-llama/Llama-2-7b-hf`` + ``hfl/chinese-alpaca-2-lora-7b``), resolved to the tiny demo
stand-ins through ``HELPERS_LOCAL_MODELS``. On CPU it takes well under a minute after setup.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from . import catalog
from .chat import load_backend
from .demo import use_demo_assets
from .gguf import convert_hf_to_gguf, quantize
from .hub import resolve_model
from .merge import MergeOptions, ResourcePlan, merge, plan_resources
from .util import DATA_DIR, UserError, atomic_path, human_bytes
DEFAULT_MODEL = "chinese-alpaca-2-7b-lora"
DEFAULT_PROMPT = "请详细介绍一下北京的名胜古迹。"


def default_eval_text() -> str:
    """A short Chinese text shipped with the package, for perplexity and token counts."""
    return (DATA_DIR / "corpus_zh.txt").read_text(encoding="utf-8")


def fetch_file(ref: str, out_dir: str | Path) -> Path:
    """Return a local path for ``ref``: an existing file, or a URL downloaded once into ``out_dir``."""
    if not ref.startswith(("http://", "https://")):
        path = Path(ref).expanduser()
        if not path.is_file():
            raise UserError(f"{ref} not found: give an existing file or an https:// URL")
        return path
    import urllib.request

    target = Path(out_dir) / ref.rstrip("/").rsplit("/", 1)[-1]
    if not target.is_file():
        with atomic_path(target) as tmp, urllib.request.urlopen(ref, timeout=60) as r:  # noqa: S310 - user-given URL
            tmp.write_bytes(r.read())
    return target


def _release_inputs(name: str, base: str | None) -> tuple[str, list[str], str | None]:
    """(base, LoRAs in order, patch) of a catalog LoRA or patch release; ``base`` replaces the catalog's."""
    entry = catalog.get(name)
    default_base, steps = catalog.merge_plan(entry.name)
    patch = steps.pop() if entry.kind == "patch" else None
    return base or default_base, steps, patch


def release_target(name: str, out_dir: str | Path, fmt: str = "gguf", outtype: str = "q4_k_m") -> Path:
    """Where the merge notebook writes a release: ``chinese-alpaca-2-7b-q4_k_m.gguf``, ``...-hf`` or ``...-pth``
    in ``out_dir`` (the catalog name without ``-lora``)."""
    suffix = {"gguf": f"-{outtype}.gguf", "hf": "-hf", "pth": "-pth"}.get(fmt)
    if suffix is None:
        raise UserError(f"unknown output format {fmt!r}; use gguf, hf or pth")
    return Path(out_dir) / f"{catalog.get(name).name.removesuffix('-lora')}{suffix}"


def plan_release(name: str, out: str | Path, *, fmt: str = "gguf", outtype: str = "q4_k_m",
                 base: str | None = None, free_disk: int | None = None, free_ram: int | None = None,
                 offline: bool = False) -> ResourcePlan:
    """What merging a catalog release will download, write and hold, and whether it fits here (nothing is
    downloaded); the arguments are those of :func:`merge_release`, plus those of
    :func:`helpers.merge.plan_resources` (``free_disk``/``free_ram`` to assume, ``offline`` estimates)."""
    base, loras, patch = _release_inputs(name, base)
    return plan_resources(base, loras, patch, options=MergeOptions(fmt=fmt, outtype=outtype), out=out,
                          free_disk=free_disk, free_ram=free_ram, offline=offline)


def merge_release(name: str, out: str | Path, *, fmt: str = "gguf", outtype: str = "q4_k_m",
                  base: str | None = None, low_disk: bool | None = None):
    """Merge a catalog LoRA or patch release into its base, in the catalog's order.

    Args:
        name: catalog name of a ``lora`` or ``patch`` release (Plus releases bring their first LoRA).
        out: output folder (``hf``/``pth``) or ``.gguf`` file.
        fmt: ``gguf``, ``hf`` or ``pth``.
        outtype: ``f16``, ``bf16``, ``f32`` or (gguf) any llama.cpp quantization type (``q4_k_m``, ...), quantized
            in the same pass.
        base: another base model (path or hub id) instead of the catalog's.
        low_disk: stream the base one shard at a time (``None``: only when the full download would not fit).
    """
    base, loras, patch = _release_inputs(name, base)
    return merge(base, loras, patch=patch, out=out, fmt=fmt, outtype=outtype, low_disk=low_disk)


def f16_target(ref: str | Path, out_dir: str | Path) -> Path:
    """Where :func:`f16_gguf` puts the F16 GGUF of ``ref`` (a model folder or a catalog name) in ``out_dir``."""
    path = Path(str(ref)).expanduser()
    if path.is_dir():
        return Path(out_dir) / f"{path.name}-f16.gguf"
    return release_target(str(ref), out_dir, "gguf", "f16")


def f16_gguf(ref: str | Path, out_dir: str | Path) -> Path:
    """Return an F16 GGUF for ``ref``, making it when needed (kept and reused on reruns).

    ``ref`` may be a ``.gguf`` file (returned as is), a Hugging Face model folder (converted), or a
    catalog name: a LoRA/patch release is merged straight into the GGUF, a full model is resolved
    (downloaded) and converted.
    """
    out_dir = Path(out_dir)
    path = Path(str(ref)).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return path
    if path.is_dir():
        target = f16_target(path, out_dir)
        return target if target.is_file() else convert_hf_to_gguf(path, target, outtype="f16")
    entry = catalog.get(str(ref))
    target = f16_target(entry.name, out_dir)
    if target.is_file():
        return target
    if entry.kind in ("lora", "patch"):
        merge_release(entry.name, target, outtype="f16")
        return target
    if entry.kind == "gguf":
        raise UserError(f"{entry.name} is already a GGUF repo: download a file from {entry.hub_id} and give its path")
    return convert_hf_to_gguf(resolve_model(entry.hub_id, what="model"), target, outtype="f16", template=entry.template)


def run_pipeline(out: str | Path, *, model: str = DEFAULT_MODEL, qtype: str = "q4_k_m",
                 prompt: str = DEFAULT_PROMPT, max_new_tokens: int = 32) -> dict:
    """Run the demo job into ``out`` and return what it produced (paths, sizes, reply, timings).

    Args:
        out: output folder (demo assets go to ``out/assets``).
        model: catalog name of the LoRA release to merge.
        qtype: llama.cpp quantization type for the final GGUF.
        prompt: the question asked to the quantized model.
        max_new_tokens: length of the reply.
    """
    out = Path(out)
    timings: dict[str, float] = {}

    def step(name: str, t0: float) -> None:
        timings[name] = time.perf_counter() - t0
        print(f"[{name}] done in {timings[name]:.1f}s", flush=True)

    t0 = time.perf_counter()
    assets = use_demo_assets(out / "assets", through_hub=False)  # offline whatever HF_ENDPOINT says
    step("demo assets", t0)

    base, loras = catalog.merge_plan(model)
    print(f"merging {' + '.join(loras)} into {base} (offline stand-ins from {assets})", flush=True)
    t0 = time.perf_counter()
    f16 = f16_gguf(model, out)
    step("merge -> GGUF f16", t0)

    t0 = time.perf_counter()
    quant = out / f16.name.replace("-f16", f"-{qtype}")
    quantize(f16, quant, qtype=qtype)
    step(f"quantize {qtype}", t0)

    t0 = time.perf_counter()
    backend = load_backend(str(quant), backend="llama.cpp")
    reply = backend.chat(prompt, max_new_tokens=max_new_tokens, temperature=0.0, do_sample=False)
    step("reply", t0)

    sizes = {p.name: p.stat().st_size for p in (f16, quant)}
    print()
    for name, size in sizes.items():
        print(f"  {name:28s} {human_bytes(size)}")
    print(f"  template: {backend.template}")
    print(f"  prompt:   {prompt}")
    print(f"  reply:    {reply!r}")
    print("(the demo models are tiny and random, so the reply is not meaningful; in Colab the same steps run on the real models)")
    return {"f16": f16, "quant": quant, "sizes": sizes, "reply": reply, "timings": timings, "template": backend.template}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="catalog name of the LoRA release to merge")
    parser.add_argument("--type", dest="qtype", default="q4_k_m", help="quantization type (default q4_k_m)")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="question for the model")
    parser.add_argument("--max-new-tokens", type=int, default=32)


def run(args: argparse.Namespace) -> int:
    run_pipeline(args.out, model=args.model, qtype=args.qtype, prompt=args.prompt, max_new_tokens=args.max_new_tokens)
    return 0
