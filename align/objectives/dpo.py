"""DPO (sigmoid) and iterative RPO (DPO + NLL on the winner)."""

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
    register_objective,
)

__all__ = ["DPO", "RPO", "pair_metrics", "sigmoid_pair_loss"]


def sigmoid_pair_loss(batch: CompletionGroups, beta: float, margin: torch.Tensor | float = 0.0) -> torch.Tensor:
    """(B,) −log σ(β·(Δ(y_w) − Δ(y_l)) − margin) for (chosen, rejected) pairs.

    The margin sits outside β (UV-CoT's score-aware DPO); margin = 0 is plain DPO.
    """
    delta = batch.logratios()
    return -F.logsigmoid(beta * (delta[:, 0] - delta[:, 1]) - margin)


def pair_metrics(batch: CompletionGroups, beta: float) -> dict[str, torch.Tensor]:
    """TRL-compatible per-example pair metrics (implicit rewards β·Δ and log-probs), plus per-token means."""
    rewards = beta * batch.logratios()
    logps = batch.get("policy_logps_sum")
    logps_mean = batch.policy_logps_mean()
    return {
        "rewards/chosen": rewards[:, 0],
        "rewards/rejected": rewards[:, 1],
        "rewards/margins": rewards[:, 0] - rewards[:, 1],
        "rewards/accuracies": (rewards[:, 0] > rewards[:, 1]).to(rewards.dtype),
        "logps/chosen": logps[:, 0],
        "logps/rejected": logps[:, 1],
        "logps/chosen_mean": logps_mean[:, 0],
        "logps/rejected_mean": logps_mean[:, 1],
    }


@register_objective("dpo")
@dataclass
class DPO(Objective):
    """Direct Preference Optimization, sigmoid loss (Rafailov et al. 2023, arXiv:2305.18290).

        ℓ = −log σ(β·(Δ(y_w) − Δ(y_l))),   Δ(y) = log π_θ(y|x) − log π_ref(y|x)  (token sums)

    Equals TRL's ``DPOTrainer`` with ``loss_type="sigmoid"`` on the same log-probs. When the policy
    equals the reference (step 0), Δ = 0 and ℓ = ln 2.
    """

    beta: float = field(default=0.1, metadata={"help": "DPO temperature β of the implicit reward β·Δ(y)."})

    def __post_init__(self) -> None:
        _check_positive(self, "beta")

    @property
    def requirements(self) -> Requirements:
        return Requirements(group=GroupShape.PAIR, reference=True)

    def compute(self, batch: CompletionGroups) -> ObjectiveOutput:
        loss = sigmoid_pair_loss(batch, self.beta)
        return ObjectiveOutput(loss, {**pair_metrics(batch, self.beta), "dpo": loss})


@register_objective("rpo")
@dataclass
class RPO(DPO):
    """Iterative Reasoning Preference Optimization: DPO + NLL on the winner (Pang et al. 2024,
    arXiv:2404.19733).

        ℓ = −log σ(β·(Δ(y_w) − Δ(y_l))) + α · (−log π_θ(y_w|x) / |y_w|)

    The NLL is length-normalised *per example* and then averaged over the batch by the trainer, so
    every winner weighs the same. TRL's ``loss_type=["sigmoid", "sft"]`` instead averages over all
    chosen tokens of the micro-batch (long winners weigh more). α = 0 is plain DPO.
    Defaults: β = 0.1, α = 1.0.
    """

    alpha: float = field(default=1.0, metadata={"help": "Weight α of the winner's per-token NLL (0: plain DPO)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_non_negative(self, "alpha")

    def compute(self, batch: CompletionGroups) -> ObjectiveOutput:
        dpo = sigmoid_pair_loss(batch, self.beta)
        nll = -batch.policy_logps_mean()[:, 0]
        loss = dpo + self.alpha * nll
        return ObjectiveOutput(loss, {**pair_metrics(batch, self.beta), "dpo": dpo, "nll": nll})
