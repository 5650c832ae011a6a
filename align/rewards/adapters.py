"""Adapters: plain per-example functions as batched plug-ins, and a verifier as a reward model."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from align.rewards.base import Prompt, RewardError, Verifier, checked_verdicts

__all__ = ["FunctionJudge", "FunctionReward", "FunctionVerifier", "VerifierReward"]


class _PerExample:
    """Calls ``fn`` on each example; an exception names the example that raised it."""

    def __init__(self, fn: Callable[..., Any], name: str) -> None:
        self.fn, self.name = fn, name

    def _map(self, prompts: Sequence[Prompt], *columns: Sequence[Any]) -> list[Any]:
        out = []
        for i, row in enumerate(zip(prompts, *columns, strict=True)):
            try:
                out.append(self.fn(*row))
            except Exception as err:
                raise RewardError(self.name, f"{type(err).__name__}: {err}", index=i, prompt=row[0]) from err
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class FunctionReward(_PerExample):
    """``fn(prompt, completion) -> float`` as a :class:`~align.rewards.base.RewardModel`."""

    def score(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> list[float]:
        return self._map(prompts, completions)


class FunctionJudge(_PerExample):
    """``fn(prompt, a, b) -> P(a ≻ b)`` as a :class:`~align.rewards.base.PairwiseJudge`."""

    def judge_pairs(
        self, prompts: Sequence[Prompt], completions_a: Sequence[str], completions_b: Sequence[str]
    ) -> list[float]:
        return self._map(prompts, completions_a, completions_b)


class FunctionVerifier(_PerExample):
    """``fn(prompt, completion, reference) -> bool`` as a :class:`~align.rewards.base.Verifier`."""

    def verify(self, prompts: Sequence[Prompt], completions: Sequence[str], references: Sequence[str]) -> list[bool]:
        return self._map(prompts, completions, references)


class VerifierReward:
    """A verifier as a reward model, with a tie-breaker so that equally correct samples are ordered:

        score(y) = 1[y correct] + 0.1 · 1[an answer could be extracted from y] − 0.05 · min(|y| / 1000, 1)

    with |y| the completion length in characters. The terms are sized so the order is strict by
    priority: any correct completion (≥ 0.95) beats any wrong one (≤ 0.1); among equally correct
    ones a well-formed answer (+0.1) beats one with no extractable answer (the length term is at
    most 0.05); the rest is ordered by length, shorter first. Without the tie-breaker a group of
    all-wrong (or all-right) samples would be a flat tie and SPPO's y_w/y_l would be arbitrary.

    "An answer could be extracted" uses the verifier's ``extract_answer(completion)`` method when it
    has one (the GSM8K verifier does); otherwise that term is 0 for every completion.

    ``score`` needs the references, so it takes them as a third argument (unlike a plain
    :class:`~align.rewards.base.RewardModel`).
    """

    CORRECT = 1.0
    EXTRACTED = 0.1
    LENGTH = 0.05
    LENGTH_SCALE = 1000

    def __init__(self, verifier: Verifier) -> None:
        if not callable(getattr(verifier, "verify", None)):
            raise TypeError(f"VerifierReward needs a verifier (an object with verify()), got {type(verifier).__name__}")
        self.verifier = verifier
        self.name = f"verifier_reward({getattr(verifier, 'name', type(verifier).__name__)})"

    def evaluate(
        self,
        prompts: Sequence[Prompt],
        completions: Sequence[str],
        references: Sequence[str] | None,
        *,
        prompt_ids: Sequence[int] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(N,) tie-broken scores and (N,) bool correctness, with one (checked) verifier call."""
        if references is None:
            raise ValueError(f"{self.name}: a verifier needs references (one reference answer per prompt)")
        correct = checked_verdicts(self.verifier, prompts, completions, references, prompt_ids=prompt_ids)
        extracted = self._extracted(prompts, completions, prompt_ids)
        lengths = np.array([min(len(c) / self.LENGTH_SCALE, 1.0) for c in completions])
        scores = self.CORRECT * correct + self.EXTRACTED * extracted - self.LENGTH * lengths
        return scores, correct

    def score(
        self, prompts: Sequence[Prompt], completions: Sequence[str], references: Sequence[str] | None = None
    ) -> list[float]:
        return self.evaluate(prompts, completions, references)[0].tolist()

    def verify(self, prompts: Sequence[Prompt], completions: Sequence[str], references: Sequence[str]) -> list[bool]:
        """The wrapped verifier's verdicts: a ``VerifierReward`` is still a verifier."""
        return self.verifier.verify(prompts, completions, references)

    def _extracted(
        self, prompts: Sequence[Prompt], completions: Sequence[str], prompt_ids: Sequence[int] | None
    ) -> np.ndarray:
        extract = getattr(self.verifier, "extract_answer", None)
        if not callable(extract):
            return np.zeros(len(completions))
        out = np.zeros(len(completions))
        for i, completion in enumerate(completions):
            try:
                out[i] = extract(completion) is not None
            except Exception as err:
                index = i if prompt_ids is None else prompt_ids[i]
                raise RewardError(
                    self.verifier.name,
                    f"extract_answer raised {type(err).__name__}: {err}",
                    index=index,
                    prompt=prompts[i],
                ) from err
        return out

    def __repr__(self) -> str:
        return f"VerifierReward({self.verifier!r})"
