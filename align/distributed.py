"""Process-group setup that multi-process CPU runs need, applied before the Trainer builds its state."""

from __future__ import annotations

import os

import torch

__all__ = ["configure_cpu_distributed"]


def _env_true(name: str) -> bool:
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
    if torch.cuda.is_available() or not _env_true("ACCELERATE_USE_DEEPSPEED"):
        return False
    # DeepSpeed brings its own CPU accelerator; accelerate's use_cpu path on top of it leaves the
    # AcceleratorState half-built ("no attribute 'mixed_precision'"), so the flag must not reach it.
    os.environ.pop("ACCELERATE_USE_CPU", None)
    from accelerate import PartialState

    PartialState(backend="gloo")
    return True
