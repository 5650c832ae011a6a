"""Scores → preferences → win rates, checked against hand-derived numbers, and score_groups."""

from __future__ import annotations

import math

import numpy as np
import pytest

from align.rewards import (
    FunctionReward,
    GroupJudgement,
    RewardError,
    StepScores,
    checked_pair_probs,
    checked_scores,
    checked_verdicts,
    load_reward,
    preference_matrix_from_judge,
    preference_matrix_from_scores,
    returns_from_scores,
    score_groups,
    win_rates,
)


class TableJudge:
    """P(A ≻ B) read from a table keyed by (A, B); records every call."""

    name = "table_judge"

    def __init__(self, table: dict[tuple[str, str], float]) -> None:
        self.table = table
        self.calls: list[tuple[list, list, list]] = []

    def judge_pairs(self, prompts, completions_a, completions_b):
        self.calls.append((prompts, completions_a, completions_b))
        return [self.table[(a, b)] for a, b in zip(completions_a, completions_b)]


class ListReward:
    """Scores given per completion text; records every call."""

    name = "list_reward"

    def __init__(self, scores: dict[str, float]) -> None:
        self.scores = scores
        self.calls = 0

    def score(self, prompts, completions):
        self.calls += 1
        return [self.scores[c] for c in completions]


# -- the math ---------------------------------------------------------------------------------------


def test_bradley_terry_two_completions_by_hand():
    # s = [0, ln 3]: σ(−ln 3) = 1/(1 + 3) = 1/4, σ(ln 3) = 3/4.
    p = preference_matrix_from_scores([0.0, math.log(3.0)])
    np.testing.assert_allclose(p, [[0.5, 0.25], [0.75, 0.5]], atol=1e-15)
    np.testing.assert_allclose(win_rates(p), [(0.5 + 0.25) / 2, (0.75 + 0.5) / 2], atol=1e-15)


def test_bradley_terry_is_stable_and_antisymmetric():
    p = preference_matrix_from_scores([-800.0, 0.0, 800.0, 1.5])
    assert np.isfinite(p).all()
    np.testing.assert_array_equal(np.diag(p), 0.5)
    np.testing.assert_allclose(p + p.T, 1.0, atol=1e-15)
    assert p[0, 2] == 0.0 and p[2, 0] == 1.0


def test_win_rates_three_by_three_by_hand():
    p = [[0.5, 0.8, 0.6], [0.2, 0.5, 0.3], [0.4, 0.7, 0.5]]
    # rows: (0.5 + 0.8 + 0.6)/3, (0.2 + 0.5 + 0.3)/3, (0.4 + 0.7 + 0.5)/3
    np.testing.assert_allclose(win_rates(p), [1.9 / 3, 1.0 / 3, 1.6 / 3], atol=1e-15)


@pytest.mark.parametrize("bad", [[[0.5, 0.5]], [0.5], np.zeros((0, 0))])
def test_win_rates_refuses_non_square(bad):
    with pytest.raises(ValueError, match="must be square"):
        win_rates(bad)


def test_judge_matrix_three_by_three_by_hand():
    judge = TableJudge({("x", "y"): 0.8, ("x", "z"): 0.6, ("y", "z"): 0.3})
    p = preference_matrix_from_judge(judge, "prompt", ["x", "y", "z"])
    np.testing.assert_allclose(p, [[0.5, 0.8, 0.6], [0.2, 0.5, 0.3], [0.4, 0.7, 0.5]], atol=1e-15)
    # Each unordered pair once (i < j), in one batched call.
    assert judge.calls == [(["prompt"] * 3, ["x", "x", "y"], ["y", "z", "z"])]


def test_returns_are_the_scores():
    returns = returns_from_scores([1, -2.5, 3])
    assert returns.dtype == np.float64
    np.testing.assert_array_equal(returns, [1.0, -2.5, 3.0])
    with pytest.raises(ValueError, match="finite"):
        returns_from_scores([1.0, float("nan")])


# -- best / worst and the SPPO fields ---------------------------------------------------------------


def _judgement(rates) -> GroupJudgement:
    k = len(rates)
    return GroupJudgement(scores=None, preference=np.full((k, k), 0.5), win_rates=np.asarray(rates, dtype=float))


@pytest.mark.parametrize(
    ("rates", "expected"),
    [
        ([0.2, 0.9, 0.5], (1, 0)),
        ([0.5, 0.5, 0.5], (0, 2)),  # all tied: lowest index wins, highest index loses
        ([0.7, 0.1, 0.7, 0.1], (0, 3)),
        ([0.5, 0.5], (0, 1)),
        ([0.5], (0, 0)),
    ],
)
def test_best_worst_tie_rules(rates, expected):
    assert _judgement(rates).best_worst() == expected


def test_tied_scores_tie_exactly_and_never_pick_the_same_completion():
    # Equal scores at different positions: rows hold the same values in another order.
    judgement = score_groups(ListReward({"a": 0.3, "b": 0.3, "c": 0.3, "d": 0.1}), ["p"], [["a", "b", "c", "d"]])[0]
    assert judgement.win_rates[0] == judgement.win_rates[1] == judgement.win_rates[2]
    assert judgement.best_worst() == (0, 3)
    flat = score_groups(ListReward({"a": 0.3}), ["p"], [["a", "a", "a"]])[0]
    assert flat.best_worst() == (0, 2)


def test_sppo_fields_from_the_three_by_three_judge():
    judge = TableJudge({("x", "y"): 0.8, ("x", "z"): 0.6, ("y", "z"): 0.3})
    judgement = score_groups(judge, ["prompt"], [["x", "y", "z"]])[0]
    assert judgement.scores is None and judgement.correct is None
    w, l = judgement.best_worst()
    assert (w, l) == (0, 1)
    fields = judgement.sppo_fields(w, l)
    assert fields["pair_prob"] == pytest.approx(0.8)
    assert fields["win_rates"] == pytest.approx([1.9 / 3, 1.0 / 3])


# -- score_groups batching --------------------------------------------------------------------------


def test_score_groups_reward_model_one_call_for_all_prompts():
    model = ListReward({"a": 0.0, "b": math.log(3.0), "c": 1.0, "d": 2.0, "e": 0.5})
    out = score_groups(model, ["p0", "p1"], [["a", "b"], ["c", "d", "e"]])
    assert model.calls == 1
    np.testing.assert_array_equal(out[0].scores, [0.0, math.log(3.0)])
    np.testing.assert_allclose(out[0].win_rates, [0.375, 0.625], atol=1e-15)
    assert out[1].preference.shape == (3, 3)
    assert out[1].best_worst() == (1, 2)


def test_score_groups_judge_one_call_for_all_pairs_of_all_prompts():
    judge = TableJudge({("x", "y"): 0.9, ("u", "v"): 0.2, ("u", "w"): 0.4, ("v", "w"): 0.7})
    out = score_groups(judge, ["p0", "p1", "p2"], [["x", "y"], ["u", "v", "w"], ["solo"]])
    assert judge.calls == [(["p0", "p1", "p1", "p1"], ["x", "u", "u", "v"], ["y", "v", "w", "w"])]
    np.testing.assert_allclose(out[0].preference, [[0.5, 0.9], [0.1, 0.5]])
    np.testing.assert_allclose(out[1].preference, [[0.5, 0.2, 0.4], [0.8, 0.5, 0.7], [0.6, 0.3, 0.5]])
    np.testing.assert_array_equal(out[2].win_rates, [0.5])


def test_score_groups_verifier_tie_breaker_and_correct():
    verifier = load_reward("gsm8k_verifier")
    long_right = "Natalia sold 48 + 24 clips. " * 10 + "#### 72"
    group = ["#### 72", long_right, "#### 71", "I have no idea."]
    out = score_groups(verifier, ["How many clips?"], [group], references=["48 + 24 = 72\n#### 72"])[0]
    np.testing.assert_array_equal(out.correct, [True, True, False, False])
    expected = [
        1 + 0.1 - 0.05 * len(group[0]) / 1000,
        1 + 0.1 - 0.05 * len(long_right) / 1000,
        0 + 0.1 - 0.05 * len(group[2]) / 1000,
        0 + 0.0 - 0.05 * len(group[3]) / 1000,
    ]
    np.testing.assert_allclose(out.scores, expected, atol=1e-12)
    # correct > well-formed wrong > no answer; among the correct ones the shorter wins.
    assert out.best_worst() == (0, 3)
    assert out.scores[0] > out.scores[1] > out.scores[2] > out.scores[3]


def test_score_groups_verifier_needs_references():
    with pytest.raises(ValueError, match="needs references"):
        score_groups(load_reward("gsm8k"), ["q"], [["#### 1"]])


def test_score_groups_input_errors():
    model = ListReward({"a": 1.0})
    with pytest.raises(ValueError, match="2 prompts but 1 groups"):
        score_groups(model, ["p", "q"], [["a"]])
    with pytest.raises(ValueError, match="prompt 1 has an empty group"):
        score_groups(model, ["p", "q"], [["a"], []])
    with pytest.raises(TypeError, match="not a reward plug-in"):
        score_groups(object(), ["p"], [["a"]])


# -- malformed plug-ins ------------------------------------------------------------------------------


class Broken:
    """A reward model, judge and verifier that misbehave on completions containing 'BAD'."""

    def __init__(self, name: str, *, bad_value: object = float("nan"), short: bool = False, raise_on_batch=False):
        self.name, self.bad_value, self.short, self.raise_on_batch = name, bad_value, short, raise_on_batch

    def _values(self, completions, good):
        if self.raise_on_batch:
            return 1 / 0
        out = [self.bad_value if "BAD" in c else good for c in completions]
        return out[:-1] if self.short else out


class BrokenReward(Broken):
    def score(self, prompts, completions):
        return self._values(completions, 1.0)


class BrokenJudge(Broken):
    def judge_pairs(self, prompts, a, b):
        return self._values([x + y for x, y in zip(a, b)], 0.5)


class BrokenVerifier(Broken):
    def verify(self, prompts, completions, references):
        return self._values(completions, True)


PROMPTS = ["First question about apples", "Second question about clips and more text than fits in a preview"]


def test_nan_score_names_plugin_prompt_index_and_text():
    with pytest.raises(
        RewardError, match=r"'nan_model' failed on prompt 1 \('Second question about clips.*not a finite"
    ):
        score_groups(BrokenReward("nan_model"), PROMPTS, [["ok", "ok"], ["ok", "BAD"]])


def test_wrong_length_is_an_error():
    with pytest.raises(RewardError, match=r"'short_model'.*returned 3 values for 4 inputs.*prompts 0-1"):
        score_groups(BrokenReward("short_model", short=True), PROMPTS, [["a", "b"], ["c", "d"]])


def test_probability_outside_unit_interval_is_an_error():
    with pytest.raises(RewardError, match=r"'wild_judge' failed on prompt 1 .*1\.5 is not a probability"):
        score_groups(BrokenJudge("wild_judge", bad_value=1.5), PROMPTS, [["a", "b"], ["c", "BAD"]])
    with pytest.raises(RewardError, match="is not a probability"):
        checked_pair_probs(BrokenJudge("nan_judge"), ["p"], ["BAD"], ["x"])


def test_non_bool_verdict_is_an_error():
    with pytest.raises(
        RewardError, match=r"'int_verifier' failed on prompt 0 \('First question.*verdict 1 is not a bool"
    ):
        score_groups(BrokenVerifier("int_verifier", bad_value=1), PROMPTS, [["BAD"], ["ok"]], references=["1", "2"])


def test_a_plugin_that_raises_is_wrapped():
    with pytest.raises(RewardError, match=r"'boom'.*score raised ZeroDivisionError"):
        checked_scores(BrokenReward("boom", raise_on_batch=True), ["p"], ["a"])
    with pytest.raises(RewardError, match=r"'boom' failed on prompt 0 .*verify raised ZeroDivisionError"):
        checked_verdicts(BrokenVerifier("boom", raise_on_batch=True), ["p"], ["a"], ["r"])


def test_per_example_failure_is_mapped_to_the_callers_prompt_index():
    def fragile(prompt, completion):
        if completion == "crash":
            raise KeyError("no score for this one")
        return 0.0

    plugin = FunctionReward(fragile, "fragile")
    # The crash is the 4th flattened completion, which belongs to prompt 1.
    with pytest.raises(RewardError, match=r"'fragile' failed on prompt 1 \('Second question.*KeyError"):
        score_groups(plugin, PROMPTS, [["a", "b", "c"], ["crash", "d"]])


# -- the process (per-step) kind and compare_answers ---------------------------------------------


class LineStepModel:
    """A process reward model over newline-separated steps: a step's reward is its length minus 3,
    the outcome their sum, the score their minimum. Records every call."""

    name = "line_steps"

    def __init__(self) -> None:
        self.calls = 0

    def score_steps(self, prompts, completions):
        self.calls += 1
        out = []
        for completion in completions:
            steps = [s for s in completion.split("\n") if s]
            rewards = [len(s) - 3.0 for s in steps]
            out.append(StepScores(steps, rewards, sum(rewards), min(rewards, default=0.0)))
        return out

    def score(self, prompts, completions):
        return [s.score for s in self.score_steps(prompts, completions)]


def test_a_process_reward_model_is_its_own_kind_and_scores_groups_in_one_call():
    from align.rewards import reward_kind

    model = LineStepModel()
    assert reward_kind(model) == "process"
    (group,) = score_groups(model, ["p"], [["abcd\nab", "abcdef"]])
    assert model.calls == 1
    assert group.scores.tolist() == [-1.0, 3.0]  # min(1, -1), min(3)
    assert [s.steps for s in group.steps] == [["abcd", "ab"], ["abcdef"]]
    assert group.steps[0].outcome == 0.0
    np.testing.assert_allclose(group.preference[1, 0], 1 / (1 + math.exp(-4.0)))


@pytest.mark.parametrize(
    "value, problem",
    [
        (("steps", [1.0], 1.0, 1.0), "is not StepScores"),
        ((["a", "b"], [1.0], 1.0, 1.0), "2 steps but 1 step rewards"),
        ((["a"], [float("nan")], 1.0, 1.0), "not all finite"),
        ((["a"], [1.0], 1.0, None), "not all finite"),
    ],
)
def test_malformed_step_scores_name_the_prompt(value, problem):
    from align.rewards import checked_step_scores

    class Bad:
        name = "bad_steps"

        def score_steps(self, prompts, completions):
            return [StepScores(["x"], [0.0], 0.0, 0.0), value]

        def score(self, prompts, completions):
            return [0.0] * len(completions)

    with pytest.raises(RewardError, match=rf"'bad_steps' failed on prompt 7 \('second'\): .*{problem}"):
        checked_step_scores(Bad(), ["first", "second"], ["a", "b"], prompt_ids=[3, 7])


def test_compare_answers_every_kind_by_hand():
    from align.rewards import FunctionJudge, FunctionVerifier, compare_answers

    judge = FunctionJudge(lambda p, a, b: 0.9 if len(a) > len(b) else 0.2, "longer")
    assert compare_answers(judge, ["p", "q"], ["aaa", "a"], ["a", "aaa"]).tolist() == [0.9, 0.2]
    reward = FunctionReward(lambda p, c: float(len(c)), "length")
    np.testing.assert_allclose(compare_answers(reward, ["p"], ["aaa"], ["a"]), [1 / (1 + math.exp(-2.0))])
    np.testing.assert_allclose(compare_answers(LineStepModel(), ["p"], ["abcdef"], ["abcd"]), [1 / (1 + math.exp(-2.0))])
    verifier = FunctionVerifier(lambda p, c, r: c == r, "exact")
    got = compare_answers(verifier, ["p"] * 4, ["1", "1", "2", "2"], ["1", "2", "1", "3"], references=["1"] * 4)
    assert got.tolist() == [0.5, 1.0, 0.0, 0.5]
    with pytest.raises(ValueError, match="needs references"):
        compare_answers(verifier, ["p"], ["1"], ["2"])


def test_a_verifier_wrapped_for_scores_is_still_a_verifier():
    from align.rewards import FunctionVerifier, VerifierReward, reward_kind

    wrapped = VerifierReward(FunctionVerifier(lambda p, c, r: c == r, "exact"))
    assert reward_kind(wrapped) == "verifier"
    assert wrapped.verify(["p", "p"], ["1", "2"], ["1", "1"]) == [True, False]
