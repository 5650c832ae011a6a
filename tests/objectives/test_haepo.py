"""HAEPO (align/objectives/haepo.py): hand-derived losses, masking, gradients and bad inputs.

ℓ = −Σ_k w_k R̃_k − λ_H·H + λ_KL·KL,   w = softmax(L / τ) over the valid entries of a group.
"""

from __future__ import annotations

import math

import pytest
import torch

from align.objectives import CompletionGroups, ObjectiveInputError, get_objective
from align.objectives.haepo import HAEPO, kl_per_token

F64 = torch.float64
LN2, LN3 = math.log(2.0), math.log(3.0)
EPS = 1e-6  # HAEPO's default eps in (R − mean) / (std + eps)


def t(*values, requires_grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=F64, requires_grad=requires_grad)


def rows(values, requires_grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=F64, requires_grad=requires_grad)


def group(logps, returns, *, token_counts=None, **extra) -> CompletionGroups:
    """One record from nested lists / tensors; token counts default to 1 per completion."""
    logps = logps if isinstance(logps, torch.Tensor) else rows(logps)
    returns = returns if isinstance(returns, torch.Tensor) else rows(returns)
    if token_counts is None:
        token_counts = torch.ones(logps.shape, dtype=torch.long)
    elif not isinstance(token_counts, torch.Tensor):
        token_counts = torch.tensor(token_counts, dtype=torch.long)
    return CompletionGroups(policy_logps_sum=logps, token_counts=token_counts, returns=returns, **extra)


def pl_only(**hyper) -> HAEPO:
    """HAEPO with only the Plackett-Luce term (no entropy bonus, no KL)."""
    return get_objective("haepo", entropy_coef=0.0, kl_coef=0.0, **hyper)


# -- defaults and the Plackett-Luce term ----------------------------------------------------------


def test_defaults():
    obj = get_objective("haepo")
    assert isinstance(obj, HAEPO)
    assert obj.tau == 1.0
    assert obj.return_norm == "group"
    assert obj.entropy_coef == 0.001
    assert obj.kl_coef == 0.04
    assert obj.kl_estimator == "k3"
    assert obj.length_normalize is False


def test_plackett_luce_weights_hand_computed_mean_norm():
    """L = [0, ln 2, ln 3] → exp(L) = [1, 2, 3] → w = [1/6, 2/6, 3/6].
    R = [1, 2, 3], 'mean' → R̃ = [−1, 0, 1].
    Σ w R̃ = −1/6 + 0 + 3/6 = 1/3 → ℓ = −1/3; max weight = 1/2."""
    out = pl_only(return_norm="mean")(group([[0.0, LN2, LN3]], [[1.0, 2.0, 3.0]]))
    torch.testing.assert_close(out.loss, t(-1.0 / 3.0))
    torch.testing.assert_close(out.metrics["haepo/pl_term"], t(1.0 / 3.0))
    torch.testing.assert_close(out.metrics["haepo/max_weight"], t(0.5))
    torch.testing.assert_close(out.metrics["haepo/return_mean"], t(2.0))


def test_effective_sample_size_and_best_weight_hand_computed():
    """w = [1/6, 2/6, 3/6] (L = [0, ln 2, ln 3]) → ESS = 1 / Σ w² = 36 / 14 = 18/7.
    Row 2: returns [1, 5, 5] tie at the best, so best_weight = 2/6 + 3/6 = 5/6; row 1: R = [3, 2, 1]
    puts the best return on the smallest weight, 1/6. Uniform weights (equal L) give ESS = K = 3."""
    out = pl_only()(group([[0.0, LN2, LN3], [0.0, LN2, LN3], [1.0, 1.0, 1.0]], [[3.0, 2.0, 1.0], [1.0, 5.0, 5.0], [0.0, 1.0, 2.0]]))
    torch.testing.assert_close(out.metrics["haepo/ess"], t(18.0 / 7.0, 18.0 / 7.0, 3.0))
    torch.testing.assert_close(out.metrics["haepo/best_weight"], t(1.0 / 6.0, 5.0 / 6.0, 1.0 / 3.0))


def test_effective_sample_size_and_best_weight_ignore_masked_entries():
    """Entry 1 masked, with the largest (fake) return: valid w = [1/4, 3/4] → ESS = 1 / (1/16 + 9/16) = 1.6;
    the best valid return is entry 0's (R = 6), so best_weight = 1/4."""
    batch = group([[0.0, NAN, LN3]], [[6.0, 1e30, 2.0]], mask=torch.tensor([[True, False, True]]))
    out = pl_only()(batch)
    torch.testing.assert_close(out.metrics["haepo/ess"], t(1.6))
    torch.testing.assert_close(out.metrics["haepo/best_weight"], t(0.25))


def test_group_norm_hand_computed():
    """R = [1, 2, 3]: mean 2, centred [−1, 0, 1], population std √((1+0+1)/3) = √(2/3) = 0.816497.
    R̃ = [−1, 0, 1] / (√(2/3) + 1e−6); w = [1/6, 2/6, 3/6] →
    Σ w R̃ = (2/6)/(√(2/3) + 1e−6) → ℓ = −1/(3(√(2/3) + 1e−6)) ≈ −0.408248."""
    out = pl_only()(group([[0.0, LN2, LN3]], [[1.0, 2.0, 3.0]]))
    expected = -1.0 / (3.0 * (math.sqrt(2.0 / 3.0) + EPS))
    assert expected == pytest.approx(-0.408248, abs=1e-6)
    torch.testing.assert_close(out.loss, t(expected))


def test_group_norm_is_shift_and_scale_invariant():
    """R and 10·R + 7 give the same R̃ (up to eps), so the same loss: −1/(3·√(2/3)) ≈ −0.408248."""
    a = pl_only()(group([[0.0, LN2, LN3]], [[1.0, 2.0, 3.0]])).loss
    b = pl_only()(group([[0.0, LN2, LN3]], [[17.0, 27.0, 37.0]])).loss
    torch.testing.assert_close(a, t(-1.0 / (3.0 * math.sqrt(2.0 / 3.0))), rtol=0, atol=1e-5)
    torch.testing.assert_close(b, t(-1.0 / (3.0 * math.sqrt(2.0 / 3.0))), rtol=0, atol=1e-5)


def test_return_norm_none_uses_raw_returns():
    """'none': R̃ = R = [1, 2, 3]; w = [1/6, 2/6, 3/6] → Σ w R = 1/6 + 4/6 + 9/6 = 14/6 → ℓ = −7/3."""
    out = pl_only(return_norm="none")(group([[0.0, LN2, LN3]], [[1.0, 2.0, 3.0]]))
    torch.testing.assert_close(out.loss, t(-7.0 / 3.0))


def test_tau_divides_log_likelihoods():
    """L = [0, 2 ln 2, 2 ln 3]:
    τ = 2 → L/τ = [0, ln 2, ln 3] → w = [1, 2, 3]/6 → 'mean' ℓ = −(−1 + 3)/6 = −1/3;
    τ = 1 → exp(L) = [1, 4, 9] → w = [1, 4, 9]/14 → ℓ = −(−1 + 9)/14 = −4/7."""
    batch = group([[0.0, 2 * LN2, 2 * LN3]], [[1.0, 2.0, 3.0]])
    torch.testing.assert_close(pl_only(return_norm="mean", tau=2.0)(batch).loss, t(-1.0 / 3.0))
    torch.testing.assert_close(pl_only(return_norm="mean", tau=1.0)(batch).loss, t(-4.0 / 7.0))


def test_length_normalize_uses_per_token_means():
    """Sums L = [0, 2 ln 2, 3 ln 3], |y| = [1, 2, 3]:
    length_normalize → means [0, ln 2, ln 3] → w = [1, 2, 3]/6 → 'mean' ℓ = −1/3;
    without → exp(L) = [1, 4, 27] → w = [1, 4, 27]/32 → ℓ = −(−1 + 27)/32 = −13/16."""
    batch = group([[0.0, 2 * LN2, 3 * LN3]], [[1.0, 2.0, 3.0]], token_counts=[[1, 2, 3]])
    torch.testing.assert_close(pl_only(return_norm="mean", length_normalize=True)(batch).loss, t(-1.0 / 3.0))
    torch.testing.assert_close(pl_only(return_norm="mean", length_normalize=False)(batch).loss, t(-13.0 / 16.0))


def test_batch_rows_are_independent():
    """Row 0 as in the 'mean' hand example (ℓ = −1/3); row 1: L = [0, 0, 0] → w = 1/3 each,
    R = [5, 5, 8] → R̃ = [−1, −1, 2] → Σ w R̃ = 0 → ℓ = 0."""
    out = pl_only(return_norm="mean")(group([[0.0, LN2, LN3], [0.0, 0.0, 0.0]], [[1.0, 2.0, 3.0], [5.0, 5.0, 8.0]]))
    torch.testing.assert_close(out.loss, t(-1.0 / 3.0, 0.0))


# -- all-equal returns: no preference term --------------------------------------------------------


@pytest.mark.parametrize("return_norm", ["group", "mean"])
def test_all_equal_returns_give_zero_loss_and_zero_gradient(return_norm):
    """R = [2, 2, 2] → centred returns are 0 → R̃ = 0 → ℓ = 0 exactly, and ∂ℓ/∂L = 0."""
    logps = rows([[-3.0, -1.0, -7.0]], requires_grad=True)
    out = pl_only(return_norm=return_norm)(group(logps, [[2.0, 2.0, 2.0]]))
    assert out.loss.item() == 0.0
    out.loss.sum().backward()
    assert torch.equal(logps.grad, torch.zeros_like(logps))


def _token_record(returns, *, policy_tok, ref_tok, ent, tmask, logps=None, mask=None, requires_grad=False):
    policy_tok = rows(policy_tok, requires_grad=requires_grad)
    ref_tok = rows(ref_tok)
    ent = rows(ent, requires_grad=requires_grad)
    tmask = torch.tensor(tmask, dtype=torch.bool)
    counts = tmask.sum(-1)
    if logps is None:
        logps = rows((policy_tok.detach() * tmask).sum(-1).tolist(), requires_grad=requires_grad)
    elif not isinstance(logps, torch.Tensor):
        logps = rows(logps, requires_grad=requires_grad)
    ref_sum = (ref_tok * tmask).sum(-1)
    if mask is not None:
        mask = torch.tensor(mask, dtype=torch.bool)
    batch = CompletionGroups(
        policy_logps_sum=logps,
        token_counts=counts,
        ref_logps_sum=ref_sum,
        mask=mask,
        policy_token_logps=policy_tok,
        ref_token_logps=ref_tok,
        token_entropies=ent,
        token_mask=tmask,
        returns=rows(returns),
    )
    return batch, logps, policy_tok, ent


# Two completions; tokens (0,0), (0,1), (1,0) are completion tokens, (1,1) is padding (garbage 99).
# log r = log π_ref − log π_θ = [[ln 2, ln 2], [−ln 2, ·]].
_POLICY_TOK = [[[-1.0, -2.0], [-3.0, 99.0]]]
_REF_TOK = [[[-1.0 + LN2, -2.0 + LN2], [-3.0 - LN2, 99.0]]]
_ENT = [[[1.0, 2.0], [3.0, 99.0]]]
_TMASK = [[[True, True], [True, False]]]


def test_all_equal_returns_leave_only_entropy_and_kl():
    """R = [4, 4] → no preference term. H = mean(1, 2, 3) = 2.
    k3 per token: r = 2 → 2 − 1 − ln 2 = 1 − ln 2 (twice); r = ½ → −½ + ln 2.
    KL = (2 − 2 ln 2 − ½ + ln 2)/3 = (1.5 − ln 2)/3 = 0.5 − ln 2/3.
    λ_H = 0.5, λ_KL = 0.25 → ℓ = −0.5·2 + 0.25·(0.5 − ln 2/3) = −1 + 0.125 − ln 2/12 ≈ −0.932762."""
    batch, *_ = _token_record([[4.0, 4.0]], policy_tok=_POLICY_TOK, ref_tok=_REF_TOK, ent=_ENT, tmask=_TMASK)
    out = get_objective("haepo", entropy_coef=0.5, kl_coef=0.25, kl_estimator="k3")(batch)
    expected = -1.0 + 0.25 * (0.5 - LN2 / 3.0)
    assert expected == pytest.approx(-0.932762, abs=1e-6)
    torch.testing.assert_close(out.loss, t(expected))
    torch.testing.assert_close(out.metrics["haepo/entropy"], t(2.0))
    torch.testing.assert_close(out.metrics["haepo/kl"], t(0.5 - LN2 / 3.0))
    torch.testing.assert_close(out.metrics["haepo/pl_term"], t(0.0))


@pytest.mark.parametrize(
    ("estimator", "expected_kl"),
    [
        # k1 = −log r: (−ln 2 − ln 2 + ln 2)/3 = −ln 2/3
        ("k1", -LN2 / 3.0),
        # k2 = ½ (log r)²: ½ (ln 2)² for every token → mean ½ (ln 2)²
        ("k2", 0.5 * LN2**2),
        # k3 = (r − 1) − log r: (2(1 − ln 2) + (ln 2 − ½))/3 = 0.5 − ln 2/3
        ("k3", 0.5 - LN2 / 3.0),
    ],
)
def test_kl_estimators_hand_computed(estimator, expected_kl):
    """log r = [ln 2, ln 2, −ln 2] on the three completion tokens; λ_KL = 2, no entropy,
    all-equal returns → ℓ = 2·KL."""
    batch, *_ = _token_record([[1.0, 1.0]], policy_tok=_POLICY_TOK, ref_tok=_REF_TOK, ent=_ENT, tmask=_TMASK)
    out = get_objective("haepo", entropy_coef=0.0, kl_coef=2.0, kl_estimator=estimator)(batch)
    torch.testing.assert_close(out.metrics["haepo/kl"], t(expected_kl))
    torch.testing.assert_close(out.loss, t(2.0 * expected_kl))


def test_kl_per_token_function_hand_values():
    """log π_θ = 0, log π_ref = ln 2 → log r = ln 2, r = 2:
    k1 = −ln 2, k2 = ½ (ln 2)², k3 = 1 − ln 2."""
    p, r = t(0.0), t(LN2)
    torch.testing.assert_close(kl_per_token(p, r, "k1"), t(-LN2))
    torch.testing.assert_close(kl_per_token(p, r, "k2"), t(0.5 * LN2**2))
    torch.testing.assert_close(kl_per_token(p, r, "k3"), t(1.0 - LN2))
    with pytest.raises(ValueError, match="unknown KL estimator"):
        kl_per_token(p, r, "k4")


def test_kl_zero_when_policy_equals_reference():
    """log r = 0 → k1 = k2 = k3 = 0 → with equal returns and no entropy, ℓ = 0."""
    batch, *_ = _token_record([[1.0, 1.0]], policy_tok=_POLICY_TOK, ref_tok=_POLICY_TOK, ent=_ENT, tmask=_TMASK)
    for est in ("k1", "k2", "k3"):
        out = get_objective("haepo", entropy_coef=0.0, kl_coef=1.0, kl_estimator=est)(batch)
        torch.testing.assert_close(out.loss, t(0.0))


def test_entropy_bonus_lowers_loss():
    """Equal returns, λ_H = 0.5, no KL: H = mean(1, 2, 3) = 2 → ℓ = −1;
    entropies + 1 → H = 3 → ℓ = −1.5 (higher entropy → lower loss); ∂ℓ/∂H_t = −0.5/3 on each token."""
    obj = get_objective("haepo", entropy_coef=0.5, kl_coef=0.0)
    batch, _, _, ent = _token_record(
        [[1.0, 1.0]], policy_tok=_POLICY_TOK, ref_tok=_REF_TOK, ent=_ENT, tmask=_TMASK, requires_grad=True
    )
    out = obj(batch)
    torch.testing.assert_close(out.loss, t(-1.0))
    out.loss.sum().backward()
    torch.testing.assert_close(ent.grad, rows([[[-0.5 / 3, -0.5 / 3], [-0.5 / 3, 0.0]]]))

    higher = [[[2.0, 3.0], [4.0, 99.0]]]
    batch_hi, *_ = _token_record([[1.0, 1.0]], policy_tok=_POLICY_TOK, ref_tok=_REF_TOK, ent=higher, tmask=_TMASK)
    loss_hi = obj(batch_hi).loss
    torch.testing.assert_close(loss_hi, t(-1.5))
    assert loss_hi.item() < out.loss.item()


def test_all_three_terms_with_default_coefficients():
    """Defaults: τ = 1, 'group', λ_H = 0.001, λ_KL = 0.04, k3.
    L = [−3, −3 + ln 3] → w = [1, 3]/4. R = [0, 1] → centred [−½, ½], std ½ → R̃ = ±½/(½ + 1e−6).
    Σ w R̃ = (−1/8 + 3/8)/(½ + 1e−6) = 0.25/(0.5 + 1e−6).
    H = 2, KL(k3) = 0.5 − ln 2/3 (token set-up above).
    ℓ = −0.25/0.500001 − 0.001·2 + 0.04·(0.5 − ln 2/3) ≈ −0.499999 − 0.002 + 0.010758 ≈ −0.491241."""
    batch, *_ = _token_record(
        [[0.0, 1.0]], policy_tok=_POLICY_TOK, ref_tok=_REF_TOK, ent=_ENT, tmask=_TMASK, logps=[[-3.0, -3.0 + LN3]]
    )
    out = get_objective("haepo")(batch)
    expected = -0.25 / (0.5 + EPS) - 0.001 * 2.0 + 0.04 * (0.5 - LN2 / 3.0)
    assert expected == pytest.approx(-0.491241, abs=1e-6)
    torch.testing.assert_close(out.loss, t(expected))


# -- gradients --------------------------------------------------------------------------------------


def test_gradient_raises_best_and_lowers_worst():
    """Equal L → w = 1/3 each; R = [1, 2, 3] → R̃ = [−1, 0, 1]/(√(2/3) + ε), Σ w R̃ = 0.
    ∂ℓ/∂L_k = −w_k (R̃_k − Σ_j w_j R̃_j) = −R̃_k/3:
    best (R=3): −1/(3(√(2/3)+ε)) < 0; worst (R=1): +1/(3(√(2/3)+ε)) > 0; middle: 0."""
    logps = rows([[-5.0, -5.0, -5.0]], requires_grad=True)
    pl_only()(group(logps, [[1.0, 2.0, 3.0]])).loss.sum().backward()
    g = 1.0 / (3.0 * (math.sqrt(2.0 / 3.0) + EPS))
    assert logps.grad[0, 2] < 0 < logps.grad[0, 0]
    torch.testing.assert_close(logps.grad, rows([[g, 0.0, -g]]))


def test_gradient_direction_with_unequal_weights():
    """L = [0, ln 2, ln 3], R = [3, 1, 2] ('mean' → R̃ = [1, −1, 0]); w = [1, 2, 3]/6,
    Σ w R̃ = (1 − 2)/6 = −1/6. ∂ℓ/∂L_k = −w_k (R̃_k + 1/6):
    k=0: −(1/6)(7/6) = −7/36; k=1: −(2/6)(−5/6) = 10/36; k=2: −(3/6)(1/6) = −3/36."""
    logps = rows([[0.0, LN2, LN3]], requires_grad=True)
    pl_only(return_norm="mean")(group(logps, [[3.0, 1.0, 2.0]])).loss.sum().backward()
    torch.testing.assert_close(logps.grad, rows([[-7.0 / 36, 10.0 / 36, -3.0 / 36]]))
    assert logps.grad[0, 0] < 0  # best return: pushed up
    assert logps.grad[0, 1] > 0  # worst return: pushed down


def test_kl_gradient_pulls_policy_towards_reference():
    """k1 = log π_θ − log π_ref per token; λ_KL = 3, 3 tokens → ∂ℓ/∂ log π_θ(t) = 3/3 = 1 on each
    completion token and 0 on padding."""
    batch, _, ptok, _ = _token_record(
        [[1.0, 1.0]], policy_tok=_POLICY_TOK, ref_tok=_REF_TOK, ent=_ENT, tmask=_TMASK, requires_grad=True
    )
    get_objective("haepo", entropy_coef=0.0, kl_coef=3.0, kl_estimator="k1")(batch).loss.sum().backward()
    torch.testing.assert_close(ptok.grad, rows([[[1.0, 1.0], [1.0, 0.0]]]))


# -- masked list entries ----------------------------------------------------------------------------

NAN = float("nan")


def _full_and_reduced(requires_grad: bool = True):
    """Two prompts, K = 4 with garbage in masked entries vs the same valid entries at K = 2 / 3.

    Row 0: valid k = 0, 2 (k = 1 holds NaN, k = 3 holds 1e30); row 1: valid k = 0, 1, 3."""
    logps_full = rows([[-1.0, NAN, -2.0, 1e30], [-0.5, -1.5, NAN, -2.5]], requires_grad=requires_grad)
    returns_full = rows([[1.0, NAN, 3.0, -1e30], [0.0, 2.0, 1e30, 7.0]])
    mask = torch.tensor([[True, False, True, False], [True, True, False, True]])
    counts_full = torch.tensor([[2, 0, 1, 5], [1, 2, 0, 2]])
    tmask_full = torch.tensor(
        [
            [[1, 1], [1, 1], [1, 0], [1, 1]],
            [[1, 0], [1, 1], [0, 0], [1, 1]],
        ],
        dtype=torch.bool,
    )
    ptok_full = rows(
        [
            [[-0.4, -0.6], [NAN, NAN], [-2.0, NAN], [1e30, -1e30]],
            [[-0.5, NAN], [-1.0, -0.5], [NAN, NAN], [-2.0, -0.5]],
        ],
        requires_grad=requires_grad,
    )
    rtok_full = rows(
        [
            [[-0.3, -0.9], [NAN, NAN], [-1.5, 5.0], [-1e30, 1e30]],
            [[-0.7, 0.0], [-1.2, -0.1], [NAN, 1e30], [-1.0, -0.9]],
        ]
    )
    ent_full = rows(
        [
            [[0.5, 1.0], [NAN, NAN], [2.0, NAN], [1e30, 1e30]],
            [[0.1, NAN], [0.2, 0.3], [NAN, NAN], [0.4, 0.5]],
        ],
        requires_grad=requires_grad,
    )
    full = CompletionGroups(
        policy_logps_sum=logps_full,
        token_counts=counts_full,
        ref_logps_sum=rows([[-1.2, NAN, -1.5, 0.0], [-0.7, -1.3, NAN, -1.9]]),
        mask=mask,
        policy_token_logps=ptok_full,
        ref_token_logps=rtok_full,
        token_entropies=ent_full,
        token_mask=tmask_full,
        returns=returns_full,
    )

    def reduced_row(b, keep):
        logps = rows([[logps_full[b, k].item() for k in keep]], requires_grad=requires_grad)
        ptok = rows([[ptok_full[b, k].tolist() for k in keep]], requires_grad=requires_grad)
        ent = rows([[ent_full[b, k].tolist() for k in keep]], requires_grad=requires_grad)
        batch = CompletionGroups(
            policy_logps_sum=logps,
            token_counts=counts_full[b, keep].unsqueeze(0),
            ref_logps_sum=full.ref_logps_sum[b, keep].unsqueeze(0),
            policy_token_logps=ptok,
            ref_token_logps=rtok_full[b, keep].unsqueeze(0),
            token_entropies=ent,
            token_mask=tmask_full[b, keep].unsqueeze(0),
            returns=returns_full[b, keep].unsqueeze(0),
        )
        return batch, logps, ptok, ent

    reduced = [reduced_row(0, [0, 2]), reduced_row(1, [0, 1, 3])]
    return full, (logps_full, ptok_full, ent_full), reduced


OBJECTIVE_VARIANTS = [
    dict(entropy_coef=0.0, kl_coef=0.0),
    dict(entropy_coef=0.1, kl_coef=0.2, kl_estimator="k3"),
    dict(entropy_coef=0.1, kl_coef=0.2, kl_estimator="k1", return_norm="mean", tau=0.5),
    dict(entropy_coef=0.1, kl_coef=0.2, kl_estimator="k2", return_norm="none", length_normalize=True),
]


@pytest.mark.parametrize("hyper", OBJECTIVE_VARIANTS)
def test_masked_entries_do_not_change_loss(hyper):
    """Masked entries full of NaN / ±1e30 give the same loss as the group with them removed."""
    obj = get_objective("haepo", **hyper)
    full, _, reduced = _full_and_reduced(requires_grad=False)
    out = obj(full)
    assert torch.isfinite(out.loss).all()
    expected = torch.cat([obj(batch).loss for batch, *_ in reduced])
    torch.testing.assert_close(out.loss, expected)
    for name in ("haepo/pl_term", "haepo/entropy", "haepo/kl", "haepo/max_weight", "haepo/return_mean"):
        reduced_metric = torch.cat([obj(batch).metrics[name] for batch, *_ in reduced])
        torch.testing.assert_close(out.metrics[name], reduced_metric, msg=name)


@pytest.mark.parametrize("hyper", OBJECTIVE_VARIANTS)
def test_masked_entries_do_not_change_gradient(hyper):
    """Gradients w.r.t. valid entries equal those of the reduced groups; masked entries (and
    padding tokens) get exactly zero gradient, not NaN."""
    obj = get_objective("haepo", **hyper)
    full, (logps, ptok, ent), reduced = _full_and_reduced()
    obj(full).loss.sum().backward()

    def grad(x):  # a leaf the loss does not reach (e.g. entropies with λ_H = 0) has no .grad
        return torch.zeros_like(x) if x.grad is None else x.grad

    keep = {0: [0, 2], 1: [0, 1, 3]}
    for b, (batch, r_logps, r_ptok, r_ent) in enumerate(reduced):
        obj(batch).loss.sum().backward()
        torch.testing.assert_close(grad(logps)[b, keep[b]], grad(r_logps)[0])
        tm = batch.token_mask[0]
        torch.testing.assert_close(grad(ptok)[b, keep[b]][tm], grad(r_ptok)[0][tm])
        torch.testing.assert_close(grad(ent)[b, keep[b]][tm], grad(r_ent)[0][tm])
    masked = ~full.mask
    for x in (logps, ptok, ent):
        assert torch.equal(grad(x)[masked], torch.zeros_like(grad(x)[masked]))
        assert torch.isfinite(grad(x)).all()
    # padding tokens of valid completions get no gradient either
    padding = ~full.token_mask
    assert torch.equal(grad(ptok)[padding], torch.zeros_like(grad(ptok)[padding]))
    assert torch.equal(grad(ent)[padding], torch.zeros_like(grad(ent)[padding]))


def test_masked_entries_get_zero_plackett_luce_weight_hand_computed():
    """K = 3, entry 1 masked with L = NaN, R = 1e30. Valid L = [0, ln 3] → w = [1/4, 3/4];
    R = [2, 6] → 'mean' R̃ = [−2, 2] → Σ w R̃ = −0.5 + 1.5 = 1 → ℓ = −1; max weight 3/4."""
    batch = group([[0.0, NAN, LN3]], [[2.0, 1e30, 6.0]], mask=torch.tensor([[True, False, True]]))
    out = pl_only(return_norm="mean")(batch)
    torch.testing.assert_close(out.loss, t(-1.0))
    torch.testing.assert_close(out.metrics["haepo/max_weight"], t(0.75))
    torch.testing.assert_close(out.metrics["haepo/return_mean"], t(4.0))


def test_nan_token_count_of_masked_entry_does_not_leak():
    """Masked entries "may hold any value (even NaN)" (base.py), token_counts included.
    Valid entry: L = −4, |y| = 2 → per-token mean −2; a single valid entry → ℓ = 0, zero gradient,
    and the metric logps/mean = −2 (not NaN)."""
    logps = rows([[-4.0, NAN]], requires_grad=True)
    batch = CompletionGroups(
        policy_logps_sum=logps,
        token_counts=rows([[2.0, NAN]]),
        mask=torch.tensor([[True, False]]),
        returns=rows([[1.0, NAN]]),
    )
    out = pl_only(length_normalize=True)(batch)
    assert out.loss.item() == 0.0
    out.loss.sum().backward()
    assert torch.equal(logps.grad, torch.zeros_like(logps))
    torch.testing.assert_close(out.metrics["logps/mean"], t(-2.0))


def test_single_valid_entry_gives_zero_preference_term():
    """Only one valid completion: its centred return is 0 → ℓ = 0 and zero gradient."""
    logps = rows([[-2.0, NAN]], requires_grad=True)
    batch = group(logps, [[5.0, NAN]], mask=torch.tensor([[True, False]]))
    out = pl_only()(batch)
    assert out.loss.item() == 0.0
    out.loss.sum().backward()
    assert torch.equal(logps.grad, torch.zeros_like(logps))


# -- bad inputs --------------------------------------------------------------------------------------


def test_single_completion_rejected():
    with pytest.raises(ObjectiveInputError, match=r"K >= 2"):
        pl_only()(group([[-1.0]], [[1.0]]))


def test_missing_returns_rejected():
    batch = CompletionGroups(policy_logps_sum=rows([[-1.0, -2.0]]), token_counts=torch.tensor([[1, 1]]))
    with pytest.raises(ObjectiveInputError, match="returns"):
        pl_only()(batch)


def test_missing_reference_rejected_when_kl_is_on():
    batch, *_ = _token_record([[1.0, 2.0]], policy_tok=_POLICY_TOK, ref_tok=_REF_TOK, ent=_ENT, tmask=_TMASK)
    no_ref = CompletionGroups(
        policy_logps_sum=batch.policy_logps_sum,
        token_counts=batch.token_counts,
        policy_token_logps=batch.policy_token_logps,
        ref_token_logps=batch.ref_token_logps,
        token_entropies=batch.token_entropies,
        token_mask=batch.token_mask,
        returns=batch.returns,
    )
    with pytest.raises(ObjectiveInputError, match="reference"):
        get_objective("haepo", kl_coef=0.1)(no_ref)
    # without KL no reference is needed
    pl_only()(no_ref)


def test_missing_token_values_rejected():
    batch = group([[-1.0, -2.0]], [[1.0, 2.0]], ref_logps_sum=rows([[-1.0, -2.0]]))
    with pytest.raises(ObjectiveInputError, match="token_entropies"):
        get_objective("haepo", entropy_coef=0.1, kl_coef=0.0)(batch)
    with pytest.raises(ObjectiveInputError, match="policy_token_logps"):
        get_objective("haepo", entropy_coef=0.0, kl_coef=0.1)(batch)


@pytest.mark.parametrize(
    ("hyper", "match"),
    [
        (dict(tau=-1.0), "tau"),
        (dict(tau=0.0), "tau"),
        (dict(eps=0.0), "eps"),
        (dict(entropy_coef=-0.1), "entropy_coef"),
        (dict(kl_coef=-0.1), "kl_coef"),
        (dict(kl_coef=float("nan")), "kl_coef"),
        (dict(return_norm="zscore"), "return_norm"),
        (dict(kl_estimator="k4"), "kl_estimator"),
    ],
)
def test_bad_hyperparameters_rejected(hyper, match):
    with pytest.raises(ValueError, match=match):
        get_objective("haepo", **hyper)


def test_unknown_hyperparameter_rejected():
    with pytest.raises(TypeError, match="temperature"):
        get_objective("haepo", temperature=1.0)
