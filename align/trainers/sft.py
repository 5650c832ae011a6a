"""Supervised fine-tuning on demonstrations, through the same spine as the preference methods."""

from __future__ import annotations

from dataclasses import dataclass

from align.objectives import SFT
from align.trainers.base import PreferenceConfig, PreferenceTrainer, objective_fields

__all__ = ["SFTConfig", "SFTTrainer"]


@dataclass
@objective_fields(SFT)
class SFTConfig(PreferenceConfig):
    """``PreferenceConfig`` for :class:`align.objectives.SFT`: ℓ = −log π_θ(y|x) / |y| per example
    (``length_normalize: false``: summed), over the assistant turns of single completions."""

    objective: str = "sft"


class SFTTrainer(PreferenceTrainer):
    """SFT on single completions (``{"prompt", "completion"}`` rows; text or images, single- or
    multi-turn), with the packing, distributed and data-validation paths of every other method.
    Warm-up stages use it (UV-CoT's 10%-labelled variant), so they need no second training stack."""

    config_class = SFTConfig
