"""SAFE-ALIGN (align/objectives/safe_align.py): NLL on safe responses, thresholded ascent on harmful
ones, on hand-derived numbers.

safe (label 1):          ℓ = λ_blue · NLL(y),  NLL = −log π(y|x) / |y|
harmful, 'token' mode:   ℓ = −λ_red · (1/|y|) Σ_t 1[nll_t < τ] · nll_t
harmful, 'sample' mode:  ℓ = −λ_red · 1[NLL(y) < τ] · NLL(y)
"""

from __future__ import annotations

import math

import pytest
import torch

from align.objectives import CompletionGroups, ObjectiveInputError, SafeAlign, get_objective, reduce_metrics

F64 = torch.float64
NAN = float("nan")


def t(*values) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


def make(token_rows, labels, *, pad: float = 0.0, with_tokens: bool = True, requires_grad: bool = False):
    """B single completions from per-token log-prob lists of any length.

    policy_logps_sum = Σ of the token log-probs (consistent with the tokens), token_counts = |y| =
    token_mask.sum(-1); padding positions hold ``pad``. Returns (batch, logps_sum leaf, token leaf).
    """
    b, width = len(token_rows), max(len(r) for r in token_rows)
    tok = torch.full((b, 1, width), pad, dtype=F64)
    tmask = torch.zeros((b, 1, width), dtype=torch.bool)
    for i, r in enumerate(token_rows):
        tok[i, 0, : len(r)] = torch.tensor(r, dtype=F64)
        tmask[i, 0, : len(r)] = True
    sums = torch.tensor([[math.fsum(r)] for r in token_rows], dtype=F64, requires_grad=requires_grad)
    tok.requires_grad_(requires_grad)
    batch = CompletionGroups(
        policy_logps_sum=sums,
        token_counts=tmask.sum(-1),
        policy_token_logps=tok if with_tokens else None,
        token_mask=tmask if with_tokens else None,
        labels=torch.tensor([[float(lab)] for lab in labels], dtype=F64),
    )
    return batch, sums, tok


def grad_of(x: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(x) if x.grad is None else x.grad


# -- defaults and hand numbers ---------------------------------------------------------------------


def test_defaults():
    obj = get_objective("safe_align")
    assert isinstance(obj, SafeAlign)
    assert (obj.blue_weight, obj.red_weight, obj.threshold, obj.threshold_mode) == (1.0, 0.1, 1.0, "token")


@pytest.mark.parametrize("mode", ["token", "sample"])
def test_safe_example_is_weighted_mean_nll(mode):
    """Safe, tokens log-probs [−0.5, −1.5] → NLL = (0.5 + 1.5)/2 = 1.
    λ_blue = 2 → ℓ = 2; defaults (λ_blue = 1) → ℓ = 1."""
    batch, *_ = make([[-0.5, -1.5]], [1])
    torch.testing.assert_close(get_objective("safe_align", blue_weight=2.0, threshold_mode=mode)(batch).loss, t(2.0))
    torch.testing.assert_close(get_objective("safe_align", threshold_mode=mode)(batch).loss, t(1.0))


def test_safe_example_ignores_threshold():
    """Safe NLL = (3 + 5)/2 = 4 > τ = 1: still ℓ = λ_blue · 4 = 4 (the threshold is only for ascent)."""
    batch, *_ = make([[-3.0, -5.0]], [1])
    torch.testing.assert_close(get_objective("safe_align")(batch).loss, t(4.0))


def test_harmful_token_mode_hand_computed():
    """Harmful, log-probs [−0.2, −0.6, −1.5, −3.0] → nll_t = [0.2, 0.6, 1.5, 3.0], |y| = 4.
    τ = 1: active 0.2, 0.6 → Σ = 0.8 → ℓ = −0.1 · 0.8/4 = −0.02; ascent fraction 2/4 = 0.5.
    τ = 2: active 0.2, 0.6, 1.5 → Σ = 2.3 → ℓ = −0.1 · 2.3/4 = −0.0575.
    λ_red = 0.5, τ = 1 → ℓ = −0.5 · 0.2 = −0.1."""
    batch, *_ = make([[-0.2, -0.6, -1.5, -3.0]], [0])
    out = get_objective("safe_align")(batch)
    torch.testing.assert_close(out.loss, t(-0.02))
    torch.testing.assert_close(out.metrics["safe_align/ascent_fraction"], t(0.5))
    torch.testing.assert_close(out.metrics["nll/harmful"], t(5.3 / 4))
    torch.testing.assert_close(get_objective("safe_align", threshold=2.0)(batch).loss, t(-0.0575))
    torch.testing.assert_close(get_objective("safe_align", red_weight=0.5)(batch).loss, t(-0.1))


def test_harmful_token_at_threshold_is_inactive():
    """The indicator is strict: nll_t = τ = 1 does not count. Tokens [−1.0, −0.5] → only 0.5 active →
    ℓ = −0.1 · 0.5/2 = −0.025."""
    batch, *_ = make([[-1.0, -0.5]], [0])
    torch.testing.assert_close(get_objective("safe_align")(batch).loss, t(-0.025))


def test_harmful_padding_is_ignored_even_nan():
    """Padding token positions hold NaN: the row [−0.2, −0.6] (shorter than the other row) gives
    ℓ = −0.1 · 0.8/2 = −0.04; the long row [−0.4, −0.4, −5] gives −0.1 · 0.8/3."""
    batch, *_ = make([[-0.2, -0.6], [-0.4, -0.4, -5.0]], [0, 0], pad=NAN)
    out = get_objective("safe_align")(batch)
    torch.testing.assert_close(out.loss, t(-0.04, -0.08 / 3))


def test_harmful_above_threshold_everywhere_gives_zero_loss_and_zero_gradient():
    """Harmful, nll_t = [1.5, 3.0, 2.0], all ≥ τ = 1 → no active token → ℓ = 0, and no ascent
    gradient at all: ∂ℓ/∂ log π(y_t) = 0 and ∂ℓ/∂ log π(y) = 0."""
    batch, sums, tok = make([[-1.5, -3.0, -2.0]], [0], requires_grad=True)
    out = get_objective("safe_align")(batch)
    assert out.loss.item() == 0.0
    out.loss.sum().backward()
    assert torch.equal(grad_of(tok), torch.zeros_like(tok))
    assert torch.equal(grad_of(sums), torch.zeros_like(sums))
    torch.testing.assert_close(out.metrics["safe_align/ascent_fraction"], t(0.0))


def test_sample_mode_below_threshold_hand_computed():
    """Sample mode: log-probs [−0.2, −0.6] → NLL = 0.4 < 1 → ℓ = −0.1 · 0.4 = −0.04.
    No per-token fields needed."""
    batch, *_ = make([[-0.2, -0.6]], [0], with_tokens=False)
    out = get_objective("safe_align", threshold_mode="sample")(batch)
    torch.testing.assert_close(out.loss, t(-0.04))
    torch.testing.assert_close(out.metrics["safe_align/ascent_fraction"], t(1.0))


def test_sample_mode_above_threshold_gives_zero_loss_and_zero_gradient():
    """Sample mode: log-probs [−1.5, −3.0] → NLL = 2.25 ≥ 1 → ℓ = 0, ∂ℓ/∂ log π(y) = 0."""
    batch, sums, _ = make([[-1.5, -3.0]], [0], with_tokens=False, requires_grad=True)
    out = get_objective("safe_align", threshold_mode="sample")(batch)
    assert out.loss.item() == 0.0
    out.loss.sum().backward()
    assert torch.equal(grad_of(sums), torch.zeros_like(sums))
    torch.testing.assert_close(out.metrics["safe_align/ascent_fraction"], t(0.0))


def test_token_and_sample_mode_differ():
    """Log-probs [−0.2, −1.6]: NLL = 0.9 < 1.
    sample → ℓ = −0.1 · 0.9 = −0.09;  token → only 0.2 < 1 is active → ℓ = −0.1 · 0.2/2 = −0.01."""
    batch, *_ = make([[-0.2, -1.6]], [0])
    torch.testing.assert_close(get_objective("safe_align", threshold_mode="sample")(batch).loss, t(-0.09))
    torch.testing.assert_close(get_objective("safe_align", threshold_mode="token")(batch).loss, t(-0.01))


def test_mixed_batch_hand_computed():
    """Row 0 safe [−0.5, −1.5] → 1; row 1 harmful [−0.2, −0.6, −1.5, −3.0] → −0.02;
    row 2 safe [−3] → 3; with λ_blue = 1, λ_red = 0.1, τ = 1."""
    batch, *_ = make([[-0.5, -1.5], [-0.2, -0.6, -1.5, -3.0], [-3.0]], [1, 0, 1])
    torch.testing.assert_close(get_objective("safe_align")(batch).loss, t(1.0, -0.02, 3.0))


# -- gradients -------------------------------------------------------------------------------------------


def test_gradient_directions_token_mode():
    """Safe row [−0.5, −1.5]: ℓ = −λ_blue · log π(y)/|y| → ∂ℓ/∂ log π(y) = −1/2 < 0 (raised).
    Harmful row [−0.2, −0.6, −1.5, −3.0]: ∂ℓ/∂ log π(y_t) = +λ_red/|y| = 0.1/4 = 0.025 > 0 on the
    active tokens (lowered), 0 on the two past τ; padding gets 0."""
    batch, sums, tok = make([[-0.5, -1.5], [-0.2, -0.6, -1.5, -3.0]], [1, 0], requires_grad=True)
    get_objective("safe_align")(batch).loss.sum().backward()
    g_sums, g_tok = grad_of(sums), grad_of(tok)
    torch.testing.assert_close(g_sums[0], t(-0.5))
    assert g_sums[0, 0] < 0
    torch.testing.assert_close(g_tok[1, 0], t(0.025, 0.025, 0.0, 0.0))
    assert (g_tok[1, 0, :2] > 0).all()
    # safe row reaches no token log-prob, harmful row reaches no summed log-prob in token mode
    assert torch.equal(g_tok[0], torch.zeros_like(g_tok[0]))
    assert g_sums[1, 0].item() == 0.0


def test_gradient_directions_sample_mode():
    """Safe [−0.5, −1.5]: ∂ℓ/∂ log π(y) = −1/2 < 0. Harmful [−0.2, −0.6] (NLL 0.4 < τ):
    ℓ = −λ_red · (−log π(y)/|y|) → ∂ℓ/∂ log π(y) = λ_red/|y| = 0.1/2 = 0.05 > 0."""
    batch, sums, _ = make([[-0.5, -1.5], [-0.2, -0.6]], [1, 0], with_tokens=False, requires_grad=True)
    get_objective("safe_align", threshold_mode="sample")(batch).loss.sum().backward()
    torch.testing.assert_close(sums.grad, torch.tensor([[-0.5], [0.05]], dtype=F64))


@pytest.mark.parametrize("mode", ["token", "sample"])
def test_loss_bounded_below_by_minus_red_weight_times_threshold(mode):
    """Each active nll_t < τ, so the ascent term is < τ·(#active)/|y| ≤ τ and ℓ > −λ_red·τ,
    for any log-probs (≤ 0), lengths, labels and hyperparameters."""
    g = torch.Generator().manual_seed(1234)
    for trial in range(200):
        b = 8
        lengths = torch.randint(1, 10, (b,), generator=g).tolist()
        scale = float(torch.rand((), generator=g, dtype=F64)) * 4
        token_rows = [(-torch.rand(n, generator=g, dtype=F64) * scale).tolist() for n in lengths]
        labels = torch.randint(0, 2, (b,), generator=g).tolist()
        red = float(torch.rand((), generator=g, dtype=F64)) * 2
        tau = 0.01 + float(torch.rand((), generator=g, dtype=F64)) * 3
        batch, *_ = make(token_rows, labels, with_tokens=mode == "token")
        loss = get_objective("safe_align", red_weight=red, threshold=tau, threshold_mode=mode)(batch).loss
        assert (loss >= -red * tau).all(), (trial, loss.min().item(), -red * tau)


# -- metrics ---------------------------------------------------------------------------------------------


def test_metrics_nan_where_they_do_not_apply_and_reduce_skips_them():
    """Rows: safe NLL 1, harmful NLL 5.3/4 = 1.325 (ascent fraction 0.5), safe NLL 3.
    nll/safe = [1, NaN, 3] → mean 2; nll/harmful = [NaN, 1.325, NaN] → 1.325;
    ascent_fraction = [NaN, 0.5, NaN] → 0.5."""
    batch, *_ = make([[-0.5, -1.5], [-0.2, -0.6, -1.5, -3.0], [-3.0]], [1, 0, 1])
    m = get_objective("safe_align")(batch).metrics
    assert torch.isnan(m["nll/safe"][1]) and not torch.isnan(m["nll/safe"][[0, 2]]).any()
    assert torch.isnan(m["nll/harmful"][[0, 2]]).all() and not torch.isnan(m["nll/harmful"][1])
    assert torch.isnan(m["safe_align/ascent_fraction"][[0, 2]]).all()
    torch.testing.assert_close(m["nll/safe"][[0, 2]], t(1.0, 3.0))
    reduced = reduce_metrics(m)
    assert reduced["nll/safe"] == pytest.approx(2.0)
    assert reduced["nll/harmful"] == pytest.approx(1.325)
    assert reduced["safe_align/ascent_fraction"] == pytest.approx(0.5)


def test_metrics_are_detached():
    batch, *_ = make([[-0.5, -1.5], [-0.2, -0.6]], [1, 0], requires_grad=True)
    for value in get_objective("safe_align")(batch).metrics.values():
        assert not value.requires_grad


# -- bad inputs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("label", [0.5, 0.999])
def test_non_binary_labels_rejected(label):
    batch, *_ = make([[-0.5, -1.5]], [label])
    with pytest.raises(ObjectiveInputError, match="exactly 1"):
        get_objective("safe_align")(batch)


def test_token_mode_without_token_logps_rejected():
    batch, *_ = make([[-0.5, -1.5]], [0], with_tokens=False)
    with pytest.raises(ObjectiveInputError, match="policy_token_logps"):
        get_objective("safe_align", threshold_mode="token")(batch)


def test_missing_labels_rejected():
    batch = CompletionGroups(policy_logps_sum=torch.tensor([[-1.0]], dtype=F64), token_counts=torch.tensor([[1]]))
    with pytest.raises(ObjectiveInputError, match="labels"):
        get_objective("safe_align", threshold_mode="sample")(batch)


def test_pair_rejected():
    batch = CompletionGroups(
        policy_logps_sum=torch.tensor([[-1.0, -2.0]], dtype=F64),
        token_counts=torch.tensor([[1, 1]]),
        labels=torch.tensor([[1.0, 0.0]], dtype=F64),
    )
    with pytest.raises(ObjectiveInputError, match=r"K = 1"):
        get_objective("safe_align", threshold_mode="sample")(batch)


def test_no_reference_needed():
    batch, *_ = make([[-0.5, -1.5]], [1])
    assert batch.ref_logps_sum is None
    get_objective("safe_align")(batch)


@pytest.mark.parametrize(
    ("hyper", "match"),
    [
        (dict(threshold=-1.0), "threshold"),
        (dict(threshold=0.0), "threshold"),
        (dict(red_weight=-0.1), "red_weight"),
        (dict(blue_weight=-1.0), "blue_weight"),
        (dict(threshold_mode="sequence"), "threshold_mode"),
    ],
)
def test_bad_hyperparameters_rejected(hyper, match):
    with pytest.raises(ValueError, match=match):
        get_objective("safe_align", **hyper)


def test_unknown_hyperparameter_rejected():
    with pytest.raises(TypeError, match="tau"):
        get_objective("safe_align", tau=1.0)
