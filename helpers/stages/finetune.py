"""Notebook 04: LoRA / QLoRA fine-tuning (instructions or continued pre-training) on a free T4, then the adapter
merged into a GGUF with the same streaming merge as notebook 01.

The plan checks what QLoRA needs (a CUDA GPU, bitsandbytes), the training memory, and the download; the run
trains exactly the planned configuration.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import catalog
from ..colab import NO, OK, Need, Runtime, bytes_need, wheel_need
from ..colab.sizing import model_files
from ..demo import sample_data
from ..hub import resolve_model
from ..merge import merge
from ..train import FinetuneConfig, FinetuneResult, compare_answers, estimate_memory, finetune
from ..util import human_bytes
from .base import Plan, Stage
from .form import param
from .needs import GET_GPU, MORE_DISK

SAMPLE = "sample"  # the DATA value that trains on the shipped Chinese sample (of the chosen MODE)


@dataclass(frozen=True)
class FinetuneJob:
    """What the run trains: where the adapter goes, and whether the base is loaded in 4-bit."""

    out: Path
    load_in_4bit: bool


@dataclass(frozen=True)
class FinetuneStage(Stage):
    """The fine-tuning notebook's form."""

    NOTEBOOK = "04_finetune_lora"
    SETUP = frozenset()
    GPU = True

    base_model: str = param("chinese-alpaca-2-7b", "the model to teach (a full model from the catalog, a folder or a "
                            "hub id)", choices=catalog.names(kind="full"), allow_input=True)
    data: str = param(SAMPLE, "an Alpaca JSON file (sft) or a .txt file or folder (pt); sample: a Chinese sample")
    mode: str = param("sft", "sft: instructions; pt: continued pre-training on plain text", choices=("sft", "pt"))
    load_in_4bit: bool = param(True, "QLoRA: the base in 4-bit NF4 (needs a CUDA GPU)")
    max_steps: int = param(100, "optimizer steps")
    learning_rate: float = param(1e-4, "learning rate")
    lora_r: int = param(64, "LoRA rank")
    lora_alpha: int = param(128, "LoRA scaling numerator")
    output_dir: str = param("/content/finetune", "where the adapter, the loss curve and the GGUF go")
    test_prompt: str = param("请计算三加五等于多少？", "a question answered before and after training")

    def settings(self) -> str:
        mode = "QLoRA 4-bit" if self.load_in_4bit else "LoRA"
        return f"{self.base_model} ({mode}, r={self.lora_r}, {self.mode})"

    # ---------------------------------------------------------------------------------------------------- plan
    def make_plan(self, runtime: Runtime) -> Plan:
        files = model_files(self.base_model)
        on_gpu = runtime.gpu is not None
        needs: list[Need] = []
        if self.load_in_4bit:
            needs.append(Need("GPU", "a CUDA GPU for 4-bit loading (bitsandbytes)", runtime.gpu or "none",
                              OK if on_gpu else NO, "" if on_gpu else GET_GPU))
            needs.append(wheel_need("bitsandbytes", runtime.bitsandbytes, fix="pip install bitsandbytes"))
        est = estimate_memory(files.config, load_in_4bit=self.load_in_4bit, lora_r=self.lora_r,
                              bytes_per_value=2 if on_gpu else 4, device_bytes=runtime.vram if on_gpu else runtime.ram,
                              device_name=runtime.gpu or "RAM")
        needs.append(bytes_need("GPU memory" if on_gpu else "RAM", est.total_bytes, est.device_bytes,
                                fix="a smaller model or a lower rank",
                                detail=f"weights {human_bytes(est.weights_bytes)}, LoRA + Adam "
                                       f"{human_bytes(est.trainable_bytes)}, "
                                       f"activations {human_bytes(est.activation_bytes)}"))
        adapter = est.trainable_params * 4 * 4  # the adapter and a checkpoint with its two Adam moments
        needs.insert(0, bytes_need("disk", files.download(fresh=runtime.assumed) + adapter, runtime.disk,
                                   fix=MORE_DISK, detail="base download + adapter"))
        return Plan(self, runtime, needs, FinetuneJob(Path(self.output_dir).expanduser(), self.load_in_4bit))

    def candidate_fixes(self, plan: Plan) -> list[dict[str, Any]]:
        fixes: list[dict[str, Any]] = [{"load_in_4bit": not self.load_in_4bit}]
        fixes += [{"lora_r": r} for r in (32, 16, 8) if r < self.lora_r]
        return fixes

    # ---------------------------------------------------------------------------------------------------- run
    def data_path(self) -> str:
        """The training data: the user's file, or the shipped sample of the chosen mode."""
        return str(sample_data(self.output_dir, mode=self.mode)) if self.data == SAMPLE else self.data

    def execute(self, plan: Plan) -> FinetuneResult:
        job: FinetuneJob = plan.job
        config = FinetuneConfig(base=str(resolve_model(self.base_model)), data=self.data_path(), out=str(job.out),
                                mode=self.mode, max_steps=self.max_steps, lr=self.learning_rate, lora_r=self.lora_r,
                                lora_alpha=self.lora_alpha, load_in_4bit=job.load_in_4bit)
        print(config)
        return finetune(config)

    def compare(self, result: FinetuneResult) -> tuple[str, str]:
        """``TEST_PROMPT`` answered by the base model and by the base with the new adapter."""
        c = compare_answers(str(resolve_model(self.base_model)), result.adapter_dir, self.test_prompt,
                            max_new_tokens=32)
        print("before:", c.before)
        print("after: ", c.after)
        return c.before, c.after

    def to_gguf(self, result: FinetuneResult) -> Path:
        """The adapter merged into the base, as an F16 GGUF beside it (quantize it with notebook 02)."""
        out = Path(self.output_dir).expanduser() / "finetuned-f16.gguf"
        merge(str(resolve_model(self.base_model)), [str(result.adapter_dir)], out=out, fmt="gguf", outtype="f16")
        print(out, human_bytes(out.stat().st_size))
        return out
