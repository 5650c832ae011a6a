"""A small GSM8K preference set: the gold solution against the same solution with a wrong final answer.

Such pairs differ only in the answer tokens, which makes them a sharp probe of whether an objective
moves probability mass onto the correct number (and of likelihood drift on the shared reasoning).
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

__all__ = ["LOCAL_GSM8K_TEST", "LOCAL_GSM8K_TRAIN", "builtin_gsm8k_pairs", "builtin_gsm8k_prompts", "corrupt_solution", "final_answer", "gsm8k_pairs", "load_gsm8k"]

# The shared copy next to the project checkout (``../shared/data/gsm8k`` from the project root).
LOCAL_GSM8K_TRAIN = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "gsm8k" / "train.jsonl"
LOCAL_GSM8K_TEST = LOCAL_GSM8K_TRAIN.with_name("test.jsonl")

_NUMBER = r"-?\d+(?:,\d{3})*"
_FINAL = re.compile(rf"####\s*({_NUMBER})\s*$")


def load_gsm8k(local_file: str | Path | None = None, split: str = "train") -> list[dict]:
    """GSM8K rows ``{question, answer}`` from a local JSONL file if it exists, else from the Hub."""
    if local_file is not None and Path(local_file).is_file():
        with open(local_file, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    from datasets import load_dataset

    return load_dataset("openai/gsm8k", "main", split=split).to_list()


def final_answer(solution: str) -> str:
    """The number after ``####`` as written (e.g. ``"1,200"``); ValueError if there is none."""
    match = _FINAL.search(solution)
    if match is None:
        raise ValueError(f"no final '#### N' answer at the end of {solution[-60:]!r}")
    return match.group(1)


def _wrong_number(gold: int, rng: random.Random) -> int:
    """gold ± an offset in 1..9, on the same side of zero as gold (so never negative unless gold is)."""
    offset = rng.randint(1, 9)
    wrong = gold + rng.choice((-1, 1)) * offset
    if (wrong < 0) != (gold < 0):
        wrong = gold - offset if gold < 0 else gold + offset
    return wrong


# A whole number as written in the reasoning: "72", "1,200", "8.00", "-7" (not the "2" of "x2" or of "72").
_TOKEN = re.compile(r"(?<![\w.,])-?\d+(?:,\d{3})*(?:\.\d+)?(?!\w|[.,]\d)")


def _written_like(value: int, token: str) -> str:
    """``value`` in the style of ``token``: thousands separators and decimal places kept."""
    decimals = len(token.partition(".")[2])
    return f"{value:{',' if ',' in token else ''}.{decimals}f}"


def corrupt_solution(solution: str, rng: random.Random) -> str:
    """The solution with a wrong final answer: the number after ``####`` and, consistently, the last
    number in the reasoning equal to it (in any style: "1200" for "1,200", "8.00" for "8") change.

    Only those two spans change, so the pair isolates the answer rather than the reasoning style.
    """
    gold_text = final_answer(solution)
    gold = int(gold_text.replace(",", ""))
    wrong = _wrong_number(gold, rng)
    match = _FINAL.search(solution)
    body = solution[: match.start()]
    same = [t for t in _TOKEN.finditer(body) if float(t.group().replace(",", "")) == gold]
    if same:
        last = same[-1]
        body = body[: last.start()] + _written_like(wrong, last.group()) + body[last.end() :]
    final = _written_like(wrong, gold_text)
    return body + solution[match.start() : match.start(1)] + final + solution[match.end(1) :]


def gsm8k_pairs(
    rows: list[dict], *, num_examples: int, num_eval: int = 0, seed: int = 0
) -> tuple[list[dict], list[dict]]:
    """Build (train, eval) conversational preference pairs from GSM8K rows, deterministically in ``seed``.

    Rows are shuffled with ``seed``; the first ``num_examples`` make the train pairs and the next
    ``num_eval`` the eval pairs (disjoint questions). Each wrong answer is drawn from an RNG seeded by
    ``seed`` and the row's GSM8K index, so a pair does not change with ``num_examples``.
    """
    if num_examples + num_eval > len(rows):
        raise ValueError(f"asked for {num_examples} + {num_eval} pairs but there are only {len(rows)} GSM8K rows")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    pairs = []
    for index in order[: num_examples + num_eval]:
        row = rows[index]
        rejected = corrupt_solution(row["answer"], random.Random(f"{seed}:{index}"))
        pairs.append(
            {
                "prompt": [{"role": "user", "content": row["question"]}],
                "chosen": [{"role": "assistant", "content": row["answer"]}],
                "rejected": [{"role": "assistant", "content": rejected}],
            }
        )
    return pairs[:num_examples], pairs[num_examples:]


def builtin_gsm8k_pairs(split: str = "train") -> list[dict]:
    """The ``builtin:gsm8k_pairs`` dataset: 256 train / 64 eval pairs with seed 0 (the script's defaults).

    Both come from GSM8K's train split (disjoint questions), leaving its test split to accuracy evaluation.
    """
    train, evaluation = gsm8k_pairs(load_gsm8k(LOCAL_GSM8K_TRAIN), num_examples=256, num_eval=64, seed=0)
    if split == "train":
        return train
    if split in ("test", "eval", "validation"):
        return evaluation
    raise ValueError(
        f"builtin:gsm8k_pairs has the splits 'train' and 'test' (alias 'eval', 'validation'), not {split!r}"
    )


def builtin_gsm8k_prompts(split: str = "train") -> list[dict]:
    """The ``builtin:gsm8k`` prompt set for on-policy loops: GSM8K problems as chat prompts with the
    final ``answer`` and the gold ``solution`` (for the verifier and iterative RPO's gold winner).
    Splits: ``train`` (7,473) and ``test`` (1,319), from ../shared/data/gsm8k or the hub."""
    if split not in ("train", "test"):
        raise ValueError(f"builtin:gsm8k has the splits 'train' and 'test', not {split!r}")
    rows = load_gsm8k(LOCAL_GSM8K_TRAIN if split == "train" else LOCAL_GSM8K_TEST, split=split)
    return [
        {"prompt": [{"role": "user", "content": row["question"]}], "answer": final_answer(row["answer"]), "solution": row["answer"]}
        for row in rows
    ]
