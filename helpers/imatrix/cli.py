"""``python -m helpers imatrix --model MODEL.gguf [--text FILE] --out imatrix.gguf [--ctx N] [--chunks K]``.

The same computation as ``llama-imatrix -m MODEL -f FILE -c N --chunks K -o OUT``; without ``--text``, on the
default Chinese calibration text (:mod:`.calibration`, downloaded from the hub).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..evaluate import ChunkSettings
from ..evaluate.llama_chunks import DEFAULT_BATCH
from .route import IMATRIX_CHUNK


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m helpers imatrix``."""
    parser.add_argument("--model", required=True, help="the GGUF to compute it on (F16, Q8_0, ...)")
    parser.add_argument("--text", help="calibration text, a UTF-8 file (default: the Chinese stories of the hub data "
                                       "set hfl/cmrc2019, downloaded next to --out)")
    parser.add_argument("--out", required=True, help="the importance matrix to write (GGUF format, *.gguf)")
    parser.add_argument("--ctx", type=int, default=IMATRIX_CHUNK,
                        help=f"tokens per chunk (default {IMATRIX_CHUNK}, as llama-imatrix)")
    parser.add_argument("--chunks", type=int, default=None, help="at most this many chunks (default: all the text)")
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH,
                        help=f"tokens per batch (default {DEFAULT_BATCH}); batch/ctx chunks run side by side")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    parser.add_argument("--gpu-layers", type=int, default=-1, help="layers on the GPU with a CUDA build (-1: all)")


def run(args: argparse.Namespace) -> int:
    """Run ``python -m helpers imatrix``."""
    from .compute import compute_imatrix

    settings = ChunkSettings(n_ctx=args.ctx, chunks=args.chunks, n_batch=args.batch, threads=args.threads,
                             n_gpu_layers=args.gpu_layers)
    dataset = None
    text = args.text
    if text is None:
        from .calibration import CALIBRATION_NAME, calibration_text

        text, dataset = calibration_text(Path(args.out).parent), CALIBRATION_NAME
    report = compute_imatrix(args.model, Path(text), args.out, settings=settings, dataset=dataset)
    print(f"wrote {report.path}: {report.entries} weights, {report.chunks} chunks of {report.chunk_size} tokens")
    return 0
