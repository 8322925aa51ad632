"""The offline demo job, end to end: demo assets -> merge, quantized in the same pass -> a reply.

It runs notebook 01's own stage (:class:`helpers.stages.MergeStage`: the LoRA merged into its base and written as a
quantized GGUF tensor by tensor, with no F16 file in between), then the llama.cpp back end, with the real defaults
(``meta-llama/Llama-2-7b-hf`` + ``hfl/chinese-alpaca-2-lora-7b``) resolved to the tiny demo stand-ins through
``HELPERS_LOCAL_MODELS``. On CPU it takes a few seconds after setup; a second run reuses the merge.

- :func:`run_pipeline`; :mod:`.command`: ``python -m helpers pipeline``.
"""
from __future__ import annotations

import time
from pathlib import Path

from ..chat import load_backend
from ..demo import use_demo_assets
from ..stages import MergeStage
from ..util import human_bytes

DEFAULT_MODEL = "chinese-alpaca-2-7b-lora"
DEFAULT_PROMPT = "请详细介绍一下北京的名胜古迹。"


class _Timer:
    """Named steps' wall times, printed as each ends."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.t0 = time.perf_counter()

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name], self.t0 = now - self.t0, now
        print(f"[{name}] done in {self.timings[name]:.1f}s", flush=True)


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
    timer = _Timer()
    assets = use_demo_assets(out / "assets", through_hub=False)  # offline whatever HF_ENDPOINT says
    timer.done("demo assets")
    stage = MergeStage(model=model, outtype=qtype, imatrix="no", output_dir=str(out))
    print(f"merging {model} into its base, quantized to {qtype} in the same pass (offline stand-ins from {assets})",
          flush=True)
    result = stage.check().run()
    timer.done(f"merge -> GGUF {qtype}")
    quant = result.outputs[0]
    backend = load_backend(str(quant), backend="llama.cpp")
    reply = backend.chat(prompt, max_new_tokens=max_new_tokens, temperature=0.0, do_sample=False)
    timer.done("reply")
    sizes = {quant.name: quant.stat().st_size}
    print()
    for name, size in sizes.items():
        print(f"  {name:28s} {human_bytes(size)}")
    print(f"  template: {backend.template}")
    print(f"  prompt:   {prompt}")
    print(f"  reply:    {reply!r}")
    print("(the demo models are tiny and random, so the reply is not meaningful; in Colab the same steps run on the "
          "real models)")
    return {"quant": quant, "sizes": sizes, "reply": reply, "timings": timer.timings,
            "template": backend.template}
