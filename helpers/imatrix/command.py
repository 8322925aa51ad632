"""``python -m helpers imatrix --model MODEL.gguf [--text FILE] --out imatrix.gguf [--ctx N] [--chunks K]``.

The same computation as ``llama-imatrix -m MODEL -f FILE -c N --chunks K -o OUT``; without ``--text``, on the
default Chinese calibration text (:mod:`.calibration`, downloaded from the hub). The chunk flags are made from
:class:`~helpers.evaluate.ChunkSettings`' declarations.
"""
from __future__ import annotations

from dataclasses import MISSING, dataclass
from pathlib import Path

from ..evaluate import ChunkSettings
from ..util.params import Flags, param
from .route import IMATRIX_CHUNK


@dataclass(frozen=True, kw_only=True)
class ImatrixFiles:
    """The model, its calibration text and the matrix to write."""

    model: str = param(MISSING, "the GGUF to compute it on (F16, Q8_0, ...)")
    text: str | None = param(None, "calibration text, a UTF-8 file (default: the Chinese stories of the hub data set "
                             "hfl/cmrc2019, downloaded next to --out)")
    out: str = param(MISSING, "the importance matrix to write (GGUF format, *.gguf)")


OPTIONS = (ImatrixFiles, Flags(ChunkSettings, defaults={"n_ctx": IMATRIX_CHUNK}))


def main(files: ImatrixFiles, settings: ChunkSettings) -> int:
    """Compute the matrix; print what was written."""
    from .compute import compute_imatrix

    dataset, text = None, files.text
    if text is None:
        from .calibration import CALIBRATION_NAME, calibration_text

        text, dataset = calibration_text(Path(files.out).parent), CALIBRATION_NAME
    report = compute_imatrix(files.model, Path(text), files.out, settings=settings, dataset=dataset)
    print(f"wrote {report.path}: {report.entries} weights, {report.chunks} chunks of {report.chunk_size} tokens")
    return 0
