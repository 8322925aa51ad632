"""From the same parameters to an N-GPU machine: DeepSpeed and accelerate configs and a ``launch.sh``.

- :func:`deepspeed_preset` / :func:`deepspeed_config`: ZeRO-2 as the authors trained (their
  ``ds_zero2_no_offload.json``: dynamic fp16 loss scaling from 2^16 with a window of 100 and hysteresis 2,
  100M-element all-gather and reduce buckets, overlapped communication, reduce-scatter, contiguous gradients,
  batch sizes, accumulation and clipping left to the Trainer with ``"auto"``), with a bf16 section for GPUs
  that have it, and a minimum loss scale of 1 where theirs says 1e-10 (DeepSpeed 0.19 refuses a fraction there);
  ZeRO-3 partitions the weights too and gathers the 16-bit weights for saving. ``--deepspeed``
  takes ``zero2``, ``zero3`` or a JSON file.
- :func:`accelerate_config`: the YAML that ``accelerate launch --config_file`` reads (DDP, DeepSpeed or FSDP).
- :func:`write_launch_files`: ``launch.sh`` (a one-process check of the settings, then ``torchrun`` or
  ``accelerate launch`` of ``python -m helpers finetune`` with the same arguments), the configs, and the memory
  estimate per GPU.
"""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..util import UserError, atomic_path, write_json

if TYPE_CHECKING:
    from .config import FinetuneConfig
    from .memory import MemoryEstimate

ZERO_BUCKET = 100_000_000  # elements per all-gather / reduce bucket (the authors' 1e8)
# the ways a launch spreads one job over N GPUs -> its DeepSpeed ZeRO stage (None: not DeepSpeed); the first is the
# default (the releases were trained with ZeRO-2)
STRATEGIES: dict[str, int | None] = {"zero2": 2, "ddp": None, "zero3": 3, "fsdp": None}


def deepspeed_preset(stage: int, *, offload: bool = False) -> dict:
    """A DeepSpeed config for ZeRO ``stage`` 2 or 3 (``offload``: optimizer states, and for ZeRO-3 the weights,
    in CPU memory)."""
    if stage not in (2, 3):
        raise UserError(f"ZeRO stage {stage}: the shipped configs are stage 2 and 3")
    zero: dict = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True, "reduce_bucket_size": ZERO_BUCKET}
    if stage == 2:
        zero.update(allgather_partitions=True, allgather_bucket_size=ZERO_BUCKET, reduce_scatter=True)
    else:
        zero.update(stage3_prefetch_bucket_size=ZERO_BUCKET, stage3_param_persistence_threshold=100_000,
                    stage3_max_live_parameters=1_000_000_000, stage3_max_reuse_distance=1_000_000_000,
                    stage3_gather_16bit_weights_on_model_save=True)
    if offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return {
        "fp16": {"enabled": "auto", "loss_scale": 0, "loss_scale_window": 100, "initial_scale_power": 16,
                 "hysteresis": 2, "min_loss_scale": 1},
        "bf16": {"enabled": "auto"},
        "zero_optimization": zero,
        "gradient_accumulation_steps": "auto", "gradient_clipping": "auto", "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto", "steps_per_print": 2000, "wall_clock_breakdown": False,
    }


def zero_stage(ds_config: dict) -> int:
    """The ZeRO stage a DeepSpeed config asks for (0 when it has no ``zero_optimization``)."""
    return int((ds_config.get("zero_optimization") or {}).get("stage", 0))


def deepspeed_config(spec: str) -> dict:
    """``zero2`` / ``zero3`` as :func:`deepspeed_preset`, or a DeepSpeed JSON file, checked.

    Raises:
        UserError: an unreadable file, or a ZeRO stage outside 0..3.
    """
    if spec in ("zero2", "zero3"):
        return deepspeed_preset(int(spec[-1]))
    try:
        data = json.loads(Path(spec).read_text(encoding="utf-8"))
        stage = zero_stage(data) if isinstance(data, dict) else -1
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError, ValueError, AttributeError) as exc:
        raise UserError(f"--deepspeed {spec} is not a DeepSpeed JSON config ({exc}); or give zero2 / zero3") from None
    if stage not in (0, 1, 2, 3):
        raise UserError(f"--deepspeed {spec}: zero_optimization.stage must be 0, 1, 2 or 3")
    return data


def accelerate_config(strategy: str, *, nproc: int, ds_file: str | None = None) -> str:
    """The YAML of an ``accelerate launch --config_file`` for one machine with ``nproc`` GPUs.

    Args:
        strategy: ``ddp``, ``zero2``, ``zero3`` (DeepSpeed, reading ``ds_file``) or ``fsdp`` (full sharding of
            each decoder layer, original parameters kept for LoRA, full state dict on save).
        nproc: processes (one per GPU).
        ds_file: the DeepSpeed JSON file name, beside the YAML.
    """
    if strategy not in STRATEGIES:
        raise UserError(f"strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
    kind = {"ddp": "MULTI_GPU", "fsdp": "FSDP"}.get(strategy, "DEEPSPEED")
    lines = ["compute_environment: LOCAL_MACHINE", f"distributed_type: {kind}", "machine_rank: 0",
             "num_machines: 1", f"num_processes: {nproc}", "gpu_ids: all", "mixed_precision: 'no'",
             "rdzv_backend: static", "same_network: true", "use_cpu: false"]
    if kind == "DEEPSPEED":  # a relative file name is read from the folder accelerate launch runs in
        lines += ["deepspeed_config:", f"  deepspeed_config_file: {ds_file}", "  zero3_init_flag: false"]
    if kind == "FSDP":
        lines += ["fsdp_config:", "  fsdp_version: 1", "  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP",
                  "  fsdp_transformer_layer_cls_to_wrap: LlamaDecoderLayer", "  fsdp_sharding_strategy: FULL_SHARD",
                  "  fsdp_state_dict_type: FULL_STATE_DICT", "  fsdp_use_orig_params: true",
                  "  fsdp_sync_module_states: true", "  fsdp_cpu_ram_efficient_loading: true",
                  "  fsdp_offload_params: false", "  fsdp_backward_prefetch: BACKWARD_PRE"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class LaunchFiles:
    """What :func:`write_launch_files` wrote.

    Attributes:
        script: ``launch.sh``.
        accelerate: the accelerate YAML.
        deepspeed: the DeepSpeed JSON (``None`` for DDP and FSDP).
        memory: the estimate per GPU for the chosen strategy (``None`` when the base's shape is unknown here).
    """

    script: Path
    accelerate: Path
    deepspeed: Path | None
    memory: MemoryEstimate | None

    @property
    def paths(self) -> list[Path]:
        """Every file written."""
        return [p for p in (self.script, self.accelerate, self.deepspeed) if p is not None]


def _write(path: Path, text: str, *, mode: int = 0o644) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
        tmp.chmod(mode)
    return path


def _script(config: FinetuneConfig, strategy: str, *, nproc: int, ds_file: str | None, yaml_file: str,
            memory: MemoryEstimate | None) -> str:
    from ..util.params import to_arguments

    launcher = (f'accelerate launch --config_file "$HERE/{yaml_file}" --num_processes "$NPROC" -m helpers finetune'
                if strategy == "fsdp" else
                '"$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$NPROC" -m helpers finetune')
    ds_args = f' --deepspeed "$HERE/{ds_file}"' if ds_file else ""
    args, pairs = to_arguments(config), []
    for a in args:  # one flag (and its value) per line
        if a.startswith("--") or not pairs:
            pairs.append([a])
        else:
            pairs[-1].append(a)
    quoted = "\n    ".join(" ".join(shlex.quote(a) for a in pair) for pair in pairs)
    lines = [
        "#!/usr/bin/env bash",
        f"# Fine-tuning on {nproc} GPUs ({strategy}); written by helpers.train.write_launch_files.",
        f"# {memory.summary()}" if memory is not None else "# memory estimate: unknown here",
        "# On the GPU machine: bash launch.sh (NPROC=4 bash launch.sh on 4 GPUs; ZeRO needs pip install deepspeed)",
        "set -euo pipefail",
        'HERE=$(cd "$(dirname "$0")" && pwd)',
        f"NPROC=${{NPROC:-{nproc}}}",
        "PYTHON=${PYTHON:-python}",
        f"ARGS=(\n    {quoted}\n)",
        "# 1. every check each process would make, once: a bad setting stops here with one error line",
        f'"$PYTHON" -m helpers finetune "${{ARGS[@]}}"{ds_args} --check-only --nproc "$NPROC"',
        "# 2. the run: one process per GPU; rank 0 writes the adapter, loss.csv and the checkpoints",
        f'exec {launcher} "${{ARGS[@]}}"{ds_args}',
    ]
    return "\n".join(lines) + "\n"


def write_launch_files(config: FinetuneConfig, *, nproc: int, out_dir: str | Path, zero_stage: int | None = 2,
                       fsdp: bool = False, offload: bool = False, gpu_bytes: int | None = None,
                       gpu_name: str = "GPU") -> LaunchFiles:
    """Write ``launch.sh``, ``accelerate.yaml`` and (ZeRO) ``ds_zero{2,3}.json`` into ``out_dir``.

    Args:
        config: the run's settings (the notebook's parameters form).
        nproc: GPUs of the target machine (one process each).
        out_dir: where the files go.
        zero_stage: 2 or 3 for DeepSpeed ZeRO, ``None`` or 0 for plain DDP.
        fsdp: FSDP through accelerate instead (``zero_stage`` is then ignored).
        offload: ZeRO with optimizer states (and ZeRO-3 weights) in CPU memory.
        gpu_bytes, gpu_name: the target GPU's memory and name, to say whether the estimate fits (e.g. 80 GiB).

    Raises:
        UserError: ``nproc`` below 1, a ZeRO stage other than 2 or 3, or ZeRO-3 / FSDP with 4-bit weights.
    """
    from .memory import memory_per_gpu

    if nproc < 1:
        raise UserError(f"nproc = {nproc}: the machine needs at least one GPU")
    strategy = "fsdp" if fsdp else {z: n for n, z in STRATEGIES.items() if n != "fsdp"}.get(zero_stage or None, "")
    if not strategy:
        raise UserError(f"ZeRO stage {zero_stage}: use 2 or 3 (or None for plain DDP)")
    if config.load_in_4bit and strategy in ("zero3", "fsdp"):
        raise UserError(f"{strategy} partitions the weights, which cannot be 4-bit (QLoRA) here: use zero2 or ddp "
                        "with 4-bit, or drop 4-bit")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ds = None
    if strategy.startswith("zero"):
        ds = out / f"ds_{strategy}.json"
        write_json(ds, deepspeed_preset(int(strategy[-1]), offload=offload))
    yaml = _write(out / "accelerate.yaml", accelerate_config(strategy, nproc=nproc, ds_file=ds.name if ds else None))
    memory = memory_per_gpu(config, nproc=nproc, zero_stage=int(strategy[-1]) if ds else 0, fsdp=fsdp,
                            gpu_bytes=gpu_bytes, gpu_name=gpu_name)
    script = _write(out / "launch.sh", _script(config, strategy, nproc=nproc, ds_file=ds.name if ds else None,
                                               yaml_file=yaml.name, memory=memory), mode=0o755)
    return LaunchFiles(script, yaml, ds, memory)
