"""SFTTrainer on a tiny random model: its loss is transformers' own causal-LM loss on the
completion tokens (per example), and training lowers the NLL of the demonstrations."""

import pytest
import torch
from datasets import Dataset

from align.trainers.sft import SFTConfig, SFTTrainer
from tests.trainers.common import QUESTIONS
from tests.trainers.test_base import load


def demonstrations() -> Dataset:
    rows = [{"prompt": [{"role": "user", "content": q}], "completion": [{"role": "assistant", "content": right}]}
            for q, right, _ in QUESTIONS]  # fmt: skip
    return Dataset.from_list(rows)


def config(tmp_path, **overrides):
    base = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, per_device_eval_batch_size=8,
                max_steps=1, learning_rate=0.05, optim="adamw_torch", lr_scheduler_type="constant",
                logging_steps=1, save_strategy="no", report_to="none", max_length=128, seed=0, disable_tqdm=True)  # fmt: skip
    return SFTConfig(**{**base, **overrides})


@pytest.mark.parametrize("padding_free", [False, True])
def test_loss_is_transformers_causal_lm_loss(tiny_model_dir, tmp_path, padding_free):
    """One example per batch: the per-token mean NLL is what the model's own loss computes with the
    prompt labelled -100 (transformers' ForCausalLMLoss, the loss TRL's SFTTrainer trains)."""
    model, tok = load(tiny_model_dir)
    trainer = SFTTrainer(model, config(tmp_path, padding_free=padding_free), demonstrations(), None, tok)
    for row in [trainer.train_dataset[i] for i in range(3)]:
        ids = torch.tensor([row["prompt_ids"] + row["completion_ids"][0]])
        labels = ids.clone()
        labels[0, : len(row["prompt_ids"])] = -100
        with torch.no_grad():
            expected = trainer.model(input_ids=ids, labels=labels).loss.item()
            loss = trainer.compute_loss(trainer.model, trainer._prepare_inputs(trainer.data_collator([row])))
        assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_summed_option_and_training_lowers_nll(tiny_model_dir, tmp_path):
    model, tok = load(tiny_model_dir)
    trainer = SFTTrainer(model, config(tmp_path, max_steps=8, length_normalize=False), demonstrations(), None, tok)
    rows = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    batch = trainer._prepare_inputs(trainer.data_collator(rows))
    with torch.no_grad():
        before, out = trainer.compute_loss(trainer.model, batch, return_outputs=True)
    counts = batch["completion_token_counts"][:, 0].double()
    assert before.item() == pytest.approx((out.metrics["nll"].double() * counts).mean().item(), rel=1e-5)
    trainer.train()
    with torch.no_grad():
        after = trainer.compute_loss(trainer.model, batch)
    assert after.item() < 0.75 * before.item()  # 83 -> 49 nats measured
