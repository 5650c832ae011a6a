"""GSM8K evaluation: extraction, scoring, maj@k / pass@k, prompts, the CLI (1 and 2 processes, resume)."""

import itertools
import json
import math
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from align.data.gsm8k import LOCAL_GSM8K_TEST
from align.evaluation.gsm8k import (
    FEWSHOT_TEMPLATE,
    ZERO_SHOT_INSTRUCTION,
    GSM8KConfig,
    build_prompts,
    load_gsm8k_split,
    majority_answer,
    pass_at_k,
    score_samples,
)
from align.rewards.gsm8k import extract_answer, strict_answer
from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]
needs_gsm8k = pytest.mark.skipif(not LOCAL_GSM8K_TEST.is_file(), reason="../shared/data/gsm8k is not present")


# -- scoring the real test set ----------------------------------------------------------------------


@needs_gsm8k
def test_all_gold_solutions_score_100_and_shifted_answers_score_0():
    rows = load_gsm8k_split("test")
    assert len(rows) == 1319
    questions, solutions = [r["question"] for r in rows], [r["answer"] for r in rows]
    _, gold = score_samples(questions, [[s] for s in solutions], solutions)
    assert gold["accuracy_strict"] == gold["accuracy"] == gold["maj@1"] == gold["pass@1"] == 1.0

    def shifted(solution: str) -> str:  # the final answer + 1, in the same "#### N" line
        head, _, answer = solution.rpartition("####")
        return f"{head}#### {int(answer.strip().replace(',', '')) + 1}"

    _, wrong = score_samples(questions, [[shifted(s)] for s in solutions], solutions)
    assert wrong["accuracy_strict"] == wrong["accuracy"] == wrong["maj@1"] == 0.0
    assert wrong["answered_strict"] == 1.0


@pytest.mark.parametrize(
    ("text", "strict", "flexible"),
    [
        ("So 3 + 4 = 7.\n#### 7", "7", "7"),
        ("#### 1,080", "1080", "1080"),
        ("#### $18.00", "18", "18"),
        ("#### -3", "-3", "-3"),
        ("#### 18.", "18", "18"),
        ("#### 0.50", "0.5", "0.5"),
        ("#### 5\nwait, no: #### 6", "5", "5"),  # the first marked answer counts
        ("The answer is 42.", None, "42"),
        ("We get \\boxed{17} apples.", None, "17"),
        ("12 + 30 = 42 and then 42 - 2 = 40", None, "40"),  # flexible: the last number
        ("I do not know.", None, None),
        ("####", None, None),
    ],
)
def test_extraction_edge_cases(text, strict, flexible):
    assert strict_answer(text) == strict
    assert extract_answer(text) == flexible


def test_strict_and_flexible_are_reported_apart():
    solutions = ["#### 40"] * 3
    samples = [["#### 40"], ["The answer is 40."], ["#### 41 (the answer is 40)"]]
    records, metrics = score_samples(["q"] * 3, samples, solutions)
    assert [r["correct_strict"] for r in records] == [[True], [False], [False]]
    assert [r["correct"] for r in records] == [[True], [True], [False]]
    assert metrics["accuracy_strict"] == pytest.approx(1 / 3)
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert metrics["answered_strict"] == pytest.approx(2 / 3)


# -- maj@k and pass@k -------------------------------------------------------------------------------


def test_majority_vote_on_hand_built_samples():
    assert majority_answer(["5", "7", "5", None]) == "5"
    assert majority_answer(["7", "5", "5", "7"]) == "7"  # tie: the answer reached first
    assert majority_answer([None, None]) is None
    samples = [
        ["#### 5", "#### 7", "the answer is 5", "no idea"],  # 5 wins 2:1, correct
        ["#### 7", "#### 7", "#### 5", "#### 5"],  # 7 and 5 tie, 7 came first: wrong
        ["#### 1", "#### 2", "#### 3", "#### 9"],  # all differ: the first (1) wins: wrong, though one sample is right
        ["nothing", "nothing", "nothing", "nothing"],  # no votes
    ]
    records, metrics = score_samples(["q"] * 4, samples, ["#### 5", "#### 5", "#### 9", "#### 5"], pass_k=(1, 2, 4))
    assert [r["majority"] for r in records] == ["5", "7", "1", None]
    assert [r["majority_correct"] for r in records] == [True, False, False, False]
    assert metrics["maj@4"] == 0.25
    correct = [2, 2, 1, 0]
    assert metrics["accuracy"] == metrics["pass@1"] == pytest.approx(sum(correct) / 16)
    assert metrics["pass@4"] == pytest.approx(3 / 4)
    # pass@2 by hand: 1 - C(n-c, 2)/C(4, 2): c=2 → 1 - 1/6, c=1 → 1 - 3/6, c=0 → 0
    assert metrics["pass@2"] == pytest.approx(((1 - 1 / 6) * 2 + (1 - 3 / 6)) / 4)


@pytest.mark.parametrize(
    ("n", "c", "k"), [(n, c, k) for n in range(1, 7) for c in range(n + 1) for k in range(1, n + 1)]
)
def test_pass_at_k_is_the_probability_that_a_random_k_subset_holds_a_correct_sample(n, c, k):
    outcomes = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(outcomes, k))
    assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))
    assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))


def test_bad_settings_fail_clearly():
    with pytest.raises(ValueError, match="num_samples > 1 needs temperature > 0"):
        GSM8KConfig(num_samples=4)
    with pytest.raises(ValueError, match=r"pass@k needs 1 <= k <= num_samples = 4, got k = \[8\]"):
        GSM8KConfig(num_samples=4, temperature=0.7, pass_k=(1, 8))
    with pytest.raises(ValueError, match="the same number of samples"):
        score_samples(["a", "b"], [["#### 1"], ["#### 1", "#### 2"]], ["#### 1", "#### 1"])
    with pytest.raises(ValueError, match=r"c <= n"):
        pass_at_k(2, 3, 1)


def test_a_bad_data_row_names_the_file_row_and_field(tmp_path):
    path = tmp_path / "gsm.jsonl"
    rows = [{"question": "1+1?", "answer": "2 #### 2"}, {"question": "2+2?", "answer": "four"}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: row 1: field 'answer': no final '#### N'"):
        load_gsm8k_split(data_file=path)
    path.write_text(json.dumps({"question": "", "answer": "#### 2"}))
    with pytest.raises(ValueError, match=r"row 0: field 'question' must be a non-empty string"):
        load_gsm8k_split(data_file=path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_gsm8k_split(data_file=tmp_path / "missing.jsonl")


def test_no_local_copy_offline_fails_naming_both_places(tmp_path, monkeypatch):
    import align.evaluation.gsm8k as gsm8k_eval

    missing = tmp_path / "gsm8k" / "test.jsonl"
    monkeypatch.setattr(gsm8k_eval, "LOCAL_GSM8K_TEST", missing)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(
        FileNotFoundError, match=rf"{re.escape(str(missing))} does not exist and the hub's openai/gsm8k"
    ):
        load_gsm8k_split("test")


# -- prompts ------------------------------------------------------------------------------------------


def test_prompts_zero_shot_few_shot_and_plain_text():
    shots = [{"question": "Q1?", "answer": "A1 #### 1"}, {"question": "Q2?", "answer": "A2 #### 2"}]
    [zero] = build_prompts(["How many?"])
    assert zero == [{"role": "user", "content": f"How many?\n{ZERO_SHOT_INSTRUCTION}"}]
    [few] = build_prompts(["How many?"], num_fewshot=2, fewshot_rows=shots)
    assert [m["role"] for m in few] == ["user", "assistant", "user", "assistant", "user"]
    assert few[0]["content"] == FEWSHOT_TEMPLATE.format(question="Q1?") and few[1]["content"] == "A1 #### 1"
    assert few[-1]["content"] == "Question: How many?\nAnswer:"
    [text] = build_prompts(["How many?"], num_fewshot=1, fewshot_rows=shots, chat=False)
    assert text == "Question: Q1?\nAnswer: A1 #### 1\n\nQuestion: How many?\nAnswer:"
    with pytest.raises(ValueError, match="only 2 exemplars"):
        build_prompts(["x"], num_fewshot=3, fewshot_rows=shots)


# -- the command line ----------------------------------------------------------------------------------


def _gsm8k_file(tmp_path, n=5):
    path = tmp_path / "gsm.jsonl"
    rows = [{"question": f"What is {i} + {i}?", "answer": f"{i} + {i} = {2 * i}\n#### {2 * i}"} for i in range(n)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_cli_writes_per_problem_records_and_resumes_from_finished_chunks(tiny_model_dir, tmp_path):
    cli = load_script("eval/gsm8k.py")
    data = _gsm8k_file(tmp_path)
    out = tmp_path / "out"
    argv = ["--model", str(tiny_model_dir), "--data_file", str(data), "--limit", "4", "--max_new_tokens", "4",
            "--batch_size", "2", "--output_dir", str(out)]  # fmt: skip
    metrics = cli.main(argv)
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 4 and metrics["num_problems"] == 4
    assert [r["gold"] for r in records] == ["0", "2", "4", "6"]
    assert records[1]["prompt"] == [{"role": "user", "content": f"What is 1 + 1?\n{ZERO_SHOT_INSTRUCTION}"}]
    assert set(records[0]) >= {
        "index",
        "prompt",
        "outputs",
        "extracted_strict",
        "extracted_flexible",
        "gold",
        "correct_strict",
        "correct",
    }
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["metrics"] == metrics and saved["config"]["limit"] == 4

    # chunks of 2 problems were saved; plant a known answer in chunk 1 and re-run: it is read back
    # (not regenerated), and the planted answer is scored
    chunk = out / "generation" / "chunk-00001.json"
    assert json.loads(chunk.read_text()) == [r["outputs"] for r in records[2:]]
    chunk.write_text(json.dumps([["#### 4"], ["#### 6"]]))
    resumed = cli.main(argv)
    assert resumed["accuracy_strict"] == pytest.approx((2 + sum(sum(r["correct_strict"]) for r in records[:2])) / 4)
    # a changed setting is a different run: the cache is dropped, nothing planted survives
    fresh = cli.main([*argv[:-1], str(out), "--max_new_tokens", "3"])
    assert fresh["accuracy_strict"] < 0.5 and json.loads(chunk.read_text()) != [["#### 4"], ["#### 6"]]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_processes_shard_the_problems_and_match_one(tiny_model_dir, tmp_path):
    data = _gsm8k_file(tmp_path, n=7)
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    outputs = {}
    for procs in (1, 2):
        launch = ["--multi_gpu"] if procs > 1 else []
        cmd = [sys.executable, "-m", "accelerate.commands.launch", *launch, "--num_processes", str(procs), "--num_machines", "1",
               "--dynamo_backend", "no", "--mixed_precision", "no", "--main_process_port", str(_free_port()),
               str(ROOT / "eval" / "gsm8k.py"), "--model", str(tiny_model_dir), "--data_file", str(data),
               "--max_new_tokens", "5", "--batch_size", "2", "--output_dir", str(tmp_path / f"p{procs}")]  # fmt: skip
        result = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert result.returncode == 0, result.stderr[-4000:]
        outputs[procs] = [
            json.loads(line)["outputs"] for line in (tmp_path / f"p{procs}" / "samples.jsonl").read_text().splitlines()
        ]
        assert result.stdout.count('"num_problems": 7') == 1  # printed by the main process only
    assert len(outputs[1]) == 7 and outputs[2] == outputs[1]
    # 4 chunks of 2 problems dealt to 2 processes: all of them are on disk
    assert sorted(p.name for p in (tmp_path / "p2" / "generation").glob("chunk-*.json")) == [
        f"chunk-0000{i}.json" for i in range(4)
    ]


@needs_gsm8k
def test_cli_on_the_builtin_smollm2_offline(tmp_path):
    """The real default model and the real test set, two problems, short answers."""
    metrics = load_script("eval/gsm8k.py").main(
        ["--limit", "2", "--max_new_tokens", "16", "--output_dir", str(tmp_path)]
    )
    assert metrics["num_problems"] == 2 and 0.0 <= metrics["accuracy"] <= 1.0
    records = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert records[0]["gold"] == "18" and records[0]["outputs"][0].strip()  # Janet's ducks
