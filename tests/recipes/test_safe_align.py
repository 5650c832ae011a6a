"""The SAFE-ALIGN recipe end to end on a tiny model and the built-in stand-in set: the three variants
trained into their folders, the start model and each variant evaluated, the before/after table; a
re-run redoes nothing; a bad variant or judge fails before anything is trained."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tiny import build_tiny_model_dir

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = ("sft", "safe_align", "npo")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_tiny_model_dir(tmp_path_factory.mktemp("safe_align") / "model", seed=0)


def run(model: Path, out: Path, **overrides) -> subprocess.CompletedProcess:
    args = {
        "model_name_or_path": str(model), "dtype": "float32", "lora_r": "4", "lora_alpha": "8", "output_dir": str(out),
        "bf16": "false", "max_steps": "2", "per_device_train_batch_size": "4", "per_device_eval_batch_size": "8",
        "eval_steps": "2", "save_steps": "2", "logging_steps": "1", "max_length": "256", "drift_num_probes": "2",
        "safety_limit": "3", "safety_max_new_tokens": "4", "disable_tqdm": "true",
    }  # fmt: skip
    args.update(overrides)
    argv = [x for key, value in args.items() for x in (f"--{key}", value)]
    cmd = [sys.executable, str(ROOT / "recipes" / "safe_align.py"), *argv]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=900, cwd=ROOT)


@pytest.mark.slow
def test_three_variants_trained_evaluated_and_tabulated_then_a_rerun_does_nothing(model, tmp_path):
    out = tmp_path / "run"
    result = run(model, out)
    assert result.returncode == 0, result.stderr[-4000:]
    for name in VARIANTS:
        assert (out / name / "run.json").exists() and (out / name / "adapter_config.json").exists(), name
        config = json.loads((out / name / "run.json").read_text())["config"]["training"]
        assert config["objective"] == ("npo" if name == "npo" else "safe_align")
        assert config["red_weight"] == (0.0 if name == "sft" else 0.1)
    for name, metric in (("safe_align", "safe_align/ascent_fraction"), ("npo", "npo/ascent_weight")):
        (state,) = (out / name).glob("checkpoint-*/trainer_state.json")
        assert any(metric in entry for entry in json.loads(state.read_text())["log_history"]), name
    table = (out / "safety_table.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "variant" not in line]
    assert [r.split("|")[1].strip() for r in rows] == ["start (no training)", "safe-only SFT", "SAFE-ALIGN", "NPO"]
    assert table in result.stdout
    for name in ("start", *VARIANTS):
        metrics = json.loads((out / "safety_eval" / name / "result.json").read_text())["metrics"]
        assert {"harmful_rate", "utility/accuracy", "safe_nll", "harmful_nll"} <= set(metrics), name
        assert len((out / "safety_eval" / name / "samples.jsonl").read_text().splitlines()) == 3
    # different weights, different NLLs: each variant was evaluated with its own model
    nlls = {json.loads((out / "safety_eval" / n / "result.json").read_text())["metrics"]["safe_nll"]
            for n in ("start", *VARIANTS)}
    assert len(nlls) == 4

    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "safety_table.md"}
    again = run(model, out)
    assert again.returncode == 0, again.stderr[-4000:]
    assert again.stdout.count("is a finished run") == 3 and table in again.stdout
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing trained or evaluated again

    # NPO trained again under another config: its evaluation is redone, the others' are kept
    results = {n: out / "safety_eval" / n / "result.json" for n in ("start", *VARIANTS)}
    before = {n: (p.stat().st_mtime_ns, json.loads(p.read_text())["metrics"]) for n, p in results.items()}
    third = run(model, out, variants="npo", learning_rate="1e-2", start_over="true")
    assert third.returncode == 0, third.stderr[-4000:]
    after = {n: (p.stat().st_mtime_ns, json.loads(p.read_text())["metrics"]) for n, p in results.items()}
    assert all(after[n] == before[n] for n in ("start", "sft", "safe_align"))
    assert after["npo"][0] != before["npo"][0] and after["npo"][1]["safe_nll"] != before["npo"][1]["safe_nll"]


def test_bad_variant_or_judge_fails_before_training(model, tmp_path):
    for flag, value, message in (("variants", "sft,dpo", "--variants must name distinct variants"),
                                 ("safety_judge", "safety_rulez", "unknown reward 'safety_rulez'")):  # fmt: skip
        result = run(model, tmp_path / flag, **{flag: value})
        assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
        assert not (tmp_path / flag).exists()
