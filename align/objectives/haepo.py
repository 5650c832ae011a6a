"""HAEPO: Plackett-Luce weights over whole-trajectory log-likelihoods times normalised returns."""

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
    register_objective,
)

__all__ = ["HAEPO", "kl_per_token"]

KLEstimator = Literal["k1", "k2", "k3"]


def kl_per_token(policy_token_logps: torch.Tensor, ref_token_logps: torch.Tensor, estimator: KLEstimator) -> torch.Tensor:
    """Per-token estimate of KL(π_θ ‖ π_ref) on sampled tokens (Schulman, "Approximating KL
    divergence", 2020), with log r = log π_ref − log π_θ:

        k1 = −log r,   k2 = ½ (log r)²,   k3 = (r − 1) − log r   (non-negative, GRPO's choice)
    """
    log_r = ref_token_logps - policy_token_logps
    if estimator == "k1":
        return -log_r
    if estimator == "k2":
        return 0.5 * log_r**2
    if estimator == "k3":
        return torch.expm1(log_r) - log_r
    raise ValueError(f"unknown KL estimator {estimator!r}; use 'k1', 'k2' or 'k3'")


@register_objective("haepo")
@dataclass
class HAEPO(Objective):
    """History-Aggregated Exploratory Policy Optimization (Trivedi et al. 2025, arXiv:2508.18884).

    For a group of M completions of one prompt with returns R_k and whole-trajectory
    log-likelihoods L_k = log π_θ(y_k|x) (token sums; per-token means if ``length_normalize``):

        w_k = exp(L_k / τ) / Σ_j exp(L_j / τ)                        (Plackett-Luce top-1 weights)
        R̃_k = normalised return (``return_norm``)
        ℓ   = −Σ_k w_k R̃_k − λ_H · H(π_θ) + λ_KL · KL(π_θ ‖ π_prev)

    H is the mean token entropy over the group's sampled completions (``token_entropies``) and KL
    the mean per-token estimate (``kl_estimator``) against the frozen previous policy, whose
    log-probs come in as the reference. The gradient of the first term raises the likelihood of
    completions with above-average return and lowers the rest, weighted by how much mass the
    policy already gives them. Masked list entries get weight 0.

    Logged per group: each term (``haepo/pl_term``, ``haepo/entropy``, ``haepo/kl``), the Kish
    effective sample size of the weights ESS = 1 / Σ_k w_k² (1 when one completion holds all the
    weight, M when the weights are uniform), ``haepo/best_weight`` = Σ_{k: R_k = max_j R_j} w_k,
    the weight on the highest-return completion(s), and the largest weight.

    No public code exists; τ, the return normalisation, λ_H, λ_KL, the KL estimator and length
    normalisation are unconfirmed, hence configurable. Defaults: τ = 1 (the paper's form has none),
    group normalisation (R − mean)/(std + ε) with the population std (over the M valid entries), λ_H = 0.001, λ_KL = 0.04 with the k3 estimator (GRPO's
    values), no length normalisation. All-equal returns give R̃ = 0: no preference term.
    """

    tau: float = field(default=1.0, metadata={"help": "Temperature τ of the Plackett-Luce weights softmax(L / τ)."})
    return_norm: Literal["group", "mean", "none"] = field(
        default="group", metadata={"help": "Returns: 'group' (R − mean)/(std + ε), 'mean' R − mean, or 'none'."}
    )
    entropy_coef: float = field(default=0.001, metadata={"help": "Weight λ_H of the mean token entropy bonus."})
    kl_coef: float = field(default=0.04, metadata={"help": "Weight λ_KL of the per-token KL to the previous policy."})
    kl_estimator: KLEstimator = field(default="k3", metadata={"help": "Per-token KL estimator: k1, k2 or k3."})
    length_normalize: bool = field(
        default=False, metadata={"help": "Use per-token mean log-likelihoods L_k / |y_k| instead of sums."}
    )
    eps: float = field(default=1e-6, metadata={"help": "ε of the group return normalisation."})

    def __post_init__(self) -> None:
        _check_positive(self, "tau", "eps")
        _check_non_negative(self, "entropy_coef", "kl_coef")
        if self.return_norm not in ("group", "mean", "none"):
            raise ValueError(f"HAEPO.return_norm must be 'group', 'mean' or 'none', got {self.return_norm!r}")
        if self.kl_estimator not in ("k1", "k2", "k3"):
            raise ValueError(f"HAEPO.kl_estimator must be 'k1', 'k2' or 'k3', got {self.kl_estimator!r}")

    @property
    def requirements(self) -> Requirements:
        token_values = ("token_entropies",) if self.entropy_coef > 0 else ()
        if self.kl_coef > 0:
            token_values += ("policy_token_logps", "ref_token_logps")
        return Requirements(group=GroupShape.LIST, reference=self.kl_coef > 0, fields=("returns",), token_values=token_values)

    def normalized_returns(self, batch: CompletionGroups) -> torch.Tensor:
        """(B, K) R̃ over the valid entries of each group (0 at masked entries)."""
        valid = batch.valid
        returns = batch.get("returns")
        if self.return_norm == "none":
            return returns
        n = valid.sum(dim=1, keepdim=True).to(returns.dtype)
        centered = torch.where(valid, returns - returns.sum(dim=1, keepdim=True) / n, 0.0)
        if self.return_norm == "mean":
            return centered
        std = ((centered**2).sum(dim=1, keepdim=True) / n).sqrt()
        return centered / (std + self.eps)

    def compute(self, batch: CompletionGroups) -> ObjectiveOutput:
        logps = batch.policy_logps_mean() if self.length_normalize else batch.get("policy_logps_sum")
        logits = (logps / self.tau).masked_fill(~batch.valid, float("-inf"))
        weights = torch.softmax(logits, dim=1)
        norm_returns = self.normalized_returns(batch)
        pl_term = (weights * norm_returns).sum(dim=1)
        loss = -pl_term
        zero = torch.zeros_like(pl_term)
        entropy, kl = zero, zero
        if self.entropy_coef > 0:
            entropy = batch.group_token_mean(batch.get("token_entropies"))
            loss = loss - self.entropy_coef * entropy
        if self.kl_coef > 0:
            token_kl = kl_per_token(batch.get("policy_token_logps"), batch.get("ref_token_logps"), self.kl_estimator)
            kl = batch.group_token_mean(token_kl)  # zero off completion tokens: log r = 0 there
            loss = loss + self.kl_coef * kl
        returns = batch.get("returns")
        n = batch.valid.sum(dim=1).to(returns.dtype)
        best = batch.valid & (returns == returns.masked_fill(~batch.valid, float("-inf")).max(dim=1, keepdim=True).values)
        metrics = {
            "haepo/pl_term": pl_term,
            "haepo/ess": 1.0 / (weights**2).sum(dim=1),
            "haepo/best_weight": (weights * best).sum(dim=1),
            "haepo/entropy": entropy,
            "haepo/kl": kl,
            "haepo/max_weight": weights.max(dim=1).values,
            "haepo/return_mean": returns.sum(dim=1) / n,
            "logps/mean": batch.policy_logps_mean().sum(dim=1) / n,
        }
        return ObjectiveOutput(loss, metrics)
