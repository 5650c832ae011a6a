"""Process-group setup that multi-process CPU runs need, applied before the Trainer builds its state."""

from __future__ import annotations

import os

import torch

__all__ = ["configure_cpu_distributed", "configure_cpu_threads", "env_flag", "finish_distributed"]


def env_flag(name: str) -> bool:
    """Whether the environment variable `name` is set to 1, true or yes (as accelerate sets its flags)."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def configure_cpu_distributed() -> bool:
    """On a machine without CUDA, start accelerate's state on the gloo backend when the run uses
    DeepSpeed; return True when it did. (Plain multi-process CPU runs need nothing: accelerate
    already starts DDP on gloo for ``ACCELERATE_USE_CPU=true accelerate launch --multi_gpu``.)

    Why: without it, accelerate (1.15) lets DeepSpeed pick its own backend on CPU and the Trainer
    then trips on a train-batch-size assertion, because the DeepSpeed world size and accelerate's
    disagree. Building ``PartialState(backend="gloo")`` first and telling the TrainingArguments to
    reuse it (``accelerator_config.use_configured_state``) makes both see the same process group.
    GPU runs are left to accelerate's defaults (NCCL).
    """
    if torch.cuda.is_available() or not env_flag("ACCELERATE_USE_DEEPSPEED"):
        return False
    # DeepSpeed brings its own CPU accelerator; accelerate's use_cpu path on top of it leaves the
    # AcceleratorState half-built ("no attribute 'mixed_precision'"), so the flag must not reach it.
    os.environ.pop("ACCELERATE_USE_CPU", None)
    from accelerate import PartialState

    PartialState(backend="gloo")
    return True


def configure_cpu_threads() -> int | None:
    """Use every available core in a single-process CPU run started by ``accelerate launch``;
    return the thread count when it changed it.

    Why: unless ``--cpu`` is passed, ``accelerate launch`` exports ``OMP_NUM_THREADS=1`` for its
    child (a sensible default for several processes per machine), which halves the speed of a
    lone CPU process on a 2-core machine. Several processes, GPUs, or a thread count other than
    1 are left alone.
    """
    launched_by_accelerate = "ACCELERATE_MIXED_PRECISION" in os.environ
    single = int(os.environ.get("WORLD_SIZE", "1")) == 1
    if torch.cuda.is_available() or not (launched_by_accelerate and single) or os.environ.get("OMP_NUM_THREADS") != "1":
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cores <= 1 or torch.get_num_threads() != 1:
        return None
    torch.set_num_threads(cores)
    return cores


def finish_distributed(accelerator) -> None:
    """End a run's processes together: a barrier, then the process group torn down explicitly
    (``accelerator``: an ``Accelerator`` or a ``PartialState``).

    Left to interpreter exit, or destroyed by one rank while another is still writing its files,
    gloo under DeepSpeed can abort ("terminate called without an active exception") after the
    work is done, turning a finished run into a failed exit code."""
    accelerator.wait_for_everyone()
    if hasattr(accelerator, "end_training"):
        accelerator.end_training()
    else:  # a PartialState
        accelerator.destroy_process_group()
