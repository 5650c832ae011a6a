"""Validation errors name the source file, the row (0-based) and the field, before any training."""

import json
import math

import pytest

from align.data import DataValidationError, load_preference_dataset
from align.data.formats import MAX_REPORTED_ERRORS, detect_kind

USER = {"role": "user", "content": "What is 7 times 8?"}
GOOD = {"role": "assistant", "content": "56"}
BAD = {"role": "assistant", "content": "54"}
PAIR = {"prompt": "Q: 7 * 8?", "chosen": " 56", "rejected": " 54"}
CONV = {"prompt": [USER], "chosen": [GOOD], "rejected": [BAD]}
LIST = {"prompt": "Q", "completions": ["a", "b", "c", "d"]}


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))  # json.dumps writes NaN as NaN
    return path


# (rows, kind, bad row, field, message fragment): one bad row after good ones.
CASES = {
    "missing column": (
        [PAIR, {"prompt": "p", "chosen": "a"}],
        None,
        1,
        "rejected",
        "missing; fields found: chosen, prompt",
    ),
    "null value": ([PAIR, {**PAIR, "rejected": None}], None, 1, "rejected", "missing"),
    "empty string": ([PAIR, PAIR, {**PAIR, "chosen": ""}], None, 2, "chosen", "empty completion"),
    "whitespace only": ([PAIR, {**PAIR, "rejected": " \n\t"}], None, 1, "rejected", "empty completion"),
    "empty message list": ([CONV, {**CONV, "chosen": []}], None, 1, "chosen", "empty completion (no messages)"),
    "blank message": (
        [CONV, {**CONV, "rejected": [{"role": "assistant", "content": "  "}]}],
        None,
        1,
        "rejected",
        "empty completion",
    ),
    "chosen is an int": ([PAIR, {**PAIR, "chosen": 5}], None, 1, "chosen", "expected a string or a list"),
    "message without role": (
        [CONV, {**CONV, "chosen": [{"content": "56"}]}],
        None,
        1,
        "chosen",
        "message 0 must be a dict with string 'role' and 'content'",
    ),
    "message not a dict": ([CONV, {**CONV, "prompt": ["hi"]}], None, 1, "prompt", "message 0 must be a dict"),
    "scores not numbers": (
        [{**PAIR, "scores": [1, 2]}, {**PAIR, "scores": ["high", "low"]}],
        None,
        1,
        "scores",
        "expected a number, got str",
    ),
    "scores not a list": ([{**PAIR, "scores": 3.0}], None, 0, "scores", "expected a list of 2 numbers"),
    "scores length": (
        [{**PAIR, "scores": [1, 2]}, {**PAIR, "scores": [1.0]}],
        None,
        1,
        "scores",
        "has 1 values but the row has 2 completions",
    ),
    "returns length": ([{**LIST, "returns": [1, 2, 3]}], "list", 0, "returns", "has 3 values but the row has 4"),
    "NaN score": ([{**PAIR, "scores": [1, 2]}, {**PAIR, "scores": [math.nan, 1.0]}], None, 1, "scores", "NaN"),
    "infinite return": ([{**LIST, "returns": [1, 2, math.inf, 0]}], None, 0, "returns", "NaN or infinite"),
    "win rate above 1": ([{**PAIR, "win_rates": [1.2, 0.1]}], None, 0, "win_rates", "probability 1.2 outside [0, 1]"),
    "pair_prob below 0": (
        [{**PAIR, "pair_prob": 0.5}, {**PAIR, "pair_prob": -0.1}],
        None,
        1,
        "pair_prob",
        "outside [0, 1]",
    ),
    "label 2": ([{"prompt": "p", "completion": "c", "label": 2}], "single", 0, "label", "probability 2.0 outside"),
    "positive ref logp": (
        [{**PAIR, "ref_chosen_logps": 1.5, "ref_rejected_logps": -3}],
        None,
        0,
        "ref_chosen_logps",
        "log-probability 1.5 > 0",
    ),
    "half of ref logps": ([{**PAIR, "ref_chosen_logps": -1.5}], None, 0, "ref_rejected_logps", "missing"),
    "K mismatch": (
        [LIST, LIST, {**LIST, "completions": ["a", "b", "c"]}],
        "list",
        2,
        "completions",
        "row has 3 completions but row 0 had 4",
    ),
    "list of one": ([{**LIST, "completions": ["a"]}], "list", 0, "completions", "at least 2 completions"),
    "completions not a list": ([{**LIST, "completions": "a"}], "list", 0, "completions", "expected a list"),
    "empty prompt": ([PAIR, {**PAIR, "prompt": "  "}], None, 1, "prompt", "empty prompt"),
    "empty prompt messages": ([CONV, {**CONV, "prompt": []}], None, 1, "prompt", "empty prompt"),
    "implicit prompt, nothing shared": ([{"chosen": "abc", "rejected": "xyz"}], None, 0, "prompt", "none could be"),
    "implicit prompt, no answer": ([{"chosen": [USER, GOOD], "rejected": [USER]}], None, 0, "prompt", "none could be"),
    "mixed formats in a row": (
        [{"prompt": "Q", "completions": ["a", [GOOD]]}],
        None,
        0,
        "completions[1]",
        "mix conversational",
    ),
    "conversational prompt, string answers": ([{**PAIR, "prompt": [USER]}], None, 0, "chosen", "mix conversational"),
    "mixed formats across rows": ([PAIR, CONV], None, 1, "prompt", "row is conversational but row 0 is standard"),
    "optional field on some rows": ([{**PAIR, "scores": [1, 2]}, PAIR], None, 1, "scores", "missing here but present"),
    "row not an object": ([PAIR, ["a", "b"]], None, 1, "<row>", "expected a JSON object"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_validation_error_names_file_row_and_field(tmp_path, case):
    rows, kind, row, field, fragment = CASES[case]
    path = write(tmp_path / "train.jsonl", rows)
    with pytest.raises(DataValidationError) as info:
        load_preference_dataset(path, kind=kind)
    message = str(info.value)
    assert message.startswith(f"{path}: row {row}: field '{field}': "), message
    assert fragment in message, message
    assert isinstance(info.value, ValueError)


def test_unknown_columns_name_the_columns_found(tmp_path):
    path = write(tmp_path / "train.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(DataValidationError, match=r"train\.jsonl: cannot tell .* columns found \(answer, question\)"):
        load_preference_dataset(path)
    with pytest.raises(DataValidationError, match=r"train\.jsonl: no rows"):
        load_preference_dataset(write(path, []))


def test_many_bad_rows_are_collected_with_a_count(tmp_path):
    rows = [PAIR if i % 3 == 0 else {**PAIR, "chosen": ""} for i in range(30)]  # 20 bad rows
    with pytest.raises(DataValidationError) as info:
        load_preference_dataset(write(tmp_path / "train.jsonl", rows))
    message, errors = str(info.value), info.value.errors
    assert message.startswith(f"20 of 30 rows are invalid (first {MAX_REPORTED_ERRORS} shown)")
    assert len(errors) == MAX_REPORTED_ERRORS
    assert errors[0] == f"{tmp_path / 'train.jsonl'}: row 1: field 'chosen': empty completion"
    assert errors[1].startswith(f"{tmp_path / 'train.jsonl'}: row 2: ") and all(e in message for e in errors)


def test_a_few_bad_rows_are_all_shown(tmp_path):
    rows = [PAIR, {**PAIR, "chosen": 1}, {**PAIR, "scores": [1]}]
    with pytest.raises(DataValidationError, match=r"^2 of 3 rows are invalid \(all shown\)") as info:
        load_preference_dataset(write(tmp_path / "train.jsonl", rows))
    assert [e.split(": ")[1] for e in info.value.errors] == ["row 1", "row 2"]


@pytest.mark.parametrize(
    ("columns", "kind"),
    [
        (["prompt", "chosen", "rejected"], "pair"),
        (["chosen", "rejected"], "pair"),
        (["prompt", "completions", "returns"], "list"),
        (["prompt", "completion", "label"], "single"),
        (["prompt", "answer"], None),
    ],
)
def test_detect_kind(columns, kind):
    assert detect_kind(columns) == kind
