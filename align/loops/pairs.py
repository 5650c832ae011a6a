"""Turn judged samples into preference pairs: SPPO's (y_w, y_l, P̂_w, P̂_l, p) and iterative RPO's
(correct, incorrect) pairs.

A judged prompt (one line of ``judged.jsonl``) holds the prompt, its K completions, and what the
judge said: ``win_rates`` (K) and ``preference`` (K×K) always, ``scores`` (K) for scoring judges,
``correct`` (K) for verifiers, and the prompt dataset's ``answer`` / ``solution`` when present.
"""

from __future__ import annotations

__all__ = ["rpo_pairs", "sppo_pairs"]


def _messages(prompt) -> list[dict]:
    return prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]


def _pair(prompt, chosen: str, rejected: str, **fields) -> dict:
    return {
        "prompt": _messages(prompt),
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        **fields,
    }


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


def rpo_pairs(judged: list[dict], *, pairs_per_prompt: int = 1, gold_as_winner: bool = True) -> tuple[list[dict], dict]:
    """Iterative RPO's pairs (Pang et al. 2024): winners are the correct samples, losers the
    incorrect ones; when no sample is correct the gold ``solution`` is the winner; up to
    ``pairs_per_prompt`` pairs per prompt, pairing winner i mod W with loser i mod L, so every
    distinct sample is used before any repeats. Prompts with no loser give no pair."""
    rows, with_gold, no_loser = [], 0, 0
    for item in judged:
        if "correct" not in item:
            raise ValueError(f"prompt {item.get('index')}: iterative RPO needs a verifier (correct / incorrect per sample)")
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
