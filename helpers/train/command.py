"""``python -m helpers finetune --base BASE --data FILE --out DIR [--mode sft|pt] [--4bit] ...``: one flag per
:class:`~.config.FinetuneConfig` and :class:`LaunchOptions` setting, made from their declarations; what the command
does with them: train, only check (``--check-only``, what each of ``--nproc`` processes would check), or write the
files of an N-GPU launch (``--write-launch DIR``).

The same command runs under ``torchrun --nproc_per_node N -m helpers finetune ...`` and ``accelerate launch``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ..util import UserError
from ..util.params import param
from .config import FinetuneConfig
from .dist import Launch, launch_context
from .launch import STRATEGIES


@dataclass(frozen=True)
class LaunchOptions:
    """How the command runs the fine-tune (not part of what is trained)."""

    check_only: bool = param(False, "make every check of the run, as each of --nproc processes would, then stop "
                             "(what launch.sh runs before torchrun)")
    nproc: int = param(1, "processes (GPUs) for --check-only / --write-launch", parse=int)
    write_launch: str | None = param(None, "write launch.sh and the DeepSpeed/accelerate configs for an --nproc GPU "
                                     "machine into DIR instead of training", metavar="DIR")
    strategy: str = param("zero2", "for --write-launch: plain DDP, DeepSpeed ZeRO-2 / ZeRO-3, or FSDP",
                          choices=tuple(STRATEGIES))
    gpu_memory: float | None = param(None, "for --write-launch: each GPU's memory, to check the per-GPU estimate "
                                     "against (e.g. 80)", parse=float, metavar="GiB")


OPTIONS = (FinetuneConfig, LaunchOptions)


def main(config: FinetuneConfig, launch: LaunchOptions) -> int:
    """Train (or check, or write the launch files), print the outcome and the merge command; the exit status."""
    from .finetune import finetune

    config = dataclasses.replace(config, live_plot=False)

    if launch.write_launch:
        return _write_launch(config, launch)
    if launch.check_only:
        return _check_only(config, launch.nproc)
    result = finetune(config)  # a bad input under torchrun: rank 0 alone says so (helpers.__main__)
    if not launch_context().is_main:
        return 0
    losses = f", loss {result.first_loss:.4f} -> {result.last_loss:.4f}" if result.losses else ""
    resumed = f" (resumed from {Path(result.resumed_from).name})" if result.resumed_from else ""
    procs = f" on {result.world_size} processes" if result.world_size > 1 else ""
    print(f"adapter written to {result.out}: {result.global_step} steps{procs}{resumed}{losses}, "
          f"{result.tokens_per_second:.0f} tokens/s")
    print(f"merge it with: python -m helpers merge --base {config.base} --lora {result.out} --out MERGED --format hf")
    return 0


def _check_only(config: FinetuneConfig, nproc: int) -> int:
    from .plan import plan_run

    if nproc < 1:
        raise UserError(f"--nproc {nproc}: at least one process")
    context = launch_context()
    plan_run(config, context if context.distributed else Launch(0, nproc, 0, nproc))
    print(f"finetune settings checked for {nproc} process(es): nothing stops the run")
    return 0


def _write_launch(config: FinetuneConfig, launch: LaunchOptions) -> int:
    from .launch import write_launch_files

    gpu = int(launch.gpu_memory * (1 << 30)) if launch.gpu_memory else None
    files = write_launch_files(config, nproc=launch.nproc, out_dir=launch.write_launch,
                               zero_stage=STRATEGIES[launch.strategy], fsdp=launch.strategy == "fsdp", gpu_bytes=gpu)
    for path in files.paths:
        print(f"wrote {path}")
    if files.memory is not None:
        print(files.memory.summary())
    print(f"on the {launch.nproc}-GPU machine: bash {files.script}")
    return 0
