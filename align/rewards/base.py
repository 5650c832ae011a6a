"""The reward plug-in protocols, the error they raise and the checked calls every caller goes through.

Four kinds of plug-in, all batched (lists in, one list out, same length and order):

- :class:`PairwiseJudge`: ``judge_pairs(prompts, completions_a, completions_b)`` → P(A ≻ B) ∈ [0, 1]
- :class:`RewardModel`: ``score(prompts, completions)`` → a finite real score per completion
- :class:`Verifier`: ``verify(prompts, completions, references)`` → ``bool`` (correct or not)
- :class:`ProcessRewardModel`: ``score_steps(prompts, completions)`` → :class:`StepScores` per
  completion (its steps, a reward per step, the outcome reward), and ``score`` like a reward model
  (the step rewards aggregated), so it serves wherever a reward model does

A prompt is a string or a conversation (a list of ``{"role", "content"}`` messages); completions
and references are strings. Every plug-in has a ``name`` used in error messages.

Callers never trust a plug-in's output: :func:`checked_scores`, :func:`checked_pair_probs`,
:func:`checked_verdicts` and :func:`checked_step_scores` call it once on the whole batch and turn an exception or a malformed
value (wrong length, NaN, P outside [0, 1], a non-bool verdict) into a :class:`RewardError` naming
the plug-in, the prompt index and the start of the prompt text. A plug-in that knows which item
failed raises ``RewardError(name, problem, index=i, prompt=prompts[i])`` with ``i`` its position in
the lists it was given; the checked calls map ``i`` back to the caller's prompt index.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "Message",
    "PairwiseJudge",
    "ProcessRewardModel",
    "Prompt",
    "RewardError",
    "RewardKind",
    "RewardModel",
    "StepScores",
    "Verifier",
    "checked_pair_probs",
    "checked_scores",
    "checked_step_scores",
    "checked_verdicts",
    "prompt_preview",
    "reward_kind",
]

Message = dict[str, str]
Prompt = str | list[Message]
RewardKind = Literal["verifier", "process", "reward", "pairwise"]
# The kinds that give every completion a scalar score (``score``).
SCORING_KINDS: tuple[RewardKind, ...] = ("process", "reward")


@runtime_checkable
class PairwiseJudge(Protocol):
    """(prompt, completion A, completion B) → P(A ≻ B) ∈ [0, 1], batched."""

    name: str

    def judge_pairs(
        self, prompts: Sequence[Prompt], completions_a: Sequence[str], completions_b: Sequence[str]
    ) -> list[float]: ...


@runtime_checkable
class RewardModel(Protocol):
    """(prompt, completion) → scalar score (higher is better), batched."""

    name: str

    def score(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> list[float]: ...


@runtime_checkable
class Verifier(Protocol):
    """(prompt, completion, reference answer) → correct or not, batched."""

    name: str

    def verify(
        self, prompts: Sequence[Prompt], completions: Sequence[str], references: Sequence[str]
    ) -> list[bool]: ...


class StepScores(NamedTuple):
    """What a process reward model says about one completion.

    ``steps``: the completion split into steps (their text, in order); ``rewards``: one reward per
    step (same length); ``outcome``: the reward of the whole completion (for an implicit PRM
    β·Δ(y), the sum of the step rewards plus any tokens outside every step); ``score``: the one
    number the plug-in ranks completions by (its aggregation of the step rewards, e.g. their
    minimum), the value its ``score`` returns."""

    steps: list[str]
    rewards: list[float]
    outcome: float
    score: float


@runtime_checkable
class ProcessRewardModel(Protocol):
    """(prompt, completion) → :class:`StepScores`, batched; also ``score`` → one aggregated score
    per completion, so a process reward model can judge wherever a reward model can."""

    name: str

    def score_steps(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> list[StepScores]: ...

    def score(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> list[float]: ...


# The method that makes each kind, in the order :func:`reward_kind` tries them.
_KIND_METHODS: tuple[tuple[RewardKind, str], ...] = (
    ("verifier", "verify"),
    ("process", "score_steps"),
    ("reward", "score"),
    ("pairwise", "judge_pairs"),
)


def reward_kind(plugin: object) -> RewardKind | None:
    """Which protocol ``plugin`` implements, by its methods: ``"verifier"``, ``"process"``,
    ``"reward"`` or ``"pairwise"`` (tried in that order, so an object with both ``verify`` and
    ``score`` counts as a verifier, one with ``score_steps`` and ``score`` as a process reward
    model), or None. The ``name`` attribute is not looked at here."""
    for kind, method in _KIND_METHODS:
        if callable(getattr(plugin, method, None)):
            return kind
    return None


def prompt_preview(prompt: object, width: int = 60) -> str:
    """The start of the prompt text (a conversation's message contents joined by " | ")."""
    if isinstance(prompt, str):
        text = prompt
    elif isinstance(prompt, (list, tuple)):
        text = " | ".join(str(m.get("content", "")) if isinstance(m, dict) else str(m) for m in prompt)
    else:
        text = repr(prompt)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


class RewardError(RuntimeError):
    """A reward plug-in failed or returned a malformed value.

    Attributes: ``plugin`` (its name), ``problem``, ``index`` (the prompt index, None when the whole
    batch failed) and ``prompt``.
    """

    def __init__(self, plugin: str, problem: str, *, index: int | None = None, prompt: object = None) -> None:
        self.plugin, self.problem, self.index, self.prompt = plugin, problem, index, prompt
        where = "" if index is None else f" on prompt {index} ({prompt_preview(prompt)!r})"
        super().__init__(f"reward plug-in {plugin!r} failed{where}: {problem}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only fields: the default exception pickling (cls(*args)) would lose them.
        return (_rebuild_reward_error, (self.plugin, self.problem, self.index, self.prompt))


def _rebuild_reward_error(plugin: str, problem: str, index: int | None, prompt: object) -> RewardError:
    return RewardError(plugin, problem, index=index, prompt=prompt)


def _plugin_name(plugin: object) -> str:
    return str(getattr(plugin, "name", type(plugin).__name__))


def _call(
    plugin: object,
    method: str,
    prompts: Sequence[Prompt],
    others: Sequence[Sequence[Any]],
    prompt_ids: Sequence[int] | None,
) -> tuple[list[Any], list[int]]:
    """Call ``plugin.<method>(prompts, *others)`` once; return its values as a list of the right length."""
    name = _plugin_name(plugin)
    n = len(prompts)
    if any(len(other) != n for other in others):
        raise ValueError(f"{method}: got {n} prompts but argument lengths {[len(o) for o in others]}")
    ids = list(range(n)) if prompt_ids is None else list(prompt_ids)
    if len(ids) != n:
        raise ValueError(f"{method}: got {n} prompts but {len(ids)} prompt_ids")
    try:
        out = getattr(plugin, method)(list(prompts), *(list(o) for o in others))
    except RewardError as err:
        if err.index is not None and 0 <= err.index < n:
            raise RewardError(err.plugin, err.problem, index=ids[err.index], prompt=prompts[err.index]) from err
        raise
    except Exception as err:
        raise _batch_error(name, f"{method} raised {type(err).__name__}: {err}", prompts, ids) from err
    if hasattr(out, "tolist"):  # numpy arrays and torch tensors
        out = out.tolist()
    if not isinstance(out, (list, tuple)):
        raise _batch_error(name, f"{method} must return a list, got {type(out).__name__}", prompts, ids)
    if len(out) != n:
        raise _batch_error(name, f"{method} returned {len(out)} values for {n} inputs", prompts, ids)
    return list(out), ids


def _batch_error(name: str, problem: str, prompts: Sequence[Prompt], ids: Sequence[int]) -> RewardError:
    """An error for a failure of the whole batch: exact when the batch holds one prompt."""
    if not ids or min(ids) == max(ids):
        return RewardError(name, problem, index=ids[0] if ids else None, prompt=prompts[0] if ids else None)
    span = f"prompts {min(ids)}-{max(ids)}, first {prompt_preview(prompts[0])!r}"
    return RewardError(name, f"{problem} (on a batch of {len(ids)} items: {span})")


def _real(value: object) -> float | None:
    """``value`` as a finite float, or None if it is not a finite real number."""
    if not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def checked_scores(
    plugin: RewardModel,
    prompts: Sequence[Prompt],
    completions: Sequence[str],
    *,
    prompt_ids: Sequence[int] | None = None,
) -> np.ndarray:
    """(N,) float64 scores from ``plugin.score``; every one a finite real number.

    ``prompt_ids[i]`` is the caller's prompt index of item ``i`` (default ``i``), used in errors.
    """
    values, ids = _call(plugin, "score", prompts, [completions], prompt_ids)
    out = np.empty(len(values))
    for i, value in enumerate(values):
        real = _real(value)
        if real is None:
            raise RewardError(
                _plugin_name(plugin), f"score {value!r} is not a finite number", index=ids[i], prompt=prompts[i]
            )
        out[i] = real
    return out


def checked_pair_probs(
    plugin: PairwiseJudge,
    prompts: Sequence[Prompt],
    completions_a: Sequence[str],
    completions_b: Sequence[str],
    *,
    prompt_ids: Sequence[int] | None = None,
) -> np.ndarray:
    """(N,) float64 P(A ≻ B) from ``plugin.judge_pairs``; every one in [0, 1]."""
    values, ids = _call(plugin, "judge_pairs", prompts, [completions_a, completions_b], prompt_ids)
    out = np.empty(len(values))
    for i, value in enumerate(values):
        real = _real(value)
        if real is None or not 0.0 <= real <= 1.0:
            raise RewardError(
                _plugin_name(plugin),
                f"P(A ≻ B) = {value!r} is not a probability in [0, 1]",
                index=ids[i],
                prompt=prompts[i],
            )
        out[i] = real
    return out


def checked_verdicts(
    plugin: Verifier,
    prompts: Sequence[Prompt],
    completions: Sequence[str],
    references: Sequence[str],
    *,
    prompt_ids: Sequence[int] | None = None,
) -> np.ndarray:
    """(N,) bool verdicts from ``plugin.verify``; every one a bool (0/1 or "yes" are refused:
    a verifier that returns scores is a reward model, and should say so)."""
    values, ids = _call(plugin, "verify", prompts, [completions, references], prompt_ids)
    for i, value in enumerate(values):
        if not isinstance(value, (bool, np.bool_)):
            raise RewardError(_plugin_name(plugin), f"verdict {value!r} is not a bool", index=ids[i], prompt=prompts[i])
    return np.array(values, dtype=bool)


def checked_step_scores(
    plugin: ProcessRewardModel,
    prompts: Sequence[Prompt],
    completions: Sequence[str],
    *,
    prompt_ids: Sequence[int] | None = None,
) -> list[StepScores]:
    """One :class:`StepScores` per completion from ``plugin.score_steps``: as many finite step
    rewards as steps (a completion may have none), a finite outcome reward and score."""
    values, ids = _call(plugin, "score_steps", prompts, [completions], prompt_ids)
    out = []
    for i, value in enumerate(values):
        try:
            steps, rewards, outcome, score = value
        except (TypeError, ValueError):
            steps = rewards = outcome = score = None
        if hasattr(rewards, "tolist"):  # numpy arrays and torch tensors
            rewards = rewards.tolist()
        problem = None
        if not isinstance(steps, (list, tuple)) or not isinstance(rewards, (list, tuple)):
            problem = f"{value!r:.80} is not StepScores(steps, rewards, outcome, score)"
        elif len(steps) != len(rewards):
            problem = f"{len(steps)} steps but {len(rewards)} step rewards"
        elif any(_real(r) is None for r in rewards) or _real(outcome) is None or _real(score) is None:
            problem = f"step rewards {list(rewards)!r:.80}, outcome {outcome!r} or score {score!r} not all finite numbers"
        if problem is not None:
            raise RewardError(_plugin_name(plugin), problem, index=ids[i], prompt=prompts[i])
        out.append(StepScores([str(s) for s in steps], [float(r) for r in rewards], float(outcome), float(score)))
    return out
