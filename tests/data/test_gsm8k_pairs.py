"""GSM8K pairs: the rejected solution differs from the gold one only in the final answer."""

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from align.data import corrupt_solution, final_answer, gsm8k_pairs, load_gsm8k, load_preference_dataset, write_jsonl

ROOT = Path(__file__).resolve().parents[2]
GSM8K_TRAIN = (ROOT / ".." / "shared" / "data" / "gsm8k" / "train.jsonl").resolve()
needs_gsm8k = pytest.mark.skipif(not GSM8K_TRAIN.is_file(), reason=f"{GSM8K_TRAIN} is absent")
NUMBER = re.compile(r"(\d+(?:,\d{3})*(?:\.\d+)?)")  # unsigned: a minus sign stays in the text between


def to_int(text):
    return int(text.replace(",", ""))


def value(text):
    return float(text.replace(",", ""))


def check_only_the_answer_changed(chosen, rejected):
    """Split both texts at numbers: same pieces except 1-2 numbers, gold → one wrong value, the last one final."""
    a, b = NUMBER.split(chosen), NUMBER.split(rejected)
    assert len(a) == len(b)
    changed = [(x, y) for x, y in zip(a, b) if x != y]
    gold, wrong = to_int(final_answer(chosen)), to_int(final_answer(rejected))
    assert 1 <= len(changed) <= 2 and a[-2] != b[-2]  # a[-1] is the text after the final number
    assert all(NUMBER.fullmatch(x) and value(x) == abs(gold) and value(y) == abs(wrong) for x, y in changed)
    assert wrong != gold and 1 <= abs(wrong - gold) <= 9 and (wrong < 0) == (gold < 0)


def test_corrupt_solution_handwritten_cases():
    rng = random.Random(0)
    solution = "She sold 48/2 = <<48/2=24>>24 clips.\nIn total 48+24 = <<48+24=72>>72 clips, not 72.5.\n#### 72"
    rejected = corrupt_solution(solution, rng)
    check_only_the_answer_changed(solution, rejected)
    wrong = final_answer(rejected)
    assert rejected == solution.replace("<<48+24=72>>72 clips", f"<<48+24=72>>{wrong} clips").replace(
        "#### 72", f"#### {wrong}"
    )
    # Thousands separators: the reasoning writes 1200, the answer 1,200; each keeps its own style.
    rejected = corrupt_solution("He pays 100*12 = <<100*12=1200>>1200 dollars.\n#### 1,200", random.Random(1))
    wrong = to_int(final_answer(rejected))
    assert rejected == f"He pays 100*12 = <<100*12=1200>>{wrong} dollars.\n#### {wrong:,}"
    # Negative gold stays negative; an answer absent from the reasoning only changes after ####.
    rejected = corrupt_solution("The change is 5-12.\n#### -7", random.Random(2))
    assert rejected.startswith("The change is 5-12.\n#### -") and final_answer(rejected) != "-7"
    with pytest.raises(ValueError, match="no final '#### N' answer"):
        corrupt_solution("The answer is 7.", rng)


def test_small_gold_answers_never_go_negative():
    for seed in range(200):
        wrong = to_int(final_answer(corrupt_solution("So 1.\n#### 1", random.Random(seed))))
        assert wrong >= 0 and wrong != 1


@needs_gsm8k
def test_every_gsm8k_train_solution_corrupts_cleanly():
    rows = load_gsm8k(GSM8K_TRAIN)
    assert len(rows) > 7000
    for i, row in enumerate(rows):
        check_only_the_answer_changed(row["answer"], corrupt_solution(row["answer"], random.Random(i)))


@needs_gsm8k
def test_pairs_from_the_shared_gsm8k(tmp_path):
    rows = load_gsm8k(GSM8K_TRAIN)
    gold = {row["question"]: row["answer"] for row in rows}
    train, evaluation = gsm8k_pairs(rows, num_examples=48, num_eval=16, seed=3)
    assert len(train) == 48 and len(evaluation) == 16
    assert not {p["prompt"][0]["content"] for p in train} & {p["prompt"][0]["content"] for p in evaluation}
    for pair in train + evaluation:
        (user,), (chosen,), (rejected,) = pair["prompt"], pair["chosen"], pair["rejected"]
        assert user["role"] == "user" and chosen["role"] == rejected["role"] == "assistant"
        assert chosen["content"] == gold[user["content"]]
        assert chosen["content"].endswith(f"#### {final_answer(gold[user['content']])}")
        check_only_the_answer_changed(chosen["content"], rejected["content"])
    assert gsm8k_pairs(rows, num_examples=48, num_eval=16, seed=3) == (train, evaluation)  # deterministic
    assert gsm8k_pairs(rows, num_examples=48, seed=4)[0] != train
    assert gsm8k_pairs(rows, num_examples=10, seed=3)[0] == train[:10]  # a pair does not depend on the count
    dataset = load_preference_dataset(write_jsonl(train, tmp_path / "pairs.jsonl"), kind="pair")
    assert len(dataset) == 48 and dataset[0]["completions"] == [train[0]["chosen"], train[0]["rejected"]]
    with pytest.raises(ValueError, match="only"):
        gsm8k_pairs(rows[:5], num_examples=4, num_eval=2)


def run_cli(*args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, str(ROOT / "data" / "gsm8k_pairs.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def test_cli_on_a_given_input_file(tmp_path):
    rows = [
        {"question": f"What is {i} + {i}?", "answer": f"{i} + {i} = <<{i}+{i}={2 * i}>>{2 * i}\n#### {2 * i}"}
        for i in range(10)
    ]
    source = write_jsonl(rows, tmp_path / "gsm8k.jsonl")
    out = tmp_path / "out" / "pairs.jsonl"
    result = run_cli(
        "--input", str(source), "--num_examples", "6", "--num_eval", "3", "--seed", "1", "--output", str(out)
    )
    eval_out = tmp_path / "out" / "pairs_eval.jsonl"
    assert f"wrote 6 pairs to {out}" in result.stdout and f"wrote 3 pairs to {eval_out}" in result.stdout
    train = [json.loads(line) for line in out.read_text().splitlines()]
    assert train == gsm8k_pairs(rows, num_examples=6, num_eval=3, seed=1)[0]
    assert len(eval_out.read_text().splitlines()) == 3
    assert sorted(p.name for p in out.parent.iterdir()) == ["pairs.jsonl", "pairs_eval.jsonl"]  # no temp files


@needs_gsm8k
def test_cli_on_the_shared_gsm8k(tmp_path):
    out = tmp_path / "pairs.jsonl"
    result = run_cli("--num_examples", "8", "--num_eval", "0", "--output", str(out))
    assert f"wrote 8 pairs to {out}" in result.stdout
    source = result.stdout.split("(from ", 1)[1].split(", seed")[0]
    assert Path(source).resolve() == GSM8K_TRAIN  # the shared copy, however it is reached (CI links it)
    assert len(load_preference_dataset(out, kind="pair")) == 8
    assert not (tmp_path / "pairs_eval.jsonl").exists()


@needs_gsm8k
def test_builtin_dataset_is_the_scripts_default_set():
    train = load_preference_dataset("builtin:gsm8k_pairs", kind="pair")
    evaluation = load_preference_dataset("builtin:gsm8k_pairs", split="test")
    expected_train, expected_eval = gsm8k_pairs(load_gsm8k(GSM8K_TRAIN), num_examples=256, num_eval=64, seed=0)
    assert len(train) == 256 and len(evaluation) == 64
    assert train[0]["completions"] == [expected_train[0]["chosen"], expected_train[0]["rejected"]]
    assert evaluation[-1]["prompt"] == expected_eval[-1]["prompt"]
    with pytest.raises(ValueError, match="not 'dev'"):
        load_preference_dataset("builtin:gsm8k_pairs", split="dev")


def test_unknown_builtin_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown dataset 'builtin:nope'; known: builtin:gsm8k_pairs"):
        load_preference_dataset("builtin:nope")
