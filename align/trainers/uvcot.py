"""UV-CoT's trainer: score-aware DPO on preferred vs dispreferred image regions + SFT on the winner."""

from __future__ import annotations

from dataclasses import dataclass

from align.objectives import UVCoT
from align.trainers.base import PreferenceConfig, PreferenceTrainer, objective_fields

__all__ = ["UVCoTConfig", "UVCoTTrainer"]


@dataclass
@objective_fields(UVCoT)
class UVCoTConfig(PreferenceConfig):
    """``PreferenceConfig`` for :class:`align.objectives.UVCoT`:
    ℓ = w_dpo · −log σ(β·(Δ(y_w) − Δ(y_l)) − γ·(s_w − s_l)) + w_sft · (−log π_θ(y_w|x)), summed
    log-probs; ``beta``, ``dpo_weight``, ``sft_weight`` and ``score_margin`` (γ) and their defaults
    (0.1, 0.1, 0.9, 0: the official code) come from the objective. γ > 0 needs a ``scores`` column."""

    objective: str = "uvcot"


class UVCoTTrainer(PreferenceTrainer):
    """Unsupervised Visual Chain-of-Thought (Zhao et al. 2025, arXiv:2504.18397) on (chosen,
    rejected) pairs of a vision-language model: the prompt holds the image and the question, each
    completion the proposed box, the crop it selects (its own ``chosen_images`` / ``rejected_images``)
    and the answer from it; only the box and answer turns are trained. The processor is the
    ``processing_class``; the reference may be any strategy (the official code precomputes it)."""

    config_class = UVCoTConfig
