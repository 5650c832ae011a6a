"""Scores → pairwise preference probabilities → win rates: the math every method shares.

For K completions y_1..y_K of one prompt:

- a scoring plug-in (reward model, or a verifier through :class:`VerifierReward`) gives scores
  s_k and the Bradley-Terry preference P[i, j] = P(y_i ≻ y_j) = σ(s_i − s_j);
- a pairwise judge gives P[i, j] directly for i < j, and P[j, i] = 1 − P[i, j];
- in both, P[i, i] = ½;
- the win rate of y_i against the policy that sampled the group (SPPO, Wu et al. 2024,
  https://arxiv.org/abs/2405.00675) is P̂(y_i ≻ π_t) = (1/K) Σ_{j=1..K} P[i, j], j = i included.

SPPO trains on y_w = the highest win rate, y_l = the lowest, with P̂_w, P̂_l and p = P[w, l]
(:meth:`GroupJudgement.sppo_fields`); HAEPO uses the raw scores as returns
(:func:`returns_from_scores`); best-of-N and AlpacaEval-style win rates read the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from align.rewards.adapters import VerifierReward
from align.rewards.base import (
    SCORING_KINDS,
    PairwiseJudge,
    Prompt,
    StepScores,
    checked_pair_probs,
    checked_scores,
    checked_step_scores,
    checked_verdicts,
    reward_kind,
)

__all__ = [
    "GroupJudgement",
    "compare_answers",
    "preference_matrix_from_judge",
    "preference_matrix_from_scores",
    "returns_from_scores",
    "score_groups",
    "win_rates",
]


def _scores_vector(scores: ArrayLike) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"scores must be a non-empty 1-D array, got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError(f"scores must be finite, got {s.tolist()}")
    return s


def preference_matrix_from_scores(scores: ArrayLike) -> np.ndarray:
    """(K, K) Bradley-Terry preferences P[i, j] = σ(s_i − s_j); the diagonal is ½.

    Example: s = [0, ln 3] → P = [[½, ¼], [¾, ½]].
    """
    s = _scores_vector(scores)
    # σ(d) = ½(1 + tanh(d/2)): never overflows for large |d| and gives exactly ½ at d = 0.
    return 0.5 * (1.0 + np.tanh(0.5 * (s[:, None] - s[None, :])))


def _pairs(k: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(k) for j in range(i + 1, k)]


def _fill_matrix(k: int, upper: Sequence[float]) -> np.ndarray:
    """P from P[i, j] for i < j (in :func:`_pairs` order): P[j, i] = 1 − P[i, j], P[i, i] = ½."""
    p = np.full((k, k), 0.5)
    for (i, j), value in zip(_pairs(k), upper, strict=True):
        p[i, j], p[j, i] = value, 1.0 - value
    return p


def preference_matrix_from_judge(judge: PairwiseJudge, prompt: Prompt, completions: Sequence[str]) -> np.ndarray:
    """(K, K) preferences from a pairwise judge: one batched call on the K(K−1)/2 pairs i < j,
    P[i, j] = judge(prompt, y_i, y_j), P[j, i] = 1 − P[i, j], P[i, i] = ½."""
    pairs = _pairs(len(completions))
    if not pairs:
        return np.full((len(completions),) * 2, 0.5)
    probs = checked_pair_probs(
        judge, [prompt] * len(pairs), [completions[i] for i, _ in pairs], [completions[j] for _, j in pairs]
    )
    return _fill_matrix(len(completions), probs)


def win_rates(preference: ArrayLike) -> np.ndarray:
    """(K,) P̂(y_i ≻ π_t) = (1/K) Σ_{j=1..K} P[i, j], the diagonal's ½ included (SPPO's estimate).

    Example: P = [[½, ¼], [¾, ½]] → [(½ + ¼)/2, (¾ + ½)/2] = [0.375, 0.625].
    """
    p = np.asarray(preference, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != p.shape[1] or p.shape[0] == 0:
        raise ValueError(f"a preference matrix must be square (K, K) with K >= 1, got shape {p.shape}")
    # fsum is exactly rounded, so rows holding the same values in another order (tied completions)
    # get bit-identical win rates and the tie rules of best_worst() apply.
    return np.array([math.fsum(row) for row in p]) / p.shape[0]


def returns_from_scores(scores: ArrayLike) -> np.ndarray:
    """(K,) float64 returns R_k = s_k for return-based methods (HAEPO); the raw scores, unchanged —
    any group normalisation R̃ is the objective's job, so it is configured in one place."""
    return _scores_vector(scores).copy()


@dataclass(frozen=True)
class GroupJudgement:
    """What a plug-in says about one prompt's K completions.

    ``scores`` (K,) are None for a pairwise judge; ``preference`` is P (K, K); ``win_rates`` is P̂
    (K,); ``correct`` (K,) bool is set for verifiers only (their ``scores`` are the
    :class:`VerifierReward` tie-breaker scores); ``steps`` (K :class:`StepScores`) for process
    reward models only (their ``scores`` are each completion's ``StepScores.score``).
    """

    scores: np.ndarray | None
    preference: np.ndarray
    win_rates: np.ndarray
    correct: np.ndarray | None = None
    steps: list[StepScores] | None = None

    def best_worst(self) -> tuple[int, int]:
        """(w, l): the indices of the highest and lowest win rate. Ties go to the lower index for w
        and the higher index for l, so w ≠ l whenever K ≥ 2 (if all rates tie, w = 0, l = K − 1)."""
        rates = self.win_rates
        w = int(np.argmax(rates))  # argmax returns the first maximum
        l = len(rates) - 1 - int(np.argmin(rates[::-1]))  # the last minimum
        return w, l

    def sppo_fields(self, w: int, l: int) -> dict[str, Any]:
        """The SPPO fields of the pair (y_w, y_l): ``win_rates`` = [P̂_w, P̂_l], ``pair_prob`` = P[w, l]."""
        return {
            "win_rates": [float(self.win_rates[w]), float(self.win_rates[l])],
            "pair_prob": float(self.preference[w, l]),
        }


def _from_scores(
    scores: np.ndarray, correct: np.ndarray | None = None, steps: list[StepScores] | None = None
) -> GroupJudgement:
    preference = preference_matrix_from_scores(scores)
    return GroupJudgement(scores, preference, win_rates(preference), correct=correct, steps=steps)


def score_groups(
    plugin: Any,
    prompts: Sequence[Prompt],
    groups: Sequence[Sequence[str]],
    references: Sequence[str] | None = None,
) -> list[GroupJudgement]:
    """Judge K completions per prompt (K may differ between prompts) with any plug-in.

    The plug-in is called once for all prompts together (one flattened batch): a reward model on
    every completion, a pairwise judge on every pair i < j of every group, a verifier (which needs
    ``references``, one per prompt) on every completion, a process reward model once per completion
    (its step scores, kept in ``steps``, and their aggregate as the score). Verifiers get the
    :class:`VerifierReward` tie-breaker scores and expose ``correct``. Errors name the index of the
    prompt in ``prompts``. This is the one way the loops, best-of-N and evaluation judge groups.
    """
    if len(prompts) != len(groups):
        raise ValueError(f"got {len(prompts)} prompts but {len(groups)} groups of completions")
    for index, group in enumerate(groups):
        if len(group) == 0:
            raise ValueError(f"prompt {index} has an empty group of completions")
    if references is not None and len(references) != len(prompts):
        raise ValueError(f"got {len(prompts)} prompts but {len(references)} references")
    kind = reward_kind(plugin)
    if kind is None:
        raise TypeError(f"{type(plugin).__name__} is not a reward plug-in (no judge_pairs(), score() or verify())")

    owners = [index for index, group in enumerate(groups) for _ in group]
    flat_prompts = [prompts[index] for index in owners]
    flat_completions = [completion for group in groups for completion in group]
    bounds = np.cumsum([0, *(len(group) for group in groups)])

    if kind == "verifier":
        if references is None:
            raise ValueError(f"{getattr(plugin, 'name', plugin)!r} is a verifier: score_groups needs references")
        adapter = plugin if isinstance(plugin, VerifierReward) else VerifierReward(plugin)
        flat_refs = [references[index] for index in owners]
        scores, correct = adapter.evaluate(flat_prompts, flat_completions, flat_refs, prompt_ids=owners)
        return [_from_scores(scores[lo:hi], correct[lo:hi]) for lo, hi in pairwise(bounds)]
    if kind == "process":
        steps = checked_step_scores(plugin, flat_prompts, flat_completions, prompt_ids=owners)
        scores = np.array([s.score for s in steps], dtype=np.float64)
        return [_from_scores(scores[lo:hi], steps=steps[lo:hi]) for lo, hi in pairwise(bounds)]
    if kind == "reward":
        scores = checked_scores(plugin, flat_prompts, flat_completions, prompt_ids=owners)
        return [_from_scores(scores[lo:hi]) for lo, hi in pairwise(bounds)]
    return _judge_groups(plugin, prompts, groups)


def compare_answers(
    plugin: Any,
    prompts: Sequence[Prompt],
    answers: Sequence[str],
    baselines: Sequence[str],
    references: Sequence[str] | None = None,
) -> np.ndarray:
    """(N,) P(answer_i ≻ baseline_i) for one answer and one baseline per prompt, from any plug-in,
    through the checked calls: a pairwise judge's P(A ≻ B) with the answer as A; σ(s_a − s_b) for a
    reward or process reward model; for a verifier (needs ``references``) 1 if only the answer is
    correct, 0 if only the baseline is, ½ if both or neither are."""
    if not len(prompts) == len(answers) == len(baselines):
        raise ValueError(f"got {len(prompts)} prompts, {len(answers)} answers and {len(baselines)} baselines")
    kind = reward_kind(plugin)
    if kind == "pairwise":
        return checked_pair_probs(plugin, prompts, answers, baselines)
    if kind in SCORING_KINDS:
        ours, theirs = checked_scores(plugin, prompts, answers), checked_scores(plugin, prompts, baselines)
        return 0.5 * (1.0 + np.tanh(0.5 * (ours - theirs)))  # σ(s_a − s_b), as preference_matrix_from_scores
    if kind == "verifier":
        if references is None:
            raise ValueError(f"{getattr(plugin, 'name', plugin)!r} is a verifier: compare_answers needs references")
        ours = checked_verdicts(plugin, prompts, answers, references)
        theirs = checked_verdicts(plugin, prompts, baselines, references)
        return 0.5 + 0.5 * (ours.astype(np.float64) - theirs.astype(np.float64))
    raise TypeError(f"{type(plugin).__name__} is not a reward plug-in (no judge_pairs(), score(), verify())")


def _judge_groups(
    judge: PairwiseJudge, prompts: Sequence[Prompt], groups: Sequence[Sequence[str]]
) -> list[GroupJudgement]:
    owners, a, b = [], [], []
    for index, group in enumerate(groups):
        for i, j in _pairs(len(group)):
            owners.append(index)
            a.append(group[i])
            b.append(group[j])
    probs = checked_pair_probs(judge, [prompts[index] for index in owners], a, b, prompt_ids=owners) if owners else []
    out, start = [], 0
    for group in groups:
        count = len(_pairs(len(group)))
        preference = _fill_matrix(len(group), probs[start : start + count])
        out.append(GroupJudgement(scores=None, preference=preference, win_rates=win_rates(preference)))
        start += count
    return out
