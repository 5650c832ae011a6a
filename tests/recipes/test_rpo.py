"""The RPO recipe end to end on the real built-in SmolLM2 and real GSM8K pairs (one short run)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GSM8K = ROOT.parent / "shared" / "data" / "gsm8k" / "train.jsonl"


@pytest.mark.slow
@pytest.mark.skipif(not GSM8K.exists(), reason="needs ../shared/data/gsm8k (the hub is off in tests)")
def test_rpo_recipe_trains_and_saves_smollm2(tmp_path):
    out = tmp_path / "rpo"
    cmd = [
        sys.executable, str(ROOT / "recipes" / "rpo.py"),
        "--output_dir", str(out), "--max_steps", "2", "--max_train_examples", "8", "--num_eval", "2",
        "--per_device_train_batch_size", "2", "--max_length", "160", "--eval_on_start", "false",
        "--eval_strategy", "no", "--save_strategy", "no", "--logging_steps", "1",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"Saved the trained model to {out.resolve()}" in result.stdout
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["r"] == 16 and (out / "adapter_model.safetensors").exists()
    assert (out / "tokenizer_config.json").exists()
    # likelihood drift is on by default: step 0 and the end, on the 2 held-out pairs
    records = [json.loads(line) for line in (out / "likelihood_drift.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 2] and records[1]["chosen_change"] != 0
    assert (out / "likelihood_drift.png").read_bytes()[:4] == b"\x89PNG"
    assert "'drift/chosen_logps'" in result.stdout or "drift/chosen_logps" in result.stderr

    # The saved adapter loads back onto the base model and differs from it.
    import torch
    from peft import AutoPeftModelForCausalLM

    model = AutoPeftModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().max() > 0 for p in lora_b)


def test_rpo_recipe_rejects_unknown_arguments():
    result = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "rpo.py"), "--no_such_flag", "1"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode != 0 and "no_such_flag" in result.stderr
