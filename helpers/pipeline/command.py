"""``python -m helpers pipeline [--out DIR] [--model NAME] [--type TYPE]``: the offline demo job."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..util.params import param
from . import DEFAULT_MODEL, DEFAULT_PROMPT, run_pipeline


@dataclass(frozen=True)
class PipelineOptions:
    """:func:`~helpers.pipeline.run_pipeline`'s arguments."""

    out: str = param("out/demo", "output folder")
    model: str = param(DEFAULT_MODEL, "catalog name of the LoRA release to merge")
    qtype: str = param("q4_k_m", "quantization type", flag="--type")
    prompt: str = param(DEFAULT_PROMPT, "question for the model")
    max_new_tokens: int = param(32, "tokens of the reply at most", parse=int)


OPTIONS = (PipelineOptions,)


def main(options: PipelineOptions) -> int:
    """Run the demo job."""
    run_pipeline(**dataclasses.asdict(options))
    return 0
