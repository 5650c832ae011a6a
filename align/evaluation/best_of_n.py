"""Best-of-N with a process reward model, and step-error detection (implicit PRM, Yuan et al. 2024,
"Free Process Rewards without Process Labels", https://arxiv.org/abs/2412.01981).

**Selection** among one problem's N candidates (:func:`select`). Candidate k has its extracted answer
a_k (None when none could be read), the verifier's verdict c_k and the process reward model's step
rewards r_k1..r_kT (:class:`align.rewards.StepScores`) with running Q-values q_kt = Σ_{s≤t} r_ks.
Every PRM aggregation is computed from the stored step rewards by the implicit PRM's own kernel
(:func:`align.rewards.aggregate_steps`), so one scoring pass serves them all, whatever aggregate the
plug-in itself scores by:

- ``prm_min``: argmax_k min_t r_kt (the official evaluation's default aggregation);
- ``prm_sum``: argmax_k Σ_t r_kt = q_kT, the last Q-value;
- ``prm_mean``: argmax_k (1/T) Σ_t r_kt;
- ``prm_min_q``: argmax_k min_t q_kt (the official code's "accumulative" min, over Q-values);
- ``outcome``: argmax_k of the outcome reward (``StepScores.outcome``; an implicit PRM's β·Δ(y));
- ``weighted_vote``: argmax_a Σ_{k: a_k = a} σ(s_k), s_k = ``StepScores.score`` (the plug-in's own
  aggregate): the vote weighted by σ(reward) of PRIME-RL/ImplicitPRM's ``eval/bon_eval.py``;
- ``majority``: argmax_a #{k: a_k = a} (self-consistency);
- ``random``: the expected accuracy of a uniform pick, (1/N) Σ_k c_k, exact rather than one draw;
- ``oracle``: max_k c_k (some candidate is correct: pass@N of these N).

Ties are broken deterministically: an argmax rule takes the lowest index (the earliest sampled)
among the tied candidates; a vote takes, among the tied answers, the one whose first candidate comes
first. A candidate with no steps is ranked by its outcome reward under the PRM rules (as
:func:`~align.rewards.aggregate_steps` scores it). In the votes a
None answer does not vote; when no candidate has an answer the vote picks nothing and counts as
wrong. A voted answer counts as right when its first candidate's verdict is (candidates with the
same answer share their verdict unless the verifier reads answers otherwise than the extraction).

**Accuracy at N from M ≥ max(N) samples per problem** (:func:`best_of_n_accuracy`): a problem's M
samples are cut into ⌊M/N⌋ disjoint consecutive blocks of N (M = 16, N = 4: samples 0-3, 4-7, 8-11,
12-15). The samples of a problem are i.i.d., so each block is an independent best-of-N draw; the
problem's accuracy is the mean over its blocks (samples left over when N does not divide M are not
used) and the reported accuracy the mean over problems. Averaging every block rather than taking the
first lowers the variance at no extra sampling or scoring. The official evaluation instead keeps the
N samples of highest generator log-probability, which is not a random draw of N.

**Step-error detection** (:func:`step_error_detection`): for a wrong solution whose first wrong step f
(0-based, of T steps) is known from a task checker, whether the PRM's lowest-reward step
argmin_t r_t is step f, against a uniformly random step (expected hit rate 1/T), and whether it is at
or before f (random: (f + 1)/T). When L steps share the lowest reward, the tie is broken uniformly at
random, in expectation: the hit counts 1/L if f is among them, "at or before" the share of them at or
before f. Picking the earliest instead would credit a PRM that scores every step alike with every
"at or before" (its pick would always be step 0); this way it scores exactly the random baseline.
The PRM's steps and the checker's steps must be the same split (as many steps, equal text once
stripped of surrounding whitespace): a solution where they differ is counted as a mismatch and left
out, never aligned by position.

**End to end** (:func:`run_best_of_n`): M samples per problem from a generator (sharded, resumable:
:func:`align.evaluation.common.generate_answers`), verdicts from a verifier and step scores from a
process reward model through :func:`align.rewards.score_groups`, step checks when a checker is given,
then the tables. Files in ``output_dir``, each written atomically by the main process:

- ``generation/``: finished chunks of samples (a re-run does not sample them again);
- ``samples.jsonl``: per problem ``index``, ``prompt``, ``reference``, ``completions`` (M),
  ``answers`` (extracted, None where none) and ``correct`` (the verifier's verdicts);
- ``scoring/``: finished chunks of step scores, keyed by the PRM and the samples (a re-run does not
  score them again); ``scores.jsonl``: per problem ``index`` and ``step_scores``, one
  ``{steps, rewards, outcome, score}`` per completion;
- ``step_checks.jsonl`` (with a checker): per problem ``index`` and ``checks``, one record of the
  checker's result per completion (the multistep task's: ``steps``, ``step_correct``,
  ``first_wrong``, ``final_correct``, ``equations``);
- ``best_of_n.json`` (accuracy, standard error over problems and per-problem accuracy for each rule
  and N, plus the settings), ``best_of_n.md`` and ``best_of_n.png`` (accuracy against N, one line per
  rule); ``step_errors.json`` and ``step_errors.md`` (with a checker).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from align.io import atomic_write_json, fingerprint, read_json, write_jsonl, write_text_atomic
from align.rewards import RewardError, StepScores, aggregate_steps, reward_kind, score_groups

__all__ = [
    "AGGREGATIONS",
    "RULES",
    "RULE_LABELS",
    "BestOfNConfig",
    "Candidate",
    "Selection",
    "best_of_n_accuracy",
    "best_of_n_markdown",
    "plot_best_of_n",
    "run_best_of_n",
    "select",
    "step_error_detection",
    "step_errors_markdown",
]

# The step aggregations ranked by (of aggregate_steps' "last" and "last_q", both q_T = the sum: left out).
AGGREGATIONS = ("min", "sum", "mean", "min_q")
RULES = ("prm_min", "prm_sum", "prm_mean", "prm_min_q", "outcome", "weighted_vote", "majority", "random", "oracle")
RULE_LABELS = {
    "prm_min": "PRM min step reward",
    "prm_sum": "PRM sum of step rewards (= last Q)",
    "prm_mean": "PRM mean step reward",
    "prm_min_q": "PRM min Q-value",
    "outcome": "outcome reward",
    "weighted_vote": "PRM-weighted vote, Σ σ(score)",
    "majority": "majority vote",
    "random": "random (expected)",
    "oracle": "oracle (any correct)",
}


@dataclass(frozen=True)
class Candidate:
    """One sampled solution: its extracted ``answer`` (None if none), the verifier's verdict and the
    process reward model's :class:`~align.rewards.StepScores`."""

    answer: str | None
    correct: bool
    steps: StepScores


@dataclass(frozen=True)
class Selection:
    """What a rule picked: the candidate's ``index`` (None for ``random``, for a vote that found no
    answer and for ``oracle`` with none correct), its ``answer`` and ``correct`` ∈ [0, 1] (0/1, or the
    expected value for ``random``)."""

    index: int | None
    answer: str | None
    correct: float


def _sigmoid(x: float) -> float:
    return 0.5 * (1.0 + math.tanh(0.5 * x))  # no overflow for large |x|


def _first_max(values: Sequence[float]) -> int:
    """The lowest index among the maxima (``max`` keeps the first of equal keys)."""
    return max(range(len(values)), key=lambda k: values[k])


def _vote(candidates: Sequence[Candidate], weights: Sequence[float]) -> Selection:
    """The answer with the largest total weight (None answers do not vote); ties: the answer whose
    first candidate comes first; right when that first candidate is."""
    first: dict[str, int] = {}
    parts: dict[str, list[float]] = {}
    for k, (candidate, weight) in enumerate(zip(candidates, weights, strict=True)):
        if candidate.answer is not None:
            first.setdefault(candidate.answer, k)
            parts.setdefault(candidate.answer, []).append(weight)
    if not first:
        return Selection(None, None, 0.0)
    # fsum: the total does not depend on the order of the votes, so tied answers stay exactly tied
    totals = {answer: math.fsum(w) for answer, w in parts.items()}
    answer = max(first, key=lambda a: totals[a])  # dicts keep first-seen order: ties go to the earliest
    k = first[answer]
    return Selection(k, answer, float(candidates[k].correct))


def select(candidates: Sequence[Candidate], rule: str) -> Selection:
    """The pick of ``rule`` (one of :data:`RULES`) among ``candidates`` (see the module docstring).

    Example: answers ["4", "5", "5"], verdicts [True, False, False], min step rewards [0.2, −1, −2]:
    ``prm_min`` picks 0 (right), ``majority`` picks "5" (wrong), ``random`` is 1/3, ``oracle`` 1."""
    if not candidates:
        raise ValueError("select needs at least one candidate")
    if rule.startswith("prm_") and rule[4:] in AGGREGATIONS:
        k = _first_max(aggregate_steps([c.steps for c in candidates], rule[4:]))
    elif rule == "outcome":
        k = _first_max([c.steps.outcome for c in candidates])
    elif rule == "weighted_vote":
        return _vote(candidates, [_sigmoid(c.steps.score) for c in candidates])
    elif rule == "majority":
        return _vote(candidates, [1.0] * len(candidates))
    elif rule == "random":
        return Selection(None, None, sum(c.correct for c in candidates) / len(candidates))
    elif rule == "oracle":
        k = next((k for k, c in enumerate(candidates) if c.correct), None)
        return Selection(None, None, 0.0) if k is None else Selection(k, candidates[k].answer, 1.0)
    else:
        raise ValueError(f"unknown best-of-N rule {rule!r}; known: {', '.join(RULES)}")
    return Selection(k, candidates[k].answer, float(candidates[k].correct))


def best_of_n_accuracy(
    problems: Sequence[Sequence[Candidate]], ns: Sequence[int] = (1, 4, 16), rules: Sequence[str] = RULES
) -> dict[str, Any]:
    """Accuracy of each rule at each N from M ≥ max(N) candidates per problem, averaged over the
    ⌊M/N⌋ disjoint blocks of N of each problem, then over problems (see the module docstring).

    Returns ``{"n": [...], "problems": P, "samples": [M per problem], "blocks": {N: [⌊M/N⌋ per
    problem]}, "accuracy": {rule: {N: mean}}, "stderr": {rule: {N: std/√P}}, "per_problem": {rule:
    {N: [...]}}}`` (keys N as strings, as JSON has them). Example: one problem, M = 4, verdicts
    [T, F, F, T], N = 2: ``oracle`` is (1 + 1)/2 = 1, ``random`` (½ + ½)/2 = ½."""
    ns = sorted({int(n) for n in ns})
    if not problems:
        raise ValueError("best-of-N needs at least one problem")
    if not ns or ns[0] < 1:
        raise ValueError(f"every N must be >= 1, got {ns}")
    for rule in rules:
        if rule not in RULES:
            raise ValueError(f"unknown best-of-N rule {rule!r}; known: {', '.join(RULES)}")
    short = [(i, len(c)) for i, c in enumerate(problems) if len(c) < ns[-1]]
    if short:
        index, count = short[0]
        raise ValueError(f"N = {ns[-1]} needs at least {ns[-1]} samples per problem; problem {index} has {count}")
    per_problem: dict[str, dict[str, list[float]]] = {rule: {} for rule in rules}
    for n in ns:
        for rule in rules:
            scores = []
            for candidates in problems:
                blocks = [candidates[b * n : (b + 1) * n] for b in range(len(candidates) // n)]
                scores.append(math.fsum(select(block, rule).correct for block in blocks) / len(blocks))
            per_problem[rule][str(n)] = scores
    count = len(problems)
    return {
        "n": ns,
        "problems": count,
        "samples": [len(c) for c in problems],
        "blocks": {str(n): [len(c) // n for c in problems] for n in ns},
        "accuracy": {r: {k: float(np.mean(v)) for k, v in per_problem[r].items()} for r in rules},
        "stderr": {
            r: {k: float(np.std(v, ddof=1) / math.sqrt(count)) if count > 1 else 0.0 for k, v in per_problem[r].items()}
            for r in rules
        },
        "per_problem": per_problem,
    }


def best_of_n_markdown(table: dict[str, Any]) -> str:
    """The accuracy table of :func:`best_of_n_accuracy` in Markdown: a row per rule, a column per N,
    accuracy in percent."""
    ns = table["n"]
    samples = sorted(set(table["samples"]))
    m = str(samples[0]) if len(samples) == 1 else f"{samples[0]}-{samples[-1]}"
    lines = [
        f"Best-of-N accuracy (%), {table['problems']} problems, {m} samples each, averaged over disjoint blocks of N",
        "",
        "| rule | " + " | ".join(f"N = {n}" for n in ns) + " |",
        "|---|" + "---|" * len(ns),
    ]
    for rule, row in table["accuracy"].items():
        lines.append(f"| {RULE_LABELS[rule]} | " + " | ".join(f"{100 * row[str(n)]:.1f}" for n in ns) + " |")
    return "\n".join(lines) + "\n"


def plot_best_of_n(table: dict[str, Any], path: str | os.PathLike) -> Path:
    """Accuracy (%) against N (log₂ axis), one line per rule; random and oracle dashed. Written as a
    PNG atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = table["n"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for rule, row in table["accuracy"].items():
        style = "--" if rule in ("random", "oracle") else "-"
        ax.plot(ns, [100 * row[str(n)] for n in ns], style, marker="o", markersize=4, label=RULE_LABELS[rule])
    if len(ns) > 1:
        ax.set_xscale("log", base=2)
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel("N (candidates per problem)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"best-of-N, {table['problems']} problems", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=110)
    os.replace(tmp, path)
    plt.close(fig)
    return path


def _same_split(prm_steps: Sequence[str], checker_steps: Sequence[str]) -> bool:
    return len(prm_steps) == len(checker_steps) and all(
        a.strip() == b.strip() for a, b in zip(prm_steps, checker_steps, strict=True)
    )


def step_error_detection(cases: Sequence[tuple[StepScores, Any]]) -> dict[str, Any]:
    """How often the PRM's lowest-reward step is the first wrong step (see the module docstring).

    ``cases``: (the PRM's :class:`~align.rewards.StepScores`, the checker's result) for each wrong
    solution; the checker's result has ``steps`` (texts) and ``first_wrong`` (0-based, None if no
    step was found wrong). Returns counts (``solutions``; ``mismatched``: the splits differ;
    ``unlocated``: no wrong step known; ``evaluated``) and rates over the evaluated solutions:
    ``prm_first_wrong`` and its ``random_first_wrong`` = mean 1/T, ``prm_at_or_before`` and
    ``random_at_or_before`` = mean (f + 1)/T (None when nothing was evaluated).

    Examples: rewards [1, −2, 0.5], f = 1 → a hit (random 1/3), at or before (random 2/3); rewards
    [0, −1, −1, 0], f = 1 → ½ a hit (random ¼), ½ at or before (random ½)."""
    mismatched = unlocated = 0
    hits, at_or_before, random_hits, random_before = [], [], [], []
    for scores, check in cases:
        if not _same_split(scores.steps, check.steps):
            mismatched += 1
            continue
        f = check.first_wrong
        if f is None:
            unlocated += 1
            continue
        count = len(scores.rewards)
        if not 0 <= f < count:
            raise ValueError(f"first_wrong = {f} is not a step index of a {count}-step solution")
        lowest = [t for t, r in enumerate(scores.rewards) if r == min(scores.rewards)]
        hits.append((f in lowest) / len(lowest))
        at_or_before.append(sum(t <= f for t in lowest) / len(lowest))
        random_hits.append(1.0 / count)
        random_before.append((f + 1) / count)

    def rate(values: list) -> float | None:
        return float(np.mean(values)) if values else None

    return {
        "solutions": len(cases),
        "mismatched": mismatched,
        "unlocated": unlocated,
        "evaluated": len(hits),
        "prm_first_wrong": rate(hits),
        "random_first_wrong": rate(random_hits),
        "prm_at_or_before": rate(at_or_before),
        "random_at_or_before": rate(random_before),
    }


def step_errors_markdown(result: dict[str, Any]) -> str:
    """The step-error detection table of :func:`step_error_detection` in Markdown."""

    def cell(value: float | None) -> str:
        return "–" if value is None else f"{100 * value:.1f}"

    return (
        f"Step-error detection on {result['evaluated']} wrong solutions with a located first wrong step "
        f"({result['solutions']} wrong in all; {result['mismatched']} with a PRM split that differs from the "
        f"checker's, {result['unlocated']} with no wrong step found)\n\n"
        "| the PRM's lowest-reward step | PRM (%) | random step (%) |\n|---|---|---|\n"
        f"| is the first wrong step | {cell(result['prm_first_wrong'])} | {cell(result['random_first_wrong'])} |\n"
        f"| is at or before the first wrong step | {cell(result['prm_at_or_before'])} | "
        f"{cell(result['random_at_or_before'])} |\n"
    )


# -- end to end ------------------------------------------------------------------------------------


@dataclass
class BestOfNConfig:
    """How to run best-of-N: ``n`` the N values, ``num_samples`` M per problem (default max(n));
    sampling as the on-policy loops and the multistep task's measurements sample (temperature 0.7,
    top-p 0.9, 96 new tokens); ``score_chunk_size`` problems per resumable scoring chunk."""

    n: tuple[int, ...] = (1, 4, 16)
    num_samples: int | None = None
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 96
    batch_size: int = 32
    seed: int = 0
    score_chunk_size: int = 8
    rules: tuple[str, ...] = field(default=RULES)

    def __post_init__(self) -> None:
        self.n = tuple(sorted({int(n) for n in self.n}))
        if not self.n or self.n[0] < 1:
            raise ValueError(f"n: every N must be a positive integer, got {self.n}")
        if self.num_samples is None:
            self.num_samples = self.n[-1]
        if self.num_samples < self.n[-1]:
            raise ValueError(f"num_samples = {self.num_samples} is fewer than the largest N = {self.n[-1]}")
        if self.num_samples > 1 and self.temperature == 0:
            raise ValueError("num_samples > 1 needs temperature > 0: greedy decoding gives the same answer every time")
        if self.score_chunk_size < 1:
            raise ValueError(f"score_chunk_size must be >= 1, got {self.score_chunk_size}")
        unknown = [r for r in self.rules if r not in RULES]
        if unknown:
            raise ValueError(f"unknown best-of-N rules {unknown}; known: {', '.join(RULES)}")
        self.sampling()  # SamplingConfig checks the rest

    def sampling(self) -> Any:
        from align.generation import SamplingConfig

        return SamplingConfig(
            num_samples=self.num_samples, max_new_tokens=self.max_new_tokens, temperature=self.temperature,
            top_p=self.top_p, seed=self.seed, batch_size=self.batch_size,
            chunk_size=max(1, self.batch_size // self.num_samples),
        )  # fmt: skip


def _reference(row: dict, index: int, source: str) -> str:
    if not row.get("prompt"):
        raise ValueError(f"{source}: row {index}: field 'prompt': missing or empty")
    reference = row.get("answer", row.get("solution"))
    if reference is None or not str(reference).strip():
        raise ValueError(f"{source}: row {index}: field 'answer': missing (best-of-N needs an answer or a solution)")
    return str(reference)


def _record(value: Any) -> dict:
    """A checker's result as a JSON-ready dict (a NamedTuple, a dataclass or a plain object)."""
    if hasattr(value, "_asdict"):
        return dict(value._asdict())
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    return dict(vars(value))


def _samples_digest(prompts: Sequence[Any], samples: Sequence[Sequence[str]]) -> str:
    return fingerprint({"prompts": list(prompts), "samples": [list(s) for s in samples]})


def _score_steps(
    prm: Any,
    prompts: Sequence[Any],
    samples: Sequence[Sequence[str]],
    folder: Path,
    key: dict,
    chunk_size: int,
) -> list[list[StepScores]]:
    """The PRM's step scores of every sample, one :func:`score_groups` call per chunk of problems;
    finished chunks are kept in ``folder`` (keyed by ``key``), so a re-run scores only the rest."""
    stamp = fingerprint(key)
    record = folder / "key.json"
    if record.exists() and read_json(record).get("fingerprint") != stamp:
        for old in folder.glob("chunk-*.json"):
            old.unlink()
    if not record.exists() or read_json(record).get("fingerprint") != stamp:
        atomic_write_json(record, {"fingerprint": stamp, "key": key})
    out: list[list[StepScores]] = []
    bounds = list(range(0, len(prompts), chunk_size)) + [len(prompts)]
    for index, (lo, hi) in enumerate(pairwise(bounds)):
        path = folder / f"chunk-{index:05d}.json"
        if path.exists():
            out.extend([StepScores(**s) for s in group] for group in read_json(path))
            continue
        try:
            judgements = score_groups(prm, prompts[lo:hi], samples[lo:hi])
        except RewardError as err:  # score_groups numbers the chunk's prompts from 0: name the problem's
            index_ = None if err.index is None else lo + err.index
            raise RewardError(err.plugin, err.problem, index=index_, prompt=err.prompt) from err
        groups = [j.steps for j in judgements]
        atomic_write_json(path, [[s._asdict() for s in group] for group in groups])
        out.extend(groups)
    return out


def run_best_of_n(
    model: Any,
    tokenizer: Any,
    rows: Sequence[dict],
    *,
    prm: Any,
    verifier: Any,
    output_dir: str | os.PathLike,
    config: BestOfNConfig | None = None,
    accelerator: Any = None,
    cache_key: dict | None = None,
    prm_key: dict | None = None,
    step_checker: Callable[[dict, str], Any] | None = None,
    answer_fn: Callable[[str], str | None] | None = None,
    source: str = "prompts",
    show_progress: bool = True,
) -> dict[str, Any] | None:
    """Best-of-N of ``model``'s samples on ``rows`` (each with ``prompt`` and ``answer`` or
    ``solution``) under the process reward model ``prm`` (any plug-in with ``score_steps``), with
    verdicts from ``verifier``; step-error detection when ``step_checker(row, completion)`` is given
    (it returns ``steps``, ``first_wrong`` and more, e.g. the multistep task's ``check_solution``).

    Sampling is sharded over the processes of ``accelerator`` (all of them must call this; they may
    pass ``prm=None``, ``verifier=None``); then only the main process verifies, scores, checks and
    writes the files of the module docstring, and returns ``{"best_of_n": table, "step_errors":
    result or None, "files": {...}}``; the others return None. ``cache_key`` names the generator in
    the sampling cache's key (e.g. its path), ``prm_key`` the PRM in the scoring cache's (default its
    ``name``): a different key samples or scores afresh. ``answer_fn`` extracts the answers voted on
    (default: the verifier's ``extract_answer`` if it has one, else the GSM8K ``#### N`` reading,
    :func:`align.rewards.extract_answer`). ``source`` names ``rows`` in errors.
    """
    from align.evaluation.common import generate_answers

    config = config or BestOfNConfig()
    main = accelerator is None or accelerator.is_main_process
    rows = list(rows)
    if not rows:
        raise ValueError(f"{source}: no problems")
    references = [_reference(row, i, source) for i, row in enumerate(rows)]
    prompts = [row["prompt"] for row in rows]
    if main:  # fail before sampling for minutes
        expected = (("verifier", verifier, "verifier", "verify"), ("PRM", prm, "process", "score_steps"))
        for role, plugin, kind, method in expected:
            if reward_kind(plugin) != kind:
                found = reward_kind(plugin) or "not a reward plug-in"
                raise TypeError(f"the {role} {getattr(plugin, 'name', plugin)!r} ({found}) has no {method}()")
    out = Path(output_dir)
    samples = generate_answers(
        model, tokenizer, prompts, config.sampling(), accelerator=accelerator, cache_dir=out / "generation",
        cache_key=cache_key, show_progress=show_progress,
    )  # fmt: skip
    if not main:
        return None

    if answer_fn is None:
        from align.rewards import extract_answer

        answer_fn = getattr(verifier, "extract_answer", None) or extract_answer
    verdicts = [j.correct for j in score_groups(verifier, prompts, samples, references)]
    answers = [[answer_fn(c) for c in group] for group in samples]
    files = {"samples": out / "samples.jsonl", "scores": out / "scores.jsonl"}
    records = (
        {"index": i, "prompt": p, "reference": r, "completions": list(s), "answers": a, "correct": [bool(x) for x in c]}
        for i, (p, r, s, a, c) in enumerate(zip(prompts, references, samples, answers, verdicts, strict=True))
    )
    write_jsonl(records, files["samples"])

    key = {"prm": prm_key or {"name": getattr(prm, "name", type(prm).__name__)}}
    key["samples"] = _samples_digest(prompts, samples)
    steps = _score_steps(prm, prompts, samples, out / "scoring", key, config.score_chunk_size)
    write_jsonl(
        ({"index": i, "step_scores": [s._asdict() for s in group]} for i, group in enumerate(steps)), files["scores"]
    )

    problems = [
        [Candidate(a, bool(c), s) for a, c, s in zip(group_answers, group_correct, group_steps, strict=True)]
        for group_answers, group_correct, group_steps in zip(answers, verdicts, steps, strict=True)
    ]
    table = best_of_n_accuracy(problems, config.n, config.rules)
    table["settings"] = {**asdict(config), "generator": cache_key, "prm": key["prm"]}
    files.update(json=out / "best_of_n.json", markdown=out / "best_of_n.md", plot=out / "best_of_n.png")
    atomic_write_json(files["json"], table)
    write_text_atomic(files["markdown"], best_of_n_markdown(table))
    plot_best_of_n(table, files["plot"])

    step_errors = None
    if step_checker is not None:
        checks = []
        for i, (row, group) in enumerate(zip(rows, samples, strict=True)):
            try:
                checks.append([step_checker(row, completion) for completion in group])
            except Exception as err:
                raise ValueError(f"{source}: row {i}: the step checker failed: {type(err).__name__}: {err}") from err
        files["step_checks"] = out / "step_checks.jsonl"
        records = ({"index": i, "checks": [_record(c) for c in group]} for i, group in enumerate(checks))
        write_jsonl(records, files["step_checks"])
        cases = [
            (candidate.steps, check)
            for problem, group in zip(problems, checks, strict=True)
            for candidate, check in zip(problem, group, strict=True)
            if not candidate.correct
        ]
        step_errors = step_error_detection(cases)
        files.update(step_errors_json=out / "step_errors.json", step_errors_markdown=out / "step_errors.md")
        atomic_write_json(files["step_errors_json"], step_errors)
        write_text_atomic(files["step_errors_markdown"], step_errors_markdown(step_errors))
    return {"best_of_n": table, "step_errors": step_errors, "files": {k: str(v) for k, v in files.items()}}
