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
  ``skip_ties``);
- ``uvcot_pairs``: UV-CoT's pairs of (region, crop, answer) samples by score gap, sampled per
  question, optionally length-balanced (``min_gap``, ``pairs_per_question``, ``gamma_next``,
  ``length_balance``, ``rejected_crop``, ``scores``, ``seed``).
"""

from __future__ import annotations

import inspect
import itertools
import math
import random
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
    "uvcot_pairs",
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


REJECTED_CROPS = ("own", "chosen")
UVCOT_SCORES = ("auto", "correct", "scores")


@register_builder("uvcot_pairs")
def uvcot_pairs(
    judged: list[dict],
    *,
    min_gap: float = 1.0,
    pairs_per_question: int | None = 2,
    gamma_next: float = 0.0,
    length_balance: bool = False,
    rejected_crop: str = "own",
    scores: str = "auto",
    seed: int = 0,
) -> tuple[list[dict], dict]:
    """UV-CoT's preference pairs (Zhao et al. 2025; official ``utils/pair_construction.py``,
    ``utils/get_preference_pairs.py``, ``utils/get_pairs_filter_shorten.py``).

    A judged question holds its turn-1 ``prompt`` and ``images``, its ``question``, and per sample k
    the region text ``regions[k]``, its crop ``crops[k]`` and the answer ``completions[k]``, with the
    judge's ``correct`` (a verifier) or ``scores``, and optionally ``next_scores``. Each sample's score

        s_k = s_cur,k + γ_next · s_next,k

    where s_cur is UV-CoT's evaluator score, −(number of false claims): a verifier's verdict counts
    as one claim (0 right, −1 wrong), a scoring judge's ``scores`` are taken as they are
    (``scores``: ``auto`` takes the verdict when there is one, since a verifier's ``scores`` are
    tie-broken, not claim counts). Then, as the official scripts do, in this order:

    1. every 2-combination (i, j) of a question's samples with |s_i − s_j| ≥ ``min_gap`` is a pair,
       the higher score chosen;
    2. ``pairs_per_question`` of them are sampled per question (all when there are no more), seeded
       by ``seed`` and the question's ``index`` (the official draw is unseeded);
    3. ``length_balance``: over all pairs, with L_w, L_l the chosen and rejected answers' lengths in
       whitespace words, for each r ∈ {0, 0.02, …, 0.98} drop the pairs with (L_l − L_w)/L_l > r
       (a winner much shorter than its loser: the score −#false claims favours short answers) and
       those whose answers are equal, and keep the r minimising |avg L_w − avg L_l| / avg L_l (the
       smallest such r on ties).

    Rows (pair kind): the prompt and its ``images``; chosen/rejected = [assistant region, user: crop
    + :data:`~align.data.boxes.ANSWER_PROMPT` + question, assistant answer]
    (:func:`~align.data.boxes.uvcot_completion`); ``chosen_images`` = [the winner's crop];
    ``rejected_images`` = [the loser's own crop] (``rejected_crop="own"``, as the paper describes) or
    [the winner's crop] (``"chosen"``: what the official training code feeds, which scores y_l after
    the winner's crop); ``scores`` = [s_w, s_l] for the score margin. Returns (rows, stats)."""
    if rejected_crop not in REJECTED_CROPS:
        raise ValueError(f"rejected_crop must be one of {REJECTED_CROPS}, got {rejected_crop!r}")
    if scores not in UVCOT_SCORES:
        raise ValueError(f"scores must be one of {UVCOT_SCORES}, got {scores!r}")
    if not min_gap > 0:
        raise ValueError(f"min_gap must be > 0 (a pair needs a preference), got {min_gap}")
    if pairs_per_question is not None and pairs_per_question < 1:
        raise ValueError(f"pairs_per_question must be >= 1 (or null: every pair), got {pairs_per_question}")
    from align.data.boxes import box_question, uvcot_completion

    pairs, candidates, without = [], 0, 0
    for item in judged:
        s = _uvcot_scores(item, scores, gamma_next)
        made = [(i, j) if s[i] >= s[j] else (j, i) for i, j in itertools.combinations(range(len(s)), 2)
                if abs(s[i] - s[j]) >= min_gap]  # fmt: skip
        candidates += len(made)
        without += not made
        if pairs_per_question is not None and len(made) > pairs_per_question:
            made = random.Random(f"{seed}:{item.get('index')}").sample(made, pairs_per_question)
        pairs += [(item, s, w, l) for w, l in made]
    sampled = len(pairs)
    ratio = None
    if length_balance and pairs:
        answers = [(item["completions"][w], item["completions"][l]) for item, _, w, l in pairs]
        keep, ratio = balance_lengths(answers)
        pairs = [pairs[i] for i in keep]

    rows = []
    for item, s, w, l in pairs:
        question = item.get("question") or box_question(item["prompt"])
        crops = item["crops"]
        rows.append({
            "prompt": _messages(item["prompt"]),
            "images": list(item.get("images") or []),
            "chosen": uvcot_completion(item["regions"][w], question, item["completions"][w]),
            "rejected": uvcot_completion(item["regions"][l], question, item["completions"][l]),
            "chosen_images": [crops[w]],
            "rejected_images": [crops[w] if rejected_crop == "chosen" else crops[l]],
            "scores": [s[w], s[l]],
        })  # fmt: skip
    stats = {"questions": len(judged), "pairs": len(rows), "candidate_pairs": candidates, "sampled_pairs": sampled,
             "no_pair": without, "length_ratio": ratio, "dropped_by_length": sampled - len(rows)}  # fmt: skip
    return rows, stats


def _uvcot_scores(item: dict, source: str, gamma_next: float) -> list[float]:
    """s_k = s_cur,k + γ_next · s_next,k for one judged question (see :func:`uvcot_pairs`)."""
    where = f"prompt {item.get('index')}"
    if source == "auto":
        source = "correct" if "correct" in item else "scores"
    if source not in item:
        raise ValueError(f"{where}: uvcot_pairs needs the judge's {source!r} (it gave "
                         f"{', '.join(k for k in ('correct', 'scores') if k in item) or 'neither'})")  # fmt: skip
    for key in ("regions", "crops"):
        if len(item.get(key) or []) != len(item["completions"]):
            raise ValueError(f"{where}: uvcot_pairs needs {key!r}, one per sample ({len(item['completions'])})")
    if source == "correct":
        current = [0.0 if ok else -1.0 for ok in item["correct"]]
    else:
        current = [float(v) for v in item["scores"]]
    if gamma_next == 0:
        return current
    if len(item.get("next_scores") or []) != len(current):
        raise ValueError(f"{where}: gamma_next={gamma_next} needs 'next_scores', one per sample ({len(current)})")
    return [c + gamma_next * float(n) for c, n in zip(current, item["next_scores"])]


def balance_lengths(pairs: list[tuple[str, str]]) -> tuple[list[int], float]:
    """The official length balancing (``utils/get_pairs_filter_shorten.py``, ``cal_pair_search_difflen``)
    on (chosen, rejected) answer texts: the indices of the pairs kept and the ratio r chosen (see
    :func:`uvcot_pairs`).

    Where the official code divides by zero, here: a rejected answer of no words gives (L_l − L_w)/L_l
    = −inf (kept by the length rule), and an r that keeps no pair, or whose rejected answers average
    no words, scores +inf."""
    lengths = [(len(w.split()), len(l.split())) for w, l in pairs]
    best: tuple[float, float, list[int]] | None = None
    for step in range(50):
        r = step * 0.02  # numpy.arange(0, 1, 0.02)'s values
        kept = [i for i, ((w, l), (lw, ll)) in enumerate(zip(pairs, lengths))
                if ((ll - lw) / ll if ll else -math.inf) <= r and w.strip() != l.strip()]  # fmt: skip
        avg_w = sum(lengths[i][0] for i in kept) / max(1, len(kept))
        avg_l = sum(lengths[i][1] for i in kept) / max(1, len(kept))
        gap = abs(avg_w - avg_l) / avg_l if avg_l else math.inf
        if best is None or gap < best[0]:  # strictly less: the smallest r on ties, as pandas' idxmin
            best = (gap, r, kept)
    return best[2], best[1]
