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


def verdicts(completions, correct, prompt="p"):
    return {"prompt": prompt, "completions": completions, "correct": correct}


def test_all_pairs_are_every_correct_times_incorrect_pair_and_none_for_uniform_prompts():
    from align.loops import all_pairs

    judged = [
        verdicts(["a", "b", "c", "a", "d"], [True, False, True, True, False]),
        verdicts(["x", "y"], [True, True]),
        verdicts(["u", "v"], [False, False]),
    ]
    rows, stats = all_pairs(judged)
    pairs = [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows]
    # distinct winners a, c × distinct losers b, d; the duplicate "a" adds nothing
    assert pairs == [("a", "b"), ("a", "d"), ("c", "b"), ("c", "d")]
    assert stats == {"prompts": 3, "pairs": 4, "all_correct": 1, "all_wrong": 1}
    assert len(all_pairs(judged, max_pairs_per_prompt=3)[0]) == 3


def test_labelled_singles_carry_the_verdict_and_need_a_verifier():
    from align.loops import labelled_singles

    rows, stats = labelled_singles([verdicts(["a", "b", "a"], [True, False, True])])
    assert [(r["completion"][0]["content"], r["label"]) for r in rows] == [("a", 1), ("b", 0), ("a", 1)]
    assert rows[0]["prompt"] == [{"role": "user", "content": "p"}]
    assert stats == {"prompts": 1, "rows": 3, "correct": 2}
    deduped, stats = labelled_singles([verdicts(["a", "b", "a"], [True, False, True])], dedupe=True)
    assert [r["label"] for r in deduped] == [1, 0] and stats["correct"] == 1
    with pytest.raises(ValueError, match="labelled needs a verifier"):
        labelled_singles([{"prompt": "p", "completions": ["a"], "win_rates": [0.5]}])


def test_return_lists_take_the_verdict_keep_what_is_left_and_skip_ties():
    from align.loops import return_lists

    judged = [
        {**verdicts(["a", " ", "c", "d"], [True, False, False, True]), "scores": [1.0, 0.1, 0.05, 0.95]},
        verdicts(["x", "y"], [True, True]),  # all right: no preference
        verdicts(["u", ""], [True, False]),  # one non-blank sample left: no list
    ]
    rows, stats = return_lists(judged)
    # a verifier's verdict by default (not its tie-broken score); the blank sample dropped, the rest kept
    assert [[m[0]["content"] for m in r["completions"]] for r in rows] == [["a", "c", "d"]]
    assert rows[0]["returns"] == [1.0, 0.0, 1.0] and rows[0]["prompt"] == [{"role": "user", "content": "p"}]
    assert stats == {"prompts": 3, "lists": 1, "completions": 3, "ties": 1, "skipped_ties": 1, "blank_samples": 2,
                     "too_few": 1}  # fmt: skip
    rows, _ = return_lists(judged[:1], returns="scores")
    assert [r["returns"] for r in rows] == [[1.0, 0.05, 0.95]]
    rows, stats = return_lists(judged, skip_ties=False)  # the all-right list kept: entropy and KL terms only
    assert [r["returns"] for r in rows] == [[1.0, 0.0, 1.0], [1.0, 1.0]] and stats["skipped_ties"] == 0
    # a pairwise judge gives only win rates: auto takes them
    rows, _ = return_lists([{"prompt": "p", "completions": ["a", "b", "c"], "win_rates": [0.5, 0.8, 0.2]}])
    assert rows[0]["returns"] == [0.5, 0.8, 0.2]
    with pytest.raises(ValueError, match="returns='correct' but the judge gave no 'correct'"):
        return_lists([{"prompt": "p", "completions": ["a", "b"], "win_rates": [0.5, 0.5]}], returns="correct")
    with pytest.raises(ValueError, match="returns must be one of"):
        return_lists(judged, returns="reward")


def test_builders_by_name_and_their_options_are_checked_while_parsing():
    from align.loops import LoopArguments, available_builders, get_builder

    assert {"sppo_pairs", "rpo_pairs", "all_pairs", "labelled"} <= set(available_builders())
    assert get_builder("rpo_pairs", {"pairs_per_prompt": 2})([verdicts(["a", "b", "c"], [True, False, False])])[1]["pairs"] == 2
    with pytest.raises(KeyError, match="unknown dataset builder 'pairz'; known: all_pairs"):
        LoopArguments(dataset_builder="pairz")
    with pytest.raises(TypeError, match=r"'sppo_pairs': .*'skip_tie'.*it takes options \['skip_ties'\]"):
        LoopArguments(dataset_builder="sppo_pairs", dataset_options='{"skip_tie": false}')
    with pytest.raises(ValueError, match="--dataset_options is not valid JSON"):
        LoopArguments(dataset_builder="sppo_pairs", dataset_options="{skip_ties: false}")


def _sppo_loop(tmp_path, loop_args, bf16: bool = False):
    """An SPPO loop that only answers questions about its settings (no model is loaded)."""
    from trl import ModelConfig

    from align.loops import OnPolicyLoop
    from align.trainers import SPPOConfig, SPPOTrainer

    args = SPPOConfig(output_dir=str(tmp_path), bf16=bf16, report_to="none")
    return OnPolicyLoop(loop_args=loop_args, training_args=args, model_args=ModelConfig("unused"),
                        trainer_cls=SPPOTrainer, default_builder="sppo_pairs", method="sppo")  # fmt: skip


@pytest.mark.parametrize("bf16, chosen, expected", [(True, "auto", None), (False, "auto", "model"),
                                                    (False, "bf16", "bf16"), (True, "model", "model"),
                                                    (True, None, "model")])  # fmt: skip
def test_sampling_precision_follows_training_and_evaluation_stays_in_the_models_dtype(tmp_path, bf16, chosen, expected):
    """``auto`` samples in bf16 when training does and the device has fast bf16 matmuls; the default
    (``chosen`` None) samples in the model's dtype also under --bf16; greedy evaluation decodes in the
    model's dtype whatever is chosen."""
    from align.generation import fast_bf16
    from align.loops import LoopArguments

    loop = _sppo_loop(tmp_path, LoopArguments() if chosen is None else LoopArguments(sampling_precision=chosen), bf16)
    expected = expected or ("bf16" if fast_bf16("cpu") else "model")
    assert loop.sampling().precision == expected
    assert loop.sampling(greedy=True).precision == "model"
    with pytest.raises(ValueError, match="sampling_precision must be auto, model or bf16, got 'fp16'"):
        LoopArguments(sampling_precision="fp16")


@pytest.mark.parametrize("prompts, expected", [(64, 64), (200, 128), (10, 32), (None, 32)])
def test_held_out_answers_are_chunked_by_the_batch_not_the_resumable_chunk(tmp_path, prompts, expected):
    """Greedy evaluation (one answer per prompt, never resumed chunk by chunk) takes up to a whole
    batch of prompts per chunk, never fewer than the sampling chunk; the K samples keep their
    resumable chunks."""
    from align.loops import LoopArguments

    loop = _sppo_loop(tmp_path, LoopArguments(generation_batch_size=128, generation_chunk_size=32))
    assert loop.sampling(greedy=True, prompts=prompts).chunk_size == expected
    assert loop.sampling(t=1).chunk_size == 32
