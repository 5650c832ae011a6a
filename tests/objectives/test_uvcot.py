"""UV-CoT (align/objectives/uvcot.py): score-aware DPO + SFT on the winner, hand-derived numbers.

ℓ = w_dpo · −log σ(β(Δ_w − Δ_l) − γ(s_w − s_l)) + w_sft · (−log π_θ(y_w|x))   (summed log-probs)
"""

from __future__ import annotations

import math

import pytest
import torch

from align.objectives import CompletionGroups, ObjectiveInputError, UVCoT, get_objective

F64 = torch.float64
LN2 = math.log(2.0)


def t(*values) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


def rows(values, requires_grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=F64, requires_grad=requires_grad)


def pairs(policy, ref=None, scores=None, counts=None, mask=None) -> CompletionGroups:
    policy = policy if isinstance(policy, torch.Tensor) else rows(policy)
    ref = ref if ref is None or isinstance(ref, torch.Tensor) else rows(ref)
    return CompletionGroups(
        policy_logps_sum=policy,
        token_counts=torch.ones(policy.shape, dtype=torch.long) if counts is None else torch.tensor(counts),
        ref_logps_sum=ref,
        scores=None if scores is None else rows(scores),
        mask=mask,
    )


def softplus(x: float) -> float:
    """ln(1 + e^x) = −log σ(−x)."""
    return math.log1p(math.exp(x))


# -- defaults and hand numbers -----------------------------------------------------------------------


def test_defaults():
    obj = get_objective("uvcot")
    assert isinstance(obj, UVCoT)
    assert (obj.beta, obj.dpo_weight, obj.sft_weight, obj.score_margin) == (0.1, 0.1, 0.9, 0.0)


def test_default_loss_hand_computed():
    """π = [−10, −12], π_ref = [−11, −11] → Δ_w = 1, Δ_l = −1, β = 0.1 → z = 0.1·2 = 0.2.
    DPO = ln(1 + e^−0.2) = 0.598139; SFT = −log π(y_w) = 10.
    ℓ = 0.1·0.598139 + 0.9·10 = 9.059814."""
    out = get_objective("uvcot")(pairs([[-10.0, -12.0]], [[-11.0, -11.0]]))
    expected = 0.1 * softplus(-0.2) + 0.9 * 10.0
    assert expected == pytest.approx(9.059814, abs=1e-6)
    torch.testing.assert_close(out.loss, t(expected))
    torch.testing.assert_close(out.metrics["dpo"], t(softplus(-0.2)))
    torch.testing.assert_close(out.metrics["sft"], t(10.0))
    torch.testing.assert_close(out.metrics["rewards/margins"], t(0.2))


def test_sft_uses_summed_not_mean_logps():
    """Same sums with |y_w| = 5: SFT stays −log π(y_w) = 10 (not 10/5); ℓ = 9.059814 as above."""
    out = get_objective("uvcot")(pairs([[-10.0, -12.0]], [[-11.0, -11.0]], counts=[[5, 3]]))
    torch.testing.assert_close(out.metrics["sft"], t(10.0))
    torch.testing.assert_close(out.loss, t(0.1 * softplus(-0.2) + 9.0))


def test_score_margin_hand_computed():
    """As above plus scores s = [5, 2], γ = 0.5 → margin 0.5·3 = 1.5 → z = 0.2 − 1.5 = −1.3.
    DPO = ln(1 + e^1.3) = 1.541008 → ℓ = 0.1·1.541008 + 9 = 9.154101."""
    out = get_objective("uvcot", score_margin=0.5)(pairs([[-10.0, -12.0]], [[-11.0, -11.0]], scores=[[5.0, 2.0]]))
    expected = 0.1 * softplus(1.3) + 9.0
    assert expected == pytest.approx(9.154101, abs=1e-6)
    torch.testing.assert_close(out.loss, t(expected))
    torch.testing.assert_close(out.metrics["uvcot/score_margin"], t(1.5))


def test_margin_sits_outside_beta():
    """β = 0.5, γ = 1, Δ_w − Δ_l = 2, s_w − s_l = 2 (w_dpo = 1, w_sft = 0):
    outside β: z = 0.5·2 − 1·2 = −1 → ℓ = ln(1 + e) = 1.313262
    (inside β would be 0.5·(2 − 2) = 0 → ln 2)."""
    obj = get_objective("uvcot", beta=0.5, score_margin=1.0, dpo_weight=1.0, sft_weight=0.0)
    out = obj(pairs([[-1.0, -3.0]], [[-2.0, -2.0]], scores=[[3.0, 1.0]]))
    torch.testing.assert_close(out.loss, t(softplus(1.0)))


def test_zero_margin_ignores_scores_and_does_not_need_them():
    """γ = 0: no 'scores' required; with scores [5, 2] given the loss is unchanged (9.059814)."""
    obj = get_objective("uvcot")
    without = obj(pairs([[-10.0, -12.0]], [[-11.0, -11.0]])).loss
    with_scores = obj(pairs([[-10.0, -12.0]], [[-11.0, -11.0]], scores=[[5.0, 2.0]])).loss
    torch.testing.assert_close(without, t(0.1 * softplus(-0.2) + 9.0))
    torch.testing.assert_close(with_scores, without, rtol=0, atol=0)


def test_policy_equal_reference_gives_ln2_dpo_term():
    """Δ_w = Δ_l = 0 → DPO term ln 2; π(y_w) = e^−4 → SFT 4. ℓ = 0.1·ln 2 + 0.9·4 = 3.669315."""
    out = get_objective("uvcot")(pairs([[-4.0, -6.0]], [[-4.0, -6.0]]))
    torch.testing.assert_close(out.loss, t(0.1 * LN2 + 3.6))


def test_batch_rows_are_independent():
    """Row 0 as the default example (9.059814); row 1: π = [−2, −1], π_ref = [−1, −3] →
    Δ_w = −1, Δ_l = 2 → z = 0.1·(−3) = −0.3 → DPO ln(1 + e^0.3); SFT 2 → ℓ = 0.1·ln(1 + e^0.3) + 1.8."""
    out = get_objective("uvcot")(pairs([[-10.0, -12.0], [-2.0, -1.0]], [[-11.0, -11.0], [-1.0, -3.0]]))
    torch.testing.assert_close(out.loss, t(0.1 * softplus(-0.2) + 9.0, 0.1 * softplus(0.3) + 1.8))


def test_equals_dpo_when_only_dpo_term_is_on():
    """dpo_weight = 1, sft_weight = 0, γ = 0 → exactly DPO(β) on the same (random) inputs."""
    g = torch.Generator().manual_seed(7)
    policy = -torch.rand(16, 2, generator=g, dtype=F64) * 50
    ref = -torch.rand(16, 2, generator=g, dtype=F64) * 50
    batch = pairs(policy, ref)
    for beta in (0.05, 0.1, 0.7):
        ours = get_objective("uvcot", beta=beta, dpo_weight=1.0, sft_weight=0.0, score_margin=0.0)(batch).loss
        dpo = get_objective("dpo", beta=beta)(batch).loss
        torch.testing.assert_close(ours, dpo, rtol=0, atol=0)


def test_larger_score_gap_increases_loss():
    """With γ > 0 a larger s_w − s_l raises the margin and so −log σ(z − γ·gap) strictly increases.
    Hand check at gap 0: ℓ = 0.1·ln(1 + e^−0.2) + 9."""
    obj = get_objective("uvcot", score_margin=0.3)
    losses = [
        obj(pairs([[-10.0, -12.0]], [[-11.0, -11.0]], scores=[[gap, 0.0]])).loss.item() for gap in (0.0, 1.0, 2.0, 4.0)
    ]
    assert losses[0] == pytest.approx(0.1 * softplus(-0.2) + 9.0)
    assert all(a < b for a, b in zip(losses, losses[1:])), losses


# -- gradients ---------------------------------------------------------------------------------------


def test_sft_term_raises_winner_logprob():
    """w_dpo = 0, w_sft = 0.9: ℓ = −0.9·log π(y_w) → ∂ℓ/∂ log π(y_w) = −0.9 < 0, ∂ℓ/∂ log π(y_l) = 0."""
    policy = rows([[-10.0, -12.0]], requires_grad=True)
    get_objective("uvcot", dpo_weight=0.0)(pairs(policy, [[-11.0, -11.0]])).loss.sum().backward()
    torch.testing.assert_close(policy.grad, rows([[-0.9, 0.0]]))


def test_default_gradient_hand_computed():
    """z = 0.2: ∂DPO/∂Δ_w = −β σ(−z) = −0.1/(1 + e^0.2) = −0.0450166; ∂DPO/∂Δ_l = +0.0450166.
    ∂ℓ/∂ log π(y_w) = 0.1·(−0.0450166) − 0.9 = −0.904502 (< 0: winner raised);
    ∂ℓ/∂ log π(y_l) = +0.00450166 (> 0: loser lowered); reference gradients are the DPO parts negated."""
    policy = rows([[-10.0, -12.0]], requires_grad=True)
    ref = rows([[-11.0, -11.0]], requires_grad=True)
    get_objective("uvcot")(pairs(policy, ref)).loss.sum().backward()
    d = 0.1 * 0.1 / (1.0 + math.exp(0.2))
    assert d == pytest.approx(0.00450166, abs=1e-8)
    torch.testing.assert_close(policy.grad, rows([[-d - 0.9, d]]))
    torch.testing.assert_close(ref.grad, rows([[d, -d]]))
    assert policy.grad[0, 0] < 0 < policy.grad[0, 1]


def test_gradient_with_score_margin_hand_computed():
    """γ = 0.5, s = [5, 2] → z = 0.2 − 1.5 = −1.3; scores are data, the gradient goes to the log-probs."""
    policy = rows([[-10.0, -12.0]], requires_grad=True)
    out = get_objective("uvcot", score_margin=0.5)(pairs(policy, [[-11.0, -11.0]], scores=[[5.0, 2.0]]))
    out.loss.sum().backward()
    # ∂ℓ/∂ log π(y_w) = −0.1·0.1·σ(1.3) − 0.9, σ(1.3) = 1/(1 + e^−1.3)
    d = 0.01 / (1.0 + math.exp(-1.3))
    torch.testing.assert_close(policy.grad, rows([[-d - 0.9, d]]))


# -- bad inputs --------------------------------------------------------------------------------------


def test_missing_scores_rejected_when_margin_is_on():
    with pytest.raises(ObjectiveInputError, match="scores"):
        get_objective("uvcot", score_margin=0.5)(pairs([[-10.0, -12.0]], [[-11.0, -11.0]]))


def test_missing_reference_rejected():
    with pytest.raises(ObjectiveInputError, match="reference"):
        get_objective("uvcot")(pairs([[-10.0, -12.0]]))


@pytest.mark.parametrize("k", [1, 3])
def test_wrong_group_size_rejected(k):
    with pytest.raises(ObjectiveInputError, match=r"K = 2"):
        get_objective("uvcot")(pairs([[-1.0] * k], [[-1.0] * k]))


def test_masked_pair_rejected():
    with pytest.raises(ObjectiveInputError, match="complete pairs"):
        get_objective("uvcot")(pairs([[-1.0, -2.0]], [[-1.0, -2.0]], mask=torch.tensor([[True, False]])))


@pytest.mark.parametrize(
    ("hyper", "match"),
    [
        (dict(beta=-0.1), "beta"),
        (dict(beta=0.0), "beta"),
        (dict(dpo_weight=-0.1), "dpo_weight"),
        (dict(sft_weight=-0.9), "sft_weight"),
        (dict(score_margin=-1.0), "score_margin"),
        (dict(score_margin=float("nan")), "score_margin"),
    ],
)
def test_bad_hyperparameters_rejected(hyper, match):
    with pytest.raises(ValueError, match=match):
        get_objective("uvcot", **hyper)


def test_unknown_hyperparameter_rejected():
    with pytest.raises(TypeError, match="gamma"):
        get_objective("uvcot", gamma=0.5)
