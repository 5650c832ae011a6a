"""NPO (align/objectives/npo.py) on hand-derived numbers and against the official loss line.

safe (label 1):     ℓ = λ_safe · NLL(y),  NLL = −log π_θ(y|x) / |y|
harmful (label 0):  ℓ = (2/β) · log(1 + (π_θ(y)/π_ref(y))^β) = −(2/β) · log σ(−β·Δ),  dℓ/dΔ = 2σ(βΔ)
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from align.objectives import NPO, CompletionGroups, ObjectiveInputError, get_objective

F64 = torch.float64
LN2 = math.log(2.0)


def batch(policy, ref, labels, counts=None, requires_grad=False) -> tuple[CompletionGroups, torch.Tensor]:
    logps = torch.tensor([[v] for v in policy], dtype=F64, requires_grad=requires_grad)
    counts = torch.tensor([[c] for c in (counts or [1] * len(policy))])
    record = CompletionGroups(policy_logps_sum=logps, ref_logps_sum=torch.tensor([[v] for v in ref], dtype=F64),
                              token_counts=counts, labels=torch.tensor([[float(x)] for x in labels], dtype=F64))  # fmt: skip
    return record, logps


def test_defaults_are_the_official_ones():
    obj = get_objective("npo")
    assert isinstance(obj, NPO) and obj.beta == 0.1 and obj.safe_weight == 1.0
    assert obj.requirements.reference


def test_hand_computed_losses():
    """β = 1. Harmful, Δ = ln 3 − 0: ℓ = 2·log(1 + 3) = 4 ln 2. Harmful, Δ = 0: ℓ = 2 ln 2.
    Safe, log π = −6 over 3 tokens: NLL = 2, ℓ = λ_safe · 2 = 1 with λ_safe = 0.5."""
    record, _ = batch([math.log(3.0) - 5.0, -2.0, -6.0], [-5.0, -2.0, -1.0], [0, 0, 1], counts=[2, 2, 3])
    out = get_objective("npo", beta=1.0, safe_weight=0.5)(record)
    torch.testing.assert_close(out.loss, torch.tensor([4 * LN2, 2 * LN2, 1.0], dtype=F64))
    torch.testing.assert_close(out.metrics["npo/ascent_weight"][:2], torch.tensor([1.5, 1.0], dtype=F64))  # 2σ(Δ)
    assert math.isnan(out.metrics["npo/ascent_weight"][2]) and math.isnan(out.metrics["nll/safe"][0])
    torch.testing.assert_close(out.metrics["nll/harmful"][:2], torch.tensor([(5.0 - math.log(3.0)) / 2, 1.0], dtype=F64))


def test_delta_zero_at_the_default_beta():
    """Δ = 0, β = 0.1: ℓ = (2/0.1)·log 2 = 20 ln 2."""
    record, _ = batch([-4.0], [-4.0], [0])
    assert get_objective("npo")(record).loss.item() == pytest.approx(20 * LN2, rel=1e-12)


def test_equals_the_official_loss_line():
    """licong-lin/negative-preference-optimization, TOFU/dataloader.py:
    neg_log_ratios = forget_loss_current − forget_loss_oracle (summed NLLs);
    loss = −F.logsigmoid(beta * neg_log_ratios).mean() * 2 / beta."""
    g = torch.Generator().manual_seed(0)
    policy, ref = (torch.randn(16, generator=g, dtype=F64) * 20 - 40).tolist(), (torch.randn(16, generator=g, dtype=F64) * 20 - 40).tolist()
    record, _ = batch(policy, ref, [0] * 16)
    for beta in (0.1, 0.5, 2.0):
        ours = get_objective("npo", beta=beta)(record).loss.mean()
        neg_log_ratios = (-torch.tensor(policy, dtype=F64)) - (-torch.tensor(ref, dtype=F64))
        official = -F.logsigmoid(beta * neg_log_ratios).mean() * 2 / beta
        torch.testing.assert_close(ours, official)


def test_gradient_is_two_sigmoid_and_vanishes_as_the_response_becomes_unlikely():
    """dℓ/d log π_θ(y) = 2σ(βΔ): 1 at Δ = 0, 2σ(−5) at Δ = −50 (β = 0.1), below 1e-20 at Δ = −500."""
    record, logps = batch([-10.0, -60.0, -510.0], [-10.0, -10.0, -10.0], [0, 0, 0], requires_grad=True)
    get_objective("npo")(record).loss.sum().backward()
    grad = logps.grad[:, 0]
    assert grad[0].item() == pytest.approx(1.0, rel=1e-12)
    assert grad[1].item() == pytest.approx(2 / (1 + math.exp(5.0)), rel=1e-12)
    assert 0 < grad[2].item() < 1e-20
    assert (grad > 0).all()  # minimising ℓ lowers log π_θ(y) of a harmful response


def test_safe_rows_are_plain_nll_and_need_no_ratio():
    """λ_safe = 1: a safe row's loss and gradient are those of the per-token NLL, whatever its Δ."""
    record, logps = batch([-6.0], [-100.0], [1], counts=[4], requires_grad=True)
    out = get_objective("npo")(record)
    out.loss.sum().backward()
    assert out.loss.item() == pytest.approx(1.5) and logps.grad.item() == pytest.approx(-0.25)


def test_bad_input():
    record, _ = batch([-1.0], [-1.0], [0.5])
    with pytest.raises(ObjectiveInputError, match="labels of exactly 1"):
        get_objective("npo")(record)
    with pytest.raises(ValueError, match="beta"):
        get_objective("npo", beta=0.0)
    with pytest.raises(ObjectiveInputError, match="reference"):
        get_objective("npo")(CompletionGroups(policy_logps_sum=torch.zeros(1, 1), token_counts=torch.ones(1, 1, dtype=torch.long),
                                              labels=torch.zeros(1, 1)))  # fmt: skip
