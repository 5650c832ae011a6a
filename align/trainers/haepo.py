"""HAEPO's trainer: Plackett-Luce weights over K sampled completions, pushed toward high returns."""

from __future__ import annotations

from dataclasses import dataclass

from align.objectives import HAEPO
from align.trainers.base import PreferenceConfig, PreferenceTrainer, objective_fields

__all__ = ["HAEPOConfig", "HAEPOTrainer"]


@dataclass
@objective_fields(HAEPO)
class HAEPOConfig(PreferenceConfig):
    """``PreferenceConfig`` for :class:`align.objectives.HAEPO`:
    ℓ = −Σ_k w_k R̃_k − λ_H·H + λ_KL·KL(π_θ ‖ π_prev), w = softmax(L / τ) over the group's
    whole-trajectory log-likelihoods. ``tau``, ``return_norm``, ``entropy_coef``, ``kl_coef``,
    ``kl_estimator``, ``length_normalize`` and their defaults come from the objective."""

    objective: str = "haepo"

    def __post_init__(self) -> None:
        if self.objective != "haepo":
            raise ValueError(f"HAEPOConfig.objective must be 'haepo', got {self.objective!r}")
        super().__post_init__()


class HAEPOTrainer(PreferenceTrainer):
    """History-Aggregated Exploratory Policy Optimization (Trivedi et al. 2025, arXiv:2508.18884)
    on lists of K completions per prompt with a return each (``returns``; K may differ between
    rows, shorter lists are masked). One packed forward over every completion of the batch gives
    the summed log-likelihoods, the token entropies of the sampled tokens and, with the reference,
    the per-token log-probs for the KL.

    The reference is the frozen previous policy π_prev: with a fresh trainer per iteration
    (align.loops), the policy it was given (with LoRA, the fresh adapter switched off).
    ``haepo/ess`` (the weights' effective sample size) near 1 means one completion holds all the
    weight (summed log-likelihoods of long completions differ by many nats): the preference
    gradient then nearly vanishes; ``length_normalize`` or a larger ``tau`` spread the weight."""

    config_class = HAEPOConfig
