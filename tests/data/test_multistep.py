"""The multi-step arithmetic task: seeded, split by problem, gold chains, and the step checker (no model)."""

import json
import operator
import os
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import Dataset

from align.data import (
    builtin_multistep,
    check_solution,
    load_prompt_dataset,
    multistep_problems,
    read_rows,
    step_spans,
)
from align.data.multistep import MULTISTEP_EXAMPLES, _split_of

ROOT = Path(__file__).resolve().parents[2]
OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}
WORDS = {"add": "+", "subtract": "-", "multiply by": "*"}


def problem(row):
    """(start, ((op, b), ...)) read back from the question "Start with 7. Multiply by 3, then add 2."."""
    head, rest = row["prompt"][-1]["content"].split(". ", 1)
    ops = []
    for part in rest.rstrip(".").replace(", then ", ", ").split(", "):
        words, b = part.lower().rsplit(" ", 1)
        ops.append((WORDS[words], int(b)))
    return int(head.removeprefix("Start with ")), tuple(ops)


# Start with 6. Add 3, multiply by 4, then subtract 5. -> 9, 36, 31
ROW = {
    "answer": "31",
    "steps": [
        {"a": 6, "op": "+", "b": 3, "result": 9},
        {"a": 9, "op": "*", "b": 4, "result": 36},
        {"a": 36, "op": "-", "b": 5, "result": 31},
    ],
}


def test_rows_have_the_promised_shape_and_a_correct_gold_chain():
    rows = multistep_problems(120, seed=0) + multistep_problems(40, seed=0, split="test")
    for row in rows:
        assert set(row) == {"prompt", "answer", "solution", "steps"}
        assert [m["role"] for m in row["prompt"]] == ["user", "assistant", "user", "assistant", "user"]
        start, ops = problem(row)
        value, lines = start, []
        for (op, b), step in zip(ops, row["steps"], strict=True):  # the chain, recomputed independently
            lines.append(f"{value} {op} {b} = {OPS[op](value, b)}")
            assert step == {"a": value, "op": op, "b": b, "result": OPS[op](value, b)}
            value = OPS[op](value, b)
            assert 1 <= value <= 50
        assert 2 <= len(ops) <= 4 and row["answer"] == str(value)
        assert row["solution"] == "\n".join(lines) + f"\n#### {value}"
        check = check_solution(row, row["solution"])  # the gold solution is right at every step
        assert check.step_correct == [True] * len(ops) and check.first_wrong is None and check.final_correct
        assert check.steps == lines and check.equations == len(ops)
    counts = [len(r["steps"]) for r in multistep_problems(120, seed=0)]
    assert {k: counts.count(k) for k in (2, 3, 4)} == {2: 80, 3: 20, 4: 20}  # N_OPS = (2, 2, 2, 2, 3, 4), cycled


def test_deterministic_in_seed_and_distinct():
    rows = multistep_problems(200, seed=3)
    assert multistep_problems(200, seed=3) == rows
    assert multistep_problems(200, seed=4) != rows
    assert len({problem(r) for r in rows}) == 200
    assert not {problem(r) for r in rows} & set(MULTISTEP_EXAMPLES)
    assert multistep_problems(5, seed=0, n_ops=(2,)) != multistep_problems(5, seed=0)
    assert all(len(r["steps"]) == 2 for r in multistep_problems(30, seed=0, n_ops=(2,)))
    with pytest.raises(ValueError, match="n_ops"):
        multistep_problems(5, seed=0, n_ops=(0, 2))
    with pytest.raises(ValueError, match="not 'dev'"):
        multistep_problems(5, seed=0, split="dev")


def test_train_and_test_are_disjoint_by_problem_for_every_seed():
    train = {problem(r) for seed in range(3) for r in multistep_problems(300, seed=seed)}
    test = {problem(r) for seed in range(3) for r in multistep_problems(100, seed=seed, split="eval")}
    assert not train & test
    assert all(_split_of(p, 25) == "train" for p in train) and all(_split_of(p, 25) == "test" for p in test)


def test_builtin_loads_through_read_rows():
    train, test = builtin_multistep("train"), builtin_multistep("validation")
    assert len(train) == 512 and len(test) == 128
    assert train == multistep_problems(512, seed=0) and test == multistep_problems(128, seed=0, split="test")
    ((name, rows),) = read_rows("builtin:multistep", "test")
    assert name == "builtin:multistep [test]" and rows == test
    dataset = load_prompt_dataset("builtin:multistep", split="test")  # prompt rows for the loops
    assert isinstance(dataset, Dataset) and len(dataset) == 128 and dataset[0]["answer"] == test[0]["answer"]


@pytest.mark.parametrize(
    ("text", "pieces"),
    [
        ("a\nb\n#### 3", ["a", "b"]),  # the answer line is not a step
        ("a\n\n  \nb\n", ["a", "b"]),  # empty and blank pieces are dropped, a trailing separator too
        ("a b #### 3", ["a b #### 3"]),  # no separator: one step
        ("#### 3\nmore", ["#### 3", "more"]),  # a #### line that is not last is a step
        ("#### 3", []),
        ("", []),
    ],
)
def test_step_spans(text, pieces):
    assert [text[s:e] for s, e in step_spans(text)] == pieces


def test_step_spans_with_a_paragraph_separator():
    text = " 6 + 3 = 9\n9 * 4 = 36\n\n\n\n36 - 5 = 31 \n\n#### 31\n"
    spans = step_spans(text, "\n\n")
    assert [text[s:e] for s, e in spans] == ["6 + 3 = 9\n9 * 4 = 36", "36 - 5 = 31"]
    assert spans[0] == (1, 21)
    with pytest.raises(ValueError, match="separator"):
        step_spans(text, "")


@pytest.mark.parametrize(
    ("completion", "correct", "first_wrong", "final"),
    [
        ("6 + 3 = 9\n9 * 4 = 36\n36 - 5 = 31\n#### 31", [True, True, True], None, True),
        ("6 + 3 = 9\n9 * 4 = 35\n35 - 5 = 30\n#### 30", [True, False, True], 1, False),  # arithmetic in step 2
        ("6 + 3 = 9\n9 - 5 = 4\n#### 4", [True, False], 1, False),  # "multiply by 4" skipped
        ("6 + 3 = 9\n9 * 4 = 36\n#### 36", [True, True], None, False),  # stopped early: no step is wrong
        ("6 + 3 = 9\n9 * 4 = 36\n36 - 5 = 31\n#### 30", [True, True, True], None, False),  # the #### line is wrong
        ("6 + 3 = 9\n9 * 4 = 36\n36 - 5 = 31\n31 + 1 = 32\n#### 32", [True, True, True, False], 3, False),  # extra
        ("3 + 6 = 9\n4 * 9 = 36\n36 - 5 = 31\n#### 31", [True, True, True], None, True),  # + and * commute
        ("6 + 3 = 9\n9 * 4 = 36\n5 - 36 = -31\n#### -31", [True, True, False], 2, False),  # - does not
        ("6 + 3 + 4 = 13\n13 * 4 = 52\n#### 52", [False, True], 0, False),  # a chain; then judged given 13
        ("Let's go.\n6 + 3 = 9\nNow multiply by 4.\n9 * 4 = 37\n#### 37", [True, True, True, False], 3, False),
        ("The answer is 31.", [True], None, True),  # prose is not checked
        ("6 + 3 = 9 9 * 4 = 36 36 - 5 = 31 #### 31", [True], None, True),  # no separator: one step
        ("6 + 3 = 9 9 * 4 = 36 36 - 6 = 30 #### 30", [False], 0, False),
        ("6 + 3 = 9\n9 * 4 = 36\n36 - 5 = 31\n\n#### 31\n", [True, True, True], None, True),  # trailing separator
        ("6 + 3 = 9\n\n\n9 * 4 = 36\n \n36 - 5 = 31\n#### 31", [True, True, True], None, True),  # empty steps
        ("6 + 3 = 9\n9 x 4 = 36\n36 − 5 = 31.\n#### 31", [True, True, True], None, True),  # x and − read
        ("Step 1: 6 + 3 = 9\nStep 2: 9 * 4 = 36\nStep 3: 36 - 5 = 31", [True, True, True], None, True),
        ("#### 31\n6 + 3 = 8", [True, False], 1, True),  # the first #### is the answer, as the verifier reads it
    ],
)
def test_check_solution(completion, correct, first_wrong, final):
    check = check_solution(ROW, completion)
    assert check.step_correct == correct and len(check.steps) == len(correct)
    assert check.first_wrong == first_wrong
    assert check.final_correct is final


def test_check_solution_splits_like_step_spans():
    text = "6 + 3 = 9\n9 * 4 = 36\n\n36 - 5 = 30\n\n#### 30"
    by_line, by_paragraph = check_solution(ROW, text), check_solution(ROW, text, separator="\n\n")
    assert by_line.steps == [text[s:e] for s, e in step_spans(text)] and by_line.first_wrong == 2
    assert by_paragraph.steps == ["6 + 3 = 9\n9 * 4 = 36", "36 - 5 = 30"] and by_paragraph.step_correct == [True, False]
    assert by_paragraph.equations == 3


def test_script_writes_the_builtin_set(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "data" / "multistep_task.py"), "--output_dir", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert f"wrote 512 train problems to {tmp_path / 'train.jsonl'}" in result.stdout
    for split in ("train", "test"):
        rows = [json.loads(line) for line in (tmp_path / f"{split}.jsonl").read_text().splitlines()]
        assert rows == builtin_multistep(split)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test.jsonl", "train.jsonl"]
