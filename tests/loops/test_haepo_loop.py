"""The HAEPO recipe's on-policy loop end to end on a tiny model (the toy judge and prompts of
test_loop.py): two iterations of lists with returns, resume after SIGKILL at random points equal
to the uninterrupted run, and one iteration on two processes equal to one process."""

import json
import subprocess
import sys

import pytest

from tests.loops.test_loop import (  # noqa: F401 (setup: a fixture this module's tests use)
    ROOT,
    _free_port,
    argv,
    env,
    kill_at_random_points,
    lines,
    setup,
    timed,
)

RECIPE = ROOT / "recipes" / "haepo.py"
# tiny-model settings: the toy judge scores lengths, so the returns are the scores; τ = 20 keeps
# the Plackett-Luce weights of a random model's samples from being one-hot
HAEPO = {"beta": None, "tau": "20", "kl_coef": "0.1", "entropy_coef": "0.01", "per_device_train_batch_size": "2"}


def haepo_argv(setup, out, **overrides):
    return argv(setup, out, **{**HAEPO, **overrides})


def run_haepo(setup, out, **overrides):
    cmd = [sys.executable, str(RECIPE), *haepo_argv(setup, out, **overrides)]
    return subprocess.run(cmd, check=False, env=env(setup), capture_output=True, text=True, timeout=900, cwd=ROOT)


@pytest.fixture(scope="module")
def haepo_run(setup, tmp_path_factory):
    out = tmp_path_factory.mktemp("haepo") / "run"
    return out, timed(run_haepo, setup, out)


def test_two_iterations_of_lists_end_to_end(haepo_run):
    out, result = haepo_run
    for t in range(2):
        it = out / f"iteration-{t:02d}"
        judged = lines(it / "judged.jsonl")
        rows = lines(it / "dataset.jsonl")
        assert rows and all(2 <= len(r["completions"]) <= 3 for r in rows)
        # the returns are the judge's scores of the same completions (the toy judge is a reward model)
        by_prompt = {json.dumps(j["prompt"]): dict(zip(j["completions"], j["scores"])) for j in judged}
        for row in rows:
            scores = by_prompt[json.dumps(row["prompt"])]
            assert row["returns"] == [scores[c[0]["content"]] for c in row["completions"]]
        manifest = json.loads((it / "manifest.json").read_text())["stages"]
        assert manifest["dataset"]["lists"] == len(rows) and {"train", "evaluate"} <= set(manifest)
        drift = lines(it / "train" / "likelihood_drift.jsonl")
        assert drift[0]["step"] == 0 and "chosen_logps" in drift[0]  # best vs worst return of the first lists
        assert (it / "model" / "adapter_model.safetensors").exists()
    assert "| iteration | lists |" in result.stdout and "Δ best logp/tok" in result.stdout and "\n| 2 |" in result.stdout


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_gives_the_same_run(setup, haepo_run, tmp_path):
    reference, straight = haepo_run
    out = tmp_path / "run"
    kill_at_random_points([sys.executable, str(RECIPE), *haepo_argv(setup, out)], env(setup), straight.duration, seed=99)
    final = run_haepo(setup, out)
    assert final.returncode == 0, final.stderr[-4000:]
    for t in range(2):
        ours, theirs = out / f"iteration-{t:02d}", reference / f"iteration-{t:02d}"
        for name in ("samples.jsonl", "judged.jsonl", "dataset.jsonl", "eval.json"):
            assert (ours / name).read_text() == (theirs / name).read_text(), (t, name)
        train = [json.loads((it / "manifest.json").read_text())["stages"]["train"] for it in (ours, theirs)]
        assert train[0]["train_loss"] == pytest.approx(train[1]["train_loss"], rel=1e-6), t


@pytest.mark.slow
def test_one_iteration_on_two_processes_equals_one(setup, haepo_run, tmp_path):
    """DDP over 2 CPU processes, per-device batch 1 (the global batch of 2 lists of one process):
    the same samples, returns and lists, and the same training loss and held-out answers."""
    reference, _ = haepo_run
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--dynamo_backend", "no", "--mixed_precision", "no", "--main_process_port", str(_free_port()),
           str(RECIPE), *haepo_argv(setup, out, iterations="1", per_device_train_batch_size="1")]  # fmt: skip
    result = subprocess.run(cmd, check=False, env={**env(setup), "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"},
                            capture_output=True, text=True, timeout=900, cwd=ROOT)  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    ours, theirs = out / "iteration-00", reference / "iteration-00"
    for name in ("samples.jsonl", "judged.jsonl", "dataset.jsonl"):
        assert lines(ours / name) == lines(theirs / name), name
    train = [json.loads((it / "manifest.json").read_text())["stages"]["train"] for it in (ours, theirs)]
    assert train[0]["train_loss"] == pytest.approx(train[1]["train_loss"], rel=1e-4)
