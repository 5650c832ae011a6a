"""GSM8K evaluation: lm-eval's strict-match / flexible-extract checked against lm-evaluation-harness's own
gsm8k task on a few hundred outputs, the verifier metric, maj@k / pass@k, prompts, the CLI (1 and 2
processes, resume)."""

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
import yaml

from align.data.gsm8k import LOCAL_GSM8K_TEST
from align.evaluation.gsm8k import (
    EXACT_MATCH_IGNORE,
    FEWSHOT_TEMPLATE,
    LM_EVAL_FILTERS,
    LM_EVAL_UNTIL,
    METRICS,
    ZERO_SHOT_INSTRUCTION,
    GSM8KConfig,
    build_prompts,
    cut_at_stop,
    lm_eval_exact_match,
    lm_eval_extract,
    load_gsm8k_split,
    majority_answer,
    pass_at_k,
    score_samples,
)
from align.rewards.gsm8k import extract_answer
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
    assert {gold[m] for m in ("strict-match", "flexible-extract", "verifier", "maj@1", "pass@1")} == {1.0}

    def shifted(solution: str) -> str:  # the final answer + 1, in the same "#### N" line
        head, _, answer = solution.rpartition("####")
        return f"{head}#### {int(answer.strip().replace(',', '')) + 1}"

    _, wrong = score_samples(questions, [[shifted(s)] for s in solutions], solutions)
    assert wrong["strict-match"] == wrong["flexible-extract"] == wrong["verifier"] == wrong["maj@1"] == 0.0
    assert wrong["strict-match_answered"] == 1.0


@pytest.mark.parametrize(
    ("text", "strict_match", "flexible_extract", "verifier"),
    [
        ("So 3 + 4 = 7.\n#### 7", "7", "7", "7"),
        ("#### 1,080", "1,080", "1,080", "1080"),
        ("#### $18.00", "[invalid]", "$18.00", "18"),  # lm-eval wants exactly '#### ' then digits
        ("####18", "[invalid]", "18", "18"),
        ("#### -3", "-3", "-3", "-3"),
        ("#### 18.", "18.", "18.", "18"),
        ("#### 0.50", "0.50", "0.50", "0.5"),
        ("#### 5\nwait, no: #### 6", "5", "6", "5"),  # strict: the first match; flexible: the last
        ("The answer is 42.", "[invalid]", "42.", "42"),
        ("We get \\boxed{17} apples.", "[invalid]", "17", "17"),
        ("12 + 30 = 42 and then 42 - 2 = 40", "[invalid]", "40", "40"),
        ("I do not know.", "[invalid]", "[invalid]", None),
        ("####", "[invalid]", "[invalid]", None),
    ],
)
def test_extraction_edge_cases(text, strict_match, flexible_extract, verifier):
    assert lm_eval_extract(text, "strict-match") == strict_match
    assert lm_eval_extract(text, "flexible-extract") == flexible_extract
    assert extract_answer(text) == verifier


def test_the_three_metrics_differ_as_documented():
    solution = "16 - 3 - 4 = 9 eggs, 9 * 2 = 18 dollars.\n#### 18"
    verdicts = {  # output: (strict-match, flexible-extract, verifier)
        "#### 18": (True, True, True),
        "#### $18": (False, True, True),
        "####18": (False, True, True),
        "#### 18.00": (False, False, True),
        "#### 18\nThat is 2 dozen eggs less 6.": (True, False, True),  # flexible reads the last number
        "The answer is 18.": (False, True, True),
        "\\boxed{18}": (False, True, True),
        "#### 17": (False, False, False),
    }
    outputs = list(verdicts)
    records, metrics = score_samples(["q"], [outputs], [solution])
    [record] = records
    assert list(zip(*(record["correct"][m] for m in METRICS))) == list(verdicts.values())
    assert metrics["strict-match"] == pytest.approx(2 / 8)
    assert metrics["flexible-extract"] == pytest.approx(5 / 8)
    assert metrics["verifier"] == pytest.approx(7 / 8) == metrics["pass@1"]
    assert metrics["strict-match_answered"] == pytest.approx(4 / 8)
    assert record["extracted"]["strict-match"][:2] == ["18", "[invalid]"] and record["extracted"]["verifier"][1] == "18"
    assert lm_eval_exact_match("1,080", "#### 1080") and not lm_eval_exact_match("18.00", "#### 18")


# -- strict-match and flexible-extract against lm-evaluation-harness's own gsm8k task ------------------


def _solution(value: str) -> str:
    return f"Some reasoning with 3 + 4 = 7 and 12 apples.\n#### {value}"


def _writings(value: int) -> list[str]:
    """How a model may write the number ``value``."""
    plain = str(value)
    out = [plain, f"{value:,}", f"{value}.00", f"{value}.0", f"${value}", f"${value:,}.00", f"+{value}", f"0{value}"]
    if value < 0:
        out.append(f"\u2212{-value}")  # a unicode minus sign
    return out


# {a}: the answer as written; {b}: a different number
TEMPLATES = [
    "#### {a}", "####{a}", "#### {a}.", "####  {a}", "#### {a} apples", "#### {a}\n", "#### {a}.\n\nDone.",
    "So the total is {b} + 1 = {a}.\n#### {a}", "#### {a}\nThat is {b} more than yesterday.", "#### {b}\n#### {a}",
    "#### {a}\n#### {b}", "The answer is {a}.", "The answer is {a}", "The answer is: **{a}**", "\\boxed{{{a}}}",
    "$\\boxed{{{a}}}$.", "{a}", "{a}.", "Answer: {a}!", "It costs {a} dollars, i.e. {b} cents.", "#### {a}%",
    "#### {a}/1", "The answer is {a}。", "####\u00a0{a}", "#### \uff11\uff18", "#### \u0661\u0668", "{b} then {a}",
    "#### {a}\nQuestion: Tom has {b} apples.\nAnswer: #### {b}", "No idea.", "", "####", "#### ", "#### .", "#### ,",
    "#### -", "#### 1e3", "#### {a}\u200b", "ÉTAPE {b}: #### {a}",
]  # fmt: skip


def _varied_outputs() -> tuple[list[str], list[list[str]]]:
    """Solutions with varied answers and, per solution, every template written with the right number
    in each way (and a wrong number), with or without a reasoning prefix."""
    solutions, samples = [], []
    for gold in (18, 7, -3, 0, 1080, 250000):
        solutions.append(_solution(f"{gold:,}" if gold == 250000 else str(gold)))
        wrong = gold + 1 if gold != 7 else 8
        outputs = []
        for i, template in enumerate(TEMPLATES):
            for a in [*_writings(gold), str(wrong)]:
                prefix = "First, 16 - 3 = 13, then 13 - 4 = 9.\n" if i % 3 == 0 else ""
                outputs.append(prefix + template.format(a=a, b=wrong * 2))
        samples.append(outputs)
    width = max(map(len, samples))
    return solutions, [s + ["#### no answer"] * (width - len(s)) for s in samples]


@pytest.fixture(scope="module")
def lm_eval_task():
    """lm-eval's own gsm8k task, built from the installed package's yaml (no dataset download: the docs
    are given). lm-eval is a dev dependency: a missing one fails here, it is not skipped."""
    import datasets
    import lm_eval
    from lm_eval.api.task import ConfigurableTask

    config = yaml.safe_load((Path(lm_eval.__file__).parent / "tasks" / "gsm8k" / "gsm8k.yaml").read_text())
    docs = [{"question": "q", "answer": "#### 1"}]
    splits = {split: datasets.Dataset.from_list(docs) for split in ("train", "test")}
    config["custom_dataset"] = lambda **_: datasets.DatasetDict(splits)
    return config, ConfigurableTask(config=config)


def _lm_eval_verdicts(task, solution: str, outputs: list[str]) -> dict[str, tuple[list[str], list[bool]]]:
    """lm-eval's filtered answers and exact_match verdicts of each output (one response per request)."""
    from lm_eval.api.instance import Instance

    doc = {"question": "q", "answer": solution}
    instances = [Instance("generate_until", doc, ("", {}), idx=0, resps=[o]) for o in outputs]
    for ensemble in task._filters:
        ensemble.apply(instances)
    out = {}
    for name in LM_EVAL_FILTERS:
        filtered = [inst.filtered_resps[name] for inst in instances]
        verdicts = [task.process_results(doc, [f])["exact_match"] == 1.0 for f in filtered]
        out[name] = (filtered, verdicts)
    return out


def test_our_constants_are_lm_evals_gsm8k_settings(lm_eval_task):
    config, _ = lm_eval_task
    filters = {f["name"]: f["filter"] for f in config["filter_list"]}
    assert list(filters) == list(LM_EVAL_FILTERS)
    for name, (pattern, group_select) in LM_EVAL_FILTERS.items():
        regex, take = filters[name]
        assert regex["function"] == "regex" and regex["regex_pattern"] == pattern
        assert regex.get("group_select", 0) == group_select
        assert take == {"function": "take_first"}
    [metric] = config["metric_list"]
    assert metric["metric"] == "exact_match" and metric["ignore_case"] and not metric["ignore_punctuation"]
    assert tuple(metric["regexes_to_ignore"]) == EXACT_MATCH_IGNORE
    assert tuple(config["generation_kwargs"]["until"]) == LM_EVAL_UNTIL
    assert config["doc_to_text"].replace("{{question}}", "{question}") == FEWSHOT_TEMPLATE
    assert config["doc_to_target"] == "{{answer}}"  # the full solution; exact_match strips up to '#### '


def test_strict_match_and_flexible_extract_equal_lm_evals_on_varied_outputs(lm_eval_task):
    _, task = lm_eval_task
    solutions, samples = _varied_outputs()
    assert sum(map(len, samples)) > 300
    records, metrics = score_samples(["q"] * len(solutions), samples, solutions)
    counts = {name: [0, 0] for name in LM_EVAL_FILTERS}
    lenient = 0  # outputs the verifier accepts and strict-match rejects
    for record, solution, outputs in zip(records, solutions, samples, strict=True):
        theirs = _lm_eval_verdicts(task, solution, outputs)
        for name, (filtered, verdicts) in theirs.items():
            assert record["extracted"][name] == filtered, name
            mismatches = [o for o, ours, lm in zip(outputs, record["correct"][name], verdicts) if ours != lm]
            assert not mismatches, (name, solution, mismatches[:5])
            counts[name][0] += sum(verdicts)
            counts[name][1] += len(verdicts) - sum(verdicts)
        lenient += sum(v and not s for v, s in zip(record["correct"]["verifier"], record["correct"]["strict-match"]))
    # both verdicts occur often, so the comparison could fail either way
    assert all(right > 50 and wrong > 50 for right, wrong in counts.values()), counts
    assert lenient > 50
    n = sum(map(len, samples))
    assert metrics["strict-match"] == pytest.approx(counts["strict-match"][0] / n)
    assert metrics["flexible-extract"] == pytest.approx(counts["flexible-extract"][0] / n)


def test_few_shot_answers_are_cut_where_lm_eval_cuts_them(lm_eval_task):
    from lm_eval.models.utils import postprocess_generated_text

    config, _ = lm_eval_task
    until = config["generation_kwargs"]["until"]
    texts = ["#### 18\n\nQuestion: Tom has 3 apples.\nAnswer: #### 3", "#### 5</s>Question: 9", "no stop #### 7",
             "x<|im_end|>y Question: z", "Question: at the start"]  # fmt: skip
    for text in texts:
        assert cut_at_stop(text) == postprocess_generated_text(text, until, None)


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
    assert metrics["verifier"] == metrics["pass@1"] == pytest.approx(sum(correct) / 16)
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
    assert set(records[0]) >= {"index", "prompt", "outputs", "extracted", "gold", "correct"}
    assert set(records[0]["correct"]) == set(records[0]["extracted"]) == set(METRICS)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["metrics"] == metrics and saved["config"]["limit"] == 4

    # chunks of 2 problems were saved; plant a known answer in chunk 1 and re-run: it is read back
    # (not regenerated), and the planted answer is scored
    chunk = out / "generation" / "chunk-00001.json"
    assert json.loads(chunk.read_text()) == [r["outputs"] for r in records[2:]]
    chunk.write_text(json.dumps([["#### 4"], ["#### 6"]]))
    resumed = cli.main(argv)
    earlier = sum(sum(r["correct"]["strict-match"]) for r in records[:2])
    assert resumed["strict-match"] == pytest.approx((2 + earlier) / 4)
    # a changed setting is a different run: the cache is dropped, nothing planted survives
    fresh = cli.main([*argv[:-1], str(out), "--max_new_tokens", "3"])
    assert fresh["strict-match"] < 0.5 and json.loads(chunk.read_text()) != [["#### 4"], ["#### 6"]]


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
    assert metrics["num_problems"] == 2 and all(0.0 <= metrics[m] <= 1.0 for m in METRICS)
    records = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert records[0]["gold"] == "18" and records[0]["outputs"][0].strip()  # Janet's ducks
