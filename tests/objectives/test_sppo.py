"""SPPO (soft), sppo_single and sppo_hard against hand-derived numbers and TRL's sppo_hard."""

import pytest
import torch

from align.objectives import CompletionGroups, ObjectiveInputError, get_objective
from tests.objectives.trl_source import run_trl_loss_branch


def pairs(policy, ref, requires_grad=False, **fields):
    policy = torch.tensor(policy, dtype=torch.float64, requires_grad=requires_grad)
    return CompletionGroups(
        policy_logps_sum=policy,
        ref_logps_sum=torch.tensor(ref, dtype=torch.float64),
        token_counts=torch.full(policy.shape, 5),
        **{k: torch.tensor(v, dtype=torch.float64) for k, v in fields.items()},
    )


# Δ_w = −4 − (−5) = 1, Δ_l = −6 − (−4) = −2 throughout.
POLICY, REF = [[-4.0, -6.0]], [[-5.0, -4.0]]


def test_sppo_soft_hand_derived():
    """β = 0.5 → η = 2; P̂_w = 0.8, P̂_l = 0.3 → targets η(P̂ − ½) = (0.6, −0.4);
    ℓ = (1 − 0.6)² + (−2 + 0.4)² = 0.16 + 2.56 = 2.72."""
    out = get_objective("sppo", beta=0.5)(pairs(POLICY, REF, win_rates=[[0.8, 0.3]]))
    assert out.loss.item() == pytest.approx(2.72)
    assert out.metrics["sppo/chosen_target"].item() == pytest.approx(0.6)
    assert out.metrics["sppo/rejected_target"].item() == pytest.approx(-0.4)
    assert out.metrics["sppo/chosen_error"].item() == pytest.approx(0.16)
    assert out.metrics["rewards/chosen"].item() == pytest.approx(0.5)


def test_sppo_default_beta_is_the_official_0_001():
    """η = 1000: P̂ = (1, 0) → targets (500, −500); Δ = (1, −2): 499² + 498² = 497005."""
    sppo = get_objective("sppo")
    assert sppo.beta == 0.001
    assert sppo(pairs(POLICY, REF, win_rates=[[1.0, 0.0]])).loss.item() == pytest.approx(499**2 + 498**2)


def test_sppo_half_win_rate_pushes_logratio_to_zero():
    """P̂ = ½ for both → targets 0, ℓ = Δ_w² + Δ_l² = 1 + 4 = 5; ∂ℓ/∂logπ = 2Δ = (2, −4):
    descent moves each Δ toward 0; at Δ = 0 the loss and gradient vanish."""
    batch = pairs(POLICY, REF, requires_grad=True, win_rates=[[0.5, 0.5]])
    out = get_objective("sppo", beta=0.5)(batch)
    assert out.loss.item() == pytest.approx(5.0)
    out.loss.sum().backward()
    torch.testing.assert_close(batch.policy_logps_sum.grad, torch.tensor([[2.0, -4.0]], dtype=torch.float64))
    at_ref = pairs(REF, REF, requires_grad=True, win_rates=[[0.5, 0.5]])
    out = get_objective("sppo", beta=0.5)(at_ref)
    out.loss.sum().backward()
    assert out.loss.item() == 0.0 and at_ref.policy_logps_sum.grad.abs().max().item() == 0.0


def test_sppo_descent_moves_logratios_to_eta_times_advantage():
    """Gradient descent on the policy log-probs converges to Δ = η(P̂ − ½) = (0.6, −0.4)."""
    logps = torch.tensor(POLICY, dtype=torch.float64, requires_grad=True)
    ref = torch.tensor(REF, dtype=torch.float64)
    sppo = get_objective("sppo", beta=0.5)
    for _ in range(200):
        batch = CompletionGroups(
            policy_logps_sum=logps, ref_logps_sum=ref, token_counts=torch.full((1, 2), 5),
            win_rates=torch.tensor([[0.8, 0.3]], dtype=torch.float64),
        )  # fmt: skip
        (grad,) = torch.autograd.grad(sppo(batch).loss.sum(), logps)
        with torch.no_grad():
            logps -= 0.1 * grad
    torch.testing.assert_close(logps - ref, torch.tensor([[0.6, -0.4]], dtype=torch.float64))


def test_sppo_single_hand_derived():
    """η = 2, p = 0.7 → targets (η(p − ½), −η(p − ½)) = (0.4, −0.4);
    ℓ = (1 − 0.4)² + (−2 + 0.4)² = 0.36 + 2.56 = 2.92; equals sppo with P̂ = (p, 1 − p)."""
    out = get_objective("sppo_single", beta=0.5)(pairs(POLICY, REF, pair_prob=[0.7]))
    assert out.loss.item() == pytest.approx(2.92)
    soft = get_objective("sppo", beta=0.5)(pairs(POLICY, REF, win_rates=[[0.7, 0.3]]))
    torch.testing.assert_close(out.loss, soft.loss)


def test_sppo_hard_hand_derived():
    """η = 2 → targets (η/2, −η/2) = (1, −1); ℓ = (1 − 1)² + (−2 + 1)² = 1."""
    out = get_objective("sppo_hard", beta=0.5)(pairs(POLICY, REF))
    assert out.loss.item() == pytest.approx(1.0)


def test_sppo_hard_equals_trl():
    """TRL 1.16 `DPOTrainer._compute_loss`, loss_type "sppo_hard":
        winner_margin_error = (chosen_logratios − 0.5 / self.beta) ** 2
        loser_margin_error = (rejected_logratios + 0.5 / self.beta) ** 2
        per_sequence_loss = winner_margin_error + loser_margin_error
    executed from TRL's installed source on the same random log-probs."""
    g = torch.Generator().manual_seed(1)
    policy = -torch.rand(16, 2, generator=g, dtype=torch.float64) * 50
    ref = -torch.rand(16, 2, generator=g, dtype=torch.float64) * 50
    for beta in (0.001, 0.1, 2.0):
        ours = get_objective("sppo_hard", beta=beta)(
            CompletionGroups(policy_logps_sum=policy, ref_logps_sum=ref, token_counts=torch.full((16, 2), 10))
        ).loss
        chosen_logratios, rejected_logratios = (policy - ref).unbind(1)
        trl = run_trl_loss_branch(
            "sppo_hard", beta, chosen_logratios=chosen_logratios, rejected_logratios=rejected_logratios
        )
        torch.testing.assert_close(ours, trl, rtol=1e-12, atol=1e-9)


def test_sppo_single_needs_pair_prob():
    with pytest.raises(ObjectiveInputError, match="objective 'sppo_single' needs the field 'pair_prob'"):
        get_objective("sppo_single")(pairs(POLICY, REF, win_rates=[[0.7, 0.3]]))
