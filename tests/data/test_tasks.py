"""The arithmetic task: seeded, split by problem, correct answers, loadable as builtin:arithmetic (no model)."""

import json
import operator
import os
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import Dataset

from align.data import (
    DataValidationError,
    arithmetic_problems,
    builtin_arithmetic,
    load_preference_dataset,
    load_prompt_dataset,
    read_rows,
    write_jsonl,
)
from align.data.gsm8k import LOCAL_GSM8K_TRAIN
from align.data.tasks import ARITHMETIC_FORMS, ARITHMETIC_PROMPT, DEFAULT_FORMS, _check, _extract, arithmetic_pool

ROOT = Path(__file__).resolve().parents[2]
OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}
ALL_FORMS = tuple(ARITHMETIC_FORMS)


def problem(row):
    """(a, op, b) read back from the gold solution "a op b = r\\n#### r"."""
    a, op, b = row["solution"].split("\n")[0].split(" = ")[0].split(" ")
    return int(a), op, int(b)


def canonical(p):
    a, op, b = p
    return (min(a, b), op, max(a, b)) if op in "+*" else p


def test_rows_have_the_promised_shape_and_correct_answers():
    rows = arithmetic_problems(200, seed=0, forms=ALL_FORMS) + arithmetic_problems(60, seed=0, split="test")
    for row in rows:
        assert set(row) == {"prompt", "answer", "solution"}
        (message,) = row["prompt"]
        assert message["role"] == "user"
        a, op, b = problem(row)
        assert message["content"] == ARITHMETIC_PROMPT.format(a=a, op=op, b=b)
        assert row["answer"] == str(OPS[op](a, b))  # the expression, evaluated independently
        assert row["solution"] == f"{a} {op} {b} = {row['answer']}\n#### {row['answer']}"
        assert int(row["answer"]) >= 0
        assert _check(row["solution"], row["answer"])  # the gold solution passes the checker


def test_deterministic_in_seed_and_distinct():
    a = arithmetic_problems(256, seed=3)
    assert arithmetic_problems(256, seed=3) == a
    assert arithmetic_problems(256, seed=4) != a
    assert len({problem(r) for r in a}) == 256  # no problem twice
    assert {problem(r) for r in arithmetic_problems(40, seed=3)} <= {
        problem(r) for r in arithmetic_problems(281, seed=3)
    }


def test_train_and_test_are_disjoint_by_problem_for_every_seed():
    train = {canonical(p) for ps in arithmetic_pool("train", ALL_FORMS).values() for p in ps}
    test = {canonical(p) for ps in arithmetic_pool("test", ALL_FORMS).values() for p in ps}
    assert train and test and not train & test  # 3 * 7 and 7 * 3 never land on both sides
    everything = {canonical(p) for form in ARITHMETIC_FORMS.values() for p in form.problems()}
    assert train | test == everything
    for seed in range(5):
        drawn_train = {canonical(problem(r)) for r in arithmetic_problems(256, seed=seed)}
        drawn_test = {canonical(problem(r)) for r in arithmetic_problems(64, seed=seed, split="eval")}
        assert drawn_train <= train and drawn_test <= test


def test_sizes_and_form_mix():
    pool_train, pool_test = arithmetic_pool("train"), arithmetic_pool("test")
    assert sum(map(len, pool_train.values())) >= 256 and sum(map(len, pool_test.values())) >= 64
    rows = arithmetic_problems(64, seed=0, split="test")
    counts = {f: sum(problem(r) in ARITHMETIC_FORMS[f].problems() for r in rows) for f in DEFAULT_FORMS}
    assert counts == {
        "mul1": len(pool_test["mul1"]),
        "mul12": 64 - len(pool_test["mul1"]),
    }  # round-robin until mul1 ran out
    first_half = rows[:32]
    assert (
        3 <= sum(problem(r) in ARITHMETIC_FORMS["mul1"].problems() for r in first_half) <= 12
    )  # spread, not front-loaded
    with pytest.raises(ValueError, match="only"):
        arithmetic_problems(10_000, seed=0)
    with pytest.raises(ValueError, match="unknown arithmetic forms"):
        arithmetic_problems(5, seed=0, forms=("div",))
    with pytest.raises(ValueError, match="not 'dev'"):
        arithmetic_problems(5, seed=0, split="dev")


def test_builtin_loads_offline_through_every_reader(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    train, test = builtin_arithmetic("train"), builtin_arithmetic("test")
    assert len(train) == 256 and len(test) == 64
    assert train == arithmetic_problems(256, seed=0) and test == arithmetic_problems(64, seed=0, split="test")
    ((name, rows),) = read_rows("builtin:arithmetic", "test")
    assert name == "builtin:arithmetic [test]" and rows == test
    dataset = load_prompt_dataset("builtin:arithmetic")
    assert isinstance(dataset, Dataset) and dataset.column_names == ["prompt", "answer", "solution"]
    assert len(dataset) == 256 and dataset[0] == train[0]
    assert len(load_prompt_dataset("builtin:arithmetic", split="validation")) == 64
    with pytest.raises(DataValidationError):  # prompt rows are not preference rows
        load_preference_dataset("builtin:arithmetic")


def test_load_prompt_dataset_from_files_and_bad_rows(tmp_path):
    rows = [{"prompt": "What is 2 + 2?", "answer": 4, "extra": 1}, {"prompt": "Hi"}]
    dataset = load_prompt_dataset(write_jsonl(rows, tmp_path / "p.jsonl"))
    assert dataset.to_list() == [{"prompt": "What is 2 + 2?", "answer": "4"}, {"prompt": "Hi", "answer": None}]
    chat = [{"prompt": [{"role": "user", "content": "Hi"}], "solution": "Hello"}]
    assert load_prompt_dataset(write_jsonl(chat, tmp_path / "chat" / "c.jsonl").parent).to_list() == chat  # a folder
    bad = write_jsonl([{"prompt": "ok"}, {"prompt": ""}, {"question": "x"}], tmp_path / "bad.jsonl")
    with pytest.raises(DataValidationError, match=r"bad\.jsonl: row 1: field 'prompt'") as err:
        load_prompt_dataset(bad)
    assert len(err.value.errors) == 2


@pytest.mark.parametrize(
    ("text", "answer", "ok"),
    [
        ("7 * 8 = 56", "56", True),
        ("7 * 8 = 56\n#### 56", "56", True),
        ("#### 56\nor maybe 54", "56", True),  # the marked answer wins over later numbers
        ("7 * 8 = 54\n#### 56.0", "56", True),  # numeric comparison
        ("The answer is 1,200.", "1200", True),
        ("7 * 8 = 56. So 7 * 8 is not 57", "56", False),  # else the last number
        ("#### N", "56", False),
        ("I cannot say.", "56", False),
        ("2 - 9 = -7", "-7", True),
    ],
)
def test_check(text, answer, ok):
    assert _check(text, answer) is ok


def test_extract():
    assert _extract("a #### 3 b #### 4 c 5") == "4" and _extract("x 1 y 2.5") == "2.5" and _extract("none") is None


def test_script_writes_the_builtin_set(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "data" / "arithmetic_task.py"), "--output_dir", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert f"wrote 256 train problems to {tmp_path / 'train.jsonl'}" in result.stdout
    for split in ("train", "test"):
        rows = [json.loads(line) for line in (tmp_path / f"{split}.jsonl").read_text().splitlines()]
        assert rows == builtin_arithmetic(split)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test.jsonl", "train.jsonl"]  # no temp files left


@pytest.mark.skipif(not LOCAL_GSM8K_TRAIN.exists(), reason="needs ../shared/data/gsm8k (the hub is off in tests)")
def test_builtin_gsm8k_prompts_carry_the_final_answer_and_the_solution():
    from align.loops import load_prompt_rows

    train, test = load_prompt_rows("builtin:gsm8k", "train"), load_prompt_rows("builtin:gsm8k", "test")
    assert len(train) == 7473 and len(test) == 1319
    row = train[0]
    assert row["prompt"][0]["role"] == "user" and row["solution"].rstrip().endswith(f"#### {row['answer']}")
    assert {r["prompt"][0]["content"] for r in test[:50]}.isdisjoint(r["prompt"][0]["content"] for r in train)
