"""NPO: negative preference optimisation on harmful responses, NLL on safe ones."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from align.objectives.base import (
    CompletionGroups,
    GroupShape,
    Objective,
    ObjectiveOutput,
    Requirements,
    _check_non_negative,
    _check_positive,
    _check_safety_labels,
    register_objective,
)

__all__ = ["NPO"]


@register_objective("npo")
@dataclass
class NPO(Objective):
    """Negative Preference Optimization (Zhang et al. 2024, "Negative Preference Optimization: From
    Catastrophic Collapse to Effective Unlearning", arXiv:2404.05868), with NLL on the safe
    responses (the paper's NPO + retain loss). Single completions labelled safe (1) or harmful (0);
    Δ(y) = log π_θ(y|x) − log π_ref(y|x), summed over completion tokens:

        safe:     ℓ = λ_safe · NLL(y)                       (per-token mean, as SAFE-ALIGN's blue term)
        harmful:  ℓ = (2/β) · log(1 + (π_θ(y)/π_ref(y))^β) = −(2/β) · log σ(−β·Δ(y))

    dℓ/dΔ = 2σ(βΔ): 1 at Δ = 0 (plain gradient ascent on log π_θ(y)) and → 0 as π_θ(y)/π_ref(y)
    → 0, so the ascent fades by itself as the harmful response becomes unlikely: bounded where
    gradient ascent is not. The official code (licong-lin/negative-preference-optimization,
    TOFU/dataloader.py) computes ``-F.logsigmoid(beta * neg_log_ratios).mean() * 2 / beta`` with
    summed answer-token NLLs and the initial fine-tuned model as the reference, β = 0.1.
    ``npo/ascent_weight`` logs 2σ(βΔ) per harmful response (1: full ascent, 0: none left).
    """

    beta: float = field(default=0.1, metadata={"help": "β of NPO (the official default 0.1)."})
    safe_weight: float = field(default=1.0, metadata={"help": "Weight λ_safe of the NLL on safe responses."})

    def __post_init__(self) -> None:
        _check_positive(self, "beta")
        _check_non_negative(self, "safe_weight")

    @property
    def requirements(self) -> Requirements:
        return Requirements(group=GroupShape.SINGLE, reference=True, fields=("labels",))

    def check(self, batch: CompletionGroups) -> None:
        super().check(batch)
        _check_safety_labels(self, batch)

    def compute(self, batch: CompletionGroups) -> ObjectiveOutput:
        safe = batch.get("labels")[:, 0] == 1
        nll = -batch.policy_logps_mean()[:, 0]
        delta = batch.logratios()[:, 0]
        npo = -F.logsigmoid(-self.beta * delta) * (2.0 / self.beta)
        loss = torch.where(safe, self.safe_weight * nll, npo)
        nan = torch.full_like(nll, float("nan"))  # NaN = metric does not apply to this example
        metrics = {
            "nll/safe": torch.where(safe, nll, nan),
            "nll/harmful": torch.where(safe, nan, nll),
            "npo/logratio": torch.where(safe, nan, delta),
            "npo/ascent_weight": torch.where(safe, nan, 2.0 * torch.sigmoid(self.beta * delta)),
        }
        return ObjectiveOutput(loss, metrics)
