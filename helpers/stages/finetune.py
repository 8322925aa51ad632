"""Notebook 04: LoRA / QLoRA fine-tuning (instructions or continued pre-training) on a free T4, the adapter merged
into a GGUF with the same streaming merge as notebook 01, and the same training written out for N GPUs.

Every job has its own names (:mod:`.names`: the base, the mode, the data's name and a key of the data's content
and the settings), printed by the check, so a run with other data never lands on another job's adapter or GGUF. The
plan reads and checks ``DATA`` before anything is downloaded (:mod:`.finetune_data`), checks what QLoRA needs (a
CUDA GPU, bitsandbytes), the training memory, the access to a gated base, the download, the GGUF merge (the merge
planner) and the token a push needs. A job finished earlier (here or in the workspace) is recognised by the plan
from two small files: nothing is downloaded or trained. A rerun of an interrupted job resumes it; ``RESUME`` no
trains it again and replaces its own outputs.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import catalog
from ..colab import NO, OK, Need, Runtime, bytes_need, wheel_need
from ..colab.sizing import ModelFiles, model_files
from ..demo import sample_data
from ..gguf import FLOAT_TYPES
from ..hub import current_hub_id, is_local, resolve_model
from ..merge import MergeOptions, Recipe, ResourcePlan, merge, plan_resources
from ..publish import ReleaseCard
from ..train import (CHECKPOINTS, RESUME_CHOICES, STRATEGIES, FinetuneConfig, FinetuneResult, LaunchFiles, MemoryEstimate,
                     compare_answers, estimate_memory, finetune, finished_record, list_checkpoints, planned_job_key, result_from_record,
                     write_launch_files)
from ..util import UserError, human_bytes, read_json, write_json
from .base import Plan, Stage
from .finetune_data import data_report
from .form import param
from .names import FinetuneName
from .needs import GET_GPU, GET_LLAMA, MORE_DISK, MORE_RAM, access_needs, listing_fallback
from .workspace import AUTO, PUSH_HELP, WORKSPACE_HELP, Workspace, locate, push, push_needs

SAMPLE = "sample"  # the DATA value that trains on the shipped Chinese sample (of the chosen MODE)


@dataclass(frozen=True)
class FinetuneJob:
    """What the run does.

    Attributes:
        config: the training (``out``: this job's adapter folder on this runtime).
        name: the job's output names.
        gguf: the GGUF the adapter is merged into, on this runtime.
        finished: this job's finished adapter (here or in the workspace): nothing is trained.
        gguf_saved: this job's GGUF in the workspace: nothing is merged.
        merge: the GGUF merge's plan as the check made it (before the adapter exists: the base's part).
        redo: ``RESUME`` no: the job is trained again and its own GGUF replaced.
    """

    config: FinetuneConfig
    name: FinetuneName
    gguf: Path
    finished: Path | None = None
    gguf_saved: Path | None = None
    merge: ResourcePlan | None = None
    redo: bool = False

    @property
    def answers(self) -> Path:
        """Where the before/after answers of ``TEST_PROMPT`` are kept (beside the adapter)."""
        return self.gguf.with_name(f"{self.name.stem}-compare.json")


@dataclass(frozen=True)
class FinetuneStage(Stage[FinetuneJob]):
    """The fine-tuning notebook's form."""

    NOTEBOOK = "04_finetune_lora"
    SETUP = frozenset({"llama_cpp"})
    GPU = True

    base_model: str = param("chinese-alpaca-2-7b", "the model to teach (a full model from the catalog, a folder or a "
                            "hub id)", choices=catalog.names(kind="full"), allow_input=True)
    data: str = param(SAMPLE, "an Alpaca JSON/JSONL file (sft) or a .txt file or folder (pt), in the workspace or "
                      "here; a hub data set id (org/name); sample: a Chinese sample of the chosen MODE")
    mode: str = param("sft", "sft: instructions; pt: continued pre-training on plain text", choices=("sft", "pt"))
    load_in_4bit: bool = param(True, "QLoRA: the base in 4-bit NF4 (needs a CUDA GPU)")
    max_steps: int = param(100, "optimizer steps")
    learning_rate: float = param(1e-4, "learning rate")
    lora_r: int = param(64, "LoRA rank")
    lora_alpha: int = param(128, "LoRA scaling numerator")
    max_seq_length: int = param(512, "tokens per example (sft; a longer record is cut) or per block of text (pt)")
    resume: str = param("auto", "auto: continue an interrupted run of this job (new data or settings are a new job, "
                        "with its own names); yes: continue (refused without a checkpoint); no: train this job again, "
                        "replacing its own outputs", choices=RESUME_CHOICES)
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

    def smoke_values(self, demo: Path) -> dict[str, Any]:
        return {"load_in_4bit": False, "max_steps": 6, "learning_rate": 1e-3, "lora_r": 8, "lora_alpha": 16,
                "strategy": "ddp", "gpus": 2}  # a few CPU steps, two processes

    def settings(self) -> str:
        mode = "QLoRA 4-bit" if self.load_in_4bit else "LoRA"
        return f"{self.base_model} ({mode}, r={self.lora_r}, {self.mode})"

    def workspace_folder(self) -> Workspace:
        return Workspace.of(self.workspace, self.output_dir)

    def base_ref(self) -> str:
        """The base as the hub knows it (a catalog name's hub id), or the folder given."""
        return self.base_model if is_local(self.base_model) else current_hub_id(self.base_model)

    # ---------------------------------------------------------------------------------------------------- plan
    def job(self) -> FinetuneJob:
        """This form's job: its names, its configuration, and what an earlier session left of it."""
        out = Path(self.output_dir).expanduser()
        config = self.config(out / "unnamed")
        name = FinetuneName.of(self.base_model, self.mode, self.data, planned_job_key(config, self.base_ref()))
        config = dataclasses.replace(config, out=str(out / name.adapter), job_key=name.key)
        redo, ws = self.resume == "no", self.workspace_folder()
        finished = None if redo else next((f for f in (out / name.adapter, ws.find(name.adapter))
                                           if f is not None and finished_record(f, name.key)), None)
        gguf = out / name.gguf(self.outtype)
        saved = None if redo or gguf.is_file() else ws.find(gguf.name)
        return FinetuneJob(config, name, gguf, finished, saved, redo=redo)

    def make_plan(self, runtime: Runtime) -> Plan[FinetuneJob]:
        job = self.job()
        access = access_needs(("base model", self.base_model))
        notes = [f"job {job.name.key}: adapter {job.name.adapter}, GGUF {job.gguf.name} (kept in "
                 f"{self.workspace_folder().folder})",
                 *data_report(job.config, self.base_model, tokenizer=not access, limit_name=self._limit_name())]
        needs = [*access, *push_needs(self.push_to_hub), *self._resume_needs(job)]
        merging = job.gguf_saved is None and not job.gguf.is_file()
        files = model_files(self.base_model) if job.finished is None or merging or not self._answered(job) else None
        if job.finished is not None:
            steps = finished_record(job.finished, job.name.key)["global_step"]
            notes.append(f"{job.finished} holds this job, finished ({steps} steps): nothing to train")
        else:
            needs += self._training_needs(files.config, runtime)
        if merging:
            job = dataclasses.replace(job, merge=self._merge_plan(job, runtime, notes))
            needs += self._merge_needs(job.merge, runtime)
        elif job.finished is not None:
            notes.append(f"{job.gguf_saved or job.gguf} holds this job's GGUF: nothing to merge")
        needs.insert(0, self._disk_need(job, files, runtime))
        return Plan(self, runtime, needs, job, notes)

    def _limit_name(self) -> str:
        return next(f.name for f in self.form_fields() if f.attr == "max_seq_length")

    def _training_needs(self, model_config: dict, runtime: Runtime) -> list[Need]:
        """A CUDA GPU and bitsandbytes for QLoRA, and the training memory."""
        on_gpu = runtime.gpu is not None
        needs: list[Need] = []
        if self.load_in_4bit:
            needs.append(Need("GPU", "a CUDA GPU for 4-bit loading (bitsandbytes)", runtime.gpu or "none",
                              OK if on_gpu else NO, "" if on_gpu else GET_GPU))
            needs.append(wheel_need("bitsandbytes", runtime.bitsandbytes, fix="pip install bitsandbytes"))
        est = self._memory(model_config, runtime)
        needs.append(bytes_need("GPU memory" if on_gpu else "RAM", est.total_bytes, est.device_bytes,
                                fix="a smaller model or a lower rank",
                                detail=f"weights {human_bytes(est.weights_bytes)}, LoRA + Adam "
                                       f"{human_bytes(est.trainable_bytes)}, "
                                       f"activations {human_bytes(est.activation_bytes)}"))
        return needs

    def _memory(self, model_config: dict, runtime: Runtime) -> MemoryEstimate:
        on_gpu = runtime.gpu is not None
        return estimate_memory(model_config, load_in_4bit=self.load_in_4bit, lora_r=self.lora_r,
                               seq_len=self.max_seq_length, bytes_per_value=2 if on_gpu else 4,
                               device_bytes=runtime.vram if on_gpu else runtime.ram, device_name=runtime.gpu or "RAM")

    def _merge_plan(self, job: FinetuneJob, runtime: Runtime, notes: list[str]) -> ResourcePlan:
        """The merge planner's plan of the GGUF (the base's part: the adapter does not exist yet)."""
        options = MergeOptions(fmt="gguf", outtype=self.outtype, low_disk=False)
        return listing_fallback(notes, lambda offline: plan_resources(
            self.base_ref(), [], None, options=options, out=job.gguf, offline=offline, fresh=runtime.assumed,
            free_disk=runtime.disk, free_ram=runtime.ram))

    def _merge_needs(self, resources: ResourcePlan, runtime: Runtime) -> list[Need]:
        needs = [bytes_need("RAM (GGUF merge)", resources.ram_bytes, resources.free_ram, fix=MORE_RAM,
                            detail="peak of the streaming merge")]
        if self.outtype not in FLOAT_TYPES:
            needs.append(wheel_need("llama.cpp", runtime.llama_cpp, fix=GET_LLAMA))
        return needs

    def _disk_need(self, job: FinetuneJob, files: ModelFiles | None, runtime: Runtime) -> Need:
        """The base download (``files``: when training, merging or answering the test prompt needs it), the adapter
        with its checkpoint, and the GGUF."""
        parts, total = [], 0
        if files is not None:
            total += files.download(fresh=runtime.assumed)
            parts.append("base download")
        if job.finished is None and files is not None:
            total += self._memory(files.config, runtime).trainable_params * 4 * 4  # adapter + Adam checkpoint
            parts.append("adapter")
        if job.merge is not None:
            total += job.merge.output_bytes
            parts.append(f"{self.outtype} GGUF")
        return bytes_need("disk", total, runtime.disk, fix=MORE_DISK, detail=" + ".join(parts) or "nothing new")

    def _resume_needs(self, job: FinetuneJob) -> list[Need]:
        """``RESUME`` yes needs a checkpoint of this job, here or in the workspace (an earlier session's)."""
        out = Path(job.config.out)
        if self.resume != "yes" or job.finished is not None:
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
                              max_seq_length=self.max_seq_length, block_size=self.max_seq_length,
                              load_in_4bit=self.load_in_4bit, resume=self.resume)

    def candidate_fixes(self, plan: Plan[FinetuneJob]) -> list[dict[str, Any]]:
        fixes: list[dict[str, Any]] = [{"load_in_4bit": not self.load_in_4bit}]
        if self.resume == "yes":
            fixes.append({"resume": "auto"})
        fixes += [{"lora_r": r} for r in (32, 16, 8) if r < self.lora_r]
        fixes += [{"max_seq_length": n} for n in (256,) if n < self.max_seq_length]
        return fixes + ([{"push_to_hub": ""}] if self.push_to_hub else [])

    # ---------------------------------------------------------------------------------------------------- run
    def execute(self, plan: Plan[FinetuneJob]) -> FinetuneResult:
        """Train the job (or take its finished adapter) and save the adapter to the workspace."""
        job: FinetuneJob = plan.job
        if job.finished is not None:
            record = finished_record(job.finished, job.name.key)
            print(f"{job.finished} holds this job's adapter ({record['global_step']} steps): nothing to train")
            result = result_from_record(job.finished, record)
        else:
            result = finetune(dataclasses.replace(job.config, base=str(resolve_model(self.base_model))))
        self.workspace_folder().save([result.out], job=job.name.key, replace=job.redo)
        return result

    @staticmethod
    def _job_of(plan: Plan[FinetuneJob], result: FinetuneResult) -> FinetuneJob:
        """The plan's job, refused when ``result`` is another job's (the form changed after the check cell)."""
        job: FinetuneJob = plan.job
        if result.out.name != job.name.adapter:
            raise UserError(f"{result.out.name} is not the job the check planned ({job.name.adapter}): the parameters "
                            "changed after the check cell; run the check cell again, then the cells after it")
        return job

    def _answered(self, job: FinetuneJob) -> bool:
        return self._saved_answers(job) is not None

    def _saved_answers(self, job: FinetuneJob) -> dict | None:
        """The before/after answers of ``TEST_PROMPT`` kept from an earlier run of this job (None: none)."""
        if job.redo:
            return None
        for path in (job.answers, self.workspace_folder().find(job.answers.name)):
            saved = read_json(path, default=None) if path is not None and path.is_file() else None
            if isinstance(saved, dict) and saved.get("prompt") == self.test_prompt:
                return saved
        return None

    def compare(self, plan: Plan[FinetuneJob], result: FinetuneResult) -> tuple[str, str]:
        """``TEST_PROMPT`` answered by the base model and by the base with the new adapter (kept beside the adapter
        and in the workspace, so a rerun of the finished job shows them without loading anything)."""
        job = self._job_of(plan, result)
        saved = self._saved_answers(job)
        if saved is None:
            c = compare_answers(str(resolve_model(self.base_model)), result.adapter_dir, self.test_prompt,
                                max_new_tokens=32)
            saved = {"prompt": self.test_prompt, "before": c.before, "after": c.after}
            write_json(job.answers, saved)
            self.workspace_folder().save([job.answers], job=job.name.key, replace=job.redo)
        else:
            print("(answered when this job was trained)")
        print("before:", saved["before"])
        print("after: ", saved["after"])
        return saved["before"], saved["after"]

    def to_gguf(self, plan: Plan[FinetuneJob], result: FinetuneResult) -> Path:
        """The adapter merged into the base as this job's ``OUTTYPE`` GGUF (quantized in the same pass, planned by
        the merge planner with the adapter now there), saved to the workspace, and with the adapter pushed to
        ``PUSH_TO_HUB`` when asked; this job's GGUF already in the workspace is taken as it is."""
        job = self._job_of(plan, result)
        gguf = job.gguf_saved or job.gguf
        if job.gguf_saved is None:
            resources = plan_resources(self.base_ref(), [str(result.adapter_dir)], options=job.merge.options
                                       if job.merge is not None else MergeOptions(fmt="gguf", outtype=self.outtype),
                                       out=job.gguf)
            if resources.refusal():
                raise UserError(f"the GGUF merge of {job.name.adapter}: {resources.refusal()}")
            merge(Recipe(self.base_ref(), (str(result.adapter_dir),)), job.gguf,
                  MergeOptions(fmt="gguf", outtype=self.outtype, replace=job.redo), resources)
            self.workspace_folder().save([job.gguf], job=job.name.key, replace=job.redo)
        print(gguf, human_bytes(gguf.stat().st_size))
        how = f"fine-tuned by notebook 04_finetune_lora: {self.settings()}, {self.max_steps} steps"
        push([result.adapter_dir], self.push_to_hub, ReleaseCard(self.base_model, kind="adapter", how=how))
        push([gguf], self.push_to_hub, ReleaseCard(self.base_model, (str(result.adapter_dir),), kind="gguf",
                                                   quant=self.outtype, how=how))
        return gguf

    def outgrow(self, plan: Plan[FinetuneJob]) -> LaunchFiles:
        """``launch.sh`` and the accelerate / DeepSpeed configs that train the same job on ``GPUS`` GPUs, with the
        memory each GPU needs; written into this job's own launch folder beside the adapter."""
        job: FinetuneJob = plan.job
        files = write_launch_files(job.config, nproc=self.gpus, out_dir=Path(job.config.out).with_name(
            job.name.launch), zero_stage=STRATEGIES[self.strategy], fsdp=self.strategy == "fsdp",
                                   gpu_bytes=int(self.gpu_memory_gb * (1 << 30)))
        print(files.memory.summary() if files.memory is not None else "memory per GPU: unknown for this base")
        print(f"wrote {', '.join(str(p) for p in files.paths)}; on the big machine: bash {files.script}")
        return files

    def headless(self, plan: Plan[FinetuneJob], result: FinetuneResult) -> FinetuneReport:
        """The notebook's cells after the training, as ``python -m helpers run`` carries them out: the answers
        before and after, the GGUF, the launch files."""
        self.compare(plan, result)
        gguf = self.to_gguf(plan, result)
        return FinetuneReport(result, gguf, self.gpus, self.outgrow(plan).script)


@dataclass(frozen=True)
class FinetuneReport:
    """What ``python -m helpers run 04_finetune_lora`` made: the adapter, its GGUF and the launch script."""

    result: FinetuneResult
    gguf: Path
    gpus: int
    script: Path

    def summary(self) -> str:
        return "\n".join([self.result.summary(), f"GGUF {self.gguf} ({human_bytes(self.gguf.stat().st_size)})",
                          f"launch files for {self.gpus} GPUs: bash {self.script}"])
