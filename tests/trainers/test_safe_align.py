"""SafeAlignTrainer on a tiny random model, on multi-turn conversations labelled safe or harmful:
the NLLs cover the assistant turns only (against a direct forward), red_weight 0 is exactly SFT on
the safe rows, SAFE-ALIGN and NPO raise the harmful NLL while lowering the safe one, NPO's first
step is plain ascent against its reference, and the config's refusals."""

import pytest
import torch
from datasets import Dataset

from align.trainers import SafeAlignConfig, SafeAlignTrainer
from tests.trainers.common import QUESTIONS
from tests.trainers.test_base import load, lora

FOLLOW_UP = {"role": "user", "content": "Are you sure? Check it again."}


def safety_dataset(n: int = 8) -> Dataset:
    """Row i: question i; safe (label 1) for even i with the right answer, harmful (0) for odd i with
    the wrong one; every third row is a multi-turn conversation (answer, a user follow-up, the
    answer again), so user turns sit inside completions."""
    rows = []
    for i in range(n):
        question, right, wrong = QUESTIONS[(i // 2) % len(QUESTIONS)]
        answer = {"role": "assistant", "content": right if i % 2 == 0 else wrong}
        completion = [answer, FOLLOW_UP, answer] if i % 3 == 0 else [answer]
        rows.append({"prompt": [{"role": "user", "content": question}], "completion": completion, "label": i % 2 == 0})
    return Dataset.from_list(rows)


def config(tmp_path, **overrides):
    base = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, per_device_eval_batch_size=8,
                max_steps=1, learning_rate=0.5, optim="sgd", lr_scheduler_type="constant", max_grad_norm=1e9,
                logging_steps=1, save_strategy="no", report_to="none", max_length=128, seed=0, disable_tqdm=True)  # fmt: skip
    return SafeAlignConfig(**{**base, **overrides})


def direct_nll(model, prompt_ids, completion_ids, mask) -> float:
    """Mean NLL over the masked completion tokens from a plain forward of the whole sequence."""
    ids = torch.tensor([list(prompt_ids) + list(completion_ids)])
    start = len(prompt_ids)
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0, start - 1 : -1].double(), dim=-1)
    token = -logprobs.gather(-1, torch.tensor(completion_ids)[:, None])[:, 0]
    kept = torch.tensor(mask, dtype=torch.bool)
    return token[kept].mean().item()


def test_nll_covers_assistant_turns_only(tiny_model_dir, tmp_path):
    model, tok = load(tiny_model_dir)
    trainer = SafeAlignTrainer(model, config(tmp_path), safety_dataset(6), None, tok)
    rows = [trainer.train_dataset[i] for i in range(6)]
    assert 0 < sum(rows[0]["assistant_masks"][0]) < len(rows[0]["assistant_masks"][0])  # row 0 is multi-turn
    batch = trainer._prepare_inputs(trainer.data_collator(rows))
    with torch.no_grad():
        _, out = trainer.compute_loss(trainer.model, batch, return_outputs=True)
    for b, row in enumerate(rows):
        expected = direct_nll(trainer.model, row["prompt_ids"], row["completion_ids"][0], row["assistant_masks"][0])
        metric = "nll/safe" if row["labels"][0] == 1 else "nll/harmful"
        assert out.metrics[metric][b].item() == pytest.approx(expected, rel=1e-5)
        # the whole completion's mean (user turn included) is a different number: the mask matters
        if b == 0:
            assert direct_nll(trainer.model, row["prompt_ids"], row["completion_ids"][0], [1] * len(row["completion_ids"][0])) != pytest.approx(expected, rel=1e-3)


def test_red_weight_zero_is_sft_on_the_safe_rows(tiny_model_dir, tmp_path):
    """λ_red = 0 on the mixed set trains on the safe rows alone: the same weights after one step as
    SAFE-ALIGN trained on only those rows, and a first loss equal to their mean per-token NLL."""
    data = safety_dataset(8)
    safe = data.filter(lambda row: row["label"])
    weights, losses = [], []
    for rows in (data, safe):
        model, tok = load(tiny_model_dir)
        trainer = SafeAlignTrainer(model, config(tmp_path, red_weight=0.0), rows, None, tok)
        assert len(trainer.train_dataset) == 4
        if rows is data:
            expected = sum(
                direct_nll(trainer.model, r["prompt_ids"], r["completion_ids"][0], r.get("assistant_masks", [None])[0]
                           or [1] * len(r["completion_ids"][0]))
                for r in trainer.train_dataset
            ) / 4  # fmt: skip
        trainer.train()
        losses.append(next(e["loss"] for e in trainer.state.log_history if "loss" in e))
        weights.append({n: p.detach().clone() for n, p in trainer.model.named_parameters()})
    assert losses[0] == pytest.approx(expected, rel=1e-4)
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    for name in weights[0]:
        torch.testing.assert_close(weights[0][name], weights[1][name], rtol=0, atol=1e-7, msg=name)


@pytest.mark.parametrize("objective", ["safe_align", "npo"])
def test_harmful_nll_rises_and_safe_nll_falls(tiny_model_dir, tmp_path, objective):
    """A few SGD steps on 4 safe and 4 harmful conversations: on the training rows the harmful
    NLL goes up and the safe NLL goes down (a separate evaluation before and after)."""
    model, tok = load(tiny_model_dir)
    # NPO's harmful term acts on log-ratios summed over ~20 tokens, the safe NLL is a per-token mean:
    # a smaller step keeps SGD stable, and λ_safe = 10 keeps the safe term from being drowned
    extra = {"red_weight": 1.0, "threshold": 50.0, "learning_rate": 0.2} if objective == "safe_align" else {"learning_rate": 0.02, "safe_weight": 10.0}
    args = config(tmp_path, objective=objective, max_steps=4, **extra)
    data = safety_dataset(8)
    trainer = SafeAlignTrainer(model, args, data, data, tok)
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    assert after["eval_nll/harmful"] > before["eval_nll/harmful"] + 0.05
    assert after["eval_nll/safe"] < before["eval_nll/safe"] - 0.05


def test_npo_with_lora_starts_as_plain_ascent_against_the_adapter_off(tiny_model_dir, tmp_path):
    """With LoRA the reference is the model with the adapter off: at the first step Δ = 0 and the
    ascent weight 2σ(βΔ) is 1; after training the harmful responses' Δ is negative and the weight below 1."""
    model, tok = load(tiny_model_dir)
    args = config(tmp_path, objective="npo", max_steps=3, learning_rate=0.5)
    trainer = SafeAlignTrainer(model, args, safety_dataset(8), None, tok, peft_config=lora())
    assert trainer.reference == "adapter"
    trainer.train()
    logs = [e for e in trainer.state.log_history if "loss" in e]
    assert logs[0]["npo/logratio"] == pytest.approx(0.0, abs=1e-6)
    assert logs[0]["npo/ascent_weight"] == pytest.approx(1.0, abs=1e-6)
    assert logs[-1]["npo/logratio"] < -1e-3 and logs[-1]["npo/ascent_weight"] < 1.0
    assert {"nll/safe", "nll/harmful"} <= set(logs[0])


def test_ascent_fraction_is_logged_and_tau_stops_the_ascent(tiny_model_dir, tmp_path):
    """τ below every harmful token's NLL (a random model's NLL is ≈ log V ≈ 6): no ascent at all,
    the harmful rows give no gradient, and the step equals SFT on the safe rows alone."""
    results = []
    for red_weight, threshold in ((1.0, 0.01), (0.0, 1.0)):
        model, tok = load(tiny_model_dir)
        trainer = SafeAlignTrainer(model, config(tmp_path, red_weight=red_weight, threshold=threshold,
                                                 per_device_train_batch_size=8), safety_dataset(8), None, tok)  # fmt: skip
        trainer.train()
        results.append(({n: p.detach().clone() for n, p in trainer.model.named_parameters()}, trainer.state.log_history[0]))
    (bounded, log), (sft, _) = results
    assert log["safe_align/ascent_fraction"] == 0.0
    # the mixed batch of 8 averages 4 safe NLLs and 4 zeros: half the SFT step, same direction
    initial = load(tiny_model_dir)[0].state_dict()
    for name in bounded:
        torch.testing.assert_close(bounded[name] - initial[name], (sft[name] - initial[name]) / 2, rtol=1e-4, atol=1e-7)


def test_config_refusals(tmp_path):
    with pytest.raises(ValueError, match="must be one of"):
        config(tmp_path, objective="dpo")
    with pytest.raises(ValueError, match="threshold_mode"):
        config(tmp_path, threshold_mode="sequence")
    assert config(tmp_path, red_weight=0.0).safe_only and not config(tmp_path, objective="npo").safe_only
