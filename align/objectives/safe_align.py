"""SAFE-ALIGN: NLL on safe responses, bounded gradient ascent on harmful ones."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

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

__all__ = ["SafeAlign"]


@register_objective("safe_align")
@dataclass
class SafeAlign(Objective):
    """SAFE-ALIGN (Bhardwaj & Poria 2023, "Red-Teaming Large Language Models using Chain of
    Utterances for Safety-Alignment", arXiv:2308.09662). Single completions labelled safe ("blue",
    label 1) or harmful ("red", label 0); NLL is the per-token mean over assistant tokens:

        safe:     ℓ = λ_blue · NLL(y)
        harmful, per token (default):  ℓ = −λ_red · (1/|y|) Σ_t 1[nll_t < τ] · nll_t
        harmful, per sample:           ℓ = −λ_red · 1[NLL(y) < τ] · NLL(y)

    The ascent on a harmful token stops once its NLL reaches τ, so the loss is bounded below by
    −λ_red·τ: unbounded ascent is unstable and destroys fluency. The official ascent trainer was
    never released; the defaults λ_blue = 1, λ_red = 0.1, τ = 1.0 with per-token thresholding come
    from a secondary description and are unconfirmed. No reference model is used.
    """

    blue_weight: float = field(default=1.0, metadata={"help": "Weight λ_blue of the NLL on safe responses."})
    red_weight: float = field(default=0.1, metadata={"help": "Weight λ_red of the bounded ascent on harmful ones."})
    threshold: float = field(default=1.0, metadata={"help": "τ: the ascent on a harmful token stops at NLL τ."})
    threshold_mode: Literal["token", "sample"] = field(
        default="token", metadata={"help": "Apply τ per 'token' or per 'sample' (the mean NLL)."}
    )

    def __post_init__(self) -> None:
        _check_non_negative(self, "blue_weight", "red_weight")
        _check_positive(self, "threshold")
        if self.threshold_mode not in ("token", "sample"):
            raise ValueError(f"SafeAlign.threshold_mode must be 'token' or 'sample', got {self.threshold_mode!r}")

    @property
    def requirements(self) -> Requirements:
        token_values = ("policy_token_logps",) if self.threshold_mode == "token" else ()
        return Requirements(group=GroupShape.SINGLE, reference=False, fields=("labels",), token_values=token_values)

    def check(self, batch: CompletionGroups) -> None:
        super().check(batch)
        _check_safety_labels(self, batch)

    def compute(self, batch: CompletionGroups) -> ObjectiveOutput:
        safe = batch.get("labels")[:, 0] == 1
        counts = batch.token_counts[:, 0].to(batch.policy_logps_sum.dtype)
        nll = -batch.policy_logps_mean()[:, 0]
        if self.threshold_mode == "token":
            token_nll = -batch.get("policy_token_logps")[:, 0]
            # The indicator is a constant gate: tokens past τ get no ascent gradient at all.
            active = (token_nll.detach() < self.threshold) & batch.token_mask[:, 0].bool()
            ascent = (token_nll * active).sum(dim=1) / counts
            active_fraction = active.sum(dim=1) / counts
        else:
            active_sample = nll.detach() < self.threshold
            ascent = nll * active_sample
            active_fraction = active_sample.to(nll.dtype)
        loss = torch.where(safe, self.blue_weight * nll, -self.red_weight * ascent)
        nan = torch.full_like(nll, float("nan"))  # NaN = metric does not apply to this example
        metrics = {
            "nll/safe": torch.where(safe, nll, nan),
            "nll/harmful": torch.where(safe, nan, nll),
            "safe_align/ascent_fraction": torch.where(safe, nan, active_fraction),
        }
        return ObjectiveOutput(loss, metrics)
