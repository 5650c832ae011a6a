"""Implicit PRM (align/objectives/implicit_prm.py): CE and DPO variants, per-step process rewards
and their aggregation, on hand-derived numbers.

Outcome reward r = β·Δ(y), Δ = log π_θ(y|x) − log π_ref(y|x) (token sums).
"""

from __future__ import annotations

import math

import pytest
import torch

from align.objectives import (
    CompletionGroups,
    ImplicitPRMCE,
    ImplicitPRMDPO,
    ObjectiveInputError,
    StepRewards,
    aggregate_step_rewards,
    get_objective,
    process_rewards,
    reduce_metrics,
)
from align.objectives.implicit_prm import STEP_AGGREGATIONS

F64 = torch.float64
NAN = float("nan")
LN2 = math.log(2.0)


def t(*values, requires_grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=F64, requires_grad=requires_grad)


def rows(values, requires_grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=F64, requires_grad=requires_grad)


def single(policy, ref, labels=None, counts=None) -> CompletionGroups:
    """B single completions (K = 1) from flat lists; tensors are used as given."""
    policy = policy if isinstance(policy, torch.Tensor) else t(*policy)
    ref = ref if isinstance(ref, torch.Tensor) else t(*ref)
    n = policy.shape[0]
    return CompletionGroups(
        policy_logps_sum=policy.reshape(n, 1),
        token_counts=torch.tensor(counts or [1] * n).reshape(n, 1),
        ref_logps_sum=ref.reshape(n, 1),
        labels=None if labels is None else t(*labels).reshape(n, 1),
    )


def pairs(policy, ref) -> CompletionGroups:
    policy = policy if isinstance(policy, torch.Tensor) else rows(policy)
    return CompletionGroups(
        policy_logps_sum=policy,
        token_counts=torch.ones(policy.shape, dtype=torch.long),
        ref_logps_sum=rows(ref),
    )


def softplus(x: float) -> float:
    """ln(1 + e^x), written out with math."""
    return math.log1p(math.exp(x))


# -- CE variant ---------------------------------------------------------------------------------------


def test_ce_default_beta():
    assert get_objective("implicit_prm_ce").beta == 0.05


def test_ce_label_one_and_zero_hand_computed():
    """β = 0.5, Δ = −3 − (−5) = 2 → r = 1.
    label 1: ℓ = −log σ(1) = ln(1 + e^−1) = 0.313262;
    label 0: ℓ = −log(1 − σ(1)) = −log σ(−1) = ln(1 + e) = 1.313262."""
    out = get_objective("implicit_prm_ce", beta=0.5)(single([-3.0, -3.0], [-5.0, -5.0], labels=[1.0, 0.0]))
    assert softplus(-1.0) == pytest.approx(0.313262, abs=1e-6)
    assert softplus(1.0) == pytest.approx(1.313262, abs=1e-6)
    torch.testing.assert_close(out.loss, t(softplus(-1.0), softplus(1.0)))
    torch.testing.assert_close(out.metrics["rewards/mean"], t(1.0, 1.0))
    # r > 0 is "predicted correct": right for label 1, wrong for label 0
    torch.testing.assert_close(out.metrics["rewards/accuracies"], t(1.0, 0.0))


def test_ce_negative_reward_hand_computed():
    """β = 0.25, Δ = −10 − (−2) = −8 → r = −2.
    label 1: ℓ = ln(1 + e^2) = 2.126928; label 0: ℓ = ln(1 + e^−2) = 0.126928."""
    out = get_objective("implicit_prm_ce", beta=0.25)(single([-10.0, -10.0], [-2.0, -2.0], labels=[1.0, 0.0]))
    assert softplus(2.0) == pytest.approx(2.126928, abs=1e-6)
    torch.testing.assert_close(out.loss, t(softplus(2.0), softplus(-2.0)))
    torch.testing.assert_close(out.metrics["rewards/accuracies"], t(0.0, 1.0))


def test_ce_default_beta_hand_computed():
    """Default β = 0.05, Δ = −80 − (−100) = 20 → r = 1 → label 1: ln(1 + e^−1) = 0.313262."""
    out = get_objective("implicit_prm_ce")(single([-80.0], [-100.0], labels=[1.0]))
    torch.testing.assert_close(out.loss, t(softplus(-1.0)))


@pytest.mark.parametrize("label", [0.0, 1.0])
def test_ce_zero_logratio_gives_ln2(label):
    """Δ = 0 → r = 0 → σ(0) = ½ → ℓ = ln 2 = 0.693147 whatever the label."""
    out = get_objective("implicit_prm_ce", beta=0.3)(single([-7.0], [-7.0], labels=[label]))
    torch.testing.assert_close(out.loss, t(LN2))


def test_ce_gradient_label_one_raises_logratio_label_zero_lowers_it():
    """∂ℓ/∂Δ = β(σ(r) − l). β = 0.5, Δ = 2 (r = 1):
    label 1: 0.5(σ(1) − 1) = −0.5 σ(−1) = −0.5/(1 + e) = −0.134471  (< 0: raises log π_θ);
    label 0: 0.5 σ(1) = 0.5/(1 + e^−1) = 0.365529  (> 0: lowers it).
    ∂ℓ/∂ log π_ref = −∂ℓ/∂Δ."""
    policy = t(-3.0, -3.0, requires_grad=True)
    ref = t(-5.0, -5.0, requires_grad=True)
    get_objective("implicit_prm_ce", beta=0.5)(single(policy, ref, labels=[1.0, 0.0])).loss.sum().backward()
    g1 = -0.5 / (1.0 + math.e)
    g0 = 0.5 / (1.0 + math.exp(-1.0))
    assert g1 == pytest.approx(-0.134471, abs=1e-6)
    torch.testing.assert_close(policy.grad, t(g1, g0))
    torch.testing.assert_close(ref.grad, t(-g1, -g0))
    assert policy.grad[0] < 0 < policy.grad[1]


def test_ce_loss_uses_sums_not_means():
    """Token counts do not enter r: same sums with |y| = 1 or 50 → same loss ln(1 + e^−1)."""
    a = get_objective("implicit_prm_ce", beta=0.5)(single([-3.0], [-5.0], labels=[1.0], counts=[1])).loss
    b = get_objective("implicit_prm_ce", beta=0.5)(single([-3.0], [-5.0], labels=[1.0], counts=[50])).loss
    torch.testing.assert_close(a, t(softplus(-1.0)))
    torch.testing.assert_close(b, t(softplus(-1.0)))


def test_ce_pair_rejected():
    with pytest.raises(ObjectiveInputError, match=r"K = 1"):
        get_objective("implicit_prm_ce")(
            CompletionGroups(
                policy_logps_sum=rows([[-1.0, -2.0]]),
                token_counts=torch.tensor([[1, 1]]),
                ref_logps_sum=rows([[-1.0, -2.0]]),
                labels=rows([[1.0, 0.0]]),
            )
        )


def test_ce_missing_reference_rejected():
    batch = CompletionGroups(policy_logps_sum=rows([[-1.0]]), token_counts=torch.tensor([[1]]), labels=rows([[1.0]]))
    with pytest.raises(ObjectiveInputError, match="reference"):
        get_objective("implicit_prm_ce")(batch)


def test_ce_missing_labels_rejected():
    with pytest.raises(ObjectiveInputError, match="labels"):
        get_objective("implicit_prm_ce")(single([-1.0], [-2.0]))


def test_ce_labels_out_of_range_rejected():
    with pytest.raises(ObjectiveInputError, match="labels"):
        get_objective("implicit_prm_ce")(single([-1.0], [-2.0], labels=[2.0]))


@pytest.mark.parametrize("name", ["implicit_prm_ce", "implicit_prm_dpo"])
@pytest.mark.parametrize("beta", [-0.05, 0.0, float("inf")])
def test_bad_beta_rejected(name, beta):
    with pytest.raises(ValueError, match="beta"):
        get_objective(name, beta=beta)


@pytest.mark.parametrize("name", ["implicit_prm_ce", "implicit_prm_dpo"])
def test_unknown_hyperparameter_rejected(name):
    with pytest.raises(TypeError, match="label_smoothing"):
        get_objective(name, label_smoothing=0.1)


# -- DPO variant ----------------------------------------------------------------------------------------


def test_dpo_variant_default_beta_is_005():
    obj = get_objective("implicit_prm_dpo")
    assert isinstance(obj, ImplicitPRMDPO)
    assert obj.beta == 0.05


def test_dpo_variant_hand_computed_and_equals_dpo_with_beta_005():
    """Default β = 0.05. Row 0: Δ_w = −10 − (−30) = 20, Δ_l = −20 − (−20) = 0 → z = 0.05·20 = 1 →
    ℓ = ln(1 + e^−1) = 0.313262. Row 1: Δ_w = −5 − (−5) = 0, Δ_l = −15 − (−5) = −10 →
    z = 0.05·(0 − (−10)) = 0.5 → ℓ = ln(1 + e^−0.5) = 0.474077.
    Same numbers from get_objective('dpo', beta=0.05)."""
    batch = pairs([[-10.0, -20.0], [-5.0, -15.0]], [[-30.0, -20.0], [-5.0, -5.0]])
    out = get_objective("implicit_prm_dpo")(batch)
    expected = t(softplus(-1.0), softplus(-0.5))
    assert softplus(-0.5) == pytest.approx(0.474077, abs=1e-6)
    torch.testing.assert_close(out.loss, expected)
    dpo = get_objective("dpo", beta=0.05)(batch)
    torch.testing.assert_close(out.loss, dpo.loss, rtol=0, atol=0)
    torch.testing.assert_close(out.metrics["rewards/chosen"], t(1.0, 0.0))
    torch.testing.assert_close(out.metrics["rewards/rejected"], t(0.0, -0.5))


def test_dpo_variant_missing_reference_rejected():
    batch = CompletionGroups(policy_logps_sum=rows([[-1.0, -2.0]]), token_counts=torch.tensor([[1, 1]]))
    with pytest.raises(ObjectiveInputError, match="reference"):
        get_objective("implicit_prm_dpo")(batch)


def test_dpo_variant_single_rejected():
    with pytest.raises(ObjectiveInputError, match=r"K = 2"):
        get_objective("implicit_prm_dpo")(single([-1.0], [-2.0]))


# -- process rewards ------------------------------------------------------------------------------------


def _tokens(logratios, step_ids, ref=None):
    """Policy token log-probs = ref + log-ratio (ref defaults to −1 everywhere)."""
    lr = rows(logratios)
    ref = torch.full_like(lr, -1.0) if ref is None else rows(ref)
    return ref + lr, ref, torch.tensor(step_ids, dtype=torch.long)


def test_process_rewards_docstring_example():
    """Log-ratios [1, 1, 2, 0.5, −3], step ids [0, 0, 1, 1, 2], β = 1:
    r = [1 + 1, 2 + 0.5, −3] = [2, 2.5, −3]; q = [2, 4.5, 1.5]."""
    policy, ref, ids = _tokens([[1.0, 1.0, 2.0, 0.5, -3.0]], [[0, 0, 1, 1, 2]])
    steps = process_rewards(policy, ref, ids, beta=1.0)
    assert isinstance(steps, StepRewards)
    torch.testing.assert_close(steps.rewards, rows([[2.0, 2.5, -3.0]]))
    torch.testing.assert_close(steps.q_values, rows([[2.0, 4.5, 1.5]]))
    assert steps.step_mask.tolist() == [[True, True, True]]


def test_process_rewards_ignores_non_step_tokens_even_nan():
    """Tokens with step id −1 (prompt, padding) hold NaN / inf log-probs and are ignored:
    log-ratios of step tokens [1, 1, 2, 0.5, −3] as above → r = [2, 2.5, −3], q = [2, 4.5, 1.5]."""
    policy = rows([[NAN, -1.0, -1.0, 0.0, -0.5, float("inf"), -4.0, NAN]])
    ref = rows([[NAN, -2.0, -2.0, -2.0, -1.0, 3.0, -1.0, float("-inf")]])
    ids = torch.tensor([[-1, 0, 0, 1, 1, -1, 2, -1]])
    steps = process_rewards(policy, ref, ids, beta=1.0)
    torch.testing.assert_close(steps.rewards, rows([[2.0, 2.5, -3.0]]))
    torch.testing.assert_close(steps.q_values, rows([[2.0, 4.5, 1.5]]))
    assert torch.isfinite(steps.rewards).all()


def test_process_rewards_gradient_skips_non_step_tokens():
    """∂(Σ_t r_t)/∂ log π_θ(y_i) = β for step tokens and 0 for step-id −1 tokens (even NaN ones)."""
    policy = rows([[NAN, -1.0, -1.0, 0.0, NAN]], requires_grad=True)
    ref = rows([[NAN, -2.0, -2.0, -2.0, NAN]])
    ids = torch.tensor([[-1, 0, 0, 1, -1]])
    process_rewards(policy, ref, ids, beta=0.5).rewards.sum().backward()
    torch.testing.assert_close(policy.grad, rows([[0.0, 0.5, 0.5, 0.5, 0.0]]))


def test_process_rewards_rows_with_fewer_steps():
    """Row 0: the docstring example (3 steps). Row 1: log-ratios [1, 3, 0.5] in steps [0, 1, 1] then
    two padding tokens → r = [1, 3.5, 0 (missing)], q = [1, 4.5, 4.5], step_mask [T, T, F]."""
    policy, ref, ids = _tokens(
        [[1.0, 1.0, 2.0, 0.5, -3.0], [1.0, 3.0, 0.5, 0.0, 0.0]],
        [[0, 0, 1, 1, 2], [0, 1, 1, -1, -1]],
    )
    steps = process_rewards(policy, ref, ids, beta=1.0)
    torch.testing.assert_close(steps.rewards, rows([[2.0, 2.5, -3.0], [1.0, 3.5, 0.0]]))
    torch.testing.assert_close(steps.q_values, rows([[2.0, 4.5, 1.5], [1.0, 4.5, 4.5]]))
    assert steps.step_mask.tolist() == [[True, True, True], [True, True, False]]


def test_process_rewards_beta_scaling():
    """β = 0.5 halves every reward: [1, 1.25, −1.5], q = [1, 2.25, 0.75]; default β = 0.05 →
    r = [0.1, 0.125, −0.15], q = [0.1, 0.225, 0.075]."""
    policy, ref, ids = _tokens([[1.0, 1.0, 2.0, 0.5, -3.0]], [[0, 0, 1, 1, 2]])
    half = process_rewards(policy, ref, ids, beta=0.5)
    torch.testing.assert_close(half.rewards, rows([[1.0, 1.25, -1.5]]))
    torch.testing.assert_close(half.q_values, rows([[1.0, 2.25, 0.75]]))
    default = process_rewards(policy, ref, ids)
    torch.testing.assert_close(default.rewards, rows([[0.1, 0.125, -0.15]]))
    torch.testing.assert_close(default.q_values, rows([[0.1, 0.225, 0.075]]))


def test_process_rewards_use_log_ratios_not_policy_alone():
    """Same log-ratios over different reference log-probs give the same rewards."""
    a = process_rewards(*_tokens([[1.0, 2.0]], [[0, 1]]), beta=1.0)
    b = process_rewards(*_tokens([[1.0, 2.0]], [[0, 1]], ref=[[-7.0, -0.25]]), beta=1.0)
    torch.testing.assert_close(a.rewards, rows([[1.0, 2.0]]))
    torch.testing.assert_close(b.rewards, rows([[1.0, 2.0]]))


def test_process_rewards_shape_mismatch_rejected():
    policy, ref, ids = _tokens([[1.0, 1.0, 2.0]], [[0, 0, 1]])
    with pytest.raises(ValueError, match="shape"):
        process_rewards(policy, ref[:, :2], ids)
    with pytest.raises(ValueError, match="shape"):
        process_rewards(policy, ref, ids[:, :2])
    with pytest.raises(ValueError, match="shape"):
        process_rewards(policy[0], ref[0], ids[0])  # 1-D, not (N, T)


def test_process_rewards_float_step_ids_rejected():
    policy, ref, ids = _tokens([[1.0, 1.0, 2.0]], [[0, 0, 1]])
    with pytest.raises(ValueError, match="step_ids"):
        process_rewards(policy, ref, ids.to(F64))


def test_process_rewards_step_id_below_minus_one_rejected():
    policy, ref, _ = _tokens([[1.0, 1.0, 2.0]], [[0, 0, 1]])
    with pytest.raises(ValueError, match="step_ids"):
        process_rewards(policy, ref, torch.tensor([[0, -2, 1]]))


@pytest.mark.parametrize("which", ["policy", "ref"])
@pytest.mark.parametrize("bad", [NAN, float("inf")])
def test_process_rewards_nan_inside_step_rejected(which, bad):
    policy, ref, ids = _tokens([[1.0, 1.0, 2.0]], [[0, 0, 1]])
    (policy if which == "policy" else ref)[0, 1] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        process_rewards(policy, ref, ids)


# -- aggregation ----------------------------------------------------------------------------------------


def _two_rows() -> StepRewards:
    """Row 0: r = [2, 2.5, −3], q = [2, 4.5, 1.5]. Row 1: r = [1, 3.5, ·], q = [1, 4.5, ·]."""
    policy, ref, ids = _tokens(
        [[1.0, 1.0, 2.0, 0.5, -3.0], [1.0, 3.0, 0.5, 0.0, 0.0]],
        [[0, 0, 1, 1, 2], [0, 1, 1, -1, -1]],
    )
    return process_rewards(policy, ref, ids, beta=1.0)


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        # row 0: min(2, 2.5, −3) = −3;  row 1: min(1, 3.5) = 1 (the missing step's 0 is ignored)
        ("min", (-3.0, 1.0)),
        # row 0: 2 + 2.5 − 3 = 1.5;  row 1: 1 + 3.5 = 4.5
        ("sum", (1.5, 4.5)),
        # row 0: (2 + 2.5 − 3)/3 = 0.5;  row 1: (1 + 3.5)/2 = 2.25 (the missing step is not counted)
        ("mean", (0.5, 2.25)),
        # row 0: min(2, 4.5, 1.5) = 1.5;  row 1: min(1, 4.5) = 1
        ("min_q", (1.5, 1.0)),
        # row 0: q at step 2 = 1.5;  row 1: q at its last step (1) = 4.5
        ("last_q", (1.5, 4.5)),
        ("last", (1.5, 4.5)),  # the scorer's name for last_q
    ],
)
def test_aggregate_step_rewards_hand_computed(how, expected):
    torch.testing.assert_close(aggregate_step_rewards(_two_rows(), how), t(*expected))


def test_aggregate_default_is_min():
    torch.testing.assert_close(aggregate_step_rewards(_two_rows()), t(-3.0, 1.0))


def test_aggregate_min_ignores_missing_steps_with_positive_rewards():
    """Row with r = [1, 3.5] and a missing third step (stored as 0): min = 1, not 0."""
    steps = _two_rows()
    assert steps.rewards[1, 2].item() == 0.0 and not steps.step_mask[1, 2]
    assert aggregate_step_rewards(steps, "min")[1].item() == 1.0


def test_sum_and_last_q_equal_outcome_reward_when_every_token_is_in_a_step():
    """Every completion token in a step → Σ_t r_t = β Σ_i (log π_θ − log π_ref) = β·Δ(y), which
    is also the CE objective's reward r_θ(y) on the summed log-probs. Hand example: log-ratios
    [0.3, −1.2, 2.0, 0.4] in steps [0, 0, 1, 2], β = 0.5 → Δ = 1.5 → β·Δ = 0.75."""
    policy, ref, ids = _tokens([[0.3, -1.2, 2.0, 0.4]], [[0, 0, 1, 2]])
    steps = process_rewards(policy, ref, ids, beta=0.5)
    torch.testing.assert_close(aggregate_step_rewards(steps, "sum"), t(0.75))
    torch.testing.assert_close(aggregate_step_rewards(steps, "last_q"), t(0.75))
    ce = get_objective("implicit_prm_ce", beta=0.5)(
        single(policy.sum(-1), ref.sum(-1), labels=[1.0], counts=[4])
    )
    torch.testing.assert_close(ce.metrics["rewards/mean"], t(0.75))


def test_sum_equals_outcome_reward_on_random_tokens():
    """Random (N, T) log-probs, every token in a step (ids non-decreasing from 0):
    'sum' and 'last_q' equal β·(Σ log π_θ − Σ log π_ref)."""
    g = torch.Generator().manual_seed(0)
    policy = -torch.rand(6, 12, generator=g, dtype=F64) * 3
    ref = -torch.rand(6, 12, generator=g, dtype=F64) * 3
    ids = torch.cumsum(torch.rand(6, 12, generator=g) < 0.3, dim=1).long()
    steps = process_rewards(policy, ref, ids, beta=0.2)
    outcome = 0.2 * (policy.sum(-1) - ref.sum(-1))
    torch.testing.assert_close(aggregate_step_rewards(steps, "sum"), outcome)
    torch.testing.assert_close(aggregate_step_rewards(steps, "last_q"), outcome)


def test_aggregate_row_without_steps_rejected():
    policy, ref, ids = _tokens([[1.0, 2.0], [1.0, 1.0]], [[0, 1], [-1, -1]])
    with pytest.raises(ValueError, match="no step"):
        aggregate_step_rewards(process_rewards(policy, ref, ids, beta=1.0), "min")


def test_aggregate_unknown_method_rejected():
    with pytest.raises(ValueError, match=r"unknown aggregation 'bogus'; use one of 'min', 'sum', 'mean', 'last'"):
        aggregate_step_rewards(_two_rows(), "bogus")


def test_every_listed_aggregation_is_known():
    for how in STEP_AGGREGATIONS:
        assert aggregate_step_rewards(_two_rows(), how).shape == (2,)


def test_step_rewards_and_running_q_values_on_random_tokens():
    """Random log-ratios, steps of random lengths (ids non-decreasing from 0): q_t = Σ_{s ≤ t} r_s for
    every t, and each r_t is β times its own tokens' log-ratios, summed by hand."""
    g = torch.Generator().manual_seed(1)
    policy = -torch.rand(4, 10, generator=g, dtype=F64) * 3
    ref = -torch.rand(4, 10, generator=g, dtype=F64) * 3
    ids = torch.cumsum(torch.rand(4, 10, generator=g) < 0.4, dim=1).long()
    steps = process_rewards(policy, ref, ids, beta=0.3)
    for n in range(4):
        for step in range(int(ids[n].max()) + 1):
            tokens = ids[n] == step
            expected = 0.3 * float((policy[n][tokens] - ref[n][tokens]).sum())
            assert steps.rewards[n, step].item() == pytest.approx(expected, abs=1e-12)
            assert steps.q_values[n, step].item() == pytest.approx(float(steps.rewards[n, : step + 1].sum()), abs=1e-12)


def test_tokens_outside_every_step_leave_the_steps_but_not_the_outcome():
    """Log-ratios [1, 2, 0.5, 4] with step ids [0, 0, 1, −1] (the last token: a final answer line,
    in no step), β = 1: r = [3, 0.5], q = [3, 3.5]; the outcome Σ = 7.5 exceeds Σ_t r_t = 3.5 by the
    outside token's 4."""
    policy, ref, ids = _tokens([[1.0, 2.0, 0.5, 4.0]], [[0, 0, 1, -1]])
    steps = process_rewards(policy, ref, ids, beta=1.0)
    torch.testing.assert_close(steps.rewards, rows([[3.0, 0.5]]))
    torch.testing.assert_close(steps.q_values, rows([[3.0, 3.5]]))
    outcome = (policy - ref).sum(-1)
    torch.testing.assert_close(outcome, t(7.5))
    torch.testing.assert_close(outcome - aggregate_step_rewards(steps, "last"), t(4.0))


def test_exports_are_the_registered_classes():
    assert isinstance(get_objective("implicit_prm_ce"), ImplicitPRMCE)
    assert isinstance(get_objective("implicit_prm_dpo"), ImplicitPRMDPO)


# -- CE variant: the optional NLL term and the metrics -----------------------------------------------------


def test_ce_nll_weight_hand_computed():
    """β = 0.5, Δ = −3 − (−5) = 2 → r = 1 for both; |y| = 4 (correct) and 2 (incorrect), w = 2.
    correct:   ℓ = ln(1 + e^−1) + 2 · 3/4 = 0.313262 + 1.5 = 1.813262
    incorrect: ℓ = ln(1 + e) = 1.313262 (no NLL term for an incorrect completion)
    ∂ℓ/∂ log π_θ: correct 0.5(σ(1) − 1) − 2/4 = −0.134471 − 0.5 = −0.634471;
    incorrect 0.5 σ(1) = 0.365529."""
    policy = t(-3.0, -3.0, requires_grad=True)
    batch = single(policy, t(-5.0, -5.0), labels=[1.0, 0.0], counts=[4, 2])
    out = get_objective("implicit_prm_ce", beta=0.5, nll_weight=2.0)(batch)
    assert softplus(-1.0) + 1.5 == pytest.approx(1.813262, abs=1e-6)
    torch.testing.assert_close(out.loss, t(softplus(-1.0) + 1.5, softplus(1.0)))
    torch.testing.assert_close(out.metrics["bce"], t(softplus(-1.0), softplus(1.0)))
    torch.testing.assert_close(out.metrics["nll"], t(0.75, NAN), equal_nan=True)
    out.loss.sum().backward()
    torch.testing.assert_close(policy.grad, t(-0.5 / (1.0 + math.e) - 0.5, 0.5 / (1.0 + math.exp(-1.0))))
    assert policy.grad[0].item() == pytest.approx(-0.634471, abs=1e-6)
    # w = 0 (the default) is the plain CE loss
    plain = get_objective("implicit_prm_ce", beta=0.5)(
        single([-3.0, -3.0], [-5.0, -5.0], labels=[1.0, 0.0], counts=[4, 2])
    )
    torch.testing.assert_close(plain.loss, t(softplus(-1.0), softplus(1.0)))
    with pytest.raises(ValueError, match="nll_weight"):
        get_objective("implicit_prm_ce", nll_weight=-1.0)


def test_ce_accuracy_needs_the_labels_sign_and_skips_fractional_labels():
    """β = 1, r = Δ = [2, −1, 0, 0, 3] with labels [1, 1, 1, 0, 0.5]: right sign [1, 0], r = 0 is on
    the wrong side for either label [0, 0], and a fractional label has no accuracy (NaN, skipped
    when reduced); rewards/correct and rewards/incorrect hold r of each kind."""
    out = get_objective("implicit_prm_ce", beta=1.0)(
        single([2.0, -1.0, -4.0, -4.0, 3.0], [0.0, 0.0, -4.0, -4.0, 0.0], labels=[1.0, 1.0, 1.0, 0.0, 0.5])
    )
    torch.testing.assert_close(out.metrics["rewards/accuracies"], t(1.0, 0.0, 0.0, 0.0, NAN), equal_nan=True)
    torch.testing.assert_close(out.metrics["rewards/correct"], t(2.0, -1.0, 0.0, NAN, NAN), equal_nan=True)
    torch.testing.assert_close(out.metrics["rewards/incorrect"], t(NAN, NAN, NAN, 0.0, NAN), equal_nan=True)
    assert reduce_metrics(out.metrics)["rewards/accuracies"] == pytest.approx(0.25)
