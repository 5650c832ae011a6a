"""Self-Play Preference Optimization: the soft (paper), single-probability and hard variants."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from align.objectives.base import (
    CompletionGroups,
    GroupShape,
    Objective,
    ObjectiveOutput,
    Requirements,
    _check_positive,
    register_objective,
)
from align.objectives.dpo import pair_metrics

__all__ = ["SPPO", "SPPOHard", "SPPOSingle"]


@register_objective("sppo")
@dataclass
class SPPO(Objective):
    """Self-Play Preference Optimization (Wu et al. 2024, arXiv:2405.00675; code: uclaml/SPPO).

    With η = 1/β, Δ taken against π_t (the iteration's starting model) and the estimated win rates
    P̂(y ≻ π_t) = (1/K) Σ_j P(y ≻ y_j) stored with each pair:

        ℓ = (Δ(y_w) − η(P̂_w − ½))² + (Δ(y_l) − η(P̂_l − ½))²

    Each completion's log-ratio is regressed onto η times its advantage over the policy, so P̂ = ½
    pushes Δ to 0 and a sure winner (P̂ = 1) to η/2. Default β = 0.001 (η = 1000), the official
    run's value. ``win_rates`` (B, 2) hold (P̂_w, P̂_l).

    Scale: ℓ is the *sum* of the winner's and the loser's term, as in the paper's formula and TRL's
    ``sppo_hard``; the official code takes their mean (uclaml/SPPO ``sppo/trainer.py``,
    ``sppo_loss``: ``losses = (loss_w + loss_l)/2``, for ``sppo`` and ``sppo_single``), so ℓ and its
    gradient g are twice the official ones (the logged ``loss`` too). The minimiser is the same; what
    changes is the scale the clipping and the optimizer see. clip(2g, c) = 2·clip(g, c/2): clipping at
    ``max_grad_norm`` c here acts like c/2 there. Adam(W) and RMSprop divide by the root mean square of
    the gradient, so their steps are unchanged up to ε (ε here acts like ε/2 there); plain SGD takes
    twice the step (the official code at twice the learning rate). Where the gradient norm exceeds c
    in both runs (the logged ``grad_norm`` is before clipping; targets reach ±η/2 = ±500 at the
    default β), the clipped gradients are equal and so are the steps, for any optimizer.
    """

    beta: float = field(default=0.001, metadata={"help": "β (η = 1/β); the paper: 0.001."})

    def __post_init__(self) -> None:
        _check_positive(self, "beta")

    @property
    def requirements(self) -> Requirements:
        return Requirements(group=GroupShape.PAIR, reference=True, fields=("win_rates",))

    def win_rates(self, batch: CompletionGroups) -> torch.Tensor:
        """(B, 2) the probabilities the two log-ratios are regressed onto."""
        return batch.get("win_rates")

    def compute(self, batch: CompletionGroups) -> ObjectiveOutput:
        eta = 1.0 / self.beta
        target = eta * (self.win_rates(batch) - 0.5)
        error = (batch.logratios() - target) ** 2
        loss = error.sum(dim=1)
        metrics = {
            **pair_metrics(batch, self.beta),
            "sppo/chosen_target": target[:, 0],
            "sppo/rejected_target": target[:, 1],
            "sppo/chosen_error": error[:, 0],
            "sppo/rejected_error": error[:, 1],
        }
        return ObjectiveOutput(loss, metrics)


@register_objective("sppo_single")
@dataclass
class SPPOSingle(SPPO):
    """SPPO with the single pairwise probability p = P(y_w ≻ y_l) (``pair_prob``, shape (B,)):

        ℓ = (Δ(y_w) − η(p − ½))² + (Δ(y_l) + η(p − ½))²

    i.e. :class:`SPPO` with (P̂_w, P̂_l) = (p, 1 − p).
    """

    @property
    def requirements(self) -> Requirements:
        return Requirements(group=GroupShape.PAIR, reference=True, fields=("pair_prob",))

    def win_rates(self, batch: CompletionGroups) -> torch.Tensor:
        p = batch.get("pair_prob")
        return torch.stack([p, 1.0 - p], dim=1)


@register_objective("sppo_hard")
@dataclass
class SPPOHard(SPPO):
    """SPPO with hard probabilities (P̂_w, P̂_l) = (1, 0):

        ℓ = (Δ(y_w) − η/2)² + (Δ(y_l) + η/2)²

    Equals TRL's ``DPOTrainer`` with ``loss_type="sppo_hard"`` (same β) on the same log-probs.
    """

    @property
    def requirements(self) -> Requirements:
        return Requirements(group=GroupShape.PAIR, reference=True)

    def win_rates(self, batch: CompletionGroups) -> torch.Tensor:
        dtype, device = batch.policy_logps_sum.dtype, batch.policy_logps_sum.device
        return torch.tensor([1.0, 0.0], dtype=dtype, device=device).expand(batch.batch_size, 2)
