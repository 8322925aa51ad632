"""Notebook 04: LoRA / QLoRA fine-tuning (instructions or continued pre-training) on a free T4, the adapter merged
into a GGUF with the same streaming merge as notebook 01, and the same training written out for N GPUs.

The plan checks what QLoRA needs (a CUDA GPU, bitsandbytes), the training memory, the download and the token a push
needs; the run trains exactly the planned configuration. A rerun resumes only the same job (data, base, LoRA
settings, steps): new data trains from scratch unless ``RESUME`` says otherwise.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import catalog
from ..colab import NO, OK, Need, Runtime, bytes_need, wheel_need
from ..colab.sizing import model_files
from ..demo import sample_data
from ..hub import resolve_model
from ..merge import merge
from ..publish import ReleaseCard, copy_to_workspace
from ..train import (CHECKPOINTS, RESUME_CHOICES, FinetuneConfig, FinetuneResult, LaunchFiles, compare_answers, estimate_memory,
                     finetune, list_checkpoints, write_launch_files)
from ..util import human_bytes
from .base import Plan, Stage
from .form import param
from .needs import GET_GPU, MORE_DISK
from .workspace import AUTO, PUSH_HELP, WORKSPACE_HELP, Workspace, locate, push, push_needs

SAMPLE = "sample"  # the DATA value that trains on the shipped Chinese sample (of the chosen MODE)
STRATEGIES = {"zero2": 2, "ddp": None, "zero3": 3, "fsdp": None}  # -> DeepSpeed ZeRO stage


def adapter_name(base: str, mode: str) -> str:
    """What a fine-tune of ``base`` is called in the workspace: ``chinese-alpaca-2-7b-sft-lora``."""
    return f"{Path(base.rstrip('/')).name}-{mode}-lora"


@dataclass(frozen=True)
class FinetuneJob:
    """What the run trains: the configuration, where the adapter goes, and the GGUF it is merged into."""

    config: FinetuneConfig
    gguf: Path


@dataclass(frozen=True)
class FinetuneStage(Stage):
    """The fine-tuning notebook's form."""

    NOTEBOOK = "04_finetune_lora"
    SETUP = frozenset({"llama_cpp"})
    GPU = True

    base_model: str = param("chinese-alpaca-2-7b", "the model to teach (a full model from the catalog, a folder or a "
                            "hub id)", choices=catalog.names(kind="full"), allow_input=True)
    data: str = param(SAMPLE, "an Alpaca JSON file (sft) or a .txt file or folder (pt), in the workspace or here; a "
                      "hub data set id (org/name); sample: a Chinese sample of the chosen MODE")
    mode: str = param("sft", "sft: instructions; pt: continued pre-training on plain text", choices=("sft", "pt"))
    load_in_4bit: bool = param(True, "QLoRA: the base in 4-bit NF4 (needs a CUDA GPU)")
    max_steps: int = param(100, "optimizer steps")
    learning_rate: float = param(1e-4, "learning rate")
    lora_r: int = param(64, "LoRA rank")
    lora_alpha: int = param(128, "LoRA scaling numerator")
    resume: str = param("auto", "auto: continue an interrupted run of the same job, start fresh when the data, base, "
                        "LoRA settings or steps changed; yes: continue (refused when the job changed); no: start fresh",
                        choices=RESUME_CHOICES)
    outtype: str = param("q4_k_m", "the GGUF the adapter is merged into", choices=("q4_k_m", "q8_0", "f16"))
    output_dir: str = param("/content/finetune", "where the adapter, the loss curve and the GGUF are written on "
                            "this runtime")
    workspace: str = param(AUTO, WORKSPACE_HELP)
    push_to_hub: str = param("", PUSH_HELP)
    test_prompt: str = param("请计算三加五等于多少？", "a question answered before and after training")
    gpus: int = param(8, "Outgrow Colab: GPUs of the machine the launch script is written for")
    strategy: str = param("zero2", "Outgrow Colab: DeepSpeed ZeRO-2 (as the releases were trained), DDP, ZeRO-3 or "
                          "FSDP", choices=tuple(STRATEGIES))
    gpu_memory_gb: float = param(80.0, "Outgrow Colab: memory of each of those GPUs, in GB")

    def settings(self) -> str:
        mode = "QLoRA 4-bit" if self.load_in_4bit else "LoRA"
        return f"{self.base_model} ({mode}, r={self.lora_r}, {self.mode})"

    def workspace_folder(self) -> Workspace:
        return Workspace.of(self.workspace, self.output_dir)

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
        needs += push_needs(self.push_to_hub)
        out = Path(self.output_dir).expanduser()
        needs += self._resume_needs(out / adapter_name(self.base_model, self.mode))
        gguf = out / f"{adapter_name(self.base_model, self.mode).removesuffix('-lora')}-{self.outtype}.gguf"
        return Plan(self, runtime, needs, FinetuneJob(self.config(out / adapter_name(self.base_model, self.mode)),
                                                      gguf))

    def _resume_needs(self, out: Path) -> list[Need]:
        """``RESUME`` yes needs a checkpoint, here or in the workspace (an earlier session's)."""
        if self.resume != "yes":
            return []
        saved = self.workspace_folder().find(out.name)
        if any(list_checkpoints(folder / CHECKPOINTS)[0] for folder in (out, saved) if folder is not None):
            return []
        return [Need("a checkpoint to resume", f"checkpoints in {out / CHECKPOINTS}", "none", NO, "")]

    def config(self, out: Path) -> FinetuneConfig:
        """The training configuration these parameters describe (the data found in the workspace, or as given)."""
        data = (str(sample_data(self.output_dir, mode=self.mode)) if self.data == SAMPLE
                else locate(self.data, self.workspace_folder()))
        return FinetuneConfig(base=self.base_model, data=data, out=str(out), mode=self.mode, max_steps=self.max_steps,
                              lr=self.learning_rate, lora_r=self.lora_r, lora_alpha=self.lora_alpha,
                              load_in_4bit=self.load_in_4bit, resume=self.resume)

    def candidate_fixes(self, plan: Plan) -> list[dict[str, Any]]:
        fixes: list[dict[str, Any]] = [{"load_in_4bit": not self.load_in_4bit}]
        if self.resume == "yes":
            fixes.append({"resume": "auto"})
        fixes += [{"lora_r": r} for r in (32, 16, 8) if r < self.lora_r]
        return fixes + ([{"push_to_hub": ""}] if self.push_to_hub else [])

    # ---------------------------------------------------------------------------------------------------- run
    def execute(self, plan: Plan) -> FinetuneResult:
        job: FinetuneJob = plan.job
        out = Path(job.config.out)
        saved = self.workspace_folder().find(out.name)
        if saved is not None and not out.exists():  # an earlier session's run: continue it, or reuse it when done
            copy_to_workspace(saved, out.parent)
        config = dataclasses.replace(job.config, base=str(resolve_model(self.base_model)))
        result = finetune(config)
        self.workspace_folder().save([out])
        return result

    def compare(self, result: FinetuneResult) -> tuple[str, str]:
        """``TEST_PROMPT`` answered by the base model and by the base with the new adapter."""
        c = compare_answers(str(resolve_model(self.base_model)), result.adapter_dir, self.test_prompt,
                            max_new_tokens=32)
        print("before:", c.before)
        print("after: ", c.after)
        return c.before, c.after

    def to_gguf(self, plan: Plan, result: FinetuneResult) -> Path:
        """The adapter merged into the base as an ``OUTTYPE`` GGUF (quantized in the same pass), saved to the
        workspace, and with the adapter pushed to ``PUSH_TO_HUB`` when asked."""
        job: FinetuneJob = plan.job
        base = str(resolve_model(self.base_model))
        merge(base, [str(result.adapter_dir)], out=job.gguf, fmt="gguf", outtype=self.outtype, replace=True)
        print(job.gguf, human_bytes(job.gguf.stat().st_size))
        self.workspace_folder().save([job.gguf])
        how = f"fine-tuned by notebook 04_finetune_lora: {self.settings()}, {self.max_steps} steps"
        push([result.adapter_dir], self.push_to_hub, ReleaseCard(self.base_model, kind="adapter", how=how))
        push([job.gguf], self.push_to_hub, ReleaseCard(self.base_model, (str(result.adapter_dir),), kind="gguf",
                                                       quant=self.outtype, how=how))
        return job.gguf

    def outgrow(self, plan: Plan) -> LaunchFiles:
        """``launch.sh`` and the accelerate / DeepSpeed configs that train the same job on ``GPUS`` GPUs, with the
        memory each GPU needs; written next to the adapter."""
        job: FinetuneJob = plan.job
        files = write_launch_files(job.config, nproc=self.gpus, out_dir=Path(self.output_dir).expanduser() / "launch",
                                   zero_stage=STRATEGIES[self.strategy], fsdp=self.strategy == "fsdp",
                                   gpu_bytes=int(self.gpu_memory_gb * (1 << 30)))
        print(files.memory.summary() if files.memory is not None else "memory per GPU: unknown for this base")
        print(f"wrote {', '.join(str(p) for p in files.paths)}; on the big machine: bash {files.script}")
        return files
