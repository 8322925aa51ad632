"""``python -m helpers imatrix``: llama.cpp's importance matrix of a GGUF on a text, computed by llama.cpp itself.

:func:`compute_imatrix` is ``llama-imatrix -m MODEL -f TEXT -c N [--chunks K] -o OUT`` through llama-cpp-python:
the same tokenization and chunks (:class:`~helpers.evaluate.llama_chunks.ChunkRunner`), the same statistics
collected from inside llama.cpp's graph by its eval callback (:class:`~helpers.imatrix.collect.ActivationCollector`:
per block weight, the sums of squared activations per input column and the number of rows), written in its GGUF
format (:func:`helpers.gguf.imatrix.write_imatrix`), so ``llama-quantize --imatrix``, the ``quantize`` command and the
streaming merge (``merge --imatrix``) read it. On the CPU, with the same threads, the file is the tool's byte for
byte (``tests/test_imatrix.py``). With a CUDA build of llama-cpp-python the model runs on the GPU (the activations
are copied to the host for the sums).

It costs one forward pass over the text: on free Colab's T4 a 7B model at Q8_0 takes about a minute per 100
chunks of 512 tokens; on its two CPU cores far longer (``benchmarks/imatrix_quality.py`` measures the CPU here).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..evaluate import ChunkRunner, ChunkSettings
from ..evaluate.llama_chunks import chunk_count
from ..evaluate.perplexity import read_text
from ..gguf.imatrix import ImatrixStats, write_imatrix
from ..util import UserError, human_bytes, progress
from .collect import ActivationCollector


@dataclass(frozen=True)
class ImatrixReport:
    """What :func:`compute_imatrix` did.

    Attributes:
        path: the importance matrix written.
        chunks: chunks of text evaluated; chunk_size: tokens per chunk.
        entries: weights with statistics.
        seconds: wall time of the forward passes (loading not counted).
    """

    path: Path
    chunks: int
    chunk_size: int
    entries: int
    seconds: float

    @property
    def tokens(self) -> int:
        """Tokens evaluated."""
        return self.chunks * self.chunk_size

    @property
    def seconds_per_1k_tokens(self) -> float:
        """Wall time per 1000 tokens of text."""
        return 1000.0 * self.seconds / max(self.tokens, 1)


def _text_and_name(text: str | Path, dataset: str | None) -> tuple[str, str]:
    """The text (a trailing newline dropped, as llama.cpp's ``-f`` does) and the name recorded for it."""
    is_file = isinstance(text, Path) or (isinstance(text, str) and "\n" not in text and len(text) < 4096
                                         and Path(text).is_file())
    body = read_text(Path(text) if is_file else text)
    if body.endswith("\n"):
        body = body[:-1]
    return body, dataset or (str(text) if is_file else "text")


def compute_imatrix(model: str | Path, text: str | Path, out: str | Path, *, settings: ChunkSettings | None = None,
                    dataset: str | None = None, show_progress: bool = True) -> ImatrixReport:
    """Compute llama.cpp's importance matrix of ``model`` on ``text`` and write it to ``out`` (GGUF format).

    Args:
        model: a GGUF file (any type llama.cpp runs: F16, Q8_0 ...; the matrix depends on the activations, which
            quantization changes little).
        text: calibration text, or a path to a UTF-8 file (a ``Path``, or a string naming an existing file).
        out: the ``.gguf`` to write (atomically; llama-imatrix's default name is ``imatrix.gguf``).
        settings: chunk size (default 512, llama-imatrix's), number of chunks (default: all the text fills),
            batch, threads, GPU layers.
        dataset: the name recorded in ``imatrix.datasets`` (default: the text file's path as given).
        show_progress: a progress bar over the chunks.

    Raises:
        UserError: no llama-cpp-python, a file llama.cpp cannot load, a text shorter than two chunks, a model
            with mixture-of-experts layers, non-finite activations.
    """
    settings = settings or ChunkSettings()
    body, name = _text_and_name(text, dataset)
    out = Path(out)
    if out.suffix != ".gguf":
        raise UserError(f"{out}: the importance matrix is written in llama.cpp's GGUF format; name it *.gguf")
    collector = ActivationCollector()
    with ChunkRunner(model, settings, cb_eval=collector.callback) as runner:
        tokens = runner.tokenize(body)
        n_chunks = chunk_count(len(tokens), settings, what="the importance matrix")
        print(f"imatrix: {Path(model).name}, {n_chunks} chunks of {settings.n_ctx} tokens "
              f"({len(tokens)} tokens of text)", file=sys.stderr)
        start = time.perf_counter()
        runner.run(tokens, n_chunks, outputs="all",
                   progress=lambda it: progress(it, desc="imatrix", unit="batch", disable=not show_progress or None))
        seconds = time.perf_counter() - start
    collector.check()
    if not collector.sums:
        raise UserError(f"no block weights of {model} were seen; is it a llama-architecture GGUF?")
    import numpy as np

    stats = ImatrixStats(sums={n: s.astype(np.float32)[None, :] for n, s in collector.sums.items()},
                         counts={n: np.array([c], dtype=np.float32) for n, c in collector.counts.items()},
                         chunk_count=n_chunks, chunk_size=settings.n_ctx, datasets=(name,))
    write_imatrix(out, stats)
    report = ImatrixReport(out, n_chunks, settings.n_ctx, len(stats.sums), seconds)
    print(f"imatrix: {report.entries} weights, {report.tokens} tokens in {seconds:.1f}s "
          f"({report.seconds_per_1k_tokens:.2f} s per 1000 tokens) -> {out} ({human_bytes(out.stat().st_size)})",
          file=sys.stderr)
    return report
