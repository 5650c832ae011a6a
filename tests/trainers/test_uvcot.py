"""UVCoTTrainer end to end on the tiny LLaVA: training moves the reward margin, and the evaluator
scores reach the objective as its margin γ·(s_w − s_l) inside the sigmoid."""

import pytest
import torch

from align.trainers import UVCoTConfig, UVCoTTrainer
from tests.tiny import build_tiny_llava
from tests.trainers.test_vision import config, uvcot_rows, write_jsonl

SCORES = [[0.0, -1.0], [0.0, -2.0], [1.0, -1.0], [0.5, 0.0]]


def scored_pairs(folder) -> str:
    rows = uvcot_rows(folder)
    for row, scores in zip(rows, SCORES):
        row["scores"] = scores
    return write_jsonl(rows, folder / "pairs.jsonl")


def test_config_takes_the_objective_defaults():
    assert UVCoTConfig.objective_field_defaults == {
        "beta": 0.1, "dpo_weight": 0.1, "sft_weight": 0.9, "score_margin": 0.0,
    }  # fmt: skip
    assert UVCoTConfig(output_dir="unused", report_to="none").objective == "uvcot"


def test_score_margin_needs_scores_before_training(tmp_path):
    rows = [{k: v for k, v in row.items() if k != "scores"} for row in uvcot_rows(tmp_path / "data")]
    model, processor = build_tiny_llava(seed=0)
    with pytest.raises(ValueError, match="scores"):
        UVCoTTrainer(model, config(tmp_path, score_margin=0.5), write_jsonl(rows, tmp_path / "p.jsonl"), None, processor)


def test_training_moves_the_margin_and_lowers_the_loss(tmp_path):
    model, processor = build_tiny_llava(seed=0)
    data = scored_pairs(tmp_path / "data")
    args = config(tmp_path, max_steps=8, learning_rate=3e-3, dpo_weight=1.0, sft_weight=0.1)
    trainer = UVCoTTrainer(model, args, data, data, processor)
    start = trainer.evaluate()
    trainer.train()
    end = trainer.evaluate()
    assert start["eval_rewards/margins"] == pytest.approx(0.0, abs=1e-5)
    assert end["eval_rewards/margins"] > 0.05
    assert end["eval_loss"] < start["eval_loss"] - 0.01
    assert end["eval_sft"] < start["eval_sft"]  # the winners' answers (images in context) got likelier


def test_scores_reach_the_objective_as_a_margin_inside_the_sigmoid(tmp_path):
    """After a few steps (Δ ≠ 0), the trainer's loss is exactly
    mean(w_dpo·softplus(−(β(Δw − Δl) − γ(s_w − s_l))) + w_sft·(−log π(y_w))) with the rows' own scores,
    computed here from the trainer's per-row log-probs."""
    gamma, beta = 0.5, 0.1
    model, processor = build_tiny_llava(seed=0)
    data = scored_pairs(tmp_path / "data")
    trainer = UVCoTTrainer(model, config(tmp_path, max_steps=3, score_margin=gamma), data, data, processor)
    trainer.train()
    metrics = trainer.evaluate()
    inputs = trainer._prepare_inputs(trainer.data_collator(list(trainer.eval_dataset)))
    with torch.no_grad():
        groups = trainer.completion_groups(trainer.model, inputs)
    scores = groups.get("scores")
    assert scores.tolist() == SCORES
    policy, ref = groups.get("policy_logps_sum"), groups.get("ref_logps_sum")
    delta = (policy - ref)[:, 0] - (policy - ref)[:, 1]
    assert delta.abs().min() > 1e-4  # the policy moved, so the margin is tested away from Δ = 0
    logits = beta * delta - gamma * (scores[:, 0] - scores[:, 1])
    expected = 0.1 * torch.nn.functional.softplus(-logits) + 0.9 * -policy[:, 0]
    assert metrics["eval_loss"] == pytest.approx(expected.mean().item(), rel=1e-5)
    assert metrics["eval_uvcot/score_margin"] == pytest.approx(gamma * (scores[:, 0] - scores[:, 1]).mean().item())
    # the margin matters here: without it every row's loss would differ
    no_margin = 0.1 * torch.nn.functional.softplus(-beta * delta) + 0.9 * -policy[:, 0]
    assert (expected - no_margin).abs().min() > 1e-4
