"""The importance-matrix route to a low-bit GGUF: merge to Q8_0 (or F16), compute the importance matrix of that
merge on calibration text, quantize it to the low-bit type with the matrix, delete the intermediate.

An importance matrix must be computed on the model it is used for, so a low-bit type (IQ3_XXS, IQ3_S, IQ4_XS,
Q3_K_M, Q2_K ...) made from LoRA releases takes two passes over the merged weights:

1. the streaming merge (:func:`helpers.merge.merge`, low-disk mode where needed) writes an intermediate GGUF:
   ``f16`` (exact: the result is byte for byte what ``llama-quantize --imatrix`` makes from the F16, the same as
   ``merge --imatrix`` in one pass) or ``q8_0`` (half the disk; the low-bit type is then quantized from Q8_0
   values, llama-quantize's ``--allow-requantize``, which costs a little quality);
2. :func:`~helpers.imatrix.compute.compute_imatrix` runs it over the calibration text (on the GPU with a CUDA build);
3. llama.cpp's quantizer (:func:`helpers.gguf.quantize`) writes the low-bit GGUF with the matrix (plus its
   Modelfile and checksum);
4. the intermediate is deleted; the importance matrix is kept beside the output (``<stem>.imatrix.gguf``, a few
   MB), so the model can be requantized to another type later without computing it again.

Peak disk: the downloads (or one base shard in low-disk mode) + the intermediate + the output.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from ..evaluate import ChunkSettings
from ..gguf import FLOAT_TYPES, NEEDS_IMATRIX, QuantizeOptions, gguf_outtype, gguf_sidecars, quantize
from ..merge import MergeOptions, Recipe, ResourcePlan, merge
from ..merge.options import gguf_target
from ..util import UserError, remove
from ..util.params import param
from .compute import ImatrixReport, compute_imatrix

INTERMEDIATES = ("q8_0", "f16")
IMATRIX_CHUNK = ChunkSettings().n_ctx  # tokens per chunk: llama-imatrix's default context
# Importance-matrix tokens per second of a 7B model: "cpu" measured by benchmarks/imatrix_quality.py (62 s per 1000
# tokens on 2 cores, like free Colab's CPU runtime); "gpu" a rough figure for a T4 (llama.cpp's CUDA prompt speed
# for a 7B, ~1.2k tokens/s, slowed by copying every matrix multiplication's input back to the host)
IMATRIX_TOKENS_PER_SECOND_7B = {"cpu": 16.0, "gpu": 400.0}
PARAMS_7B = 6.74e9
# Types for which the route is worth its forward pass: those llama.cpp refuses without a matrix, and the other
# types below 4.5 bits per weight, whose error the matrix lowers most (benchmarks/imatrix_quality.py)
ROUTE_TYPES = NEEDS_IMATRIX | {"iq3_s", "iq3_m", "iq4_xs", "iq4_nl", "q2_k", "q3_k_s", "q3_k_m", "q3_k_l"}


def imatrix_seconds(params: float, tokens: int, *, gpu: bool) -> float:
    """A rough time for the importance matrix of a ``params``-parameter model over ``tokens`` tokens (scaled from
    :data:`IMATRIX_TOKENS_PER_SECOND_7B`; good to a factor of about two)."""
    rate = IMATRIX_TOKENS_PER_SECOND_7B["gpu" if gpu else "cpu"] * PARAMS_7B / max(params, 1.0)
    return tokens / rate


GPU_HEADROOM = 0.85  # share of free GPU memory the offloaded layers may fill (the rest: KV cache, buffers, CUDA)


def offload_layers(model_bytes: int, n_layers: int, vram: int | None) -> int:
    """How many of a ``model_bytes`` model's ``n_layers`` layers to put on a GPU with ``vram`` free bytes: -1 (all)
    when it fits or there is no GPU, else as many as fit (the rest runs on the CPU instead of running out of GPU
    memory: a 33B Q8_0, 32 GB, on a 15 GB T4)."""
    if not vram or model_bytes <= vram * GPU_HEADROOM:
        return -1
    return max(0, int(n_layers * vram * GPU_HEADROOM / model_bytes))


def route_recommended(outtype: str) -> bool:
    """True when ``outtype`` (a GGUF type name) is best made through the importance-matrix route."""
    return gguf_outtype(outtype, imatrix=True) in ROUTE_TYPES


@dataclass(frozen=True)
class RouteResult:
    """What :func:`imatrix_route` produced.

    Attributes:
        output: the low-bit GGUF; imatrix: the importance matrix (kept); report: how it was computed.
    """

    output: Path
    imatrix: Path
    report: ImatrixReport


def intermediate_path(target: Path, intermediate: str) -> Path:
    """Where the route writes its intermediate GGUF (beside the output; a rerun resumes it)."""
    return target.with_name(f"{target.stem}.{intermediate}-intermediate.gguf")


def imatrix_path(target: Path) -> Path:
    """Where the route keeps the importance matrix of the GGUF ``target``: ``<stem>.imatrix.gguf`` beside it."""
    return target.with_name(f"{target.stem}.imatrix.gguf")


@dataclass(frozen=True)
class RouteOptions:
    """How the importance-matrix route runs; each field declared once.

    Attributes:
        outtype: a llama.cpp quantization type (``iq3_xxs``, ``iq3_s``, ``iq4_xs``, ``q3_k_m``, ``q2_k`` ...).
        intermediate: ``q8_0`` (default: half the disk of F16) or ``f16`` (exact).
        calibration: a UTF-8 text file to compute the matrix on (default: the Chinese calibration set,
            :func:`helpers.imatrix.calibration.calibration_text`, downloaded beside the output).
        settings: chunk size, number of chunks, threads, GPU layers of the importance-matrix run (default: chunks
            of 512 tokens over the whole text).
        low_disk: the merge's low-disk mode when no plan is given (None: only when the planner says it is needed).
        awq: AWQ search results the merge applies to the intermediate (:mod:`helpers.merge.awq`), so the matrix is
            computed on, and the low-bit type quantized from, the AWQ-adjusted weights.
        progress: progress bars.
    """

    outtype: str = param("iq4_xs", "the low-bit type", metavar="TYPE")
    intermediate: str = param("q8_0", "the merge's intermediate GGUF", choices=INTERMEDIATES)
    calibration: str | Path | None = param(None, "calibration text, a UTF-8 file (default: the Chinese stories of "
                                           "hfl/cmrc2019)", metavar="FILE")
    settings: ChunkSettings = ChunkSettings()
    low_disk: bool | None = param(None, "the merge's low-disk mode (default: as the planner decides)")
    awq: str | Path | None = param(None, "AWQ search results applied by the merge (llm-awq's .pt dump)",
                                   metavar="FILE_OR_HUB_FILE")
    progress: bool = param(True, "no progress bars")


def imatrix_route(recipe: Recipe, out: str | Path, options: RouteOptions, plan: ResourcePlan | None = None
                  ) -> RouteResult:
    """Merge, compute the importance matrix, quantize to ``options.outtype`` with it, delete the intermediate.

    Args:
        recipe: the base, the LoRAs in order, the patch (folders, hub ids or catalog names).
        out: the output ``.gguf`` (or a folder: ``ggml-model-<outtype>.gguf`` in it).
        options: the type, the intermediate, the calibration text and the rest (:class:`RouteOptions`).
        plan: the merge's plan for the intermediate made beforehand (a notebook's check): the merge executes it as
            it is instead of planning and listing the hub again.

    Raises:
        UserError: a float ``outtype``, an unknown intermediate, or anything the merge, the computation or the
            quantizer refuses (one line each).
    """
    outtype, intermediate, calibration = options.outtype, options.intermediate, options.calibration
    outtype = gguf_outtype(outtype, imatrix=True)
    if outtype in FLOAT_TYPES:
        raise UserError(f"{outtype} is not quantized and takes no importance matrix; merge to it directly")
    if intermediate not in INTERMEDIATES:
        raise UserError(f"unknown intermediate {intermediate!r}; use one of {', '.join(INTERMEDIATES)}")
    target = gguf_target(out, outtype)
    middle = intermediate_path(target, intermediate)
    imatrix = imatrix_path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"imatrix route: merge to {intermediate}, importance matrix, then {outtype}", file=sys.stderr)
    merge(recipe, middle, MergeOptions(fmt="gguf", outtype=intermediate, write_sha256=False, progress=options.progress,
                                       low_disk=options.low_disk, awq=options.awq), plan)
    dataset = None
    if calibration is None:
        from .calibration import CALIBRATION_NAME, calibration_text

        calibration, dataset = calibration_text(target.parent), CALIBRATION_NAME
    report = compute_imatrix(middle, Path(calibration), imatrix, settings=options.settings, dataset=dataset,
                             show_progress=options.progress)
    quantize(middle, target, QuantizeOptions(qtype=outtype, imatrix=imatrix, requantize=intermediate != "f16"))
    for path in (middle, *gguf_sidecars(middle)):
        remove(Path(path))
    return RouteResult(target, imatrix, report)
