"""DPO (sigmoid) and RPO (DPO + per-example length-normalised NLL) against hand-derived numbers and TRL."""

import math

import pytest
import torch

from align.objectives import CompletionGroups, get_objective
from tests.objectives.trl_source import run_trl_loss_branch


def pairs(policy, ref, counts, requires_grad=False):
    return CompletionGroups(
        policy_logps_sum=torch.tensor(policy, dtype=torch.float64, requires_grad=requires_grad),
        ref_logps_sum=torch.tensor(ref, dtype=torch.float64),
        token_counts=torch.tensor(counts),
    )


def test_dpo_hand_derived():
    """Δ_w = −4 − (−5) = 1, Δ_l = −6 − (−4) = −2; β = 0.5 → z = 0.5·(1 − (−2)) = 1.5;
    ℓ = −log σ(1.5) = ln(1 + e^−1.5) = 0.2014133.
    Rewards β·Δ = (0.5, −1), margin 1.5, accuracy 1."""
    out = get_objective("dpo", beta=0.5)(pairs([[-4.0, -6.0]], [[-5.0, -4.0]], [[8, 6]]))
    assert out.loss.item() == pytest.approx(math.log1p(math.exp(-1.5)), abs=1e-12)
    assert out.loss.item() == pytest.approx(0.2014132779827524, abs=1e-12)
    assert out.metrics["rewards/chosen"].item() == pytest.approx(0.5)
    assert out.metrics["rewards/rejected"].item() == pytest.approx(-1.0)
    assert out.metrics["rewards/margins"].item() == pytest.approx(1.5)
    assert out.metrics["rewards/accuracies"].item() == 1.0
    assert out.metrics["logps/chosen_mean"].item() == pytest.approx(-0.5)
    assert out.metrics["logps/rejected_mean"].item() == pytest.approx(-1.0)


def test_dpo_equal_logratios_is_ln2():
    """Policy = reference (step 0): Δ_w = Δ_l = 0 → ℓ = −log σ(0) = ln 2, for any log-probs."""
    out = get_objective("dpo")(pairs([[-3.0, -9.0], [-1.0, -1.0]], [[-3.0, -9.0], [-1.0, -1.0]], [[3, 9], [1, 1]]))
    torch.testing.assert_close(out.loss, torch.full((2,), math.log(2), dtype=torch.float64))
    assert out.metrics["rewards/accuracies"].tolist() == [0.0, 0.0]


def test_dpo_default_beta_is_0_1():
    """β = 0.1: Δ_w − Δ_l = 3 → ℓ = ln(1 + e^−0.3) = 0.5543552."""
    out = get_objective("dpo")(pairs([[-4.0, -6.0]], [[-5.0, -4.0]], [[8, 6]]))
    assert out.loss.item() == pytest.approx(math.log1p(math.exp(-0.3)), abs=1e-12)


def test_dpo_gradient_raises_chosen_and_lowers_rejected():
    """∂ℓ/∂logπ(y_w) = −β σ(−z) < 0 and ∂ℓ/∂logπ(y_l) = +β σ(−z) > 0; with z = 1.5, β = 0.5:
    σ(−1.5) = 0.1824255 → gradients (−0.0912128, +0.0912128)."""
    batch = pairs([[-4.0, -6.0]], [[-5.0, -4.0]], [[8, 6]], requires_grad=True)
    get_objective("dpo", beta=0.5)(batch).loss.sum().backward()
    s = 1 / (1 + math.exp(1.5))
    torch.testing.assert_close(batch.policy_logps_sum.grad, torch.tensor([[-0.5 * s, 0.5 * s]], dtype=torch.float64))


def test_dpo_equals_trl_sigmoid():
    """TRL 1.16 `DPOTrainer._compute_loss`, loss_type "sigmoid", f_divergence reverse_kl:
        delta_score = chosen_logratios − rejected_logratios
        per_sequence_loss = −F.logsigmoid(self.beta * delta_score)
    executed from TRL's installed source on the same random log-probs."""
    g = torch.Generator().manual_seed(0)
    policy = -torch.rand(16, 2, generator=g, dtype=torch.float64) * 50
    ref = -torch.rand(16, 2, generator=g, dtype=torch.float64) * 50
    for beta in (0.01, 0.1, 1.0):
        ours = get_objective("dpo", beta=beta)(
            CompletionGroups(policy_logps_sum=policy, ref_logps_sum=ref, token_counts=torch.full((16, 2), 10))
        ).loss
        chosen_logratios, rejected_logratios = (policy - ref).unbind(1)
        trl = run_trl_loss_branch(
            "sigmoid", beta, delta_score=chosen_logratios - rejected_logratios,
            chosen_logratios=chosen_logratios, rejected_logratios=rejected_logratios,
        )  # fmt: skip
        torch.testing.assert_close(ours, trl, rtol=0, atol=1e-12)


def test_rpo_hand_derived():
    """DPO part as above (β = 0.5): 0.2014133. NLL = −logπ(y_w)/|y_w| = 4/8 = 0.5.
    α = 1 → 0.7014133; α = 2 → 1.2014133; the terms are reported separately."""
    batch = pairs([[-4.0, -6.0]], [[-5.0, -4.0]], [[8, 6]])
    dpo = math.log1p(math.exp(-1.5))
    out = get_objective("rpo", beta=0.5)(batch)
    assert out.loss.item() == pytest.approx(dpo + 0.5, abs=1e-12)
    assert out.metrics["dpo"].item() == pytest.approx(dpo, abs=1e-12)
    assert out.metrics["nll"].item() == pytest.approx(0.5)
    assert get_objective("rpo", beta=0.5, alpha=2.0)(batch).loss.item() == pytest.approx(dpo + 1.0, abs=1e-12)


def test_rpo_defaults_and_alpha_zero_is_dpo():
    rpo = get_objective("rpo")
    assert (rpo.beta, rpo.alpha) == (0.1, 1.0)
    batch = pairs([[-4.0, -6.0], [-2.0, -2.5]], [[-5.0, -4.0], [-2.0, -3.0]], [[8, 6], [2, 5]])
    torch.testing.assert_close(get_objective("rpo", alpha=0.0)(batch).loss, get_objective("dpo")(batch).loss)


def test_rpo_nll_term_raises_the_winner_only():
    """∂(α·NLL)/∂logπ(y_w) = −α/|y_w| = −2/8 = −0.25 on the winner, 0 on the loser."""
    grads = {}
    for name, kwargs in (("rpo", {"alpha": 2.0}), ("dpo", {})):
        batch = pairs([[-4.0, -6.0]], [[-5.0, -4.0]], [[8, 6]], requires_grad=True)
        get_objective(name, beta=0.5, **kwargs)(batch).loss.sum().backward()
        grads[name] = batch.policy_logps_sum.grad
    torch.testing.assert_close(grads["rpo"] - grads["dpo"], torch.tensor([[-0.25, 0.0]], dtype=torch.float64))


def test_rpo_nll_is_per_example_mean_unlike_trl_sft():
    """Winners: logπ = −2 over 2 tokens (mean −1) and −4 over 8 tokens (mean −0.5).
    Ours (per example, then batch mean): (1 + 0.5)/2 = 0.75.
    TRL's loss_type "sft" (mean over every chosen token of the micro-batch): 6/10 = 0.6.
    The TRL value is computed by TRL's own source on the same per-token log-probs."""
    chosen_tokens = torch.tensor([[-1.0, -1.0] + [0.0] * 6, [-0.5] * 8], dtype=torch.float64)
    chosen_mask = torch.tensor([[1, 1] + [0] * 6, [1] * 8])
    per_token_logps = torch.cat([chosen_tokens, torch.full((2, 8), -3.0, dtype=torch.float64)])
    shift_completion_mask = torch.cat([chosen_mask, torch.ones(2, 8, dtype=torch.long)])
    trl = run_trl_loss_branch("sft", 0.1, per_token_logps=per_token_logps, shift_completion_mask=shift_completion_mask)
    assert trl.mean().item() == pytest.approx(0.6)

    batch = pairs([[-2.0, -24.0], [-4.0, -24.0]], [[-2.0, -24.0], [-4.0, -24.0]], [[2, 8], [8, 8]])
    ours = get_objective("rpo")(batch).metrics["nll"]
    assert ours.mean().item() == pytest.approx(0.75)
