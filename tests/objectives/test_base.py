"""The CompletionGroups record, input validation, the registry, and what every objective returns."""

import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch

from align.objectives import (
    CompletionGroups,
    GroupShape,
    Objective,
    ObjectiveInputError,
    ObjectiveOutput,
    Requirements,
    available_objectives,
    get_objective,
    reduce_metrics,
    register_objective,
)
from align.objectives import base as base_module

EXPECTED = {
    "dpo", "rpo", "sppo", "sppo_single", "sppo_hard", "haepo",
    "implicit_prm_ce", "implicit_prm_dpo", "safe_align", "npo", "sft", "uvcot",
}  # fmt: skip


def pair(**overrides):
    fields = dict(
        policy_logps_sum=torch.tensor([[-4.0, -6.0]], dtype=torch.float64),
        ref_logps_sum=torch.tensor([[-5.0, -4.0]], dtype=torch.float64),
        token_counts=torch.tensor([[8, 6]]),
    )
    return CompletionGroups(**{**fields, **overrides})


def batch_for(objective: Objective, b: int = 3, t: int = 5) -> CompletionGroups:
    """A valid random batch with exactly what ``objective`` declares it needs."""
    req = objective.requirements
    k = {GroupShape.SINGLE: 1, GroupShape.PAIR: 2, GroupShape.LIST: 4}[req.group]
    g = torch.Generator().manual_seed(0)
    token_mask = torch.ones(b, k, t, dtype=torch.bool)
    token_mask[..., -1] = False
    token_logps = -torch.rand(b, k, t, generator=g, dtype=torch.float64) * token_mask
    ref_token_logps = -torch.rand(b, k, t, generator=g, dtype=torch.float64) * token_mask
    fields = dict(
        policy_logps_sum=token_logps.sum(-1).requires_grad_(),
        token_counts=token_mask.sum(-1),
        ref_logps_sum=ref_token_logps.sum(-1) if req.reference else None,
        labels=torch.randint(0, 2, (b, k), generator=g).double(),
        scores=torch.rand(b, k, generator=g, dtype=torch.float64) * 10,
        win_rates=torch.rand(b, k, generator=g, dtype=torch.float64),
        returns=torch.randn(b, k, generator=g, dtype=torch.float64),
        pair_prob=torch.rand(b, generator=g, dtype=torch.float64),
    )
    if req.token_values:
        fields.update(
            token_mask=token_mask,
            policy_token_logps=token_logps,
            ref_token_logps=ref_token_logps,
            token_entropies=torch.rand(b, k, t, generator=g, dtype=torch.float64) * token_mask,
        )
    return CompletionGroups(**fields)


def test_every_objective_is_registered():
    assert set(available_objectives()) >= EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_objective_returns_per_example_loss_and_detached_metrics(name):
    objective = get_objective(name)
    batch = batch_for(objective)
    out = objective(batch)
    assert isinstance(out, ObjectiveOutput)
    assert out.loss.shape == (3,) and torch.isfinite(out.loss).all()
    assert out.loss.requires_grad
    assert out.metrics, "every objective reports metrics"
    for metric, value in out.metrics.items():
        assert value.shape == (3,), metric
        assert not value.requires_grad, metric
    out.loss.sum().backward()
    assert batch.policy_logps_sum.grad is not None and torch.isfinite(batch.policy_logps_sum.grad).all()


def test_objectives_import_no_model_library():
    code = (
        "import sys, align.objectives\n"
        "heavy = {'transformers', 'trl', 'peft', 'accelerate', 'datasets', 'deepspeed'}\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in heavy)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_objective_lists_known_names():
    with pytest.raises(KeyError, match="unknown objective 'dpoo'.*dpo, haepo"):
        get_objective("dpoo")


def test_unknown_hyperparameter_lists_valid_ones():
    with pytest.raises(TypeError, match=r"no hyperparameter\(s\) \['gamma'\].*\['beta', 'alpha'\]"):
        get_objective("rpo", gamma=1.0)


@pytest.mark.parametrize("name, kwargs", [("dpo", {"beta": 0.0}), ("rpo", {"alpha": -1.0}), ("sppo", {"beta": float("nan")})])
def test_bad_hyperparameter_values_fail(name, kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        get_objective(name, **kwargs)


def test_register_custom_objective_by_name():
    @register_objective("test_sum")
    @dataclass
    class SumObjective(Objective):
        scale: float = 1.0

        @property
        def requirements(self):
            return Requirements(group=GroupShape.SINGLE, reference=False)

        def compute(self, batch):
            loss = -self.scale * batch.policy_logps_sum[:, 0]
            return ObjectiveOutput(loss, {"x": loss})

    try:
        out = get_objective("test_sum", scale=2.0)(
            CompletionGroups(policy_logps_sum=torch.tensor([[-3.0]]), token_counts=torch.tensor([[2]]))
        )
        assert out.loss.item() == 6.0
        with pytest.raises(ValueError, match="already registered"):
            register_objective("test_sum")(type("Other", (SumObjective,), {}))
    finally:
        base_module._REGISTRY.pop("test_sum")


# -- validation: bad inputs fail clearly, naming the field ----------------------------------------


def test_shape_mismatch_names_the_field():
    with pytest.raises(ObjectiveInputError, match=r"ref_logps_sum has shape \(1, 3\) but policy_logps_sum has shape \(1, 2\)"):
        pair(ref_logps_sum=torch.zeros(1, 3, dtype=torch.float64))


def test_logps_must_be_two_dimensional():
    with pytest.raises(ObjectiveInputError, match=r"policy_logps_sum must be a \(B, K\) tensor"):
        CompletionGroups(policy_logps_sum=torch.zeros(4), token_counts=torch.ones(4))


@pytest.mark.parametrize(
    "name, k, message",
    [("dpo", 3, r"pairs \(K = 2\), got K = 3"), ("implicit_prm_ce", 2, r"single completions \(K = 1\)"), ("haepo", 1, r"K >= 2")],
)
def test_wrong_group_shape(name, k, message):
    batch = CompletionGroups(
        policy_logps_sum=torch.zeros(2, k), ref_logps_sum=torch.zeros(2, k), token_counts=torch.ones(2, k),
        labels=torch.ones(2, k), returns=torch.zeros(2, k),
    )  # fmt: skip
    with pytest.raises(ObjectiveInputError, match=message):
        get_objective(name)(batch)


def test_masked_pair_is_rejected():
    with pytest.raises(ObjectiveInputError, match="complete pairs"):
        get_objective("dpo")(pair(mask=torch.tensor([[True, False]])))


def test_missing_reference():
    with pytest.raises(ObjectiveInputError, match="objective 'dpo' needs reference log-probs"):
        get_objective("dpo")(pair(ref_logps_sum=None))


def test_missing_field():
    with pytest.raises(ObjectiveInputError, match="objective 'sppo' needs the field 'win_rates'"):
        get_objective("sppo")(pair())


def test_nan_in_valid_entry_names_field_and_row():
    logps = torch.tensor([[-1.0, -2.0], [float("nan"), -1.0]])
    with pytest.raises(ObjectiveInputError, match=r"policy_logps_sum has NaN or inf at valid entries of batch rows \[1\]"):
        CompletionGroups(policy_logps_sum=logps, token_counts=torch.ones(2, 2))


def test_nan_in_masked_entry_is_allowed():
    logps = torch.tensor([[-1.0, float("nan")]])
    batch = CompletionGroups(policy_logps_sum=logps, token_counts=torch.ones(1, 2), mask=torch.tensor([[True, False]]))
    assert batch.get("policy_logps_sum").tolist() == [[-1.0, 0.0]]


def test_empty_completion_is_rejected():
    with pytest.raises(ObjectiveInputError, match="token_counts must be > 0"):
        pair(token_counts=torch.tensor([[8, 0]]))


def test_all_masked_row_is_rejected():
    with pytest.raises(ObjectiveInputError, match="at least one valid completion"):
        pair(mask=torch.tensor([[False, False]]))


def test_mask_must_be_bool():
    with pytest.raises(ObjectiveInputError, match="mask must be a bool tensor"):
        pair(mask=torch.ones(1, 2))


def test_out_of_range_probabilities_are_rejected():
    with pytest.raises(ObjectiveInputError, match=r"win_rates must lie in \[0, 1\]"):
        pair(win_rates=torch.tensor([[1.2, 0.1]], dtype=torch.float64))
    with pytest.raises(ObjectiveInputError, match=r"pair_prob must lie in \[0, 1\]"):
        pair(pair_prob=torch.tensor([-0.1], dtype=torch.float64))


def test_token_values_need_a_consistent_token_mask():
    values = torch.zeros(1, 2, 4, dtype=torch.float64)
    with pytest.raises(ObjectiveInputError, match="policy_token_logps given without token_mask"):
        pair(policy_token_logps=values)
    with pytest.raises(ObjectiveInputError, match=r"token_mask has shape \(1, 3, 4\)"):
        pair(policy_token_logps=values, token_mask=torch.ones(1, 3, 4, dtype=torch.bool))
    with pytest.raises(ObjectiveInputError, match="disagrees with token_counts"):
        pair(policy_token_logps=values, token_mask=torch.ones(1, 2, 4, dtype=torch.bool))


def test_reduce_metrics_skips_not_applicable_entries():
    reduced = reduce_metrics({"a": torch.tensor([1.0, float("nan"), 3.0]), "b": torch.tensor([2.0])})
    assert reduced == {"a": 2.0, "b": 2.0}
