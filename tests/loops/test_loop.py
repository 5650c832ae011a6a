"""The on-policy loop end to end on a tiny model: two SPPO iterations, resume after SIGKILL at
random points, a changed config refused, and one iteration on two processes."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.tiny import build_tiny_model_dir

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = '''
def length_reward(prompt, completion):
    """Prefers completions near 12 characters: distinct, deterministic scores for a random model."""
    return -abs(len(completion) - 12) + 0.01 * (sum(map(ord, completion)) % 7)
'''


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("loop")
    model = build_tiny_model_dir(root / "model", seed=0)
    (root / "plugins").mkdir()
    (root / "plugins" / "toy_judge.py").write_text(PLUGIN)
    prompts = [{"prompt": [{"role": "user", "content": f"What is {a} times {b}?"}], "answer": str(a * b)}
               for a in range(2, 6) for b in range(2, 6)]  # fmt: skip
    with open(root / "prompts.jsonl", "w") as f:
        f.writelines(json.dumps(p) + "\n" for p in prompts)
    return root, model


def argv(setup, out: Path, **overrides) -> list[str]:
    root, model = setup
    args = {
        "model_name_or_path": str(model), "dtype": "float32", "use_peft": "true", "lora_r": "4", "lora_alpha": "8",
        "lora_target_modules": "all-linear", "iterations": "2", "prompts": str(root / "prompts.jsonl"),
        "prompts_split": "train", "prompts_per_iteration": "6", "eval_prompts": str(root / "prompts.jsonl"),
        "num_eval_prompts": "4", "judge": "toy_judge:length_reward", "judge_options": '{"kind": "reward"}',
        "num_samples": "3", "max_new_tokens": "6", "generation_batch_size": "8", "generation_chunk_size": "2",
        "beta": "0.1", "output_dir": str(out), "bf16": "false", "learning_rate": "1e-3", "per_device_train_batch_size": "2",
        "num_train_epochs": "1", "max_length": "64", "logging_steps": "1", "save_strategy": "steps", "save_steps": "1",
        "drift_num_probes": "2", "drift_eval_steps": "1", "drift_entanglement_every": "0", "report_to": "none",
        "disable_tqdm": "true", "seed": "0",
    }  # fmt: skip
    args.update(overrides)  # None removes a flag
    return [x for key, value in args.items() if value is not None for x in (f"--{key}", value)]


def env(setup):
    root, _ = setup
    return {
        **os.environ,
        "PYTHONPATH": f"{root / 'plugins'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "HF_HUB_OFFLINE": "1",
    }


def run_sppo(setup, out, **overrides):
    cmd = [sys.executable, str(ROOT / "recipes" / "sppo.py"), *argv(setup, out, **overrides)]
    return subprocess.run(cmd, check=False, env=env(setup), capture_output=True, text=True, timeout=900, cwd=ROOT)


def timed(run, *args, **kwargs):
    """``run(*args, **kwargs)``, which must succeed, with its wall time as ``.duration``."""
    start = time.monotonic()
    result = run(*args, **kwargs)
    assert result.returncode == 0, result.stderr[-4000:]
    result.duration = time.monotonic() - start
    return result


def kill_at_random_points(cmd: list[str], environment: dict, duration: float, seed: int) -> None:
    """Start ``cmd`` three times, each SIGKILLed at a random point in the first 35% of an
    uninterrupted run's ``duration``: the first two attempts cannot finish before their kill (each
    restarts with at least 65% of the work left)."""
    rng, kills = random.Random(seed), 0
    for _ in range(3):
        proc = subprocess.Popen(cmd, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
        time.sleep(rng.uniform(0.1, 0.35) * duration)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 2


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def uninterrupted(setup, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    return out, timed(run_sppo, setup, out)


def test_two_iterations_end_to_end(uninterrupted):
    out, result = uninterrupted
    for t in range(2):
        it = out / f"iteration-{t:02d}"
        manifest = json.loads((it / "manifest.json").read_text())["stages"]
        assert {"generate", "judge", "dataset", "train", "evaluate"} <= set(manifest)
        samples = lines(it / "samples.jsonl")
        assert len(samples) == 6 and all(len(s["completions"]) == 3 for s in samples)
        judged = lines(it / "judged.jsonl")
        assert all(abs(sum(r["win_rates"]) - 1.5) < 1e-9 for r in judged)  # Σ_i P̂_i = K/2 for any K×K P
        pairs = lines(it / "dataset.jsonl")
        assert pairs and all(len(p["win_rates"]) == 2 and p["win_rates"][0] >= p["win_rates"][1] for p in pairs)
        assert (it / "model" / "adapter_model.safetensors").exists()
        assert (it / "train" / "likelihood_drift.jsonl").exists()
        assert "win_rate_vs_start" in json.loads((it / "eval.json").read_text())
    # iteration 1 samples from π_1 on the next slice of prompts
    assert (
        lines(out / "iteration-00" / "samples.jsonl")[0]["prompt"]
        != lines(out / "iteration-01" / "samples.jsonl")[0]["prompt"]
    )
    assert "| iteration | pairs |" in result.stdout and "\n| 2 |" in result.stdout
    # each stage's wall-clock seconds in the manifest, and a time table after the results table
    seconds = [json.loads((out / f"iteration-{t:02d}" / "manifest.json").read_text())["stages"] for t in range(2)]
    assert all(entry["seconds"] >= 0 for stages in seconds for entry in stages.values())
    assert all(stages[name]["seconds"] > 0 for stages in seconds for name in ("generate", "train", "evaluate"))
    assert sum(entry["seconds"] for stages in seconds for entry in stages.values()) < result.duration
    header = "| iteration | evaluate_start s | generate s | judge s | dataset s | train s | evaluate s | total s |"
    assert header in result.stdout
    cells = " | ".join(f"{seconds[1][name]['seconds']:.0f}" for name in ("generate", "judge", "dataset", "train", "evaluate"))
    second = f"| 2 | | {cells} |"
    assert second in result.stdout


def test_rerun_does_nothing_and_a_changed_config_is_refused(setup, uninterrupted):
    out, _ = uninterrupted
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = run_sppo(setup, out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before  # nothing redone
    changed = run_sppo(setup, out, num_samples="4")
    assert changed.returncode != 0 and "changed: loop.num_samples: 3 → 4" in changed.stderr and "--start_over true" in changed.stderr


def test_a_benchmark_added_to_a_finished_run_runs_only_its_stages(setup, uninterrupted, tmp_path):
    """--benchmark gsm8k on a finished run: the starting model and each iteration's model are
    benchmarked (nothing else is redone), the table gets the column, and a re-run does nothing."""
    import shutil

    from align.data.gsm8k import LOCAL_GSM8K_TEST

    if not LOCAL_GSM8K_TEST.is_file():
        pytest.skip("../shared/data/gsm8k is not present")
    reference, _ = uninterrupted
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    trained = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and "benchmark" not in p.parts[-2:]}
    flags = {"benchmark": "gsm8k", "benchmark_limit": "2", "benchmark_max_new_tokens": "4", "benchmark_batch_size": "2"}
    result = run_sppo(setup, out, **flags)
    assert result.returncode == 0, result.stderr[-4000:]
    for t in range(2):
        manifest = json.loads((out / f"iteration-{t:02d}" / "manifest.json").read_text())["stages"]
        assert manifest["benchmark"]["benchmark"] == "gsm8k" and manifest["benchmark"]["num_problems"] == 2
        assert (out / f"iteration-{t:02d}" / "benchmark" / "samples.jsonl").exists()
    assert "benchmark_start" in json.loads((out / "iteration-00" / "manifest.json").read_text())["stages"]
    assert all(p.stat().st_mtime_ns == m for p, m in trained.items() if p.name != "manifest.json")  # nothing retrained
    assert "gsm8k flexible-extract |" in result.stdout and "\n| 2 |" in result.stdout

    # the starting model's answers are those of eval/gsm8k.py on the base model (greedy)
    from tests.scripts import load_script

    load_script("eval/gsm8k.py").main(
        ["--model", str(setup[1]), "--limit", "2", "--max_new_tokens", "4", "--output_dir", str(tmp_path / "base")]
    )
    start = lines(out / "iteration-00" / "benchmark_start" / "samples.jsonl")
    assert [r["outputs"] for r in start] == [r["outputs"] for r in lines(tmp_path / "base" / "samples.jsonl")]

    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = run_sppo(setup, out, **flags)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_gives_the_same_run(setup, uninterrupted, tmp_path):
    reference, straight = uninterrupted
    out = tmp_path / "run"
    kill_at_random_points([sys.executable, str(ROOT / "recipes" / "sppo.py"), *argv(setup, out)], env(setup),
                          straight.duration, seed=1234)  # fmt: skip
    final = run_sppo(setup, out)
    assert final.returncode == 0, final.stderr[-4000:]
    for t in range(2):
        ours, theirs = out / f"iteration-{t:02d}", reference / f"iteration-{t:02d}"
        samples = lines(ours / "samples.jsonl")
        assert [s["index"] for s in samples] == [
            s["index"] for s in lines(theirs / "samples.jsonl")
        ]  # each prompt once
        for name in ("samples.jsonl", "judged.jsonl", "dataset.jsonl"):
            assert lines(ours / name) == lines(theirs / name), (t, name)
        assert not (ours / "samples.chunks").exists() and not (ours / "model.partial").exists()
        # a training stage resumed from a checkpoint records the whole run's loss, not its own steps'
        train = [json.loads((it / "manifest.json").read_text())["stages"]["train"] for it in (ours, theirs)]
        assert train[0]["train_loss"] == pytest.approx(train[1]["train_loss"], rel=1e-6), t


@pytest.mark.slow
def test_one_iteration_on_two_processes(setup, uninterrupted, tmp_path):
    """DDP over 2 CPU processes: generation sharded and gathered, the same samples and pairs as
    one process, training with the same global batch (2 × 1), the iteration finished."""
    reference, _ = uninterrupted
    out = tmp_path / "run"
    # the 2-process run is its own experiment (another batch layout): compare the shared stages only
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--dynamo_backend", "no", "--mixed_precision", "no", "--main_process_port", str(_free_port()),
           str(ROOT / "recipes" / "sppo.py"), *argv(setup, out, iterations="1", per_device_train_batch_size="1")]  # fmt: skip
    result = subprocess.run(cmd, check=False, env={**env(setup), "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"},
                            capture_output=True, text=True, timeout=900, cwd=ROOT)  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    ours, theirs = out / "iteration-00", reference / "iteration-00"
    for name in ("samples.jsonl", "judged.jsonl", "dataset.jsonl"):
        assert lines(ours / name) == lines(theirs / name), name
    manifest = json.loads((ours / "manifest.json").read_text())["stages"]
    assert {"generate", "judge", "dataset", "train", "evaluate"} <= set(manifest)
    assert (ours / "model" / "adapter_model.safetensors").exists()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
