"""A verifiable arithmetic task sized for SmolLM2-135M-Instruct: the on-policy loops' default prompts.

Each problem is ``(a, op, b)`` drawn from a few easy *forms* (one-digit multiplication, one-digit
times a two-digit number, ...). A row is::

    {"prompt": [{"role": "user", "content": "What is 7 * 8? ... '#### N'."}],
     "answer": "56",                      # what a verifier compares with
     "solution": "7 * 8 = 56\\n#### 56"}   # a gold completion (iterative RPO's winner when no sample is right)

Train and test are disjoint *by problem*: a problem's split is fixed by a hash of its canonical
tuple (``3 * 7`` and ``7 * 3`` are one problem), not by the seed, so no seed's train set ever holds a
test problem. The seed only picks which problems are drawn and their order.

``builtin:arithmetic`` (:func:`builtin_arithmetic`, read by :func:`align.data.read_rows` like every
built-in) is 256 train / 64 test problems with seed 0; ``data/arithmetic_task.py`` writes the same
rows as JSONL and measures the built-in model on them. These are prompt rows, not preference rows, so
they load with :func:`load_prompt_dataset` (or ``read_rows``), not ``load_preference_dataset``.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from datasets import Dataset

from align.data.formats import DataValidationError

__all__ = [
    "ARITHMETIC_FORMS",
    "ARITHMETIC_PROMPT",
    "DEFAULT_FORMS",
    "Form",
    "arithmetic_pool",
    "arithmetic_problems",
    "builtin_arithmetic",
    "load_prompt_dataset",
]


@dataclass(frozen=True)
class Form:
    """Problems ``a op b`` for every ``a`` in ``a_range`` and ``b`` in ``b_range`` (inclusive bounds)."""

    op: str
    a_range: tuple[int, int]
    b_range: tuple[int, int]
    nonnegative: bool = True  # subtraction: keep only a >= b

    def problems(self) -> list[tuple[int, str, int]]:
        (a0, a1), (b0, b1) = self.a_range, self.b_range
        out = [(a, self.op, b) for a in range(a0, a1 + 1) for b in range(b0, b1 + 1)]
        if self.op == "-" and self.nonnegative:
            out = [p for p in out if p[0] >= p[2]]
        return out


ARITHMETIC_FORMS: dict[str, Form] = {
    "mul1": Form("*", (2, 9), (2, 9)),  # 7 * 8
    "mul12": Form("*", (2, 9), (11, 49)),  # 7 * 23
    "add2": Form("+", (10, 99), (10, 99)),  # 47 + 38
    "add21": Form("+", (10, 99), (2, 9)),  # 47 + 8
    "sub21": Form("-", (10, 99), (2, 9)),  # 47 - 8
}
# Drawn round-robin until a form runs out. The defaults hold 49 + 232 train and 15 + 80 test problems, so
# builtin:arithmetic is 49 + 207 train and 15 + 49 test. SmolLM2-135M-Instruct, greedy, on the 64 test
# problems: mul1 87%, mul12 27%, all 41% (addition and subtraction of two-digit numbers: under 10%).
DEFAULT_FORMS: tuple[str, ...] = ("mul1", "mul12")

# Short on purpose. Of the phrasings tried on SmolLM2-135M-Instruct this one gives the tidiest answers
# (mostly one line, "7 * 8 = 56"); it rarely writes "####" yet (the gold solutions teach that), and
# phrasings that made it write "####" more often put a wrong number after it.
ARITHMETIC_PROMPT = "Compute {a} {op} {b}. Reply with one line: #### followed by the result."

SPLITS = ("train", "test")
_SPLIT_ALIASES = {"train": "train", "test": "test", "eval": "test", "validation": "test"}
_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def _split_of(problem: tuple[int, str, int], test_percent: int) -> str:
    """``"test"`` for about ``test_percent``% of problems, fixed by a hash of the canonical problem."""
    a, op, b = problem
    if op in "+*":  # commutative: 3 * 7 and 7 * 3 are the same problem, so they share a split
        a, b = min(a, b), max(a, b)
    digest = hashlib.sha256(f"{a}{op}{b}".encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") % 100 < test_percent else "train"


def _canonical_split(split: str) -> str:
    if split not in _SPLIT_ALIASES:
        raise ValueError(
            f"arithmetic problems have the splits 'train' and 'test' (alias 'eval', 'validation'), not {split!r}"
        )
    return _SPLIT_ALIASES[split]


def arithmetic_pool(split: str, forms: Sequence[str] = DEFAULT_FORMS, *, test_percent: int = 25) -> dict[str, list]:
    """Every problem of each form that falls in ``split``, in a fixed order: ``{form: [(a, op, b), ...]}``."""
    split = _canonical_split(split)
    unknown = [f for f in forms if f not in ARITHMETIC_FORMS]
    if unknown or not forms:
        raise ValueError(f"unknown arithmetic forms {unknown}; known: {', '.join(ARITHMETIC_FORMS)}")
    return {f: [p for p in ARITHMETIC_FORMS[f].problems() if _split_of(p, test_percent) == split] for f in forms}


def _row(problem: tuple[int, str, int], template: str) -> dict:
    a, op, b = problem
    answer = str(_OPS[op](a, b))
    return {
        "prompt": [{"role": "user", "content": template.format(a=a, op=op, b=b)}],
        "answer": answer,
        "solution": f"{a} {op} {b} = {answer}\n#### {answer}",
    }


def arithmetic_problems(
    n: int,
    *,
    seed: int,
    split: str = "train",
    forms: Sequence[str] = DEFAULT_FORMS,
    test_percent: int = 25,
    template: str = ARITHMETIC_PROMPT,
) -> list[dict]:
    """``n`` distinct arithmetic problems of ``split``, deterministic in ``seed``.

    Each form's problems in the split are shuffled with ``seed`` and drawn round-robin across
    ``forms`` (a form that runs out drops out of the rotation); the drawn problems are then shuffled
    with ``seed``, so every slice of the list holds the forms in about the same proportions. Rows:
    ``prompt`` (one user message from ``template``), ``answer`` (the result as a string) and
    ``solution`` (``"a op b = r\\n#### r"``). A problem's split depends only on the problem and
    ``test_percent`` (about that share of problems is test), not on ``seed``, so train and test never
    share a problem; ``ValueError`` if the split has fewer than ``n`` problems of these forms.
    """
    pool = arithmetic_pool(split, forms, test_percent=test_percent)
    total = sum(len(v) for v in pool.values())
    if n > total:
        raise ValueError(f"asked for {n} {split} problems but forms {list(forms)} have only {total} in that split")
    queues = []
    for form, problems in pool.items():
        problems = list(problems)
        random.Random(f"{seed}:{form}").shuffle(problems)
        queues.append(problems)
    chosen: list[tuple[int, str, int]] = []
    order = list(range(len(queues)))
    random.Random(seed).shuffle(order)  # which form leads each round
    while len(chosen) < n:
        for q in order:
            if queues[q] and len(chosen) < n:
                chosen.append(queues[q].pop())
    random.Random(f"{seed}:order").shuffle(chosen)  # forms evenly spread, also once a small form ran out
    return [_row(p, template) for p in chosen]


def builtin_arithmetic(split: str = "train") -> list[dict]:
    """The ``builtin:arithmetic`` prompts: 256 train / 64 test problems, seed 0, the default forms."""
    split = _canonical_split(split)
    return arithmetic_problems(256 if split == "train" else 64, seed=0, split=split)


def load_prompt_dataset(source: str | os.PathLike | Dataset, split: str = "train") -> Dataset:
    """Prompt rows (``prompt`` + optional ``answer``/``solution``) from any source ``read_rows`` takes.

    ``source``: a JSONL/JSON/Parquet file or folder, a ``datasets.Dataset``, ``builtin:arithmetic``,
    or a hub id. Every row needs a non-empty ``prompt`` (a string or a list of ``{role, content}``
    messages); ``answer`` (stringified) and ``solution`` are kept when present, other columns dropped.
    Errors name the source and the row.
    """
    from align.data.loading import read_rows

    rows, errors = [], []
    for name, part in read_rows(source, split):
        for i, row in enumerate(part):
            prompt = row.get("prompt")
            if not _is_prompt(prompt):
                errors.append(f"{name}: row {i}: field 'prompt': expected a non-empty string or list of messages")
                continue
            item = {"prompt": prompt}
            for key in ("answer", "solution"):
                if row.get(key) is not None:
                    item[key] = str(row[key])
            rows.append(item)
    if errors:
        raise DataValidationError(f"{len(errors)} bad prompt rows:\n" + "\n".join(errors[:10]), errors)
    if not rows:
        raise DataValidationError(f"{source} [{split}]: no prompt rows")
    return Dataset.from_list(rows)


def _is_prompt(prompt) -> bool:
    if isinstance(prompt, str):
        return bool(prompt.strip())
    return (
        isinstance(prompt, list)
        and bool(prompt)
        and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in prompt
        )
    )


# -- a small private checker (the full verifiers live in align.rewards) ----------------------------

_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")
_MARKED = re.compile(r"####\s*\**\s*(-?\d+(?:,\d{3})*(?:\.\d+)?)")


def _extract(text: str) -> str | None:
    """The number after the last ``####`` if there is one, else the last number in ``text``."""
    marked = _MARKED.findall(text)
    if marked:
        return marked[-1]
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def _check(text: str, answer: str | float) -> bool:
    """Whether ``text``'s answer (see :func:`_extract`) equals ``answer`` numerically."""
    found = _extract(text)
    if found is None:
        return False
    try:
        return abs(float(found.replace(",", "")) - float(str(answer).replace(",", ""))) < 1e-9
    except ValueError:
        return False
