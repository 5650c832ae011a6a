"""SPPO's trainer: squared regression of the log-ratio on the centred win rate."""

from __future__ import annotations

from dataclasses import dataclass, field

from align.objectives import SPPO, SPPOHard, SPPOSingle
from align.trainers.base import PreferenceConfig, PreferenceTrainer, objective_fields

__all__ = ["SPPOConfig", "SPPOTrainer"]

SPPO_OBJECTIVES = ("sppo", "sppo_single", "sppo_hard")


@dataclass
@objective_fields(SPPO, SPPOSingle, SPPOHard)
class SPPOConfig(PreferenceConfig):
    """``PreferenceConfig`` for :class:`align.objectives.SPPO` and its variants (η = 1/β, Δ = log π_θ − log π_t;
    ``beta`` and its default, the paper's 0.001, come from the objective):

    - ``sppo`` (the paper's): (Δ(y_w) − η(P̂_w − ½))² + (Δ(y_l) − η(P̂_l − ½))², needs ``win_rates``
    - ``sppo_single``: (Δ(y_w) − η(p − ½))² + (Δ(y_l) + η(p − ½))², needs ``pair_prob``
    - ``sppo_hard``: (Δ(y_w) − η/2)² + (Δ(y_l) + η/2)², needs only the pair (equals TRL's ``sppo_hard``)
    """

    objective: str = field(default="sppo", metadata={"help": f"One of {SPPO_OBJECTIVES}."})

    def __post_init__(self) -> None:
        if self.objective not in SPPO_OBJECTIVES:
            raise ValueError(f"SPPOConfig.objective must be one of {SPPO_OBJECTIVES}, got {self.objective!r}")
        super().__post_init__()


class SPPOTrainer(PreferenceTrainer):
    """Self-Play Preference Optimization (Wu et al. 2024, arXiv:2405.00675) on (y_w, y_l) pairs
    carrying the win rates P̂(y ≻ π_t) of each (``win_rates``) and p = P(y_w ≻ y_l) (``pair_prob``).
    The reference is π_t, the model at the start of the iteration: with a fresh trainer per
    iteration (align.loops), that is the policy it was given."""

    config_class = SPPOConfig
