"""Real multi-process runs: `accelerate launch` with 2 CPU processes under DDP and DeepSpeed ZeRO-2/3.

Each must finish, and its step-0 loss (and the loss after one update, which checks that gradients
were synchronised) must equal a single-process run on the same global batch of 8 pairs. The DDP
and ZeRO-3 launches (and the single-process one) also train both implicit PRM variants, checked
by their own test against the same launches (each launch runs once per module)."""

import json
import os
import socket
import sys
from pathlib import Path

import pytest

from tests.scripts import run_in_session
from tests.tiny import build_tiny_model_dir

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "trainers" / "dist_run.py"
CONFIGS = ROOT / "accelerate_configs"

LAUNCHES = {
    "ddp": ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--dynamo_backend", "no"],
    "zero2": ["--config_file", str(CONFIGS / "zero2.yaml"), "--num_processes", "2"],
    "zero3": ["--config_file", str(CONFIGS / "zero3.yaml"), "--num_processes", "2"],
    "zero3_offload": ["--config_file", str(CONFIGS / "zero3_offload.yaml"), "--num_processes", "2"],
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    return build_tiny_model_dir(root / "policy", seed=0), build_tiny_model_dir(root / "ref", seed=1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(models, tmp_path, launch_args, per_device_batch, *extra):
    """Run dist_run.py under accelerate; each launch gets its own rendezvous port, so a previous
    launch still releasing the default one cannot collide with it. ``extra``: dist_run.py's
    optional arguments (``implicit_prm``)."""
    out = tmp_path / "history.json"
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *launch_args, "--mixed_precision", "no", "--main_process_port", str(free_port()),
           str(SCRIPT), str(models[0]), str(models[1]), str(out), str(per_device_batch), *extra]  # fmt: skip
    # a launch takes 15-60 s, the first compiles DeepSpeed's CPU ops (about a minute)
    status, output = run_in_session(cmd, cwd=ROOT, env=env, timeout=360)
    if status is None:
        pytest.fail(f"{launch_args[:2]} hung for 360 s; its output ends:\n{output[-5000:]}")
    assert status == 0, output[-5000:]
    return json.loads(out.read_text())


# Launches that also train the implicit PRM, HAEPO and SAFE-ALIGN/NPO (dist_run.py ... implicit_prm haepo safe_align):
# one launch, several checks.
IMPLICIT_PRM_LAUNCHES = ("ddp", "zero3")


@pytest.fixture(scope="module")
def single(models, tmp_path_factory):
    launch_args = ["--num_processes", "1", "--dynamo_backend", "no"]
    return launch(models, tmp_path_factory.mktemp("single"), launch_args, 8, "implicit_prm", "haepo", "safe_align")


@pytest.fixture(scope="module")
def launched(models, tmp_path_factory):
    """``launched(name)``: the 2-process launch ``name`` (per-device batch 4), run once per module."""
    runs = {}

    def get(name):
        if name not in runs:
            extra = ["implicit_prm", "haepo", "safe_align"] if name in IMPLICIT_PRM_LAUNCHES else []
            runs[name] = launch(models, tmp_path_factory.mktemp(name), LAUNCHES[name], 4, *extra)
        return runs[name]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("name", list(LAUNCHES))
def test_two_processes_match_one(name, models, single, launched):
    run = launched(name)
    assert run["world_size"] == 2 and single["world_size"] == 1
    steps = [entry for entry in run["log_history"] if "loss" in entry]
    reference = [entry for entry in single["log_history"] if "loss" in entry]
    assert len(steps) == len(reference) == 2
    # With the optimizer offloaded, DeepSpeed replaces the SGD optimizer with its CPU Adam, so only
    # step 0 is comparable there; the update must still lower the loss.
    compared = steps[:1] if name == "zero3_offload" else steps
    for ours, expected in zip(compared, reference):
        for key in ("loss", "dpo", "nll", "logps/chosen", "rewards/margins"):
            assert ours[key] == pytest.approx(expected[key], abs=1e-5), (name, key, ours["step"])
    assert steps[1]["loss"] < steps[0]["loss"]

    # the drift probes see the same policy: same log-probs at each compared step, on every process' model
    drift, expected_drift = run["drift"], single["drift"]
    assert [r["step"] for r in drift] == [r["step"] for r in expected_drift] == [0, 1, 2]
    for ours, expected in zip(drift[:1] if name == "zero3_offload" else drift, expected_drift):
        for key in ("chosen_logps", "rejected_logps", "margin", "topk_mass", "ches"):
            assert ours[key] == pytest.approx(expected[key], rel=1e-4, abs=1e-4), (name, key, ours["step"])
    if name.startswith("zero3"):
        assert "grad_cosine" not in drift[0]  # partitioned parameters: not measured under ZeRO-3
    else:
        assert drift[0]["grad_cosine"] == pytest.approx(expected_drift[0]["grad_cosine"], abs=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", IMPLICIT_PRM_LAUNCHES)
def test_implicit_prm_two_processes_match_one(name, single, launched):
    """Both implicit PRM variants (CE on 16 labelled completions, DPO on the 8 pairs built from them)
    under DDP and ZeRO-3 equal one process on the same global batch of 8: every logged metric at
    both steps, the eval loss after both updates (same weights), the drift probes built from
    labelled completions, and implicit_prm.json, written by the main process beside the weights."""
    for objective, ours in launched(name)["implicit_prm"].items():
        expected = single["implicit_prm"][objective]
        steps = [entry for entry in ours["log_history"] if "loss" in entry]
        reference = [entry for entry in expected["log_history"] if "loss" in entry]
        assert len(steps) == len(reference) == 2
        for mine, theirs in zip(steps, reference):
            keys = set(theirs) - {"grad_norm", "learning_rate", "epoch", "step"}
            assert keys >= {"loss", "rewards/accuracies"} and set(mine) >= keys, (name, objective)
            for key in keys:
                assert mine[key] == pytest.approx(theirs[key], abs=1e-5), (name, objective, key, mine["step"])
        assert steps[1]["loss"] != pytest.approx(steps[0]["loss"], abs=1e-3)  # the update changed something
        for key in ("eval_loss", "eval_rewards/accuracies"):
            assert ours["final"][key] == pytest.approx(expected["final"][key], abs=1e-5), (name, objective, key)
        assert [r["step"] for r in ours["drift"]] == [r["step"] for r in expected["drift"]] == [0, 1, 2]
        for mine, theirs in zip(ours["drift"], expected["drift"]):
            for key in ("chosen_logps", "rejected_logps", "margin"):
                assert mine[key] == pytest.approx(theirs[key], rel=1e-4, abs=1e-4), (name, objective, key)
        assert ours["info"] == expected["info"] and ours["info"]["objective"] == objective
        assert "implicit_prm.json" in ours["files"] and not any(f.endswith(".tmp") for f in ours["files"])


@pytest.mark.slow
@pytest.mark.parametrize("name", IMPLICIT_PRM_LAUNCHES)
def test_haepo_two_processes_match_one(name, single, launched):
    """HAEPO on a fixed batch of 8 lists with K = 2, 3, 4 (shorter lists masked), entropy and KL
    on, under DDP and ZeRO-3 equals one process on the same global batch: every logged term at
    both steps (the second step checks the synchronised update) and the eval loss after them."""
    ours, expected = launched(name)["haepo"], single["haepo"]
    steps = [entry for entry in ours["log_history"] if "loss" in entry]
    reference = [entry for entry in expected["log_history"] if "loss" in entry]
    assert len(steps) == len(reference) == 2
    for mine, theirs in zip(steps, reference):
        keys = set(theirs) - {"grad_norm", "learning_rate", "epoch", "step"}
        assert keys >= {"loss", "haepo/pl_term", "haepo/entropy", "haepo/kl", "haepo/ess", "haepo/best_weight"}
        for key in keys:
            assert mine[key] == pytest.approx(theirs[key], abs=1e-5), (name, key, mine["step"])
    assert steps[1]["haepo/kl"] > 1e-4 and steps[1]["loss"] != pytest.approx(steps[0]["loss"], abs=1e-4)
    for key in ("eval_loss", "eval_haepo/pl_term", "eval_haepo/kl"):
        assert ours["final"][key] == pytest.approx(expected["final"][key], abs=1e-5), (name, key)


@pytest.mark.slow
@pytest.mark.parametrize("name", IMPLICIT_PRM_LAUNCHES)
def test_safe_align_two_processes_match_one(name, single, launched):
    """SAFE-ALIGN and NPO on 8 conversations (multi-turn ones with their user turns masked) under
    DDP and ZeRO-3 equal one process on the same global batch: every logged term at both steps and
    the eval loss after them."""
    for objective, ours in launched(name)["safe_align"].items():
        expected = single["safe_align"][objective]
        steps = [entry for entry in ours["log_history"] if "loss" in entry]
        reference = [entry for entry in expected["log_history"] if "loss" in entry]
        assert len(steps) == len(reference) == 2
        for mine, theirs in zip(steps, reference):
            keys = set(theirs) - {"grad_norm", "learning_rate", "epoch", "step"}
            assert keys >= {"loss", "nll/safe", "nll/harmful"}
            for key in keys:
                assert mine[key] == pytest.approx(theirs[key], abs=1e-5), (name, objective, key, mine["step"])
        assert steps[1]["loss"] != pytest.approx(steps[0]["loss"], abs=1e-4)  # the first step changed the model
        assert ours["final"]["eval_loss"] == pytest.approx(expected["final"]["eval_loss"], abs=1e-5), (name, objective)
