"""implicit_prm (align/rewards/implicit_prm.py) on tiny random Llamas: steps by characters, tokens to
steps under the chat template, step rewards against plain unpacked forwards, where the reference
comes from, option checks, and 2 processes against 1."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from align.data import tokenize_row
from align.rewards import (
    ImplicitPRM,
    RewardError,
    StepScores,
    aggregate_steps,
    check_reward_spec,
    checked_step_scores,
    load_reward,
    reward_kind,
    score_groups,
    score_steps_sharded,
)
from align.rewards.implicit_prm import SPLITS, split_steps, step_tokens
from tests.generation.test_distributed import free_port
from tests.rewards.dist_score import COMPLETIONS, OPTIONS, PROMPTS
from tests.tiny import build_tiny_model_dir, build_tokenizer

ROOT = Path(__file__).resolve().parents[2]
BLANK = re.compile(SPLITS["blank_line"])
NEWLINE = re.compile(SPLITS["newline"])
ANSWER = re.compile("####")
CHAT = [{"role": "user", "content": "What is 7 times 8?"}]


# -- steps by characters ----------------------------------------------------------------------------


def test_split_docstring_example():
    text = "1 + 2 = 3\n\n3 * 4 = 12\n#### 12"
    split = split_steps(text, NEWLINE, ANSWER)
    assert split.steps == ["1 + 2 = 3", "3 * 4 = 12"]
    # step 0 owns "1 + 2 = 3\n\n" (its separator and the empty piece's newline), step 1 "3 * 4 = 12\n"
    assert split.ends == [11, 22] and text[:11] == "1 + 2 = 3\n\n" and text[22:] == "#### 12"
    assert split.answer_start == 22


@pytest.mark.parametrize(
    ("text", "separator", "steps", "ends"),
    [
        ("A.\n\nB.", BLANK, ["A.", "B."], [4, 6]),  # the separator belongs to the step it ends
        ("A.\n\nB.\n\n", BLANK, ["A.", "B."], [4, 8]),  # a trailing separator: the last step's
        ("\n\nA.\n\nB.", BLANK, ["A.", "B."], [6, 8]),  # a leading separator: the first step's
        ("A.\n\n\n  \nB.", BLANK, ["A.", "B."], [8, 10]),  # blank lines with spaces: one separator
        ("A.\n \nB.", NEWLINE, ["A.", "B."], [5, 7]),  # an empty (whitespace) piece is no step
        ("no separator at all", BLANK, ["no separator at all"], [19]),
        ("", BLANK, [], []),
        ("  \n\n ", BLANK, [], []),
        # a zero-width separator cuts before each marker, so each step starts with it
        ("Step 1: a\nStep 2: b", re.compile(r"(?=Step \d+:)"), ["Step 1: a", "Step 2: b"], [10, 19]),
    ],
)
def test_split_rules(text, separator, steps, ends):
    split = split_steps(text, separator)
    assert (split.steps, split.ends, split.answer_start) == (steps, ends, None)


def test_final_answer_only_when_last_and_matching():
    assert split_steps("#### 5", NEWLINE, ANSWER) == ([], [], 0)  # nothing but the answer: no step
    assert split_steps("#### 5\n2 + 3 = 5", NEWLINE, ANSWER).steps == ["#### 5", "2 + 3 = 5"]
    # blank-line steps: the last paragraph is not an answer line, so it stays a step
    assert split_steps("2 + 3 = 5\n#### 5", BLANK, ANSWER) == (["2 + 3 = 5\n#### 5"], [16], None)
    assert split_steps("2 + 3 = 5\n#### 5\n\n", NEWLINE, ANSWER) == (["2 + 3 = 5"], [10], 10)


# -- tokens to steps ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def grouped(tokenizer, tokens) -> dict[int, str]:
    """The text of each step's tokens (key −1: the tokens in no step), decoded token by token."""
    out: dict[int, str] = {}
    for token, step in zip(tokens.completion_ids, tokens.step_ids, strict=True):
        out[step] = out.get(step, "") + tokenizer.decode([token])
    return out


def test_tokens_match_training(tokenizer):
    completion = "Step 1: 48 / 2 = 24.\n\nStep 2: 48 + 24 = 72."
    for prompt, answer in ((CHAT, [{"role": "assistant", "content": completion}]), ("Q: ", completion)):
        tokens = step_tokens(tokenizer, prompt, completion, BLANK)
        expected = tokenize_row({"prompt": prompt, "completions": [answer]}, tokenizer)
        assert (tokens.prompt_ids, [tokens.completion_ids]) == expected


@pytest.mark.parametrize(
    ("completion", "split", "answer", "expected"),
    [
        # separators and the end-of-turn tokens: "\n\n" ends its step, <|im_end|>\n goes to the last step
        ("Step 1: 24.\n\nStep 2: 72.", BLANK, None, {0: "Step 1: 24.\n\n", 1: "Step 2: 72.<|im_end|>\n"}),
        # a trailing separator stays with the last step
        ("A.\n\nB.\n\n", BLANK, None, {0: "A.\n\n", 1: "B.\n\n<|im_end|>\n"}),
        # an empty step (two newlines under the newline rule): its newline goes to the step before
        ("1 + 2 = 3\n\n3 * 4 = 12", NEWLINE, None, {0: "1 + 2 = 3\n\n", 1: "3 * 4 = 12<|im_end|>\n"}),
        # a leading separator goes to the first step
        ("\n\nA.\n\nB.", BLANK, None, {0: "\n\nA.\n\n", 1: "B.<|im_end|>\n"}),
        # no separator at all: one step, every token
        ("The answer is 72.", BLANK, None, {0: "The answer is 72.<|im_end|>\n"}),
        # the final answer line and what follows it are in no step
        ("48 / 2 = 24\n48 + 24 = 72\n#### 72", NEWLINE, ANSWER,
         {0: "48 / 2 = 24\n", 1: "48 + 24 = 72\n", -1: "#### 72<|im_end|>\n"}),
        # a token across a boundary (" 48": the space ends step 0's separator ": ") goes to the later step
        ("Step 1: 48 / 2", re.compile(": "), None, {0: "Step 1:", 1: " 48 / 2<|im_end|>\n"}),
        ("", BLANK, None, {-1: "<|im_end|>\n"}),  # no text, no step: the outcome alone
    ],
)  # fmt: skip
def test_token_steps_under_the_chat_template(tokenizer, completion, split, answer, expected):
    tokens = step_tokens(tokenizer, CHAT, completion, split, answer)
    assert grouped(tokenizer, tokens) == expected
    assert sorted(set(tokens.step_ids) - {-1}) == list(range(len(tokens.steps)))
    assert tokens.step_ids == sorted(tokens.step_ids, key=lambda s: (s == -1, s))  # steps in order, then no step


def test_boundary_token_is_really_one_token(tokenizer):
    """The straddling case above is real: " 48" is a single token of the tiny tokenizer."""
    assert tokenizer.tokenize(" 48") == ["Ġ48"]


def test_token_steps_of_a_string_prompt_end_with_eos(tokenizer):
    tokens = step_tokens(tokenizer, "Q: 7 * 8? A: ", "7 * 8 = 56\n#### 56", NEWLINE)
    assert grouped(tokenizer, tokens) == {0: "7 * 8 = 56\n", 1: "#### 56<|im_end|>"}
    tokens = step_tokens(tokenizer, "Q: 7 * 8? A: ", "7 * 8 = 56\n#### 56", NEWLINE, ANSWER)
    assert grouped(tokenizer, tokens) == {0: "7 * 8 = 56\n", -1: "#### 56<|im_end|>"}


def test_token_steps_when_the_template_strips_the_content(tokenizer):
    stripping = build_tokenizer()
    stripping.chat_template = tokenizer.chat_template.replace("message['content']", "message['content'] | trim")
    tokens = step_tokens(stripping, CHAT, "\n  A.\n\nB.\n\n", BLANK)
    assert tokens.steps == ["A.", "B."]
    assert grouped(stripping, tokens) == {0: "A.\n\n", 1: "B.<|im_end|>\n"}


# -- scoring against plain forwards -----------------------------------------------------------------


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """A policy, a different reference, the policy with implicit_prm.json naming the reference
    (β = 0.5), and a LoRA adapter folder on the policy (random B, so adapter on ≠ off)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("implicit-prm")
    policy = build_tiny_model_dir(root / "policy", seed=0)
    ref = build_tiny_model_dir(root / "ref", seed=1)
    prm = root / "prm"
    shutil.copytree(policy, prm)
    info = {"objective": "implicit_prm_ce", "beta": 0.5, "reference": str(ref), "reference_is_adapter_off": False}
    (prm / "implicit_prm.json").write_text(json.dumps(info))
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(policy), config).save_pretrained(root / "adapter")
    return {"policy": policy, "ref": ref, "prm": prm, "adapter": root / "adapter"}


def plain_token_logps(model, prompt_ids, completion_ids) -> torch.Tensor:
    """log π(y_i | x, y_<i) of each completion token from one unpacked forward over the sequence."""
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logps = model(input_ids=ids).logits[0, :-1].double().log_softmax(-1)
    return logps.gather(-1, ids[0, 1:, None])[:, 0][len(prompt_ids) - 1 :]


def load_plain(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def expected_step_rewards(tokenizer, policy, ref, prompt, completion, owners, beta):
    """(step rewards, outcome) computed independently: the training ids, plain forwards, and each
    token's end found by decoding the completion's tokens up to it (no offsets), assigned to the
    step whose character range ``owners`` (list of (start, end), the last open-ended) holds its last
    character."""
    answer = [{"role": "assistant", "content": completion}] if isinstance(prompt, list) else completion
    prompt_ids, (completion_ids,) = tokenize_row({"prompt": prompt, "completions": [answer]}, tokenizer)
    ratio = plain_token_logps(policy, prompt_ids, completion_ids) - plain_token_logps(ref, prompt_ids, completion_ids)
    rewards = [0.0] * len(owners)
    for i, value in enumerate(ratio.tolist()):
        last = len(tokenizer.decode(completion_ids[: i + 1])) - 1
        step = next((t for t, (lo, hi) in enumerate(owners) if last < hi), len(owners) - 1)
        rewards[step] += beta * value
    return rewards, beta * float(ratio.sum())


CASES = [
    # (prompt, completion, owned character ranges of the blank-line steps)
    (CHAT, "Step 1: 48 / 2 = 24.\n\nStep 2: 48 + 24 = 72.\n\n#### 72", [(0, 22), (22, 45), (45, 52)]),
    ("Natalia sold 48 clips. ", "She sold 72 clips.", [(0, 18)]),
    ([{"role": "system", "content": "Be brief."}, *CHAT], "7 * 8 = 56\n\n\n#### 56", [(0, 13), (13, 20)]),
]


def test_scores_equal_plain_forwards_of_policy_and_reference(dirs):
    # 3 items in packed batches of 2; the reference and β = 0.5 come from implicit_prm.json
    prm = load_reward(f"implicit_prm:{dirs['prm']}", batch_size=2, device="cpu")
    assert isinstance(prm, ImplicitPRM) and reward_kind(prm) == "process" and prm.beta == 0.5
    assert prm.ref_model is not None and prm.reference == str(dirs["ref"])
    out = prm.score_steps([c[0] for c in CASES], [c[1] for c in CASES])
    policy, ref = load_plain(dirs["policy"]), load_plain(dirs["ref"])
    for (prompt, completion, owners), scores in zip(CASES, out, strict=True):
        rewards, outcome = expected_step_rewards(prm.tokenizer, policy, ref, prompt, completion, owners, 0.5)
        assert scores.steps == [completion[lo:hi].strip() for lo, hi in owners]
        assert scores.rewards == pytest.approx(rewards, abs=1e-4)
        assert scores.outcome == pytest.approx(outcome, abs=1e-4)
        assert abs(outcome) > 1e-2  # different random models: the log-ratios are not trivially 0
        # every token in a step: the step rewards sum to the outcome; score = min by default
        assert sum(scores.rewards) == pytest.approx(scores.outcome, abs=1e-9)
        assert scores.score == min(scores.rewards)


def test_aggregations_and_the_final_answer_line(dirs):
    prompts, completions = [c[0] for c in CASES], [c[1] for c in CASES]
    base = load_reward(f"implicit_prm:{dirs['prm']}", device="cpu").score_steps(prompts, completions)
    for how in ("sum", "mean", "last", "min_q"):
        assert load_reward(f"implicit_prm:{dirs['prm']}", aggregate=how, device="cpu").score(prompts, completions) == (
            pytest.approx(aggregate_steps(base, how), abs=1e-9)
        )
    assert aggregate_steps(base, "last") == pytest.approx([s.outcome for s in base], abs=1e-9)
    assert aggregate_steps(base, "mean") == pytest.approx([sum(s.rewards) / len(s.rewards) for s in base])
    # with final_answer the "#### N" line (and the end-of-turn tokens) leave the steps, not the outcome
    answering = load_reward(f"implicit_prm:{dirs['prm']}", final_answer="####", device="cpu")
    answered = answering.score_steps(prompts, completions)
    for full, cut in zip(base, answered, strict=True):
        assert cut.outcome == pytest.approx(full.outcome, abs=1e-6)
    assert answered[0].steps == base[0].steps[:2]
    assert answered[0].rewards == pytest.approx(base[0].rewards[:2], abs=1e-6)
    tail = answered[0].outcome - sum(answered[0].rewards)
    assert abs(tail) > 1e-3 and tail == pytest.approx(base[0].rewards[2], abs=1e-6)


def test_score_groups_keeps_the_steps(dirs):
    prm = load_reward(f"implicit_prm:{dirs['prm']}", device="cpu")
    [judgement] = score_groups(prm, [CHAT], [[CASES[0][1], "56", ""]])
    assert [len(s.steps) for s in judgement.steps] == [3, 1, 0]
    assert judgement.scores.tolist() == [s.score for s in judgement.steps]
    # no step at all (an empty answer): scored by its outcome, the end-of-turn tokens' log-ratio
    assert judgement.steps[2].score == judgement.steps[2].outcome != 0.0


# -- where the reference comes from -------------------------------------------------------------------


def outcome_of(policy, ref, beta, prompt, completion) -> float:
    return expected_step_rewards(build_tokenizer(), policy, ref, prompt, completion, [(0, 1)], beta)[1]


def test_reference_option_and_beta_override_the_file(dirs):
    prm = load_reward(f"implicit_prm:{dirs['prm']}", ref=str(dirs["policy"]), beta=0.001, device="cpu")
    assert prm.beta == 0.001 and prm.reference == str(dirs["policy"])
    # the reference is now the policy's own weights: every log-ratio is 0
    [scores] = prm.score_steps([CHAT], [CASES[0][1]])
    assert scores.outcome == pytest.approx(0.0, abs=1e-6) and scores.rewards == pytest.approx([0.0] * 3, abs=1e-6)


def test_full_model_without_a_reference_is_refused(dirs, tmp_path):
    shutil.copytree(dirs["policy"], tmp_path / "bare")
    with pytest.raises(ValueError, match=r"no reference model: .*implicit_prm\.json is missing.*pass the option ref"):
        load_reward(f"implicit_prm:{tmp_path / 'bare'}", device="cpu")
    prm = load_reward(f"implicit_prm:{tmp_path / 'bare'}", ref=str(dirs["ref"]), device="cpu")
    assert prm.beta == 0.05  # no file: the default β
    expected = outcome_of(load_plain(dirs["policy"]), load_plain(dirs["ref"]), 0.05, CHAT, "56")
    assert prm.score_steps([CHAT], ["56"])[0].outcome == pytest.approx(expected, abs=1e-5)


def test_bad_info_file_names_the_file_and_field(dirs, tmp_path):
    shutil.copytree(dirs["policy"], tmp_path / "m")
    (tmp_path / "m" / "implicit_prm.json").write_text(json.dumps({"beta": -1, "reference": str(dirs["ref"])}))
    with pytest.raises(ValueError, match=r"m/implicit_prm\.json: field 'beta': expected a positive finite number"):
        load_reward(f"implicit_prm:{tmp_path / 'm'}", device="cpu")
    (tmp_path / "m" / "implicit_prm.json").write_text(json.dumps({"reference": str(tmp_path / "missing")}))
    with pytest.raises(FileNotFoundError, match=r"implicit_prm\.json: field 'reference': .*missing: no such folder"):
        load_reward(f"implicit_prm:{tmp_path / 'm'}", device="cpu")


def test_adapter_folder_reference_is_the_adapter_disabled(dirs):
    from align.models import load_checkpoint

    prm = load_reward(f"implicit_prm:{dirs['adapter']}", batch_size=2, device="cpu")
    assert prm.ref_model is None and prm.reference == "adapter disabled"  # one model in memory
    merged, base = load_checkpoint(str(dirs["adapter"])), load_plain(dirs["policy"])
    out = prm.score_steps([c[0] for c in CASES], [c[1] for c in CASES])
    for (prompt, completion, owners), scores in zip(CASES, out, strict=True):
        rewards, outcome = expected_step_rewards(prm.tokenizer, merged, base, prompt, completion, owners, 0.05)
        assert abs(outcome) > 1e-3
        assert scores.outcome == pytest.approx(outcome, abs=1e-5)
        assert scores.rewards == pytest.approx(rewards, abs=1e-5)
    # the adapter is on again after scoring: the same scores twice
    assert prm.score_steps([CHAT], [CASES[0][1]])[0].outcome == pytest.approx(out[0].outcome, abs=1e-9)
    # an explicit ref replaces the disabled adapter
    other = load_reward(f"implicit_prm:{dirs['adapter']}", ref=str(dirs["ref"]), device="cpu")
    expected = outcome_of(merged, load_plain(dirs["ref"]), 0.05, CHAT, "56")
    assert other.score_steps([CHAT], ["56"])[0].outcome == pytest.approx(expected, abs=1e-5)


# -- options ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"aggregate": "bogus"}, r"option aggregate must be one of \['min', 'sum', 'mean', 'last', .*got 'bogus'"),
        ({"split": "paragraph"}, r"option split must be one of \['blank_line', 'newline'\] or 'regex:<pattern>'"),
        ({"split": "regex:("}, r"option split: '\(' is not a valid regular expression"),
        ({"final_answer": "(#"}, r"option final_answer: '\(#' is not a valid regular expression"),
        ({"beta": 0}, r"option beta must be a positive finite number, got 0"),
        ({"batch_size": 0}, r"option batch_size must be a positive int, got 0"),
        ({"dtype": "fp8"}, r"option dtype must be one of"),
    ],
)
def test_bad_options_fail_before_loading(options, message):
    # the folder does not exist: only the option checks can fail, and they come first
    with pytest.raises(ValueError, match=message):
        load_reward("implicit_prm:/no/such/prm", **options)
    with pytest.raises(ValueError, match=message):
        check_reward_spec("implicit_prm:/no/such/prm", **options)


def test_spec_checks_pass_without_loading():
    check_reward_spec("implicit_prm:/no/such/prm", split="regex:(?=Step \\d+:)", aggregate="last", beta=0.001)
    with pytest.raises(TypeError, match=r"reward 'implicit_prm'.*it takes options \['path', 'ref', 'beta', 'split'"):
        check_reward_spec("implicit_prm:/no/such/prm", aggregation="min")
    with pytest.raises(ValueError, match=r"needs an argument: 'implicit_prm:<path>'"):
        check_reward_spec("implicit_prm")


def test_tokenizing_error_names_the_prompt(dirs):
    prm = load_reward(f"implicit_prm:{dirs['prm']}", device="cpu")
    with pytest.raises(RewardError, match=r"'implicit_prm:.*' failed on prompt 1 .*non-empty list of chat messages"):
        checked_step_scores(prm, [CHAT, []], ["56", "56"])


# -- several processes ----------------------------------------------------------------------------------


def test_sharded_scoring_on_one_process_is_the_checked_call(dirs):
    prm = load_reward(f"implicit_prm:{dirs['prm']}", **OPTIONS)
    assert score_steps_sharded(prm, PROMPTS, COMPLETIONS) == checked_step_scores(prm, PROMPTS, COMPLETIONS)


@pytest.mark.slow
def test_two_processes_score_as_one(dirs, tmp_path):
    """Each process scores its share (3 and 2 items), every process returns all 5 in order, equal
    to one process's scores; a bad item on the second process's share fails on both, by its index."""
    out = tmp_path / "scores.json"
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--dynamo_backend", "no", "--mixed_precision", "no", "--main_process_port",
           str(free_port()), str(ROOT / "tests" / "rewards" / "dist_score.py"), str(dirs["prm"]), str(out)]  # fmt: skip
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-5000:]
    run = json.loads(out.read_text())
    assert run["world_size"] == 2
    expected = load_reward(f"implicit_prm:{dirs['prm']}", **OPTIONS).score_steps(PROMPTS, COMPLETIONS)
    for view in run["ranks"]:
        got = [StepScores(**s) for s in view["scores"]]
        assert [s.steps for s in got] == [s.steps for s in expected]
        for mine, theirs in zip(got, expected, strict=True):
            assert mine.rewards == pytest.approx(theirs.rewards, abs=1e-5)
            assert (mine.outcome, mine.score) == pytest.approx((theirs.outcome, theirs.score), abs=1e-5)
        assert view["error"]["index"] == 5 and "non-empty list of chat messages" in view["error"]["message"]
