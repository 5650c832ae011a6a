"""Iterative RPO's trainer: DPO + NLL on the winner (α = 0 is plain DPO)."""

from __future__ import annotations

from dataclasses import dataclass

from align.objectives import RPO
from align.trainers.base import PreferenceConfig, PreferenceTrainer, objective_fields

__all__ = ["RPOConfig", "RPOTrainer"]


@dataclass
@objective_fields(RPO)
class RPOConfig(PreferenceConfig):
    """``PreferenceConfig`` for :class:`align.objectives.RPO`:
    ℓ = −log σ(β·(Δ(y_w) − Δ(y_l))) + α · (−log π_θ(y_w|x) / |y_w|); ``beta`` and ``alpha`` (and
    their defaults, β = 0.1, α = 1) come from the objective."""

    objective: str = "rpo"


class RPOTrainer(PreferenceTrainer):
    """Iterative Reasoning Preference Optimization (Pang et al. 2024, arXiv:2404.19733) on (chosen,
    rejected) pairs. The reference is the model at the start of the current iteration: with a
    fresh trainer per iteration, that is the policy it was given."""

    config_class = RPOConfig
