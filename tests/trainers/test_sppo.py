"""SPPOTrainer: sppo_hard equals TRL's DPOTrainer(loss_type="sppo_hard"); soft sppo by hand from the win rates."""

import pytest
import torch

from align.trainers import SPPOConfig, SPPOTrainer
from tests.trainers.common import pair_dataset
from tests.trainers.test_base import load


def sppo_config(tmp_path, **overrides):
    base = dict(output_dir=str(tmp_path / "out"), per_device_eval_batch_size=8, max_length=128, report_to="none",
                disable_tqdm=True, seed=0, beta=0.1)  # fmt: skip
    return SPPOConfig(**{**base, **overrides})


def test_sppo_hard_eval_loss_matches_trl(tiny_model_dir, tmp_path):
    from trl import DPOConfig, DPOTrainer

    model, tok = load(tiny_model_dir)
    ref, _ = load(tiny_model_dir, seed_offset=7)
    trl_args = DPOConfig(output_dir=str(tmp_path / "trl"), per_device_eval_batch_size=8, beta=0.1, loss_type=["sppo_hard"],
                         max_length=128, report_to="none", disable_tqdm=True, bf16=False)  # fmt: skip
    trl = DPOTrainer(model=model, ref_model=ref, args=trl_args, train_dataset=pair_dataset(), eval_dataset=pair_dataset(),
                     processing_class=tok).evaluate()  # fmt: skip
    model, tok = load(tiny_model_dir)
    ref, _ = load(tiny_model_dir, seed_offset=7)
    ours = SPPOTrainer(model, sppo_config(tmp_path, objective="sppo_hard"), pair_dataset(), pair_dataset(), tok, ref_model=ref).evaluate()
    assert ours["eval_loss"] == pytest.approx(trl["eval_loss"], rel=1e-5)


def test_soft_sppo_uses_the_win_rates_column(tiny_model_dir, tmp_path):
    """With the reference a perturbed copy, the eval loss is the mean over pairs of
    (Δ_w − η(P̂_w − ½))² + (Δ_l − η(P̂_l − ½))², Δ from the trainer's own chosen/rejected rewards."""
    rates = [[0.9, 0.2], [0.6, 0.4], [0.75, 0.25], [0.5, 0.5]] * 2
    data = pair_dataset(8).add_column("win_rates", rates)
    model, tok = load(tiny_model_dir)
    ref, _ = load(tiny_model_dir, seed_offset=7)
    trainer = SPPOTrainer(model, sppo_config(tmp_path, objective="sppo", beta=0.5), data, data, tok, ref_model=ref)
    batch = trainer.data_collator([trainer.eval_dataset[i] for i in range(8)])
    with torch.no_grad():
        groups = trainer.completion_groups(trainer.model, batch)
    delta = groups.logratios()
    eta, p = 2.0, torch.tensor(rates)
    expected = ((delta - eta * (p - 0.5)) ** 2).sum(-1).mean()
    assert trainer.evaluate()["eval_loss"] == pytest.approx(expected.item(), rel=1e-5)


def test_soft_sppo_without_win_rates_fails_before_training(tiny_model_dir, tmp_path):
    model, tok = load(tiny_model_dir)
    with pytest.raises(Exception, match="win_rates"):
        SPPOTrainer(model, sppo_config(tmp_path), pair_dataset(), None, tok)


def test_unknown_sppo_variant_is_refused(tmp_path):
    with pytest.raises(ValueError, match="sppo_single"):
        sppo_config(tmp_path, objective="dpo")
