"""AlpacaEval 2.0 offline: metrics against hand counts and a simulated length bias, judging with the
order randomised, the alpaca_eval file formats, and eval/alpaca_eval.py end to end on the tiny model.

The shared data (``../shared/data/alpaca_eval``): the GPT-4 Turbo reference outputs, the
text-davinci-003 outputs, a public SPPO model's outputs and the published leaderboard."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize

from align.evaluation import alpaca_eval as ae
from align.generation import SamplingConfig
from align.rewards import GSM8KVerifier, RewardError, load_reward
from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data" / "alpaca_eval"
GPT4 = SHARED / "gpt4_1106_preview.model_outputs.json"
DAVINCI = SHARED / "text_davinci_003.model_outputs.json"
SPPO = SHARED / "SPPO-Llama-3-Instruct-8B-PairRM" / "model_outputs.json"
LEADERBOARD = SHARED / "weighted_alpaca_eval_gpt4_turbo_leaderboard.csv"
ANNOTATION_KEYS = {
    "instruction", "output_1", "generator_1", "output_2", "generator_2", "annotator", "preference",
    "model_shown_first", "raw_prob",
}  # fmt: skip

cli = load_script("eval/alpaca_eval.py")


# -- judges used as plug-ins (importable as tests.eval.test_alpaca_eval:<name>) -----------------


class LongerWins:
    """Deterministic and symmetric: the longer response wins, equal lengths tie (½)."""

    name = "longer_wins"

    def judge_pairs(self, prompts, completions_a, completions_b):
        return [float(np.sign(len(a) - len(b)) + 1) / 2 for a, b in zip(completions_a, completions_b)]


class AlwaysA:
    """The extreme position bias: response A always wins."""

    name = "always_a"

    def judge_pairs(self, prompts, completions_a, completions_b):
        return [1.0] * len(prompts)


class LengthScore:
    """A reward model: score = length / 100 characters."""

    name = "length_score"

    def score(self, prompts, completions):
        return [len(c) / 100 for c in completions]


class BrokenOnRow:
    """A judge that answers NaN for one instruction."""

    name = "broken"

    def __init__(self, bad_instruction: str):
        self.bad_instruction = bad_instruction

    def judge_pairs(self, prompts, completions_a, completions_b):
        return [math.nan if p == self.bad_instruction else 0.5 for p in prompts]


@pytest.fixture(scope="module")
def gpt4():
    return json.loads(GPT4.read_text())


@pytest.fixture(scope="module")
def davinci():
    return json.loads(DAVINCI.read_text())


# -- metrics -------------------------------------------------------------------------------------


def test_winrate_metrics_by_hand():
    # x = [1, 1, 0.5, 0.6, 0]: mean 0.62; deviations .38 .38 −.12 −.02 −.62, squares sum to 0.688
    m = ae.winrate_metrics([2.0, 2.0, 1.5, 1.6, 1.0])
    assert m["win_rate"] == pytest.approx(62.0)
    assert m["standard_error"] == pytest.approx(100 * math.sqrt(0.688 / 4) / math.sqrt(5))
    assert m["standard_error"] == pytest.approx(100 * pd.Series([1, 1, 0.5, 0.6, 0]).sem())  # alpaca_eval's way
    assert (m["n_wins"], m["n_wins_base"], m["n_draws"], m["n_total"]) == (3, 1, 1, 5)
    assert m["discrete_win_rate"] == pytest.approx(100 * (3 + 0.5) / 5)
    ties = ae.winrate_metrics([1.5, 1.5, 1.5, 2.0])
    assert (ties["n_wins"], ties["n_wins_base"], ties["n_draws"]) == (1, 0, 3)
    assert ties["win_rate"] == pytest.approx(62.5) and ties["discrete_win_rate"] == pytest.approx(62.5)
    assert math.isnan(ae.winrate_metrics([2.0])["standard_error"])  # one annotation: no spread to measure
    with pytest.raises(ValueError, match=r"preference 2\.5 \(annotation 1\) is not in \[1, 2\]"):
        ae.winrate_metrics([1.0, 2.5])


def simulate(n=2000, theta=-0.4, phi=1.5, seed=0):
    """Reference lengths 200–3000 characters; the model writes ~600 more on average (noise 800)."""
    rng = np.random.default_rng(seed)
    ref_len = rng.integers(200, 3000, n)
    model_len = np.maximum(1, ref_len + rng.normal(600, 800, n).round()).astype(int)
    delta = model_len - ref_len
    p = 1 / (1 + np.exp(-(theta + phi * np.tanh(delta / delta.std(ddof=1)))))
    return model_len, ref_len, p, rng


def test_lc_win_rate_removes_a_simulated_length_bias():
    theta0, phi0 = -0.4, 1.5
    model_len, ref_len, p, rng = simulate(theta=theta0, phi=phi0)
    wins = (rng.random(p.size) < p).astype(float)  # hard verdicts drawn from the biased judge
    unbiased = 100 / (1 + math.exp(-theta0))  # 40.13
    raw = ae.winrate_metrics(1 + wins)["win_rate"]
    lc = ae.length_controlled_winrate(1 + wins, model_len, ref_len)
    assert raw > unbiased + 10  # the length bias inflates the raw win rate
    assert abs(lc["length_controlled_winrate"] - unbiased) < 2.5
    assert lc["lc_theta"] == pytest.approx(theta0, abs=0.15) and lc["lc_phi"] == pytest.approx(phi0, abs=0.25)


def test_lc_fit_recovers_the_parameters_from_soft_labels_and_matches_a_generic_optimiser():
    theta0, phi0 = 0.7, -1.1
    model_len, ref_len, p, _ = simulate(n=500, theta=theta0, phi=phi0, seed=3)
    lc = ae.length_controlled_winrate(1 + p, model_len, ref_len)  # the expected preferences as soft labels
    assert lc["lc_theta"] == pytest.approx(theta0, abs=2e-3) and lc["lc_phi"] == pytest.approx(phi0, abs=2e-3)
    assert lc["length_controlled_winrate"] == pytest.approx(100 / (1 + math.exp(-lc["lc_theta"])))

    # the same penalised loss minimised by scipy on noisy soft labels: the same optimum
    delta = model_len - ref_len
    f = np.tanh(delta / delta.std(ddof=1))
    x = np.clip(p + np.random.default_rng(1).normal(0, 0.2, p.size), 0, 1)

    def loss(w):
        eta = w[0] + w[1] * f
        return np.mean(np.logaddexp(0, eta) - x * eta) + 0.5 * ae.LC_L2_PENALTY * w @ w

    expected = minimize(loss, np.zeros(2), method="BFGS", options={"gtol": 1e-12}).x
    assert ae.fit_length_glm(x, f) == pytest.approx(tuple(expected), abs=1e-5)


def _lc_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == ae.__name__ and r.levelno == logging.WARNING]


def test_lc_degenerate_cases(caplog):
    caplog.set_level(logging.WARNING, logger=ae.__name__)
    # equal length differences: φ is undefined, θ alone is fitted, LC = the win rate
    same = ae.length_controlled_winrate([1.0, 2.0, 2.0, 1.5], [10, 20, 30, 40], [5, 15, 25, 35])
    assert same["lc_phi"] is None and same["lc_delta_len_std"] == 0
    assert same["length_controlled_winrate"] == pytest.approx(62.5, abs=0.01)
    # one annotation: no std at all
    one = ae.length_controlled_winrate([1.75], [10], [5])
    assert one["lc_phi"] is None and one["length_controlled_winrate"] == pytest.approx(75.0, abs=0.01)
    assert _lc_warnings(caplog) == []  # both have a finite fit
    # every x = 1 (or 0): the unpenalised MLE is infinite; the penalty keeps it finite and extreme, with a warning
    lengths = np.arange(1, 41) * 37 % 500
    for value, low, high, why in ((2.0, 99.0, 100.0, "model always wins"), (1.0, 0.0, 1.0, "reference always wins")):
        caplog.clear()
        lc = ae.length_controlled_winrate([value] * 40, lengths, np.full(40, 250))
        assert math.isfinite(lc["lc_theta"]) and math.isfinite(lc["lc_phi"])
        assert low < lc["length_controlled_winrate"] < high
        [warning] = _lc_warnings(caplog)
        assert why in warning and f"LC win rate {lc['length_controlled_winrate']:.2f}" in warning
    # hard verdicts separable by length (the model wins exactly when it is longer): φ stays finite
    caplog.clear()
    separable = ae.length_controlled_winrate(1 + (lengths > 250), lengths, np.full(40, 250))
    assert 5 < separable["lc_phi"] < 1000 and math.isfinite(separable["lc_theta"])
    [warning] = _lc_warnings(caplog)
    assert "separated by length" in warning and "prefers the longer answer" in warning and "φ → +∞" in warning
    assert "Reported instead: the L2-penalised fit" in warning and "plain win rate is" in warning
    # the judge that prefers the shorter answer; and one soft verdict away from the boundary ends the separation
    caplog.clear()
    ae.length_controlled_winrate(1 + (lengths < 250), lengths, np.full(40, 250))
    assert "prefers the shorter answer" in _lc_warnings(caplog)[0]
    caplog.clear()
    one_soft = np.where(lengths == lengths.max(), 1.3, 1 + (lengths > 250))
    ae.length_controlled_winrate(one_soft, lengths, np.full(40, 250))
    assert _lc_warnings(caplog) == []


def test_a_judge_preferring_longer_answers_gets_the_no_finite_fit_warning(gpt4, davinci, caplog):
    """LongerWins on text-davinci-003 against GPT-4 Turbo: wins exactly where davinci is longer, ties (½)
    where the lengths are equal, i.e. at zero length difference: separated by length."""
    caplog.set_level(logging.WARNING, logger=ae.__name__)
    metrics = ae.alpaca_metrics(ae.judge_outputs(davinci, gpt4, LongerWins()))
    [warning] = _lc_warnings(caplog)
    assert "prefers the longer answer" in warning and f"{metrics['length_controlled_winrate']:.2f}" in warning
    caplog.clear()
    ae.alpaca_metrics(ae.judge_outputs(davinci, gpt4, LengthScore()))  # soft Bradley-Terry verdicts: a finite fit
    assert _lc_warnings(caplog) == []


# -- the gap to alpaca_eval's L1-penalised cross-validated fit ---------------------------------------


def alpaca_eval_lc(preferences, model_lengths, reference_lengths) -> float:
    """alpaca_eval's length-controlled win rate with its minimal formula, ``np.tanh(std_delta_len) +
    not_gamed_baseline - 1`` (no instruction difficulty, no gamed baselines), fitted as its
    ``fit_LogisticRegressionCV`` fits soft labels (alpaca_eval/metrics/glm_winrate.py): every row twice,
    as y = 1 weighted x and y = 0 weighted 1 − x, L1-penalised liblinear without an intercept (the
    constant column is penalised too), C chosen from 10 values by 5-fold GroupKFold on the log-loss,
    then 100·σ(θ) at zero length difference. alpaca-eval is not installed here; scikit-learn comes with
    lm-eval (the dev extra)."""
    import sklearn
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import make_scorer
    from sklearn.model_selection import GroupKFold

    def logloss_continuous(y_true, y_pred, true_prob):  # their scorer: the soft label back from the 1/0 copy
        y_soft = np.where(y_true == 1, true_prob, 1 - true_prob)
        y_pred = np.clip(y_pred, 1e-15, 1 - 1e-15)
        return -np.mean(y_soft * np.log(y_pred) + (1 - y_soft) * np.log(1 - y_pred))

    x = np.asarray(preferences, dtype=float) - 1
    delta = np.asarray(reference_lengths, dtype=float) - np.asarray(model_lengths, dtype=float)  # their sign
    features = np.stack([np.ones_like(x), np.tanh(delta / delta.std(ddof=1))], axis=1)
    n = x.size
    with sklearn.config_context(enable_metadata_routing=True):
        scorer = make_scorer(logloss_continuous, response_method="predict_proba", greater_is_better=False)
        model = LogisticRegressionCV(
            cv=GroupKFold(n_splits=5), scoring=scorer.set_score_request(true_prob=True), random_state=123,
            l1_ratios=(1.0,), solver="liblinear", fit_intercept=False, use_legacy_attributes=False,
        ).set_fit_request(sample_weight=True)  # fmt: skip
        true_prob = np.concatenate([x, 1 - x])
        model.fit(np.concatenate([features, features]), np.repeat([1, 0], n), sample_weight=true_prob,
                  groups=np.tile(np.arange(n), 2), true_prob=true_prob)  # fmt: skip
    theta = model.coef_[0][0]
    return 100 / (1 + math.exp(-theta))


def biased_judge(model_len, ref_len, *, theta, phi, noise, seed, hard=False):
    """Preferences of a judge with a length bias: P_i = σ(θ + φ·tanh(z_i) + u_i), u_i ~ N(0, noise²) the
    instruction's own quality difference; soft labels P_i, or hard verdicts drawn from them."""
    rng = np.random.default_rng(seed)
    delta = np.asarray(model_len) - np.asarray(ref_len)
    p = 1 / (1 + np.exp(-(theta + phi * np.tanh(delta / delta.std(ddof=1)) + rng.normal(0, noise, delta.size))))
    return 1 + ((rng.random(p.size) < p).astype(float) if hard else p)


def lc_gaps(model_rows, reference_rows, grid) -> list[float]:
    """Our LC win rate minus alpaca_eval's on each (theta, phi, noise, seed, hard) of ``grid``."""
    model_len = [len(r["output"]) for r in model_rows]
    ref_len = [len(r["output"]) for r in reference_rows]
    gaps = []
    for theta, phi, noise, seed, hard in grid:
        pref = biased_judge(model_len, ref_len, theta=theta, phi=phi, noise=noise, seed=seed, hard=hard)
        ours = ae.length_controlled_winrate(pref, model_len, ref_len)["length_controlled_winrate"]
        gaps.append(ours - alpaca_eval_lc(pref, model_len, ref_len))
    return gaps


def test_lc_is_close_to_alpaca_evals_l1_cross_validated_fit_on_typical_annotations(gpt4):
    """805 soft verdicts with a moderate length bias on the SPPO model's real lengths (as long as the
    reference's on average): the two fits agree to a few hundredths of a point."""
    sppo = json.loads(SPPO.read_text())
    grid = [(theta, phi, 2.0, seed, False) for theta in (-1.0, 0.5) for phi in (0.5, 1.5) for seed in (0, 1, 2)]
    gaps = np.abs(lc_gaps(sppo, gpt4, grid))
    assert np.median(gaps) < 0.02 and gaps.max() < 0.2, gaps.round(3)


def test_the_l1_fit_can_drop_the_intercept_far_from_the_references_length(gpt4, davinci):
    """davinci writes 1,741 characters less than GPT-4 Turbo on average: the constant and tanh(z) columns
    are nearly collinear and the L1 penalty can zero θ, so alpaca_eval's minimal fit reports exactly 50."""
    model_len, ref_len = [len(r["output"]) for r in davinci], [len(r["output"]) for r in gpt4]
    pref = biased_judge(model_len, ref_len, theta=0.5, phi=0.5, noise=2.0, seed=0)
    assert alpaca_eval_lc(pref, model_len, ref_len) == 50.0
    assert ae.length_controlled_winrate(pref, model_len, ref_len)["length_controlled_winrate"] > 55


@pytest.mark.slow
def test_lc_gap_to_alpaca_eval_over_a_grid_of_judges(gpt4, davinci):
    """The measurement behind the README's figure: 3 seeds × 6 θ × 3 φ × 3 noise levels × soft/hard,
    on the SPPO model's and on davinci's real lengths (805 instructions; and SPPO's first 50). Prints it."""
    sppo = json.loads(SPPO.read_text())
    grid = [(theta, phi, noise, seed, hard) for theta in (-1.5, -1.0, -0.5, 0.0, 0.5, 1.0) for phi in (0.5, 1.0, 1.5)
            for noise in (1.0, 2.0, 3.0) for seed in range(3) for hard in (False, True)]  # fmt: skip
    summary = {}
    sets = (("SPPO-Llama-3-8B lengths", sppo), ("text-davinci-003 lengths", davinci), ("SPPO, first 50", sppo[:50]))
    for name, rows in sets:
        gaps = np.array(lc_gaps(rows, gpt4[: len(rows)], grid))
        for hard in (False, True):
            g = np.abs(gaps[[h == hard for *_, h in grid]])
            summary[(name, hard)] = (np.median(g), np.mean(g <= 0.2), np.percentile(g, 90), g.max())
            print(f"{name}, {'hard' if hard else 'soft'} verdicts: |gap| median {np.median(g):.3f}, "
                  f"{100 * np.mean(g <= 0.2):.0f}% within 0.2, 90th percentile {np.percentile(g, 90):.2f}, "
                  f"max {g.max():.2f} points")  # fmt: skip
    median, within, *_ = summary[("SPPO-Llama-3-8B lengths", False)]
    assert median < 0.01 and within > 0.9


# -- judging against the reference ---------------------------------------------------------------


def test_longer_wins_judge_on_davinci_vs_gpt4_equals_an_independent_count(gpt4, davinci):
    judge = load_reward("tests.eval.test_alpaca_eval:LongerWins")
    wins = sum(len(d["output"]) > len(g["output"]) for d, g in zip(davinci, gpt4))
    ties = sum(len(d["output"]) == len(g["output"]) for d, g in zip(davinci, gpt4))
    assert ties == 5 and len(gpt4) == 805
    results = []
    for seed in (0, 1):
        annotations = ae.judge_outputs(davinci, gpt4, judge, seed=seed)
        flips = [a["model_shown_first"] for a in annotations]
        assert 300 < sum(flips) < 505  # both orders really occur
        results.append((flips, ae.alpaca_metrics(annotations)))
    (flips0, m), (flips1, m1) = results
    assert flips0 != flips1
    assert m["win_rate"] == pytest.approx(100 * (wins + ties / 2) / 805)
    assert (m["n_wins"], m["n_draws"], m["n_wins_base"], m["n_total"]) == (wins, ties, 805 - wins - ties, 805)
    assert {k: m1[k] for k in m} == pytest.approx(m)  # a symmetric judge does not care about the order
    assert m["win_rate"] < 10  # davinci-003 writes far shorter answers than GPT-4 Turbo


def test_avg_length_of_the_sppo_outputs_equals_the_leaderboard(gpt4):
    sppo = json.loads(SPPO.read_text())
    with LEADERBOARD.open() as f:
        published = next(row for row in csv.DictReader(f) if row["name"] == "SPPO-Llama-3-Instruct-8B-PairRM")
    metrics = ae.alpaca_metrics(ae.judge_outputs(sppo, gpt4, LongerWins()))
    assert int(metrics["avg_length"]) == int(published["avg_length"]) == 2066


def test_a_judge_that_always_picks_a_gives_half_through_the_random_order(gpt4, davinci):
    annotations = ae.judge_outputs(davinci, gpt4, AlwaysA(), seed=7)
    for a in annotations:  # exactly 1 or 0 per instruction, by where the model was shown
        assert a["raw_prob"] == 1.0
        assert a["preference"] == (2.0 if a["model_shown_first"] else 1.0)
    m = ae.alpaca_metrics(annotations)
    assert m["win_rate"] == pytest.approx(100 * np.mean([a["model_shown_first"] for a in annotations]))
    assert abs(m["win_rate"] - 50) < 5


def test_a_reward_model_judges_by_bradley_terry(gpt4, davinci):
    annotations = ae.judge_outputs(davinci[:20], gpt4, LengthScore(), seed=0)
    for a in annotations:
        d = (len(a["output_2"]) - len(a["output_1"])) / 100
        assert a["preference"] == pytest.approx(1 + 1 / (1 + math.exp(-d)), abs=1e-12)
        shown_a, shown_b = (a["output_2"], a["output_1"]) if a["model_shown_first"] else (a["output_1"], a["output_2"])
        assert a["raw_prob"] == pytest.approx(1 / (1 + math.exp(-(len(shown_a) - len(shown_b)) / 100)), abs=1e-12)


def test_annotation_records(gpt4, davinci):
    annotations = ae.judge_outputs(davinci[:3], gpt4, LongerWins(), annotator="me")
    assert [set(a) for a in annotations] == [ANNOTATION_KEYS] * 3
    first = annotations[0]
    assert first["output_1"] == gpt4[0]["output"] and first["generator_1"] == "gpt4_1106_preview"
    assert first["output_2"] == davinci[0]["output"] and first["generator_2"] == "text_davinci_003"
    assert first["annotator"] == "me" and 1.0 <= first["preference"] <= 2.0


def test_judging_refuses_verifiers_and_unknown_instructions_and_names_a_bad_value(gpt4, davinci):
    with pytest.raises(TypeError, match="is a verifier.*pairwise judge"):
        ae.judge_outputs(davinci[:2], gpt4, GSM8KVerifier())
    stranger = [{"instruction": "Not in AlpacaEval", "output": "x"}]
    with pytest.raises(ValueError, match=r"mine\.json: row 1: field 'instruction' \('Not in AlpacaEval'\)"):
        ae.judge_outputs(davinci[:1] + stranger, gpt4, LongerWins(), source="mine.json")
    bad = davinci[70]["instruction"]
    with pytest.raises(RewardError, match="'broken' failed on prompt 70") as err:
        ae.judge_outputs(davinci[:100], gpt4, BrokenOnRow(bad))  # in the second chunk of 64
    assert err.value.index == 70 and err.value.prompt == bad


# -- files ---------------------------------------------------------------------------------------


def test_model_outputs_file_is_in_alpaca_evals_format(gpt4, davinci, tmp_path):
    rows = ae.make_model_outputs(gpt4, [d["output"] for d in davinci], "my-model")
    path = ae.write_model_outputs(tmp_path / "model_outputs.json", rows)
    loaded = json.loads(path.read_text())
    assert isinstance(loaded, list) and len(loaded) == 805
    assert all(set(r) == {"instruction", "output", "generator", "dataset"} for r in loaded)
    assert all(isinstance(v, str) for r in loaded for v in r.values())
    assert [r["instruction"] for r in loaded] == [g["instruction"] for g in gpt4]
    assert [r["dataset"] for r in loaded] == [g["dataset"] for g in gpt4] and loaded[0]["generator"] == "my-model"
    frame = pd.read_json(path)
    assert sorted(frame.columns) == ["dataset", "generator", "instruction", "output"] and len(frame) == 805
    assert frame["output"].tolist() == [d["output"] for d in davinci]
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_bad_rows_name_the_file_the_row_and_the_field(tmp_path):
    rows = [{"instruction": "a", "output": "b"}] * 2 + [{"instruction": "c"}]
    path = tmp_path / "ref.json"
    path.write_text(json.dumps(rows))
    with pytest.raises(ValueError, match=rf"{path}: row 2 has no field 'output'"):
        ae.read_model_outputs(path)
    path.write_text(json.dumps([{"instruction": "a", "output": 3}]))
    with pytest.raises(TypeError, match=rf"{path}: row 0: field 'output' must be a string, got int"):
        ae.load_reference(path)
    path.write_text(json.dumps({"instruction": "a"}))
    with pytest.raises(TypeError, match="expected a JSON list"):
        ae.read_model_outputs(path)


def test_offline_without_the_shared_reference_says_what_is_missing(tmp_path, monkeypatch):
    missing = tmp_path / "no-such" / "gpt4_1106_preview.model_outputs.json"
    monkeypatch.setattr(ae, "DEFAULT_REFERENCE", missing)
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    with pytest.raises(FileNotFoundError) as err:
        ae.load_reference()
    message = str(err.value)
    assert str(missing) in message and "tatsu-lab/alpaca_eval/alpaca_eval_gpt4_baseline.json" in message
    assert "HF_HUB_OFFLINE" in message and "--reference" in message


def test_default_reference_is_the_shared_gpt4_turbo_file(gpt4):
    rows, source = ae.load_reference()
    assert source == str(GPT4) and rows == gpt4 and ae.reference_name(rows, source) == "gpt4_1106_preview"
    assert ae.reference_name([{"instruction": "a", "output": "b"}], "x/my_ref.model_outputs.json") == "my_ref"


def test_run_alpaca_eval_on_a_loaded_model(tiny_model_dir, tmp_path, gpt4):
    """The entry point a training hook calls: an already loaded model, a judge object."""
    from align.evaluation.common import load_eval_model

    model, tokenizer = load_eval_model(str(tiny_model_dir), device="cpu")
    sampling = SamplingConfig(num_samples=1, max_new_tokens=6, temperature=0.0, batch_size=4, chunk_size=2)
    metrics = ae.run_alpaca_eval(
        model, tokenizer, judge=LongerWins(), output_dir=tmp_path, limit=3, sampling=sampling, name="tiny",
        show_progress=False,
    )  # fmt: skip
    outputs = json.loads((tmp_path / "model_outputs.json").read_text())
    assert [r["instruction"] for r in outputs] == [g["instruction"] for g in gpt4[:3]]
    assert all(r["generator"] == "tiny" for r in outputs)
    # the tiny model's short answers lose every comparison with GPT-4 Turbo's long ones
    assert metrics["win_rate"] == 0.0 and metrics["n_total"] == 3 and metrics["name"] == "tiny"
    assert metrics["avg_length"] == pytest.approx(np.mean([len(r["output"]) for r in outputs]))
    assert metrics["annotator"] == "longer_wins" and metrics["reference"] == "gpt4_1106_preview"
    assert sorted(p.name for p in (tmp_path / "generation").iterdir()) == [
        "chunk-00000.json",
        "chunk-00001.json",
        "key.json",
    ]
    with pytest.raises(ValueError, match="one output per instruction"):
        ae.run_alpaca_eval(
            model, tokenizer, judge=LongerWins(), output_dir=tmp_path, sampling=SamplingConfig(num_samples=2)
        )


# -- the command line ----------------------------------------------------------------------------


def cli_args(model_dir, out, *extra):
    return [
        "--model", str(model_dir), "--limit", "3", "--max_new_tokens", "8", "--judge", "lm_judge",
        "--judge_options", json.dumps({"model": str(model_dir)}), "--output_dir", str(out), *extra,
    ]  # fmt: skip


def test_cli_end_to_end_and_resume(tiny_model_dir, tmp_path, capsys, gpt4):
    out = tmp_path / "run"
    assert cli.main(cli_args(tiny_model_dir, out)) == 0
    printed = capsys.readouterr().out
    assert (
        "| name | length_controlled_winrate | win_rate |" in printed
        and f"wrote {out / 'model_outputs.json'}" in printed
    )

    outputs = json.loads((out / "model_outputs.json").read_text())
    name = Path(tiny_model_dir).name
    assert [r["instruction"] for r in outputs] == [g["instruction"] for g in gpt4[:3]]
    assert all(set(r) == {"instruction", "output", "generator", "dataset"} and r["generator"] == name for r in outputs)
    annotations = json.loads((out / "annotations.json").read_text())
    assert [set(a) for a in annotations] == [ANNOTATION_KEYS] * 3
    assert all(a["annotator"] == f"lm_judge({tiny_model_dir})" and 1 <= a["preference"] <= 2 for a in annotations)
    with (out / "leaderboard.csv").open() as f:
        reader = csv.DictReader(f)
        [row] = list(reader)
    assert tuple(reader.fieldnames) == ae.LEADERBOARD_COLUMNS
    metrics = json.loads((out / "metrics.json").read_text())
    assert row["name"] == metrics["name"] == name and row["n_total"] == "3" and row["reference"] == "gpt4_1106_preview"
    assert float(row["win_rate"]) == pytest.approx(100 * np.mean([a["preference"] - 1 for a in annotations]))
    assert metrics["sampling"]["max_new_tokens"] == 8 and metrics["sampling"]["temperature"] == 0.0
    assert "--limit 3" in metrics["command"] and list(metrics)[: len(ae.LEADERBOARD_COLUMNS)] == list(
        ae.LEADERBOARD_COLUMNS
    )
    assert (out / "leaderboard.md").read_text().count("\n") == 3

    # a second run reads the answers from the generation cache instead of generating them again
    chunk = out / "generation" / "chunk-00000.json"
    cached = json.loads(chunk.read_text())
    cached[0] = ["CACHED ANSWER"]
    chunk.write_text(json.dumps(cached))
    assert cli.main(cli_args(tiny_model_dir, out)) == 0
    assert json.loads((out / "model_outputs.json").read_text())[0]["output"] == "CACHED ANSWER"
    # a changed sampling setting is a different cache: generated afresh
    assert cli.main(cli_args(tiny_model_dir, out, "--max_new_tokens", "4")) == 0
    assert json.loads((out / "model_outputs.json").read_text())[0]["output"] != "CACHED ANSWER"


def test_cli_judges_an_existing_outputs_file(tmp_path, capsys):
    out = tmp_path / "judged"
    args = ["--model_outputs", str(DAVINCI), "--judge", "tests.eval.test_alpaca_eval:LongerWins", "--limit", "50"]
    assert cli.main([*args, "--output_dir", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["name"] == "text_davinci_003" and metrics["n_total"] == 50 and metrics["annotator"] == "longer_wins"
    assert metrics["model_outputs_file"] == str(DAVINCI) and not (out / "model_outputs.json").exists()
    assert "| text_davinci_003 |" in capsys.readouterr().out


def test_cli_refuses_a_bad_reference_naming_file_row_and_field(tiny_model_dir, tmp_path):
    bad = tmp_path / "bad_reference.json"
    bad.write_text(
        json.dumps([{"instruction": "a", "output": "b"}, {"instruction": "c", "output": "d"}, {"instruction": "e"}])
    )
    with pytest.raises(ValueError, match=rf"{bad}: row 2 has no field 'output'"):
        cli.main([*cli_args(tiny_model_dir, tmp_path / "out"), "--reference", str(bad)])
    assert not (tmp_path / "out").exists()  # refused before anything ran
    with pytest.raises(SystemExit):
        cli.main([*cli_args(tiny_model_dir, tmp_path / "out"), "--judge_options", "{not json"])


def test_cli_refuses_a_verifier_judge(tiny_model_dir, tmp_path):
    with pytest.raises(SystemExit, match="gsm8k_verifier: a verifier cannot judge AlpacaEval"):
        cli.main([*cli_args(tiny_model_dir, tmp_path / "out"), "--judge", "gsm8k_verifier", "--judge_options", "{}"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_cli_under_accelerate_with_two_processes_matches_one(tiny_model_dir, tmp_path):
    """20 instructions = 2 generation chunks, one per process; the main process judges alone."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    runs = {}
    for processes in (1, 2):
        out = tmp_path / f"p{processes}"
        launch = ["--multi_gpu"] if processes > 1 else []
        cmd = [sys.executable, "-m", "accelerate.commands.launch", *launch, "--num_processes", str(processes),
               "--num_machines", "1", "--dynamo_backend", "no", "--mixed_precision", "no",
               "--main_process_port", str(free_port()), str(ROOT / "eval" / "alpaca_eval.py"),
               *cli_args(tiny_model_dir, out), "--limit", "20"]  # fmt: skip
        result = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert result.returncode == 0, result.stderr[-5000:]
        assert result.stdout.count("| name | length_controlled_winrate") == 1  # printed by the main process only
        runs[processes] = (
            json.loads((out / "model_outputs.json").read_text()),
            json.loads((out / "metrics.json").read_text()),
        )
    assert len(runs[2][0]) == 20 and runs[2][0] == runs[1][0]
    assert runs[2][1]["win_rate"] == pytest.approx(runs[1][1]["win_rate"], abs=1e-6)


HOOK_SCRIPT = """
import json, sys
sys.path.insert(0, {root!r})
from accelerate import Accelerator
from align.distributed import finish_distributed
from align.evaluation.alpaca_eval import run_alpaca_eval
from align.evaluation.common import load_eval_model
from align.generation import SamplingConfig

class LongerWins:
    name = "longer_wins"
    def judge_pairs(self, prompts, a, b):
        return [1.0 if len(x) > len(y) else 0.0 if len(x) < len(y) else 0.5 for x, y in zip(a, b)]

accelerator = Accelerator()
model, tokenizer = load_eval_model(sys.argv[1])
sampling = SamplingConfig(num_samples=1, max_new_tokens=4, temperature=0.0, batch_size=4, chunk_size=2)
judge = LongerWins() if accelerator.is_main_process else None
metrics = run_alpaca_eval(model, tokenizer, judge=judge, output_dir=sys.argv[2], limit=5, sampling=sampling,
                          accelerator=accelerator, name="policy", show_progress=False)
with open(f"{{sys.argv[2]}}/rank-{{accelerator.process_index}}.json", "w") as f:
    json.dump(metrics, f)
finish_distributed(accelerator)  # left to interpreter exit, gloo can abort a finished run
"""


@pytest.mark.slow
def test_run_alpaca_eval_broadcasts_the_metrics_to_every_process(tiny_model_dir, tmp_path):
    """The training-hook path: two processes, the judge on the main one only, metrics on both."""
    script = tmp_path / "hook_run.py"
    script.write_text(HOOK_SCRIPT.format(root=str(ROOT)))
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--dynamo_backend", "no", "--mixed_precision", "no",
           "--main_process_port", str(free_port()), str(script), str(tiny_model_dir), str(out)]  # fmt: skip
    result = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-5000:]
    main, other = (json.loads((out / f"rank-{rank}.json").read_text()) for rank in (0, 1))
    assert main == other and main["n_total"] == 5 and main["name"] == "policy"
    assert main == json.loads((out / "metrics.json").read_text())
    assert sorted(p.name for p in (out / "generation").glob("chunk-*")) == [f"chunk-0000{i}.json" for i in range(3)]
