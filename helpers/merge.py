"""Streaming merge of LoRA adapters (one or several, in order) or a full-weight patch into a base model.

One pass over the base model, one tensor at a time, in float32:

1. start from the base tensor, or from the ``modules_to_save`` replacement of the *last* LoRA that
   has one (the expanded ``embed_tokens`` / ``lm_head``: its row count becomes the vocabulary);
2. add ``scaling * B @ A`` of every later LoRA, in the order given (Alpaca-Plus: LLaMA-Plus first);
3. add the patch tensor (Open-Chinese-LLaMA: ``patched = base + patch``);
4. check for NaN/Inf and hand the tensor to a sink (:mod:`helpers.writers`, or the GGUF writer).

Everything that can be checked is checked before anything is written: paths, adapter configs,
shapes and families (:mod:`helpers.catalog`), vocabulary order, tokenizer sizes, free disk.
Outputs are built under a hidden ``.<out>.partial`` name and renamed when complete; a rerun
resumes an interrupted job and says so when the job is already done.

CLI: ``python -m helpers merge --base BASE --lora L [--lora L2] --out OUT --format hf|pth|gguf``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Mapping

from .util import UserError, human_bytes, read_json, remove, require_free_disk, sha256_file

FORMATS = ("hf", "pth", "gguf")
OUTTYPES = ("f32", "f16", "bf16", "q8_0")
_DTYPE = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}
_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32}
VOCAB_TENSORS = ("model.embed_tokens.weight", "lm_head.weight")
INTERRUPT_ENV = "HELPERS_MERGE_INTERRUPT_AFTER"  # tests: simulate Ctrl-C after N tensors


@dataclass(frozen=True)
class MergeResult:
    """What a merge produced.

    Attributes:
        outputs: the files written (final names).
        vocab_size: rows of the merged embeddings.
        tensors_written: tensors computed in this run.
        tensors_resumed: tensors skipped because an interrupted run had already written them.
        seconds: wall time of this call.
        peak_rss_bytes: peak resident memory of this process so far.
        already_merged: the output existed and nothing was done.
    """

    outputs: list[Path]
    vocab_size: int
    tensors_written: int
    tensors_resumed: int = 0
    seconds: float = 0.0
    peak_rss_bytes: int = 0
    already_merged: bool = False


@dataclass
class _Inputs:
    base: Any
    adapters: list = field(default_factory=list)  # (label, Adapter)
    patch: Any = None
    patch_label: str = ""

    def close(self) -> None:
        for obj in [self.base, self.patch, *(a for _, a in self.adapters)]:
            if obj is not None:
                obj.close()


def _label(ref: str | Path) -> str:
    return Path(str(ref)).name or str(ref)


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _target(out: Path, fmt: str, outtype: str) -> Path:
    if fmt == "gguf" and out.suffix != ".gguf":
        return out / f"ggml-model-{outtype}.gguf"
    return out


def _job(base, loras, patch, fmt: str, outtype: str) -> dict:
    def ident(ref):
        p = Path(str(ref)).expanduser()
        return str(p.resolve()) if p.exists() else str(ref)

    return {"base": ident(base), "loras": [ident(x) for x in loras], "patch": ident(patch) if patch else None,
            "format": fmt, "outtype": outtype}


def _already_done(target: Path, fmt: str, job: dict) -> bool:
    """True if ``target`` holds this finished job; raise if it holds something else."""
    if not target.exists():
        return False
    if fmt == "gguf":
        return True
    info = target / "merge.json"
    if info.is_file():
        if read_json(info).get("job") == job:
            return True
        raise UserError(f"{target} holds a different merge; pass --overwrite to replace it or choose another --out")
    if target.is_dir() and not any(target.iterdir()):
        return False
    raise UserError(f"{target} exists and is not a merge output; choose another --out or pass --overwrite")


def parse_sha256_file(path: str | Path) -> dict[str, set[str]]:
    """Read a ``sha256sum``-format listing into ``{file name: {hex digests}}``."""
    if not Path(path).is_file():
        raise UserError(f"SHA256 listing {path} not found")
    listing: dict[str, set[str]] = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.strip().split(maxsplit=1)
        if len(parts) != 2 or len(parts[0]) != 64:
            raise UserError(f"{path}:{n} is not a sha256sum line ('<64 hex digits>  <file name>')")
        listing.setdefault(parts[1].lstrip("*").removeprefix("./"), set()).add(parts[0].lower())
    return listing


def _verify_inputs(inputs: _Inputs, expected: Mapping[str, str | Collection[str]]) -> int:
    matched = 0
    for f in _all_files(inputs):
        for key in (f"{f.parent.name}/{f.name}", f.name):
            if key in expected:
                want = expected[key]
                want = {want} if isinstance(want, str) else set(want)
                got = sha256_file(f)
                if got not in {w.lower() for w in want}:
                    raise UserError(f"{f} has SHA256 {got}, expected {' or '.join(sorted(want))}; "
                                    "the file is damaged or a different version: download it again")
                matched += 1
                break
    if not matched:
        raise UserError("none of the input files appear in the SHA256 listing; check the listing's file names")
    return matched


def _prepare(inputs: _Inputs) -> tuple[list, dict, Path, int]:
    """All checks before work; returns (plan, merged config, tokenizer folder, vocab size)."""
    from . import catalog
    from .sink import TensorPlan
    from .sources import tokenizer_vocab_size

    base = inputs.base
    family = catalog.family_of_config(base.config)
    shapes = {n: base.shape(n) for n in base.names() if not n.endswith("rotary_emb.inv_freq")}
    vocab = shapes.get("model.embed_tokens.weight", (int(base.config.get("vocab_size", 0)),))[0]
    vocab_from = "the base model"
    for label, ad in inputs.adapters:
        rows = ad.embed_rows
        catalog.check_family(family, catalog.family_of_lora(ad.config, vocab_size=rows or ad.tokenizer_vocab),
                             what=label)
        for name in ad.lora:
            if name not in shapes:
                raise UserError(f"{label} has LoRA weights for {name}, which the base model lacks; "
                                "it was trained for another architecture")
            if ad.delta_shape(name) != shapes[name]:
                raise UserError(f"{label} does not fit this base: {name} is {list(shapes[name])} in the base but "
                                f"{list(ad.delta_shape(name))} in the LoRA; it was made for another model size")
        if rows is not None and ad.tokenizer_vocab is not None and ad.tokenizer_vocab != rows:
            raise UserError(f"the tokenizer in {ad.path} has {ad.tokenizer_vocab} tokens but {label}'s embeddings have "
                            f"{rows} rows: the LLaMA and Alpaca tokenizers must not be mixed; restore the "
                            "tokenizer files that came with this LoRA (download them again)")
        if rows is not None and rows < vocab:
            fix = (f"apply {label} before {vocab_from}" if vocab_from != "the base model"
                   else "use the base model it was made for")
            raise UserError(f"{label} has a {rows}-token vocabulary, smaller than the {vocab} tokens of {vocab_from}: "
                            f"LoRAs that expand the vocabulary must go from small to large; {fix}")
        for name in ad.saved:
            s = ad.saved_shape(name)
            if name not in shapes or s[1:] != shapes[name][1:]:
                raise UserError(f"{label} replaces {name} with a {list(s)} tensor, which does not fit the base "
                                f"({list(shapes.get(name, ()))}); it was made for another model")
            shapes[name] = s
        if rows is not None:
            vocab, vocab_from = rows, label
    rows = {shapes[n][0] for n in VOCAB_TENSORS if n in shapes}
    if len(rows) > 1:
        raise UserError(f"after the LoRAs, embed_tokens and lm_head disagree on the vocabulary ({sorted(rows)}); "
                        "a LoRA saves only one of them: check the LoRA order")
    if inputs.patch is not None:
        p = inputs.patch
        catalog.check_family(family, catalog.family_of_config(p.config), what=inputs.patch_label)
        for name in p.names():
            if name.endswith("rotary_emb.inv_freq"):
                continue
            if name not in shapes or p.shape(name) != shapes[name]:
                raise UserError(f"the patch's {name} {list(p.shape(name))} does not fit the merged model "
                                f"({list(shapes.get(name, ()))}); a patch applies to its own base, without LoRAs")
    tok_from = next((a for _, a in reversed(inputs.adapters) if a.tokenizer_dir), None)
    tok_dir = tok_from.tokenizer_dir if tok_from else base.tokenizer_dir
    if tok_dir is None:
        raise UserError(f"no tokenizer (tokenizer.model or tokenizer.json) in {base.path} or the LoRA folders; "
                        "download the tokenizer files of the base model")
    tv = tok_from.tokenizer_vocab if tok_from else tokenizer_vocab_size(tok_dir)  # an adapter counted its own
    if tv is not None and tv > vocab:
        raise UserError(f"the tokenizer in {tok_dir} has {tv} tokens but the merged model only {vocab} embedding rows; "
                        "use the tokenizer that belongs to the last LoRA or the base")
    config = dict(base.config)
    config["vocab_size"] = vocab
    for _, ad in inputs.adapters:  # long-context LoRAs ship their own RoPE settings
        if (ad.path / "config.json").is_file():
            lc = read_json(ad.path / "config.json")
            config.update({k: lc[k] for k in ("rope_scaling", "max_position_embeddings") if k in lc})
    return [TensorPlan(n, tuple(s)) for n, s in shapes.items()], config, tok_dir, vocab


def _merged_tensor(name: str, inputs: _Inputs):
    import torch

    ads = [a for _, a in inputs.adapters]
    start = max((i for i, a in enumerate(ads) if name in a.saved), default=-1)
    w = ads[start].get_saved(name) if start >= 0 else inputs.base.get(name, dtype=torch.float32)
    for ad in ads[max(start, 0):]:
        if name in ad.lora:
            ad.add_delta(w, name)
    if inputs.patch is not None and name in inputs.patch:
        w.add_(inputs.patch.get(name))
    return w


def _check_values(name: str, w, outtype: str) -> None:
    if w.numel() == 0:
        return
    import torch

    lo, hi = (float(x) for x in torch.aminmax(w))
    if not (math.isfinite(hi) and math.isfinite(lo)):
        raise UserError(f"the merged {name} contains NaN or Inf: an input file is damaged; verify the downloads "
                        "(--sha256) and download the damaged files again")
    if outtype == "f16" and max(abs(hi), abs(lo)) > 65504:
        raise UserError(f"the merged {name} has values up to {max(abs(hi), abs(lo)):.4g}, beyond float16; "
                        "use --outtype bf16 or f32")


def _make_sink(fmt: str, target: Path, outtype: str, *, job: str, sha256: bool, extra: dict,
               max_shard_bytes: int | None, pth_shards: int | None, name: str):
    if fmt == "gguf":
        from .gguf_export import GGUFSink

        return GGUFSink(target, outtype=outtype, name=name)
    from .writers import DEFAULT_SHARD_BYTES, HFSink, PthSink

    if fmt == "hf":
        return HFSink(target, max_shard_bytes=max_shard_bytes or DEFAULT_SHARD_BYTES, dtype=_DTYPE[outtype],
                      job=job, sha256=sha256, extra_json=extra)
    return PthSink(target, n_shards=pth_shards, dtype=_DTYPE[outtype], job=job, sha256=sha256, extra_json=extra)


def merge(base: str | Path, loras: list[str | Path] | tuple = (), *, patch: str | Path | None = None,
          out: str | Path, fmt: str = "hf", outtype: str = "f16", overwrite: bool = False,
          verify_sha256: Mapping[str, str | Collection[str]] | None = None, write_sha256: bool = True,
          progress: bool = True, max_shard_bytes: int | None = None, pth_shards: int | None = None) -> MergeResult:
    """Merge ``loras`` (in order) and/or ``patch`` into ``base`` and write the result.

    Args:
        base: base model folder or hub id (HF safetensors / .bin shards, or Meta .pth).
        loras: LoRA folders or hub ids, applied in this order.
        patch: a full-weight delta checkpoint (Open-Chinese-LLaMA), added last.
        out: output folder (``hf``/``pth``), or ``.gguf`` file (a folder gets ``ggml-model-<outtype>.gguf``).
        fmt: ``hf``, ``pth`` or ``gguf``.
        outtype: ``f32``, ``f16``, ``bf16`` (any format) or ``q8_0`` (gguf only).
        overwrite: replace an existing output (only once the new one is complete).
        verify_sha256: ``{file name: digest(s)}`` that input files must match (``dir/name`` or ``name``).
        write_sha256: write a ``SHA256SUMS`` listing (a ``.sha256`` file beside a GGUF).
        progress: show a progress bar.
        max_shard_bytes: HF shard size (default 2 GiB).
        pth_shards: number of ``consolidated.NN.pth`` shards (default: as the releases).

    Raises:
        UserError: any problem with the inputs, found before anything is written.
    """
    from .env import available_ram_bytes, resolve_model
    from .sources import open_adapter, open_checkpoint
    from .util import progress as bar

    t0 = time.time()
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if outtype not in OUTTYPES or (outtype == "q8_0" and fmt != "gguf"):
        raise UserError(f"--outtype {outtype} is not available for --format {fmt}; use f16, bf16 or f32"
                        + (" (q8_0 is for gguf)" if outtype == "q8_0" else ""))
    loras = list(loras)
    target = _target(Path(out).expanduser(), fmt, outtype)
    job = _job(base, loras, patch, fmt, outtype)
    if not overwrite and _already_done(target, fmt, job):
        print(f"already merged into {target} (use --overwrite to merge again)")
        return MergeResult([target], 0, 0, seconds=time.time() - t0, peak_rss_bytes=_peak_rss(), already_merged=True)

    inputs = _Inputs(base=None)
    try:
        base_dir = resolve_model(base, what="base model")
        lora_dirs = [resolve_model(x, what="LoRA") for x in loras]
        patch_dir = resolve_model(patch, what="patch") if patch else None
        inputs.base = open_checkpoint(base_dir)
        for ref, d in zip(loras, lora_dirs):
            inputs.adapters.append((_label(ref), open_adapter(d)))
        if patch_dir is not None:
            inputs.patch, inputs.patch_label = open_checkpoint(patch_dir), _label(patch)
        if verify_sha256:
            print(f"verified SHA256 of {_verify_inputs(inputs, verify_sha256)} input files")
        plan, config, tok_dir, vocab = _prepare(inputs)
        largest = max(tp.numel for tp in plan) * 4
        out_bytes = int(sum(tp.numel for tp in plan) * _BYTES[outtype] * (2 if fmt == "pth" else 1)) + (16 << 20)
        require_free_disk(target.parent, out_bytes, what=f"the merged model ({fmt})")
        estimate = 2 * largest + (400 << 20)
        avail = available_ram_bytes()
        print(f"merging {len(plan)} tensors: {len(loras)} LoRA(s){' + patch' if patch else ''}, vocabulary "
              f"{inputs.base.shape('model.embed_tokens.weight')[0] if 'model.embed_tokens.weight' in inputs.base else '?'}"
              f" -> {vocab}; estimated peak RAM {human_bytes(estimate)}"
              + (f" ({human_bytes(avail)} available)" if avail else "") + f"; output {target}")
        fingerprint = json.dumps([job, [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in _all_files(inputs)]])
        extra: dict[str, Any] = {"merge.json": {"job": job, "vocab_size": vocab}}
        gen = base_dir / "generation_config.json" if base_dir.is_dir() else None
        extra["generation_config.json"] = (read_json(gen) if gen and gen.is_file() else
                                           {k: config[k] for k in ("bos_token_id", "eos_token_id") if k in config})
        if fmt == "pth":
            del extra["generation_config.json"]
        sink = _make_sink(fmt, target, outtype, job=fingerprint, sha256=write_sha256, extra=extra,
                          max_shard_bytes=max_shard_bytes, pth_shards=pth_shards,
                          name=_label(loras[-1] if loras else patch or base))
        target.parent.mkdir(parents=True, exist_ok=True)
        written = resumed = 0
        limit = int(os.environ.get(INTERRUPT_ENV, "0") or 0)
        try:
            sink.open(config=config, tokenizer_dir=tok_dir, plan=plan)
            for tp in bar(plan, total=len(plan), desc="merge", unit="tensor", disable=not progress or None):
                if sink.done(tp.name):
                    resumed += 1
                    continue
                w = _merged_tensor(tp.name, inputs)
                if tuple(w.shape) != tp.shape:
                    raise RuntimeError(f"{tp.name}: computed {tuple(w.shape)}, planned {tp.shape}")
                _check_values(tp.name, w, outtype)
                sink.write(tp.name, w)
                del w
                written += 1
                if limit and written >= limit:
                    raise KeyboardInterrupt
            if written + resumed != len(plan):
                raise RuntimeError(f"only {written + resumed} of {len(plan)} tensors were written")
            outputs = sink.close()
        except BaseException as exc:
            sink.abort()
            if isinstance(exc, UserError) and getattr(sink, "tmp", None) is not None:
                remove(sink.tmp)  # a bad input fails the same way next time: keep nothing for a resume
            raise
    finally:
        inputs.close()
    if fmt == "gguf" and write_sha256:
        from .export import write_checksum

        outputs = [*outputs, write_checksum(target)]
    result = MergeResult(list(outputs), vocab, written, resumed, time.time() - t0, _peak_rss())
    print(f"merged into {target}: {written} tensors written" + (f", {resumed} resumed" if resumed else "")
          + f", vocabulary {vocab}, {result.seconds:.1f} s, peak RSS {human_bytes(result.peak_rss_bytes)}")
    return result


def _all_files(inputs: _Inputs) -> list[Path]:
    files = list(inputs.base.files) + [f for _, a in inputs.adapters for f in a.files]
    return files + (list(inputs.patch.files) if inputs.patch is not None else [])


def _size(text: str) -> int:
    units = {"": 1, "B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper()
    num = t.rstrip("KMGB")
    try:
        return int(float(num) * units[t[len(num):]])
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 2GB, 500MB)") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m helpers merge``."""
    parser.add_argument("--base", required=True, help="base model: folder or hub id (HF or Meta .pth layout)")
    parser.add_argument("--lora", action="append", default=[], metavar="LORA",
                        help="LoRA folder or hub id; repeat to apply several, in order (Plus: LLaMA-Plus first)")
    parser.add_argument("--patch", help="full-weight delta to add (Open-Chinese-LLaMA patch)")
    parser.add_argument("--out", required=True, help="output folder (hf, pth) or .gguf file")
    parser.add_argument("--format", choices=FORMATS, default="hf", help="output format (default: hf)")
    parser.add_argument("--outtype", choices=OUTTYPES, default="f16", help="tensor type (default: f16)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--sha256", metavar="FILE", help="verify input files against this sha256sum listing")
    parser.add_argument("--no-sha256", action="store_true", help="do not write a SHA256SUMS listing of the outputs")
    parser.add_argument("--shard-size", type=_size, default=None, help="HF shard size limit (default 2GB)")
    parser.add_argument("--pth-shards", type=int, default=None, help="number of consolidated.NN.pth shards")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Run ``python -m helpers merge``."""
    if not args.lora and not args.patch:
        print("note: no --lora or --patch given; the base model is converted unchanged")
    expected = parse_sha256_file(args.sha256) if args.sha256 else None
    merge(args.base, args.lora, patch=args.patch, out=args.out, fmt=args.format, outtype=args.outtype,
          overwrite=args.overwrite, verify_sha256=expected, write_sha256=not args.no_sha256,
          progress=not args.no_progress, max_shard_bytes=args.shard_size, pth_shards=args.pth_shards)
    return 0
