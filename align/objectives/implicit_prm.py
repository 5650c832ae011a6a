"""Implicit process reward models: outcome reward β·Δ(y), trained with CE or DPO, read per step."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

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
from align.objectives.dpo import DPO

__all__ = [
    "STEP_AGGREGATIONS",
    "ImplicitPRMCE",
    "ImplicitPRMDPO",
    "StepRewards",
    "aggregate_step_rewards",
    "process_rewards",
]


@register_objective("implicit_prm_ce")
@dataclass
class ImplicitPRMCE(Objective):
    """Implicit PRM, cross-entropy variant (Yuan et al. 2024, "Free Process Rewards without Process
    Labels", arXiv:2412.01981). Pointwise and unpaired: one completion with label l ∈ {0, 1}
    (final answer correct) and the outcome reward r_θ(y) = β·Δ(y):

        ℓ = −[ l·log σ(r_θ(y)) + (1 − l)·log(1 − σ(r_θ(y))) ] + w · l · (−log π_θ(y|x) / |y|)

    The second term, off by default (w = ``nll_weight`` = 0), is the optional NLL term of the
    official training code: the per-token mean NLL of correct completions (l = 1; an incorrect one
    adds nothing), averaged with the other examples' losses by the trainer. Default β = 0.05 (the
    official training value).

    Metrics: ``rewards/accuracies`` is 1 when the outcome reward has the label's sign (r > 0 for a
    correct completion, r < 0 for an incorrect one, so r = 0 counts as wrong for both) and NaN
    ("does not apply") for a fractional label; ``rewards/correct`` / ``rewards/incorrect`` are r of
    each kind (NaN for the other), ``nll`` the correct completions' per-token NLL.
    """

    beta: float = field(default=0.05, metadata={"help": "β of the outcome reward r = β·Δ(y); official: 0.05."})
    nll_weight: float = field(
        default=0.0, metadata={"help": "Weight w of the correct completions' per-token NLL added to the loss (0: off)."}
    )

    def __post_init__(self) -> None:
        _check_positive(self, "beta")
        _check_non_negative(self, "nll_weight")

    @property
    def requirements(self) -> Requirements:
        return Requirements(group=GroupShape.SINGLE, reference=True, fields=("labels",))

    def compute(self, batch: CompletionGroups) -> ObjectiveOutput:
        reward = self.beta * batch.logratios()[:, 0]
        label = batch.get("labels")[:, 0].to(reward.dtype)
        bce = F.binary_cross_entropy_with_logits(reward, label, reduction="none")
        nll = -batch.policy_logps_mean()[:, 0]
        loss = bce + self.nll_weight * label * nll
        correct, incorrect = label == 1, label == 0
        nan = torch.full_like(reward, float("nan"))
        right_sign = torch.where(correct, reward > 0, reward < 0).to(reward.dtype)
        metrics = {
            "rewards/mean": reward,
            "rewards/accuracies": right_sign.where(correct | incorrect, nan),
            "rewards/correct": reward.where(correct, nan),
            "rewards/incorrect": reward.where(incorrect, nan),
            "logps/mean": batch.policy_logps_mean()[:, 0],
            "bce": bce,
            "nll": nll.where(correct, nan),
        }
        return ObjectiveOutput(loss, metrics)


@register_objective("implicit_prm_dpo")
@dataclass
class ImplicitPRMDPO(DPO):
    """Implicit PRM, DPO variant: DPO with r_θ = β·Δ over (correct, incorrect) pairs of the same
    prompt (prompts whose samples are all correct or all wrong give no pair). Default β = 0.05."""

    beta: float = field(default=0.05, metadata={"help": "β of the outcome reward r = β·Δ(y); official: 0.05."})


class StepRewards(NamedTuple):
    """Per-step implicit process rewards for N completions with up to S steps."""

    rewards: torch.Tensor  # (N, S) r_t = β Σ_{i ∈ step t} (log π_θ(y_i) − log π_ref(y_i))
    q_values: torch.Tensor  # (N, S) q_t = Σ_{s ≤ t} r_s
    step_mask: torch.Tensor  # (N, S) bool: the step exists (has at least one token)


def process_rewards(
    policy_token_logps: torch.Tensor,
    ref_token_logps: torch.Tensor,
    step_ids: torch.Tensor,
    beta: float = 0.05,
) -> StepRewards:
    """Process reward of every reasoning step from token log-ratios.

        r_t = β · Σ_{tokens i of step t} (log π_θ(y_i | x, y_<i) − log π_ref(y_i | x, y_<i))
        q_t = Σ_{s ≤ t} r_s          (an exact Q-value under the implicit-PRM parameterisation)

    Args:
        policy_token_logps, ref_token_logps: (N, T) per-token log-probs of each completion.
        step_ids: (N, T) int, the step index (0, 1, ...) of each completion token and −1 for tokens
            that belong to no step (prompt, padding). Steps are split upstream by a separator
            (e.g. the pattern "Step N:" or "\\n\\n").
        beta: the β the PRM was trained with.

    Example: log-ratios [1, 1, 2, 0.5, −3] with step_ids [0, 0, 1, 1, 2] and β = 1 give
    rewards [2, 2.5, −3] and q-values [2, 4.5, 1.5].
    """
    if not (policy_token_logps.shape == ref_token_logps.shape == step_ids.shape) or step_ids.dim() != 2:
        raise ValueError(
            "policy_token_logps, ref_token_logps and step_ids must share one (N, T) shape, got "
            f"{tuple(policy_token_logps.shape)}, {tuple(ref_token_logps.shape)}, {tuple(step_ids.shape)}"
        )
    if step_ids.dtype.is_floating_point or (step_ids < -1).any():
        raise ValueError("step_ids must be integers >= 0 for step tokens and -1 elsewhere")
    in_step = step_ids >= 0
    if not torch.isfinite(policy_token_logps[in_step]).all() or not torch.isfinite(ref_token_logps[in_step]).all():
        raise ValueError("token log-probs have NaN or inf inside a step")
    num_steps = int(step_ids.max().item()) + 1 if in_step.any() else 0
    logratio = torch.where(in_step, policy_token_logps - ref_token_logps, 0.0)
    index = step_ids.clamp(min=0).long()
    rewards = logratio.new_zeros(step_ids.shape[0], num_steps).scatter_add(1, index, logratio) * beta
    counts = torch.zeros(step_ids.shape[0], num_steps, dtype=torch.long, device=step_ids.device)
    counts.scatter_add_(1, index, in_step.long())
    step_mask = counts > 0
    return StepRewards(rewards, torch.cumsum(rewards, dim=1), step_mask)


# The aggregations aggregate_step_rewards knows ("last" is "last_q" under the name the scorer uses).
STEP_AGGREGATIONS = ("min", "sum", "mean", "last", "min_q", "last_q")


def aggregate_step_rewards(
    steps: StepRewards, how: Literal["min", "sum", "mean", "last", "min_q", "last_q"] = "min"
) -> torch.Tensor:
    """(N,) one score per completion for best-of-N reranking, over its S_n existing steps:

        min = min_t r_t    sum = Σ_t r_t    mean = (1/S_n) Σ_t r_t    min_q = min_t q_t    last = last_q = q_{S_n}

    ``min`` is the official evaluation's default. With every completion token inside a step,
    ``sum`` and ``last`` equal the outcome reward β·Δ(y). Example: r = [2, 2.5, −3] (q = [2, 4.5,
    1.5]) → min −3, sum 1.5, mean 0.5, min_q 1.5, last 1.5."""
    mask = steps.step_mask
    if not mask.any(dim=1).all():
        raise ValueError("a completion has no step to aggregate")
    if how == "min":
        return steps.rewards.masked_fill(~mask, float("inf")).min(dim=1).values
    if how == "sum":
        return (steps.rewards * mask).sum(dim=1)
    if how == "mean":
        return (steps.rewards * mask).sum(dim=1) / mask.sum(dim=1)
    if how == "min_q":
        return steps.q_values.masked_fill(~mask, float("inf")).min(dim=1).values
    if how in ("last", "last_q"):
        last = (mask.long() * torch.arange(mask.shape[1], device=mask.device)).argmax(dim=1, keepdim=True)
        return steps.q_values.gather(1, last).squeeze(1)
    raise ValueError(f"unknown aggregation {how!r}; use one of {', '.join(map(repr, STEP_AGGREGATIONS))}")
