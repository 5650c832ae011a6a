"""On-policy dataset builders: judged samples → the trainer's rows, chosen by name in the loop config.

A judged prompt (one line of ``judged.jsonl``) holds the prompt, its K completions, and what the
judge said: ``win_rates`` (K) and ``preference`` (K×K) always, ``scores`` (K) for scoring judges,
``correct`` (K) for verifiers, ``step_rewards`` (K lists) for process reward models, and the prompt
dataset's ``answer`` / ``solution`` when present.

Each builder is ``builder(judged, **options) -> (rows, stats)``; ``--dataset_builder <name>`` picks
one and ``--dataset_options '<JSON>'`` passes its options (checked against its signature while the
arguments are parsed). Built in:

- ``sppo_pairs``: SPPO's (y_w, y_l, P̂_w, P̂_l, p) pair per prompt (option ``skip_ties``);
- ``rpo_pairs``: iterative RPO's (correct, incorrect) pairs (``pairs_per_prompt``, ``gold_as_winner``);
- ``all_pairs``: every (correct, incorrect) pair of a prompt, none for all-correct or all-wrong
  prompts (the implicit PRM's DPO variant; ``max_pairs_per_prompt``);
- ``labelled``: every sample as a single completion with its 0/1 correctness label (the implicit
  PRM's CE variant);
- ``lists``: each prompt's K samples as one list with a return per sample (HAEPO; ``returns``,
  ``skip_ties``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

__all__ = [
    "all_pairs",
    "available_builders",
    "check_builder",
    "get_builder",
    "labelled_singles",
    "return_lists",
    "register_builder",
    "rpo_pairs",
    "sppo_pairs",
]

Builder = Callable[..., tuple[list[dict], dict]]
_BUILDERS: dict[str, Builder] = {}


def register_builder(name: str) -> Callable[[Builder], Builder]:
    """Decorator: register ``builder(judged, **options) -> (rows, stats)`` under ``name``."""

    def decorator(builder: Builder) -> Builder:
        if name in _BUILDERS and _BUILDERS[name] is not builder:
            raise ValueError(f"dataset builder {name!r} is already registered by {_BUILDERS[name].__qualname__}")
        _BUILDERS[name] = builder
        return builder

    return decorator


def available_builders() -> list[str]:
    return sorted(_BUILDERS)


def check_builder(name: str, options: dict[str, Any]) -> None:
    """Fail as :func:`get_builder` would on an unknown name or options the builder does not take."""
    get_builder(name, options)


def get_builder(name: str, options: dict[str, Any] | None = None) -> Callable[[list[dict]], tuple[list[dict], dict]]:
    """The builder registered as ``name`` with ``options`` bound: ``judged -> (rows, stats)``."""
    if name not in _BUILDERS:
        raise KeyError(f"unknown dataset builder {name!r}; known: {', '.join(available_builders())}")
    builder, options = _BUILDERS[name], dict(options or {})
    signature = inspect.signature(builder)
    try:
        signature.bind([], **options)
    except TypeError as err:
        accepted = [p for p in list(signature.parameters)[1:]]
        raise TypeError(f"dataset builder {name!r}: {err}; it takes options {accepted}") from None

    def build(judged: list[dict]) -> tuple[list[dict], dict]:
        return builder(judged, **options)

    build.__name__ = name
    return build


def _messages(prompt) -> list[dict]:
    return prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]


def _need_verdicts(item: dict, method: str) -> None:
    if "correct" not in item:
        raise ValueError(
            f"prompt {item.get('index')}: {method} needs a verifier as the judge (correct / incorrect per sample)"
        )


def _pair(prompt, chosen: str, rejected: str, **fields) -> dict:
    return {
        "prompt": _messages(prompt),
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        **fields,
    }


@register_builder("sppo_pairs")
def sppo_pairs(judged: list[dict], *, skip_ties: bool = True) -> tuple[list[dict], dict]:
    """One pair per prompt (Wu et al. 2024): y_w the sample with the highest win rate
    P̂(y ≻ π_t) = (1/K) Σ_j P(y ≻ y_j), y_l the lowest; the pair carries ``win_rates`` [P̂_w, P̂_l]
    and ``pair_prob`` p = P(y_w ≻ y_l) for the ``sppo`` and ``sppo_single`` losses.

    ``skip_ties``: a prompt whose K win rates are all equal (every sample judged the same) carries
    no preference; the soft loss would only pull both log-ratios to 0. Returns (rows, stats)."""
    rows, ties = [], 0
    for item in judged:
        rates = item["win_rates"]
        if len(rates) < 2:
            raise ValueError(f"prompt {item.get('index')}: SPPO needs at least 2 samples per prompt, got {len(rates)}")
        w = max(range(len(rates)), key=lambda i: (rates[i], -i))
        l = min(range(len(rates)), key=lambda i: (rates[i], -i))  # noqa: E741
        if rates[w] == rates[l]:
            ties += 1
            if skip_ties:
                continue
            l = len(rates) - 1 if w == 0 else 0  # noqa: E741
        completions = item["completions"]
        rows.append(_pair(item["prompt"], completions[w], completions[l], win_rates=[rates[w], rates[l]],
                          pair_prob=item["preference"][w][l]))  # fmt: skip
    return rows, {"prompts": len(judged), "pairs": len(rows), "ties": ties, "skipped_ties": ties if skip_ties else 0}


@register_builder("rpo_pairs")
def rpo_pairs(judged: list[dict], *, pairs_per_prompt: int = 1, gold_as_winner: bool = True) -> tuple[list[dict], dict]:
    """Iterative RPO's pairs (Pang et al. 2024): winners are the correct samples, losers the
    incorrect ones; when no sample is correct the gold ``solution`` is the winner; up to
    ``pairs_per_prompt`` pairs per prompt, pairing winner i mod W with loser i mod L, so every
    distinct sample is used before any repeats. Prompts with no loser give no pair."""
    rows, with_gold, no_loser = [], 0, 0
    for item in judged:
        _need_verdicts(item, "iterative RPO")
        completions = item["completions"]
        winners = list(dict.fromkeys(c for c, ok in zip(completions, item["correct"]) if ok))
        losers = list(dict.fromkeys(c for c, ok in zip(completions, item["correct"]) if not ok))
        if not winners and gold_as_winner and item.get("solution"):
            winners, with_gold = [item["solution"]], with_gold + 1
        if not winners or not losers:
            no_loser += not losers
            continue
        for i in range(min(pairs_per_prompt, max(len(winners), len(losers)))):
            rows.append(_pair(item["prompt"], winners[i % len(winners)], losers[i % len(losers)]))
    stats = {"prompts": len(judged), "pairs": len(rows), "gold_winners": with_gold, "all_correct": no_loser}
    return rows, stats


@register_builder("all_pairs")
def all_pairs(judged: list[dict], *, max_pairs_per_prompt: int | None = None) -> tuple[list[dict], dict]:
    """Every (correct, incorrect) pair of distinct samples of a prompt, correct first, in sample
    order (the implicit PRM's DPO variant, Yuan et al. 2024); a prompt whose samples are all
    correct or all wrong gives none. ``max_pairs_per_prompt`` keeps the first that many."""
    if max_pairs_per_prompt is not None and max_pairs_per_prompt < 1:
        raise ValueError(f"max_pairs_per_prompt must be >= 1, got {max_pairs_per_prompt}")
    rows, all_correct, all_wrong = [], 0, 0
    for item in judged:
        _need_verdicts(item, "all_pairs")
        pairs = list(zip(item["completions"], item["correct"]))
        winners = list(dict.fromkeys(c for c, ok in pairs if ok))
        losers = list(dict.fromkeys(c for c, ok in pairs if not ok))
        all_correct += not losers
        all_wrong += not winners
        made = [(w, l) for w in winners for l in losers][:max_pairs_per_prompt]  # noqa: E741
        rows += [_pair(item["prompt"], w, l) for w, l in made]
    stats = {"prompts": len(judged), "pairs": len(rows), "all_correct": all_correct, "all_wrong": all_wrong}
    return rows, stats


@register_builder("labelled")
def labelled_singles(judged: list[dict], *, dedupe: bool = False) -> tuple[list[dict], dict]:
    """Every sample as a single completion with its correctness label (1 correct, 0 wrong): the
    implicit PRM's CE variant, which needs no pair and works with one sample per prompt.

    Duplicates are kept by default, as the official training keeps every rollout: a small model
    repeats its right answers far more often than its wrong ones (on the multistep task 512
    samples held 138 right ones but only 32 distinct), so dropping them (``dedupe``) would
    change the share of right answers the classifier sees from 27% to 14%."""
    rows, correct = [], 0
    for item in judged:
        _need_verdicts(item, "labelled")
        pairs = list(zip(item["completions"], item["correct"]))
        if dedupe:
            pairs = list(dict.fromkeys(pairs))
        for completion, ok in pairs:
            completion_turn = [{"role": "assistant", "content": completion}]
            rows.append({"prompt": _messages(item["prompt"]), "completion": completion_turn, "label": int(bool(ok))})
            correct += bool(ok)
    return rows, {"prompts": len(judged), "rows": len(rows), "correct": correct}


RETURN_SOURCES = ("auto", "correct", "scores", "win_rates")


@register_builder("lists")
def return_lists(judged: list[dict], *, returns: str = "auto", skip_ties: bool = True) -> tuple[list[dict], dict]:
    """Each prompt's samples as one list with a return R_k per sample, for list objectives (HAEPO).

    ``returns``: ``correct`` (1 right, 0 wrong: a verifier's verdict), ``scores`` (a reward model's
    score, a process reward model's aggregate, a verifier's tie-broken score), ``win_rates``
    (P̂(y_k ≻ π_t), the only number a pairwise judge gives), or ``auto``: the first of those the
    judge gave. ``auto`` takes a verifier's verdict rather than its tie-broken score: group
    normalisation would blow the tie-breaker's small length differences within an all-wrong group
    up to returns of ±1.

    Blank samples (a completion that ended at once) are dropped and the prompt keeps the rest; a
    prompt left with fewer than 2 gives no list. ``skip_ties``: a list whose returns are all equal
    has no preference term (the group-normalised returns are all 0), only the entropy and KL terms,
    so it is skipped by default (DAPO's dynamic sampling drops such groups too; GRPO keeps them
    with zero advantage). Returns (rows, stats)."""
    if returns not in RETURN_SOURCES:
        raise ValueError(f"returns must be one of {RETURN_SOURCES}, got {returns!r}")
    rows, ties, short, blank = [], 0, 0, 0
    for item in judged:
        source = returns
        if source == "auto":
            source = next(name for name in ("correct", "scores", "win_rates") if name in item)
        if source not in item:
            raise ValueError(f"prompt {item.get('index')}: returns={returns!r} but the judge gave no {source!r} "
                             f"(it gave {', '.join(k for k in RETURN_SOURCES[1:] if k in item)})")  # fmt: skip
        kept = [(c, float(r)) for c, r in zip(item["completions"], item[source]) if c.strip()]
        blank += len(item["completions"]) - len(kept)
        if len(kept) < 2:
            short += 1
            continue
        values = [r for _, r in kept]
        if min(values) == max(values):
            ties += 1
            if skip_ties:
                continue
        completions = [[{"role": "assistant", "content": c}] for c, _ in kept]
        rows.append({"prompt": _messages(item["prompt"]), "completions": completions, "returns": values})
    stats = {"prompts": len(judged), "lists": len(rows), "completions": sum(len(r["completions"]) for r in rows),
             "ties": ties, "skipped_ties": ties if skip_ties else 0, "blank_samples": blank, "too_few": short}  # fmt: skip
    return rows, stats
