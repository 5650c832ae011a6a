"""GSM8K answer verifier: the official ``#### N`` convention first, math-verify as the fallback.

Extraction of a completion's answer:

1. the marked answer: the number after the first ``####`` (GSM8K's own format), read leniently
   (``#### $18``, ``####18``, ``#### 18.00`` all read 18, where lm-evaluation-harness's
   ``strict-match`` rejects them: see :mod:`align.evaluation.gsm8k`). If such a line exists it wins,
   even if other numbers follow it (a model that keeps generating after its answer is still judged
   on the answer it marked);
2. otherwise math-verify (``math_verify.parse``) finds the answer: ``\\boxed{18}``, "The answer is
   18", or the last number of the text.

Numbers are normalised before comparison: thousands separators, a leading ``$``, trailing zeros
and a trailing ``.`` go ("1,080" == "1080", "$18.00" == "18", "18." == "18"; "-3" stays "-3").
A reference may be a bare answer ("72") or a full GSM8K solution ending in "#### 72".
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from align.rewards.base import Prompt, RewardError
from align.rewards.registry import register_reward

__all__ = ["GSM8KVerifier", "extract_answer", "marked_answer", "normalize_number"]

# "#### 1,080", "#### $18.00", "#### -3", "#### 18." (the final "." is punctuation, not a decimal point)
_FINAL = re.compile(r"####\s*\$?\s*(-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)")
_TIMEOUT_S = 5


def normalize_number(text: str) -> str | None:
    """Canonical decimal form of a written number, or None if ``text`` is not one.

    ``"1,080"`` → ``"1080"``, ``"$18.00"`` → ``"18"``, ``"18."`` → ``"18"``, ``"0.50"`` → ``"0.5"``,
    ``"-3"`` → ``"-3"``.
    """
    cleaned = text.strip().replace(",", "").replace("$", "").rstrip(".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    canonical = format(value.normalize(), "f")
    return "0" if canonical == "-0" else canonical


def _math_verify_timeout() -> int | None:
    # math-verify times out with signal.alarm, which only works on the main thread; elsewhere
    # (a judge thread pool, a data-loader thread) it refuses to run unless the timeout is off.
    return _TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


def _parse(text: str) -> list[Any]:
    from math_verify import parse

    return parse(text, parsing_timeout=_math_verify_timeout())


def marked_answer(text: str) -> str | None:
    """The normalised number after the first ``####`` of ``text`` (GSM8K's format, leniently read), or None."""
    match = _FINAL.search(text)
    return None if match is None else normalize_number(match.group(1))


def extract_answer(text: str) -> str | None:
    """The answer of a completion or solution: the ``#### N`` number if there is one, else
    math-verify's extraction; numbers normalised (:func:`normalize_number`); None if no answer."""
    marked = marked_answer(text)
    if marked is not None:
        return marked
    parsed = _parse(text)
    if not parsed:
        return None
    as_written = str(parsed[-1])  # math-verify returns [sympy expression, extracted string]
    return normalize_number(as_written) or normalize_number(str(parsed[0])) or as_written


def _reference_answer(reference: str) -> str:
    """A reference's answer: "#### N" of a full solution, else the bare answer (normalised if a number)."""
    answer = marked_answer(reference)
    if answer is None:
        answer = normalize_number(reference) or reference.strip()
    if not answer:
        raise ValueError(f"the reference {reference[:60]!r} holds no answer")
    return answer


def _is_correct(completion: str, reference: str) -> bool:
    gold = _reference_answer(reference)
    marked = marked_answer(completion)
    if marked is not None and normalize_number(gold) is not None:
        return marked == gold
    from math_verify import verify

    gold_parsed = _parse(gold)
    if not gold_parsed:
        raise ValueError(f"math-verify cannot parse the reference answer {gold!r}")
    # With a "#### N" line, only N is compared (the rest of the text never counts).
    answer_parsed = _parse(marked) if marked is not None else _parse(completion)
    return bool(verify(gold_parsed, answer_parsed, timeout_seconds=_math_verify_timeout()))


@register_reward("gsm8k_verifier", aliases=("gsm8k",))
class GSM8KVerifier:
    """Verifier for GSM8K-style answers: correct iff the completion's final answer equals the
    reference's (see the module docstring for extraction and normalisation)."""

    name = "gsm8k_verifier"

    def verify(self, prompts: Sequence[Prompt], completions: Sequence[str], references: Sequence[str]) -> list[bool]:
        out = []
        for i, (prompt, completion, reference) in enumerate(zip(prompts, completions, references, strict=True)):
            try:
                out.append(_is_correct(completion, reference))
            except Exception as err:
                raise RewardError(self.name, f"{type(err).__name__}: {err}", index=i, prompt=prompt) from err
        return out

    @staticmethod
    def extract_answer(text: str) -> str | None:
        return extract_answer(text)
