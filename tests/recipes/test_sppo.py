"""The SPPO recipe on the real built-in SmolLM2 and the built-in arithmetic task: one short iteration."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_sppo_recipe_runs_one_iteration_on_smollm2(tmp_path):
    out = tmp_path / "sppo"
    cmd = [
        sys.executable, str(ROOT / "recipes" / "sppo.py"), "--output_dir", str(out), "--iterations", "1",
        "--prompts_per_iteration", "8", "--num_samples", "2", "--max_new_tokens", "16", "--num_eval_prompts", "4",
        "--num_train_epochs", "1", "--drift_num_probes", "2", "--save_strategy", "no",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-4000:]
    it = out / "iteration-00"
    manifest = json.loads((it / "manifest.json").read_text())["stages"]
    assert {"evaluate_start", "generate", "judge", "dataset", "train", "evaluate"} <= set(manifest)
    assert 0.0 <= manifest["evaluate"]["accuracy"] <= 1.0 and manifest["generate"]["samples"] == 16
    pairs = [json.loads(line) for line in (it / "dataset.jsonl").read_text().splitlines()]
    assert pairs and all(p["win_rates"][0] > p["win_rates"][1] for p in pairs)
    assert (it / "model" / "adapter_model.safetensors").exists()
    assert "| 0 (start) |" in result.stdout and "\n| 1 | " in result.stdout
