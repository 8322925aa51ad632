"""``python -m helpers imatrix --model MODEL.gguf [--text FILE] --out imatrix.gguf [--ctx N] [--chunks K]``.

The same computation as ``llama-imatrix -m MODEL -f FILE -c N --chunks K -o OUT``; without ``--text``, on the
default Chinese calibration text (:mod:`.calibration`, downloaded from the hub). The chunk flags are made from
:class:`~helpers.evaluate.ChunkSettings`' declarations.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..evaluate import ChunkSettings
from ..util.params import add_arguments as option_arguments, from_arguments
from .route import IMATRIX_CHUNK


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m helpers imatrix``."""
    parser.add_argument("--model", required=True, help="the GGUF to compute it on (F16, Q8_0, ...)")
    parser.add_argument("--text", help="calibration text, a UTF-8 file (default: the Chinese stories of the hub data "
                                       "set hfl/cmrc2019, downloaded next to --out)")
    parser.add_argument("--out", required=True, help="the importance matrix to write (GGUF format, *.gguf)")
    option_arguments(parser, ChunkSettings, defaults={"n_ctx": IMATRIX_CHUNK})


def run(args: argparse.Namespace) -> int:
    """Run ``python -m helpers imatrix``."""
    from .compute import compute_imatrix

    dataset = None
    text = args.text
    if text is None:
        from .calibration import CALIBRATION_NAME, calibration_text

        text, dataset = calibration_text(Path(args.out).parent), CALIBRATION_NAME
    report = compute_imatrix(args.model, Path(text), args.out, settings=from_arguments(ChunkSettings, args),
                             dataset=dataset)
    print(f"wrote {report.path}: {report.entries} weights, {report.chunks} chunks of {report.chunk_size} tokens")
    return 0
