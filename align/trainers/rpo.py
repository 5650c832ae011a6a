"""Iterative RPO's trainer: DPO + NLL on the winner (α = 0 is plain DPO)."""

from __future__ import annotations

from dataclasses import dataclass, field

from align.trainers.base import PreferenceConfig, PreferenceTrainer

__all__ = ["RPOConfig", "RPOTrainer"]


@dataclass
class RPOConfig(PreferenceConfig):
    """``PreferenceConfig`` for :class:`align.objectives.RPO`:
    ℓ = −log σ(β·(Δ(y_w) − Δ(y_l))) + α · (−log π_θ(y_w|x) / |y_w|)."""

    objective: str = "rpo"
    beta: float = field(default=0.1, metadata={"help": "DPO temperature β."})
    alpha: float = field(default=1.0, metadata={"help": "Weight α of the winner's per-token NLL (0: plain DPO)."})


class RPOTrainer(PreferenceTrainer):
    """Iterative Reasoning Preference Optimization (Pang et al. 2024, arXiv:2404.19733) on (chosen,
    rejected) pairs. The reference is the model at the start of the current iteration: with a
    fresh trainer per iteration, that is the policy it was given."""

    config_class = RPOConfig
