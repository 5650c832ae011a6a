"""SFT (align/objectives/sft.py) on hand-derived numbers: ℓ = −log π(y|x)/|y|, or −log π(y|x) summed."""

from __future__ import annotations

import pytest
import torch

from align.objectives import SFT, CompletionGroups, ObjectiveInputError, get_objective

F64 = torch.float64


def batch(sums, counts, requires_grad=False):
    return CompletionGroups(
        policy_logps_sum=torch.tensor([[s] for s in sums], dtype=F64, requires_grad=requires_grad),
        token_counts=torch.tensor([[c] for c in counts]),
    )


def test_per_token_mean_nll_on_hand_numbers():
    # y1: 4 tokens, log π = −2.0 → 0.5 per token; y2: 1 token, log π = −3.0 → 3.0
    out = get_objective("sft")(batch([-2.0, -3.0], [4, 1]))
    assert out.loss.tolist() == [0.5, 3.0]
    assert out.metrics["nll"].tolist() == [0.5, 3.0]


def test_summed_nll_weighs_long_completions_more():
    out = SFT(length_normalize=False)(batch([-2.0, -3.0], [4, 1]))
    assert out.loss.tolist() == [2.0, 3.0]
    assert out.metrics["nll"].tolist() == [0.5, 3.0]  # the metric stays per token, comparable across settings


def test_gradient_is_minus_one_over_length():
    b = batch([-2.0, -3.0], [4, 1], requires_grad=True)
    SFT()(b).loss.sum().backward()
    assert b.policy_logps_sum.grad[:, 0].tolist() == [-0.25, -1.0]


def test_takes_single_completions_only():
    pairs = CompletionGroups(policy_logps_sum=torch.zeros(1, 2, dtype=F64), token_counts=torch.ones(1, 2, dtype=torch.long))
    with pytest.raises(ObjectiveInputError, match="single completions"):
        SFT()(pairs)
