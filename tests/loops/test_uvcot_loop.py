"""UV-CoT's on-policy loop end to end on a tiny LLaVA and the synthetic visual task: warm-up, two-turn
evaluation with its baselines, regions → crops → answers → judge → pairs → training; a re-run does
nothing; SIGKILL at random points then resume gives the same run; two processes equal one."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from align.data.visual_task import visual_patterns
from tests.loops.test_loop import ROOT, _free_port, kill_at_random_points, lines, timed
from tests.tiny import build_tiny_llava_dir

RECIPE = ROOT / "recipes" / "uvcot.py"
# a reward with integer steps, so a random model's answers give score gaps >= 1 (the checker would
# call them all wrong: no pairs)
PLUGIN = '''
def answer_length(prompt, completion):
    return -abs(len(completion.split()) - 3)
'''


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("uvcot")
    model = build_tiny_llava_dir(root / "model", seed=0)
    (root / "plugins").mkdir()
    (root / "plugins" / "toy_visual.py").write_text(PLUGIN)
    for split, n in (("train", 8), ("test", 4)):
        rows = visual_patterns(n, seed=0, split=split, image_dir=root / "images")
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root, model


def argv(setup, out, **overrides) -> list[str]:
    root, model = setup
    args = {
        "model_name_or_path": str(model), "dtype": "float32", "use_peft": "false", "iterations": "1",
        "prompts": str(root / "train.jsonl"), "prompts_per_iteration": "4", "eval_prompts": str(root / "test.jsonl"),
        "eval_prompts_split": "train", "num_eval_prompts": "4", "judge": "toy_visual:answer_length",
        "judge_options": '{"kind": "reward"}', "num_samples": "2", "max_new_tokens": "6", "generation_batch_size": "8",
        "generation_chunk_size": "2", "min_half": "16", "warmup_fraction": "0.5", "warmup_epochs": "1",
        "warmup_prompts": str(root / "test.jsonl"), "warmup_prompts_split": "train",
        "warmup_learning_rate": "1e-3", "output_dir": str(out), "learning_rate": "1e-3",
        "per_device_train_batch_size": "2", "num_train_epochs": "1", "max_length": "256", "logging_steps": "1",
        "save_strategy": "steps", "save_steps": "1", "drift_num_probes": "2", "drift_eval_steps": "1",
        "drift_entanglement_every": "0", "report_to": "none", "disable_tqdm": "true", "seed": "0",
        "dataset_options": '{"min_gap": 1, "pairs_per_question": 2}',
    }  # fmt: skip
    args.update(overrides)
    return [token for key, value in args.items() for token in (f"--{key}", value)]


def env(setup):
    import os

    root, _ = setup
    return {**os.environ, "PYTHONPATH": f"{root / 'plugins'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}  # fmt: skip


def run(setup, out, **overrides):
    cmd = [sys.executable, str(RECIPE), *argv(setup, out, **overrides)]
    return subprocess.run(cmd, check=False, env=env(setup), capture_output=True, text=True, timeout=900, cwd=ROOT)


@pytest.fixture(scope="module")
def straight(setup, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    return out, timed(run, setup, out)


def test_one_iteration_end_to_end(straight):
    out, result = straight
    it = out / "iteration-00"
    stages = json.loads((it / "manifest.json").read_text())["stages"]
    assert list(stages) == ["warmup", "evaluate_start", "baselines", "generate", "crop_answer", "judge", "dataset",
                            "train", "evaluate"]  # fmt: skip
    # the labelled rows are the first half of --warmup_prompts (4 held-out rows here), not of --prompts (8)
    assert stages["warmup"]["rows"] == 2 and (it / "warmup" / "model" / "config.json").exists()
    answers = lines(it / "answers.jsonl")
    assert len(answers) == 4
    for row in answers:
        assert len(row["regions"]) == len(row["crops"]) == len(row["completions"]) == len(row["parsed"]) == 2
        assert all(Path(c).parent == (out / "crops").resolve() and Path(c).is_file() for c in row["crops"])
    parsed = [p for row in answers for p in row["parsed"]]
    assert stages["crop_answer"]["fallback_rate"] == pytest.approx(1 - sum(parsed) / len(parsed))
    pairs = lines(it / "dataset.jsonl")
    assert pairs and stages["dataset"]["pairs"] == len(pairs)
    for pair in pairs:
        assert pair["scores"][0] - pair["scores"][1] >= 1
        assert len(pair["images"]) == 1 and len(pair["chosen_images"]) == len(pair["rejected_images"]) == 1
        assert [m["role"] for m in pair["chosen"]] == ["assistant", "user", "assistant"]
    evaluation = json.loads((it / "eval.json").read_text())
    assert 0 <= evaluation["iou"] <= 1 and 0 <= evaluation["parse_rate"] <= 1
    assert "accuracy" not in evaluation and evaluation["mean_score"] <= 0  # a reward judge: its mean score
    assert "| iteration | pairs | sampled fallback rate |" in result.stdout and "\n| 1 |" in result.stdout


def test_rerun_does_nothing(setup, straight):
    out, _ = straight
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = run(setup, out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_gives_the_same_run(setup, straight, tmp_path):
    reference, result = straight
    out = tmp_path / "run"
    kill_at_random_points([sys.executable, str(RECIPE), *argv(setup, out)], env(setup), result.duration, seed=7)
    final = run(setup, out)
    assert final.returncode == 0, final.stderr[-4000:]
    ours, theirs = out / "iteration-00", reference / "iteration-00"
    for name in ("samples.jsonl", "answers.jsonl", "judged.jsonl", "dataset.jsonl", "eval.json", "eval_start.json"):
        text = (ours / name).read_text().replace(str(out), str(reference))  # crops live in each run's folder
        assert text == (theirs / name).read_text(), name
    train = [json.loads((it / "manifest.json").read_text())["stages"]["train"] for it in (ours, theirs)]
    assert train[0]["train_loss"] == pytest.approx(train[1]["train_loss"], rel=1e-6)


@pytest.mark.slow
def test_one_iteration_on_two_processes_equals_one(setup, straight, tmp_path):
    """DDP over 2 CPU processes, per-device batch 1 (after a warm-up trained on both): the same answers,
    judgements and pairs as 1 process."""
    reference, _ = straight
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--dynamo_backend", "no", "--mixed_precision", "no", "--main_process_port", str(_free_port()),
           str(RECIPE), *argv(setup, out, per_device_train_batch_size="1")]  # fmt: skip
    result = subprocess.run(cmd, check=False, env={**env(setup), "ACCELERATE_USE_CPU": "true"}, capture_output=True,
                            text=True, timeout=900, cwd=ROOT)  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    ours, theirs = out / "iteration-00", reference / "iteration-00"
    for name in ("answers.jsonl", "judged.jsonl", "dataset.jsonl"):
        assert (ours / name).read_text().replace(str(out), str(reference)) == (theirs / name).read_text(), name


@pytest.mark.slow
def test_lora_policy_is_the_base_with_the_warm_up_then_each_iterations_adapter_merged(setup, tmp_path, monkeypatch):
    """With LoRA the warm-up saves an adapter, and π_t is the base model with the warm-up's adapter
    merged, then iteration 0..t−1's: the merge the loop reloads equals one done by hand."""
    import torch
    from peft import PeftModel

    from align.cli import parse_recipe_args
    from align.loops import LoopArguments
    from align.loops.run import RunFolder
    from align.loops.uvcot import UVCoTArguments, UVCoTLoop
    from align.models import load_model
    from align.trainers.uvcot import UVCoTConfig, UVCoTTrainer

    out = tmp_path / "run"
    lora = {"use_peft": "true", "lora_r": "4", "lora_alpha": "8", "lora_target_modules": "all-linear", "iterations": "2"}
    result = run(setup, out, **lora)
    assert result.returncode == 0, result.stderr[-4000:]
    warm = out / "iteration-00" / "warmup" / "model"
    assert (warm / "adapter_config.json").exists() and not (warm / "config.json").exists()

    monkeypatch.syspath_prepend(str(setup[0] / "plugins"))  # the judge plug-in the config names
    parsed = parse_recipe_args(UVCoTConfig, ROOT / "recipes" / "configs" / "uvcot.yaml", argv(setup, out, **lora),
                               data_classes=(LoopArguments, UVCoTArguments))  # fmt: skip
    loop_args, training_args, model_args, drift_args, benchmark_args, uvcot_args = parsed
    loop = UVCoTLoop(loop_args=loop_args, uvcot_args=uvcot_args, training_args=training_args, model_args=model_args,
                     drift_args=drift_args, benchmark_args=benchmark_args, trainer_cls=UVCoTTrainer,
                     default_builder="uvcot_pairs", method="uvcot")  # fmt: skip
    folder = RunFolder(out, loop.config(), create=False)
    expected = PeftModel.from_pretrained(load_model(model_args), str(warm)).merge_and_unload()
    base = {k: v.clone() for k, v in load_model(model_args).state_dict().items()}
    for t in range(3):
        if t:
            adapter = out / f"iteration-{t - 1:02d}" / "model"
            expected = PeftModel.from_pretrained(expected, str(adapter)).merge_and_unload()
        got = loop.load_policy(folder, t).state_dict()
        assert got.keys() == expected.state_dict().keys()
        assert all(torch.equal(got[k], v) for k, v in expected.state_dict().items()), t
        assert any(not torch.equal(got[k], base[k]) for k in base), t  # the warm-up changed the base
