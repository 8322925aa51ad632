"""Running one fine-tuning on N processes: ``torchrun --nproc_per_node N -m helpers finetune ...`` or
``accelerate launch``.

Both launchers start the same command once per device and tell each copy who it is through the environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``); :func:`launch_context` reads it. The
transformers Trainer then joins the process group itself (NCCL on GPUs, gloo on CPUs). What this module adds:

- every check that can refuse a run happens on every rank from the same inputs, before any collective call,
  so a bad input stops all ranks at once; only rank 0 prints the ``error:`` line (:func:`quiet_unless_main`);
- :func:`check_launch`: the process count against the GPUs, ``--deepspeed`` without deepspeed, ZeRO-3 with 4-bit;
- :func:`barrier` between rank 0's writes and the other ranks' reads; :func:`note` prints on rank 0 only.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Mapping

from ..util import UserError


@dataclass(frozen=True)
class Launch:
    """Where this process stands in a multi-process run (a plain ``python`` run is rank 0 of 1).

    Attributes:
        rank: global rank; 0 writes every output.
        world_size: number of processes of the run.
        local_rank: rank on this machine (its GPU index).
        local_world_size: processes on this machine.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        """True on the process that writes the outputs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process trains."""
        return self.world_size > 1


def launch_context(environ: Mapping[str, str] | None = None) -> Launch:
    """The launch this process belongs to, from the variables torchrun and accelerate set.

    Raises:
        UserError: the variables contradict each other (a rank outside the world).
    """
    env = os.environ if environ is None else environ

    def number(name: str, default: int) -> int:
        try:
            return int(env.get(name, default))
        except ValueError:
            raise UserError(f"${name}={env.get(name)!r} is not a number; start the run with torchrun or "
                            "accelerate launch, which set it") from None

    world = number("WORLD_SIZE", 1)
    local_world = number("LOCAL_WORLD_SIZE", world)
    launch = Launch(number("RANK", 0), world, number("LOCAL_RANK", 0), local_world)
    if not (0 <= launch.rank < world and 0 <= launch.local_rank < local_world <= world):
        raise UserError(f"inconsistent launch: RANK={launch.rank}, WORLD_SIZE={world}, LOCAL_RANK={launch.local_rank},"
                        f" LOCAL_WORLD_SIZE={local_world}; start the run with torchrun or accelerate launch")
    return launch


def is_main_process() -> bool:
    """True unless this is a non-zero rank of a torchrun / accelerate launch."""
    return os.environ.get("RANK", "0") == "0"


def note(message: str) -> None:
    """Print a progress or note line on stderr, once per run (rank 0 only)."""
    if is_main_process():
        print(message, file=sys.stderr, flush=True)


RANK0_GRACE_SECONDS = 60.0  # how long a non-zero rank waits for rank 0 to report the error both met


def quiet_unless_main(exc: UserError) -> None:
    """On a non-zero rank, end the process with the error's exit status without printing: every rank meets the
    same bad input, and rank 0 alone says so in one ``error:`` line. The rank first waits (up to
    :data:`RANK0_GRACE_SECONDS`) so that rank 0 fails first: the launcher stops every worker at the first failure,
    and a rank that failed sooner would have rank 0 stopped before it printed its line."""
    if not is_main_process():
        time.sleep(RANK0_GRACE_SECONDS)  # the launcher ends this wait once rank 0 has failed
        raise SystemExit(2) from exc


def barrier() -> None:
    """Wait for every rank (nothing to wait for in a single-process run)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def check_launch(launch: Launch, *, gpus: int, deepspeed_stage: int | None, load_in_4bit: bool,
                 deepspeed_installed: bool) -> None:
    """Refuse launches that cannot work, before any process loads a model.

    Args:
        launch: this process's :class:`Launch`.
        gpus: CUDA devices visible to this process (0 on a CPU machine).
        deepspeed_stage: the ZeRO stage of ``--deepspeed`` (``None`` without DeepSpeed).
        load_in_4bit: QLoRA.
        deepspeed_installed: whether ``import deepspeed`` would work.

    Raises:
        UserError: more processes per machine than GPUs, a process count that does not divide the GPUs,
            ``--deepspeed`` without the package, or ZeRO-3 with 4-bit weights.
    """
    n = launch.local_world_size
    if gpus and (n > gpus or gpus % n):
        raise UserError(f"{n} processes per machine on {gpus} GPUs: each process trains on one GPU, so start "
                        f"--nproc_per_node {gpus} (or a number that divides {gpus}, with CUDA_VISIBLE_DEVICES "
                        "naming the GPUs to use)")
    if deepspeed_stage is not None and not deepspeed_installed:
        raise UserError("--deepspeed needs the deepspeed package, which is not installed: pip install deepspeed "
                        "(or train without --deepspeed: plain DDP)")
    if deepspeed_stage == 3 and load_in_4bit:
        raise UserError("ZeRO-3 partitions the weights, which cannot be 4-bit (QLoRA) here: use ZeRO-2 "
                        "(--deepspeed zero2) with --4bit, or ZeRO-3 without --4bit")
