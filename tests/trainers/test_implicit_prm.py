"""ImplicitPRMTrainer on the tiny random model: both variants raise the outcome reward r = β·Δ of
correct completions above that of incorrect ones, CE with one completion per prompt, DPO on every
(correct, incorrect) pair, gradient-accumulation invariance, and the implicit_prm.json it saves."""

import json
import logging
import math

import pytest
import torch
from datasets import Dataset

from align.callbacks import LikelihoodDriftCallback
from align.data import DataValidationError, PreferenceCollator
from align.logps import completion_logps
from align.trainers import ImplicitPRMConfig, ImplicitPRMTrainer, labelled_pairs
from tests.trainers.common import QUESTIONS
from tests.trainers.test_base import load, lora


def labelled_dataset(n: int = 8, *, one_per_prompt: bool = False) -> Dataset:
    """Conversational single completions with 0/1 labels from the first ``n`` QUESTIONS: each
    prompt's correct (label 1) and incorrect (label 0) answer, or, ``one_per_prompt``, only the
    correct answer of even prompts and the incorrect one of odd prompts."""
    rows = []
    for i in range(n):
        question, correct, incorrect = QUESTIONS[i % len(QUESTIONS)]
        answers = [(correct, 1), (incorrect, 0)]
        if one_per_prompt:
            answers = [answers[i % 2]]
        for answer, label in answers:
            rows.append({"prompt": [{"role": "user", "content": question}],
                         "completion": [{"role": "assistant", "content": answer}], "label": label})  # fmt: skip
    return Dataset.from_list(rows)


def prm_config(tmp_path, **overrides):
    base = dict(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, per_device_eval_batch_size=16, max_steps=8,
        learning_rate=1e-2, logging_steps=1, save_strategy="no", report_to="none", max_length=128, seed=0,
        disable_tqdm=True, beta=0.5,
    )  # fmt: skip
    return ImplicitPRMConfig(**{**base, **overrides})


def outcome_rewards(trainer, ref, rows, beta):
    """(N,) r = β·(log π_θ(y|x) − log π_ref(y|x)) of the completions of tokenized ``rows``, by a
    separate padded forward of the trained policy and of the reference (not the trainer's path)."""
    batch = PreferenceCollator(trainer.processing_class.pad_token_id, padding_free=False)(list(rows))
    with torch.no_grad():
        policy = completion_logps(trainer.model, batch)["logps_sum"].double()
        reference = completion_logps(ref, batch)["logps_sum"].double()
    return beta * (policy - reference)


@pytest.mark.parametrize("objective", ["implicit_prm_ce", "implicit_prm_dpo"])
def test_training_moves_correct_rewards_above_incorrect(tiny_model_dir, tmp_path, objective):
    """Eight prompts, a correct and an incorrect answer each; before training r = 0 everywhere (the
    reference is a copy), after 8 steps every prompt's correct answer has the higher outcome reward,
    and the logged accuracy is the one computed from those rewards."""
    model, tok = load(tiny_model_dir)
    ref, _ = load(tiny_model_dir)
    data = labelled_dataset(8)
    singles = ImplicitPRMTrainer.prepare_dataset(data, tok, prm_config(tmp_path), name="labelled")  # CE rows
    trainer = ImplicitPRMTrainer(model, prm_config(tmp_path, objective=objective), data, data, tok, ref_model=ref)
    assert trainer.evaluate()["eval_rewards/accuracies"] == 0.0  # r = 0 is on the wrong side for both labels
    trainer.train()

    rewards = outcome_rewards(trainer, ref, singles, beta=0.5).reshape(8, 2)  # (prompt, [correct, incorrect])
    assert (rewards[:, 0] > rewards[:, 1]).all(), rewards
    logged = [h for h in trainer.state.log_history if "rewards/accuracies" in h]
    assert len(logged) == 8  # every training log carries it
    evaluated = trainer.evaluate()
    if objective == "implicit_prm_ce":
        expected = torch.cat([rewards[:, 0] > 0, rewards[:, 1] < 0]).double().mean().item()
        assert evaluated["eval_rewards/correct"] == pytest.approx(rewards[:, 0].mean().item(), abs=1e-4)
        assert evaluated["eval_rewards/incorrect"] == pytest.approx(rewards[:, 1].mean().item(), abs=1e-4)
    else:
        expected = 1.0
        margin = (rewards[:, 0] - rewards[:, 1]).mean().item()
        assert evaluated["eval_rewards/margins"] == pytest.approx(margin, abs=1e-4)
    assert evaluated["eval_rewards/accuracies"] == pytest.approx(expected)


def test_ce_trains_with_one_completion_per_prompt_and_drift_says_it_cannot_probe(tiny_model_dir, tmp_path, caplog):
    """One completion per prompt (correct for even prompts, incorrect for odd ones): CE pushes the
    outcome reward of each to its label's side of 0. No prompt has a (correct, incorrect) pair, so
    the default drift callback warns and measures nothing, and training goes on."""
    model, tok = load(tiny_model_dir)
    ref, _ = load(tiny_model_dir)
    data = labelled_dataset(8, one_per_prompt=True)
    drift = LikelihoodDriftCallback(num_probes=4)
    args = prm_config(tmp_path, max_steps=12)
    with caplog.at_level(logging.WARNING, logger="align.callbacks.drift"):
        trainer = ImplicitPRMTrainer(model, args, data, None, tok, ref_model=ref, callbacks=[drift])
    assert "likelihood drift: not measured: no prompt" in caplog.text
    assert len(trainer.train_dataset) == 8  # nothing held back
    trainer.train()
    assert not (tmp_path / "out" / "likelihood_drift.jsonl").exists()
    rewards = outcome_rewards(trainer, ref, trainer.train_dataset, beta=0.5)
    labels = torch.tensor(data["label"])
    assert (rewards[labels == 1] > 0).all() and (rewards[labels == 0] < 0).all(), rewards


def test_nll_weight_adds_the_correct_completions_nll(tiny_model_dir, tmp_path):
    """At step 0 (r = 0) the CE loss is ln 2 per row; nll_weight = 0.5 adds half the correct
    completions' per-token NLL, averaged over all rows (the incorrect ones add nothing)."""
    model, tok = load(tiny_model_dir)
    data = labelled_dataset(4)
    trainer = ImplicitPRMTrainer(model, prm_config(tmp_path, nll_weight=0.5), data, data, tok)
    metrics = trainer.evaluate()
    assert metrics["eval_nll"] > 0
    assert metrics["eval_loss"] == pytest.approx(math.log(2) + 0.5 * metrics["eval_nll"] / 2, abs=1e-5)
    with pytest.raises(ValueError, match="nll_weight=0.5: not a hyperparameter of objective 'implicit_prm_dpo'"):
        prm_config(tmp_path, objective="implicit_prm_dpo", nll_weight=0.5)


def _tokenized(rows):
    """Hand-built tokenized rows: (prompt ids, completion ids, label) → one single-completion row each."""
    return Dataset.from_list([{"prompt_ids": p, "completion_ids": [c], "labels": [float(l)]} for p, c, l in rows])


def test_labelled_pairs_are_every_distinct_correct_incorrect_pair():
    """Prompt [1]: correct [5], [6] (and [5] again), incorrect [7], [8] → 4 pairs, correct-major;
    prompt [2]: all correct, prompt [3]: all wrong → no pair; prompt [4]: [9] labelled both ways
    and an incorrect [10] → ([9], [10]) only, never ([9], [9])."""
    data = _tokenized([
        ([1], [5], 1), ([2], [5], 1), ([1], [7], 0), ([1], [6], 1), ([3], [7], 0), ([1], [5], 1), ([1], [8], 0),
        ([4], [9], 1), ([4], [9], 0), ([4], [10], 0),
    ])  # fmt: skip
    pairs, stats = labelled_pairs(data)
    assert pairs["prompt_ids"] == [[1]] * 4 + [[4]]
    assert pairs["completion_ids"] == [[[5], [7]], [[5], [8]], [[6], [7]], [[6], [8]], [[9], [10]]]
    assert stats == {"prompts": 4, "pairs": 5, "all_correct": 1, "all_wrong": 1}
    first, _ = labelled_pairs(data, pairs_per_prompt=1)
    assert first["completion_ids"] == [[[5], [7]], [[9], [10]]]
    with pytest.raises(DataValidationError, match=r"row 1: field 'labels': .* got 0.5"):
        labelled_pairs(_tokenized([([1], [5], 1), ([1], [6], 0.5)]))


def test_dpo_variant_pairs_labelled_completions_before_a_model_loads(tiny_tokenizer, tmp_path):
    """prepare_dataset (what a recipe runs before loading weights) turns 2 prompts × (correct,
    incorrect) plus an all-correct prompt into 2 pairs; pairs pass through; nothing to pair fails."""
    args = prm_config(tmp_path, objective="implicit_prm_dpo")
    data = Dataset.from_list(labelled_dataset(2).to_list() + labelled_dataset(3).to_list()[4:5])
    pairs = ImplicitPRMTrainer.prepare_dataset(data, tiny_tokenizer, args)
    singles = ImplicitPRMTrainer.prepare_dataset(data, tiny_tokenizer, prm_config(tmp_path))
    assert len(singles) == 5 and len(pairs) == 2
    assert pairs["completion_ids"] == [[singles[0]["completion_ids"][0], singles[1]["completion_ids"][0]],
                                       [singles[2]["completion_ids"][0], singles[3]["completion_ids"][0]]]  # fmt: skip
    given = ImplicitPRMTrainer.prepare_dataset(pairs, tiny_tokenizer, args)
    assert given["completion_ids"] == pairs["completion_ids"]
    with pytest.raises(DataValidationError, match="no prompt has both a correct and an incorrect completion"):
        ImplicitPRMTrainer.prepare_dataset(labelled_dataset(4, one_per_prompt=True), tiny_tokenizer, args)
    assert ImplicitPRMTrainer.data_kind(args) is None and ImplicitPRMTrainer.data_kind(prm_config(tmp_path)) == "single"


@pytest.mark.parametrize("objective", ["implicit_prm_ce", "implicit_prm_dpo"])
def test_gradient_accumulation_invariance(tiny_model_dir, tmp_path, objective):
    """One SGD step on 4 rows (CE: labelled completions; DPO: pairs): batch 4 × 1 equals 1 × 4."""
    data = labelled_dataset(2 if objective == "implicit_prm_ce" else 4)
    results = []
    for batch, accumulation in ((4, 1), (1, 4)):
        model, tok = load(tiny_model_dir)
        ref, _ = load(tiny_model_dir, seed_offset=7)
        args = prm_config(
            tmp_path, objective=objective, max_steps=1, per_device_train_batch_size=batch,
            gradient_accumulation_steps=accumulation, optim="sgd", learning_rate=0.5, lr_scheduler_type="constant",
            max_grad_norm=1e9,
        )  # fmt: skip
        trainer = ImplicitPRMTrainer(model, args, data, None, tok, ref_model=ref)
        assert len(trainer.train_dataset) == 4
        trainer.train()
        results.append({n: p.detach().clone() for n, p in trainer.model.named_parameters()})
    initial = load(tiny_model_dir)[0].state_dict()
    assert max((results[0][n] - initial[n]).abs().max().item() for n in results[0]) > 1e-3
    for name in results[0]:
        torch.testing.assert_close(results[0][name], results[1][name], rtol=0, atol=1e-6, msg=name)


def test_save_model_writes_what_the_scorer_needs(tiny_model_dir, tmp_path):
    """implicit_prm.json beside the weights: the objective, β and the reference: the initial policy
    (a copy as reference), the named reference model, or the base with the LoRA adapter off."""
    tok = load(tiny_model_dir)[1]
    path = str(tiny_model_dir.resolve())
    cases = [
        (dict(), {}, {"reference_is_adapter_off": False}),
        (dict(objective="implicit_prm_dpo", beta=0.1, ref_model_name_or_path=str(tiny_model_dir)), {},
         {"objective": "implicit_prm_dpo", "beta": 0.1, "reference_is_adapter_off": False}),
        (dict(), {"peft_config": lora()}, {"reference_is_adapter_off": True}),
    ]  # fmt: skip
    for i, (overrides, kwargs, expected) in enumerate(cases):
        args = prm_config(tmp_path / str(i), **overrides)
        trainer = ImplicitPRMTrainer(str(tiny_model_dir), args, labelled_dataset(2), None, tok, **kwargs)
        trainer.save_model()
        info = json.loads((tmp_path / str(i) / "out" / "implicit_prm.json").read_text())
        assert info == {"objective": "implicit_prm_ce", "beta": 0.5, "reference": path, **expected}
        weights = "adapter_model.safetensors" if kwargs else "model.safetensors"
        assert (tmp_path / str(i) / "out" / weights).exists()
