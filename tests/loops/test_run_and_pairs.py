"""The run folder (manifest, config fingerprint) and the pair builders, by hand."""

import json

import pytest

from align.loops import ConfigChangedError, RunFolder, rpo_pairs, sppo_pairs


def test_manifest_records_finished_stages(tmp_path):
    run = RunFolder(tmp_path / "run", {"lr": 1})
    it = run.iteration(0)
    assert not it.done("generate")
    it.finish("generate", {"samples": 8})
    assert it.done("generate") and it.summary("generate")["samples"] == 8
    assert json.loads((tmp_path / "run" / "iteration-00" / "manifest.json").read_text())["stages"]["generate"]["samples"] == 8
    assert not list((tmp_path / "run" / "iteration-00").glob("*.tmp"))


def test_a_changed_config_is_refused_unless_starting_over(tmp_path):
    RunFolder(tmp_path / "run", {"lr": 1, "k": 4}).iteration(0).finish("generate")
    RunFolder(tmp_path / "run", {"k": 4, "lr": 1})  # same config, other key order: resumes
    with pytest.raises(ConfigChangedError, match="changed: lr.*--start_over true"):
        RunFolder(tmp_path / "run", {"lr": 2, "k": 4})
    run = RunFolder(tmp_path / "run", {"lr": 2, "k": 4}, start_over=True)
    assert not run.iteration(0).done("generate")
    assert json.loads((tmp_path / "run" / "run.json").read_text())["config"]["lr"] == 2


def judged(rates, completions=None, **extra):
    completions = completions or [f"y{i}" for i in range(len(rates))]
    k = len(rates)
    preference = [[0.5 if i == j else (0.9 if rates[i] > rates[j] else 0.1 if rates[i] < rates[j] else 0.5) for j in range(k)] for i in range(k)]
    return {"prompt": "Q", "completions": completions, "win_rates": rates, "preference": preference, **extra}


def test_sppo_pairs_take_the_best_and_worst_win_rates_and_skip_ties():
    rows, stats = sppo_pairs([judged([0.4, 0.7, 0.2, 0.7]), judged([0.5, 0.5, 0.5])])
    assert stats == {"prompts": 2, "pairs": 1, "ties": 1, "skipped_ties": 1}
    (row,) = rows
    # the first of the tied best (index 1), the worst (index 2)
    assert row["chosen"][0]["content"] == "y1" and row["rejected"][0]["content"] == "y2"
    assert row["win_rates"] == [0.7, 0.2] and row["pair_prob"] == 0.9
    assert row["prompt"] == [{"role": "user", "content": "Q"}]
    rows, stats = sppo_pairs([judged([0.5, 0.5, 0.5])], skip_ties=False)
    assert len(rows) == 1 and rows[0]["win_rates"] == [0.5, 0.5] and rows[0]["chosen"] != rows[0]["rejected"]


def test_rpo_pairs_pair_correct_with_incorrect_and_use_gold_when_none_is_correct():
    mixed = judged([0.5] * 4, ["a", "b", "c", "b"], correct=[True, False, True, False], solution="gold")
    none = judged([0.5] * 2, ["x", "y"], correct=[False, False], solution="gold")
    every = judged([0.5] * 2, ["p", "q"], correct=[True, True], solution="gold")
    rows, stats = rpo_pairs([mixed, none, every], pairs_per_prompt=3)
    pairs = [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows]
    # mixed: winners a, c; distinct losers b → 2 pairs; none: gold vs x, gold vs y (2 ≤ 3); every: no loser
    assert pairs == [("a", "b"), ("c", "b"), ("gold", "x"), ("gold", "y")]
    assert stats == {"prompts": 3, "pairs": 4, "gold_winners": 1, "all_correct": 1}
    with pytest.raises(ValueError, match="needs a verifier"):
        rpo_pairs([judged([0.5, 0.5])])
