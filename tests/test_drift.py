"""Likelihood-drift measurements and the callback, on the tiny random model."""

import json
import math
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from trl.trainer.utils import add_fused_lm_head

from align.callbacks import (
    DRIFT_PANELS,
    LikelihoodDriftCallback,
    PairMeasurement,
    ches,
    drift_metrics,
    gradient_cosine,
    measure_pairs,
    pearson,
    plot_drift,
)
from align.data import PreferenceCollator, prepare_preference_dataset
from align.trainers import RPOTrainer, completion_logps
from tests.trainers.common import QUESTIONS, pair_dataset
from tests.trainers.test_base import config, load

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def tokenized(tiny_model_dir):
    _, tok = load(tiny_model_dir)
    rows, _ = prepare_preference_dataset(pair_dataset(6), tok, kind="pair", max_length=128)
    return rows, tok


def mean_pair_logps(model, rows, pad_token_id: int) -> tuple[float, float]:
    """The mean summed log-prob of the chosen and of the rejected completions of tokenized pairs,
    recomputed apart from the callback."""
    with torch.no_grad():
        batch = PreferenceCollator(pad_token_id, padding_free=False)(list(rows))
        logps = completion_logps(model, batch)["logps_sum"].double()
    return logps[0::2].mean().item(), logps[1::2].mean().item()


def read_records(out) -> list[dict]:
    return [json.loads(line) for line in (out / "likelihood_drift.jsonl").read_text().splitlines()]


def train_against_recomputation(trainer, probes) -> list[dict]:
    """Train; the step-0 and the final record hold the log-probs of ``probes`` recomputed before
    and after. Returns the records."""
    pad = trainer.processing_class.pad_token_id
    before = mean_pair_logps(trainer.model, probes, pad)
    trainer.train()
    records = read_records(Path(trainer.args.output_dir))
    after = mean_pair_logps(trainer.model, probes, pad)
    assert (records[0]["chosen_logps"], records[0]["rejected_logps"]) == pytest.approx(before, abs=1e-4)
    assert (records[-1]["chosen_logps"], records[-1]["rejected_logps"]) == pytest.approx(after, abs=1e-4)
    return records


def test_ches_is_the_formula_on_hand_built_hidden_states():
    h_w = torch.tensor([[1.0, 2.0], [0.5, -1.0]])
    h_l = torch.tensor([[3.0, 0.0], [0.5, -1.0]])
    # pair 0: <h+, h-> = 3, |h+|^2 = 5 -> -2 ; pair 1: identical -> 1.25 - 1.25 = 0
    assert ches(h_w, h_l).tolist() == [-2.0, 0.0]


def test_measured_ches_sums_the_lm_head_inputs_at_the_predicting_positions(tiny_model_dir, tokenized):
    rows, tok = tokenized
    model, _ = load(tiny_model_dir)
    measured = measure_pairs(model, rows, pad_token_id=tok.pad_token_id, batch_size=4)
    expected = []
    for row in rows:
        sums = []
        for completion in row["completion_ids"]:
            ids = torch.tensor([row["prompt_ids"] + completion])
            hidden = model.model(input_ids=ids).last_hidden_state[0]  # the LM head's input, after the final norm
            p = len(row["prompt_ids"])
            sums.append(hidden[p - 1 : p - 1 + len(completion)].double().sum(0))  # positions predicting y_1..y_n
        expected.append((sums[0] @ sums[1] - sums[0] @ sums[0]).item())
    torch.testing.assert_close(measured.ches, torch.tensor(expected, dtype=torch.float64), rtol=1e-4, atol=1e-3)


def test_measured_log_probs_equal_a_separate_recomputation(tiny_model_dir, tokenized):
    rows, tok = tokenized
    model, _ = load(tiny_model_dir)
    measured = measure_pairs(model, rows, pad_token_id=tok.pad_token_id, batch_size=4, top_k=5)
    add_fused_lm_head(model)  # the padded training path: an independent implementation of the same sums
    with torch.no_grad():
        batch = PreferenceCollator(tok.pad_token_id, padding_free=False)(list(rows))
        expected = completion_logps(model, batch)["logps_sum"].double()
    torch.testing.assert_close(measured.chosen_logps, expected[0::2], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(measured.rejected_logps, expected[1::2], rtol=1e-5, atol=1e-4)
    assert measured.chosen_tokens.tolist() == [len(r["completion_ids"][0]) for r in rows]
    # top-5 mass is a probability, the entropy of 5 outcomes is at most ln 5
    assert ((measured.chosen_topk_mass > 0) & (measured.chosen_topk_mass <= 1)).all()
    assert ((measured.chosen_topk_entropy >= 0) & (measured.chosen_topk_entropy <= math.log(5) + 1e-9)).all()


def test_gradient_cosine_is_one_for_identical_responses_and_below_one_otherwise(tiny_model_dir, tokenized):
    rows, tok = tokenized
    model, _ = load(tiny_model_dir)
    same = [{"prompt_ids": r["prompt_ids"], "completion_ids": [r["completion_ids"][0]] * 2} for r in list(rows)[:2]]
    torch.testing.assert_close(gradient_cosine(model, same, pad_token_id=tok.pad_token_id), torch.ones(2, dtype=torch.float64))
    different = gradient_cosine(model, list(rows)[:2], pad_token_id=tok.pad_token_id)
    assert (different < 1 - 1e-6).all() and (different > -1).all()
    assert all(p.grad is None for p in model.parameters())  # .grad untouched


def test_drift_metrics_by_hand():
    def m(chosen, rejected, ches_values=(0.0, 0.0)):
        return PairMeasurement(
            chosen_logps=torch.tensor(chosen, dtype=torch.float64),
            rejected_logps=torch.tensor(rejected, dtype=torch.float64),
            chosen_tokens=torch.tensor([2.0, 4.0], dtype=torch.float64),
            rejected_tokens=torch.tensor([2.0, 2.0], dtype=torch.float64),
            chosen_topk_entropy=torch.tensor([1.0, 2.0], dtype=torch.float64),
            chosen_topk_mass=torch.tensor([0.5, 0.7], dtype=torch.float64),
            ches=torch.tensor(ches_values, dtype=torch.float64),
        )

    base = m([-10.0, -20.0], [-12.0, -18.0], ches_values=(1.0, 3.0))
    now = m([-11.0, -16.0], [-15.0, -19.0])
    out = drift_metrics(base, now, beta=0.1)
    # Δw = (-1, +4), Δl = (-3, -1)
    assert out["chosen_change"] == pytest.approx(1.5)
    assert out["rejected_change"] == pytest.approx(-2.0)
    assert out["chosen_change_per_token"] == pytest.approx((-1 / 2 + 4 / 4) / 2)
    assert out["displacement_rate"] == pytest.approx(0.5)
    assert out["displacement_mean_fall"] == pytest.approx(1.0)
    assert out["margin"] == pytest.approx((4.0 + 3.0) / 2)
    assert out["margin_change"] == pytest.approx(((4 - 2) + (3 - (-2))) / 2)
    assert out["rewards/margins"] == pytest.approx(0.1 * ((-1 + 3) + (4 + 1)) / 2)
    assert out["rewards/accuracies"] == 1.0
    assert out["ches"] == pytest.approx(2.0)
    assert out["ches_corr"] == pytest.approx(pearson(torch.tensor([1.0, 3.0]), torch.tensor([-1.0, 4.0])))
    assert out["ches_corr"] == pytest.approx(1.0)
    at_start = drift_metrics(base, base, beta=0.1)
    assert at_start["displacement_rate"] == 0 and "displacement_mean_fall" not in at_start and "ches_corr" not in at_start


def test_figure_is_a_png_with_the_expected_series(tmp_path):
    records = [{"step": s, "chosen_change_per_token": -0.1 * s, "rejected_change_per_token": -0.2 * s,
                "margin": 1.0 + s, "displacement_rate": 0.1 * s} for s in range(3)]  # fmt: skip
    fig = plot_drift({"run": records}, tmp_path / "drift.png")
    assert (tmp_path / "drift.png").read_bytes()[:8] == PNG_SIGNATURE
    labels = [[line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")] for ax in fig.axes]
    assert labels == [["chosen", "rejected"], ["margin"], ["displaced"]]
    assert len(fig.axes) == len(DRIFT_PANELS)
    assert list(fig.axes[0].get_lines()[0].get_ydata()) == pytest.approx([0.0, -0.1, -0.2])


def test_callback_logs_writes_and_matches_recomputation(tiny_model_dir, tmp_path):
    model, tok = load(tiny_model_dir)
    ref, _ = load(tiny_model_dir)
    drift = LikelihoodDriftCallback(num_probes=4, eval_steps=2, entanglement_every=2)
    args = config(tmp_path, max_steps=3, learning_rate=5e-3, alpha=0.0)
    trainer = RPOTrainer(model, args, pair_dataset(8), pair_dataset(6), tok, ref_model=ref, callbacks=[drift])
    trainer.train()
    out = tmp_path / "out"
    records = [json.loads(line) for line in (out / "likelihood_drift.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 2, 3]  # step 0, every 2 steps, the end
    assert "grad_cosine" in records[0] and "grad_cosine" not in records[1] and "grad_cosine" in records[2]
    assert records[0]["chosen_change"] == 0.0 and records[-1]["chosen_change"] != 0.0
    assert (out / "likelihood_drift.png").read_bytes()[:8] == PNG_SIGNATURE
    logged = [h for h in trainer.state.log_history if "drift/chosen_logps" in h]
    assert [h["step"] for h in logged] == [0, 2, 3]
    assert [h["step"] for h in trainer.state.log_history if "loss" in h] == [1, 2, 3]  # the training logs are intact

    # the final record equals a separate recomputation with the trained policy
    probes = trainer.eval_dataset.select(range(4))
    with torch.no_grad():
        batch = PreferenceCollator(tok.pad_token_id, padding_free=False)(list(probes))
        logps = completion_logps(trainer.model, batch)["logps_sum"].double()
    assert records[-1]["chosen_logps"] == pytest.approx(logps[0::2].mean().item(), abs=1e-4)
    assert records[-1]["rejected_logps"] == pytest.approx(logps[1::2].mean().item(), abs=1e-4)
    baseline = json.loads((out / "likelihood_drift_probe.json").read_text())["baseline"]
    assert records[-1]["chosen_change"] == pytest.approx(logps[0::2].mean().item() - sum(baseline["chosen_logps"]) / 4, abs=1e-4)


def test_displacement_warning_needs_a_fall_and_a_growing_margin(caplog):
    drift = LikelihoodDriftCallback(warn_threshold=0.2)
    with caplog.at_level("WARNING"):
        drift._warn({"chosen_change_per_token": -0.1, "margin_change": 3.0, "displacement_rate": 1.0})
        drift._warn({"chosen_change_per_token": -0.5, "margin_change": -1.0, "displacement_rate": 1.0})
        assert "likelihood displacement" not in caplog.text
        drift._warn({"chosen_change_per_token": -0.5, "margin_change": 3.0, "displacement_rate": 0.75})
    assert "fell by 0.500 nats" in caplog.text and "75% of probe pairs" in caplog.text


def test_probes_held_back_from_training_when_there_is_no_eval_set(tiny_model_dir, tmp_path):
    model, tok = load(tiny_model_dir)
    drift = LikelihoodDriftCallback(num_probes=2)
    trainer = RPOTrainer(model, config(tmp_path), pair_dataset(8), None, tok, callbacks=[drift])
    assert len(trainer.train_dataset) == 6 and len(drift.probes) == 2
    with pytest.raises(ValueError, match="cannot hold 8 probe pairs"):
        RPOTrainer(load(tiny_model_dir)[0], config(tmp_path), pair_dataset(8), None, tok, callbacks=[LikelihoodDriftCallback(num_probes=8)])


def test_resumed_run_keeps_the_step0_baseline(tiny_model_dir, tmp_path):
    args = dict(max_steps=4, save_strategy="steps", save_steps=2, learning_rate=5e-3)
    model, tok = load(tiny_model_dir)
    first = LikelihoodDriftCallback(num_probes=3, eval_steps=1, entanglement_every=0)
    RPOTrainer(model, config(tmp_path, **args), pair_dataset(8), pair_dataset(4), tok, callbacks=[first]).train()
    full = [json.loads(line) for line in (tmp_path / "out" / "likelihood_drift.jsonl").read_text().splitlines()]

    model, tok = load(tiny_model_dir)
    again = LikelihoodDriftCallback(num_probes=3, eval_steps=1, entanglement_every=0)
    trainer = RPOTrainer(model, config(tmp_path, **args), pair_dataset(8), pair_dataset(4), tok, callbacks=[again])
    trainer.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-2"))
    resumed = [json.loads(line) for line in (tmp_path / "out" / "likelihood_drift.jsonl").read_text().splitlines()]
    assert [r["step"] for r in resumed] == [0, 1, 2, 3, 4]
    assert resumed[0] == full[0]
    assert resumed[-1]["chosen_change"] == pytest.approx(full[-1]["chosen_change"], abs=1e-4)


# -- single completions with 0/1 labels (the implicit PRM's CE data) --------------------------------------


def test_labelled_completions_give_probe_pairs_held_back_by_prompt(tiny_model_dir, tmp_path):
    """Six prompts, a correct and an incorrect completion each, no eval set: the last two prompts
    become the probes (correct as chosen, incorrect as rejected) and all four of their rows leave
    training; the step-0 and final measurements equal a separate recomputation of those pairs."""
    from align.trainers import ImplicitPRMConfig, ImplicitPRMTrainer
    from tests.trainers.test_implicit_prm import labelled_dataset

    model, tok = load(tiny_model_dir)
    data = labelled_dataset(6)
    singles, _ = prepare_preference_dataset(data, tok, kind="single", max_length=128)
    drift = LikelihoodDriftCallback(num_probes=2, eval_steps=1, entanglement_every=0)
    args = ImplicitPRMConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, max_steps=2,
                             learning_rate=1e-2, logging_steps=1, save_strategy="no", report_to="none", max_length=128,
                             disable_tqdm=True)  # fmt: skip
    trainer = ImplicitPRMTrainer(model, args, data, None, tok, callbacks=[drift])
    completions = singles["completion_ids"]
    assert drift.probes["completion_ids"] == [[completions[i][0], completions[i + 1][0]] for i in (8, 10)]
    assert trainer.train_dataset["completion_ids"] == singles.select(range(8))["completion_ids"]

    probes = singles.select(range(8, 12))  # (correct, incorrect) of prompts 4 and 5, as the singles they were
    records = train_against_recomputation(trainer, probes)
    assert [r["step"] for r in records] == [0, 1, 2]
    assert records[-1]["chosen_change"] != 0.0


def test_labelled_probe_sources(tiny_model_dir, tmp_path, caplog):
    """A labelled eval set gives the probes (training keeps every row); more probes asked than
    prompts hold back all but the first prompt; a given labelled probe set without a pair (the
    loop passes its samples) is a warning and no measurement, unlabelled completions an error; a
    fractional label (no correct/incorrect split) is a warning and no measurement."""
    from align.trainers import ImplicitPRMConfig, ImplicitPRMTrainer
    from tests.trainers.test_implicit_prm import labelled_dataset

    model, tok = load(tiny_model_dir)
    args = ImplicitPRMConfig(output_dir=str(tmp_path / "out"), max_length=128, report_to="none", disable_tqdm=True)

    def bound(train, evaluation=None, **options):
        drift = LikelihoodDriftCallback(**options)
        trainer = ImplicitPRMTrainer(model, args, train, evaluation, tok, callbacks=[drift])
        return drift, trainer

    drift, trainer = bound(labelled_dataset(4), labelled_dataset(3), num_probes=8)
    assert len(drift.probes) == 3 and len(trainer.train_dataset) == 8
    drift, trainer = bound(labelled_dataset(4), num_probes=8)
    assert len(drift.probes) == 3 and len(trainer.train_dataset) == 2
    with caplog.at_level("WARNING", logger="align.callbacks.drift"):
        drift, _ = bound(labelled_dataset(4), probe_dataset=labelled_dataset(4, one_per_prompt=True))
    assert drift.probes is None and "not measured: no prompt of the probe dataset has both" in caplog.text
    with pytest.raises(ValueError, match="holds neither .* pairs, lists of completions, nor single completions with"):
        bound(labelled_dataset(4), probe_dataset=labelled_dataset(4).remove_columns("label"))
    soft = labelled_dataset(2).map(lambda row, i: {"label": 0.5 if i == 3 else row["label"]}, with_indices=True)
    with caplog.at_level("WARNING", logger="align.callbacks.drift"):
        drift, trainer = bound(soft)
    assert drift.probes is None and "likelihood drift: not measured: train: row 3: field 'labels'" in caplog.text
    assert len(trainer.train_dataset) == 4


# -- lists of K completions with returns (HAEPO's data) ------------------------------------------------

# Hand-chosen returns, K = 3, 2, 4, 3, 2, 4, 2, 3: rows 1 and 6 are all equal (no probe); row 2 ties
# its best (1, 2) and its worst (0, 3); row 3 ties its worst (0, 1). (best, worst) per row, or None.
LIST_RETURNS = [[0.0, 1.0, 0.5], [2.0, 2.0], [1.0, 3.0, 3.0, 1.0], [-1.0, -1.0, 0.0], [0.0, 1.0],
                [0.2, 0.1, 0.4, 0.3], [0.5, 0.5], [1.0, 0.0, 0.5]]  # fmt: skip
BEST_WORST = [(1, 0), None, (1, 3), (2, 1), (1, 0), (2, 1), None, (0, 1)]


def list_dataset(returns=LIST_RETURNS, field: str | None = "returns") -> Dataset:
    """Conversational lists from QUESTIONS: completion k of row i is answer k of a few variants
    of its right and wrong answer (all distinct), one return each."""

    rows = []
    for i, values in enumerate(returns):
        question, right, wrong = QUESTIONS[i % len(QUESTIONS)]
        answers = [right, wrong, f"{right} Done.", f"{wrong} Done."][: len(values)]
        row = {"prompt": [{"role": "user", "content": question}],
               "completions": [[{"role": "assistant", "content": a}] for a in answers]}  # fmt: skip
        if field is not None:
            row[field] = values
        rows.append(row)
    return Dataset.from_list(rows)


def test_list_probe_pairs_take_the_best_and_the_worst_completion_of_each_row():
    """First best, last worst; all-equal rows and a best equal to the worst in tokens give no pair;
    returns rank before scores, scores alone rank too, neither gives no pair."""
    from align.callbacks.drift import list_probe_pairs

    completions = [[[10 * i + k, 7] for k in range(len(v))] for i, v in enumerate(LIST_RETURNS)]
    completions[4] = [[40, 7], [40, 7]]  # a repeated sample judged twice: no preference between its tokens
    scores = [[-r for r in v] for v in LIST_RETURNS]  # the opposite ranking: ignored while returns are there
    data = Dataset.from_dict({"prompt_ids": [[i + 1] for i in range(8)], "completion_ids": completions,
                              "returns": LIST_RETURNS, "scores": scores})  # fmt: skip
    pairs, rows = list_probe_pairs(data)
    expected = [i for i, bw in enumerate(BEST_WORST) if bw is not None and i != 4]
    assert rows == expected == [0, 2, 3, 5, 7]
    assert pairs["prompt_ids"] == [[i + 1] for i in expected]
    assert pairs["completion_ids"] == [[completions[i][b] for b in BEST_WORST[i]] for i in expected]
    assert pairs["returns"] == [[LIST_RETURNS[i][b] for b in BEST_WORST[i]] for i in expected]
    assert all(r[0] > r[1] for r in pairs["returns"]) and all(s[0] < s[1] for s in pairs["scores"])

    by_scores, rows = list_probe_pairs(data.remove_columns("returns"))
    assert rows == [0, 2, 3, 5, 7]  # row 2 by scores -r: the first best is k=0, the last worst k=2
    assert by_scores["completion_ids"][0] == [completions[0][0], completions[0][1]]
    assert by_scores["completion_ids"][1] == [completions[2][0], completions[2][2]]
    nothing, rows = list_probe_pairs(data.remove_columns(["returns", "scores"]))
    assert len(nothing) == 0 and rows == []


def haepo_config(tmp_path, **overrides):
    from align.trainers import PreferenceConfig

    return config(tmp_path, PreferenceConfig, objective="haepo", **overrides)


def test_list_training_set_holds_back_probe_lists_and_trains_on_the_rest(tiny_model_dir, tmp_path):
    """No eval set: the last two rows with a spread of returns (5 and 7; row 6 is all equal) become
    the probes (best as chosen, worst as rejected) and leave training; the other six rows, K
    ragged, train; the step-0 and final records equal a separate recomputation of those pairs."""
    from align.trainers import PreferenceTrainer

    model, tok = load(tiny_model_dir)
    data = list_dataset()
    lists, _ = prepare_preference_dataset(data, tok, kind="list", max_length=128)
    drift = LikelihoodDriftCallback(num_probes=2, eval_steps=1, entanglement_every=0)
    args = haepo_config(tmp_path, learning_rate=1e-2)
    trainer = PreferenceTrainer(model, args, data, None, tok, callbacks=[drift])
    completions = lists["completion_ids"]
    pairs = [[completions[i][b] for b in BEST_WORST[i]] for i in (5, 7)]
    assert drift.probes["completion_ids"] == pairs
    assert drift.probes["prompt_ids"] == [lists[5]["prompt_ids"], lists[7]["prompt_ids"]]
    assert trainer.train_dataset["completion_ids"] == lists.select([0, 1, 2, 3, 4, 6])["completion_ids"]

    probes = [{"prompt_ids": lists[i]["prompt_ids"], "completion_ids": pair} for i, pair in zip((5, 7), pairs)]
    records = train_against_recomputation(trainer, probes)
    assert [r["step"] for r in records] == [0, 1, 2]
    assert records[-1]["chosen_change"] != 0.0
    assert (tmp_path / "out" / "likelihood_drift.png").read_bytes()[:8] == PNG_SIGNATURE


def test_list_probe_sources(tiny_model_dir, tmp_path, caplog):
    """A given list probe set (the loop passes its first training rows) and a list eval set give
    the probes, training keeps every row; lists of two are lists, not pairs (the best may come
    second); one training row always stays; lists without returns or scores, with all-equal ones,
    or a single training list are a warning and no measurement."""
    from align.trainers import PreferenceTrainer

    model, tok = load(tiny_model_dir)
    args = haepo_config(tmp_path)
    lists, _ = prepare_preference_dataset(list_dataset(), tok, kind="list", max_length=128)

    def bound(train, evaluation=None, **options):
        drift = LikelihoodDriftCallback(**options)
        trainer = PreferenceTrainer(model, args, train, evaluation, tok, callbacks=[drift])
        return drift, trainer

    def best_worst(rows):
        return [[lists[i]["completion_ids"][b] for b in BEST_WORST[i]] for i in rows]

    drift, trainer = bound(list_dataset(), probe_dataset=list_dataset().select(range(4)), num_probes=4)
    assert drift.probes["completion_ids"] == best_worst([0, 2, 3]) and len(trainer.train_dataset) == 8
    drift, trainer = bound(list_dataset(), list_dataset(), num_probes=2)
    assert drift.probes["completion_ids"] == best_worst([0, 2]) and len(trainer.train_dataset) == 8
    twos = list_dataset([[0.0, 1.0], [1.0, 0.0]])  # K = 2 on every row
    drift, _ = bound(list_dataset(), probe_dataset=twos)
    first, second = prepare_preference_dataset(twos, tok, kind="list", max_length=128)[0]["completion_ids"]
    assert drift.probes["completion_ids"] == [[first[1], first[0]], [second[0], second[1]]]
    drift, trainer = bound(list_dataset([[0.0, 1.0], [1.0, 0.0, 2.0]]), num_probes=4)
    assert len(drift.probes) == 1 and trainer.train_dataset["returns"] == [[0.0, 1.0]]

    with caplog.at_level("WARNING", logger="align.callbacks.drift"):
        drift, _ = bound(list_dataset(), probe_dataset=list_dataset(field=None))
    assert drift.probes is None and "the lists of the probe dataset carry neither 'returns' nor 'scores'" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="align.callbacks.drift"):
        drift, _ = bound(list_dataset(), probe_dataset=list_dataset(field="scores").select([1, 6]))
    assert drift.probes is None and "no list of the probe dataset has completions with different scores" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="align.callbacks.drift"):
        drift, trainer = bound(list_dataset([[2.0, 2.0], [1.0, 1.0, 1.0]]))
    assert drift.probes is None
    assert "no list of the eval or training data has completions with different returns" in caplog.text
    assert len(trainer.train_dataset) == 2
    caplog.clear()
    with caplog.at_level("WARNING", logger="align.callbacks.drift"):
        drift, trainer = bound(list_dataset([[0.0, 1.0]]))
    assert drift.probes is None and "the only list of the eval or training data is needed for training" in caplog.text
    assert len(trainer.train_dataset) == 1
