"""The GSM8K verifier on tricky answers: strict '#### N' first, math-verify as the fallback."""

from __future__ import annotations

import threading

import pytest

from align.rewards import GSM8KVerifier, RewardError, VerifierReward, extract_answer, load_reward, normalize_number

SOLUTION = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1,080", "1080"),
        ("$18.00", "18"),
        ("18.", "18"),
        ("-3", "-3"),
        ("0.50", "0.5"),
        ("-0", "0"),
        ("seventy", None),
        ("", None),
    ],
)
def test_normalize_number(text, expected):
    assert normalize_number(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("So the total is 1,000 + 80.\n#### 1,080", "1080"),
        ("#### $18.00", "18"),
        ("####18", "18"),  # read leniently, unlike lm-eval's strict-match (align.evaluation.gsm8k)
        ("#### -3", "-3"),
        ("#### 18.", "18"),
        # The '#### N' line wins even when other numbers follow it.
        ("3 + 2 = 5\n#### 5\nNext question: Tom has 7 apples and buys 9 more.", "5"),
        # No '####': math-verify finds the answer.
        ("The answer is \\boxed{18}", "18"),
        ("She pays $18.00 in total.", "18"),
        ("In all, 48 + 24 = 72 clips, so the answer is 1,080", "1080"),
        ("I am not sure how to solve this.", None),
        ("####", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected
    assert GSM8KVerifier.extract_answer(text) == expected


@pytest.mark.parametrize(
    ("completion", "reference", "correct"),
    [
        ("#### 1,080", "1080", True),
        ("The answer is 1,080.", "#### 1080", True),
        ("#### $18.00", "18", True),
        ("Each costs $3, so she pays $18.00", "18", True),
        ("#### -3", "-3", True),
        ("#### 3", "-3", False),
        ("#### 18.", "18", True),
        ("#### 5\nThen 72 more and 72 again", "#### 5", True),
        ("#### 5\nThen 72 more and 72 again", "72", False),  # '####' wins over later numbers
        ("The answer is \\boxed{72}", SOLUTION, True),
        ("The answer is \\boxed{71}", SOLUTION, False),
        ("Natalia sold 72 clips.", SOLUTION, True),
        ("I don't know.", SOLUTION, False),
        ("", "72", False),
    ],
)
def test_verify(completion, reference, correct):
    verdicts = load_reward("gsm8k_verifier").verify(["q"], [completion], [reference])
    assert verdicts == [correct]
    assert type(verdicts[0]) is bool


def test_alias_and_name():
    assert isinstance(load_reward("gsm8k"), GSM8KVerifier)
    assert load_reward("gsm8k").name == "gsm8k_verifier"


def test_empty_reference_names_the_prompt():
    with pytest.raises(RewardError, match=r"'gsm8k_verifier' failed on prompt 1 \('second'\).*holds no answer"):
        GSM8KVerifier().verify(["first", "second"], ["#### 1", "#### 2"], ["1", "  "])


def test_works_off_the_main_thread():
    # math-verify's timeout uses signal.alarm, which raises off the main thread unless disabled.
    results: list[object] = []
    thread = threading.Thread(
        target=lambda: results.append(GSM8KVerifier().verify(["q"], ["The answer is \\boxed{72}"], ["72"]))
    )
    thread.start()
    thread.join()
    assert results == [[True]]


def test_verifier_reward_scores():
    reward = VerifierReward(GSM8KVerifier())
    completions = ["#### 72", "#### 70", "no answer here"]
    scores = reward.score(["q"] * 3, completions, ["72"] * 3)
    assert scores == pytest.approx([1.1 - 0.05 * 7 / 1000, 0.1 - 0.05 * 7 / 1000, -0.05 * 14 / 1000])
    # The length term saturates at 1000 characters.
    long = reward.score(["q"], ["x" * 5000 + " #### 72"], ["72"])
    assert long == pytest.approx([1.1 - 0.05])
    with pytest.raises(ValueError, match="needs references"):
        reward.score(["q"], ["#### 72"])
