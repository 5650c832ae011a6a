"""Recipe plumbing: the default YAML, command-line overrides, and which checkpoint a re-run resumes."""

from pathlib import Path

from align.cli import last_checkpoint, parse_recipe_args
from align.trainers import RPOConfig

ROOT = Path(__file__).resolve().parents[1]
RPO_YAML = ROOT / "recipes" / "configs" / "rpo.yaml"


def test_default_yaml_with_command_line_overrides(tmp_path):
    data, training, model, drift = parse_recipe_args(
        RPOConfig, RPO_YAML, ["--max_steps", "3", "--alpha", "0", "--output_dir", str(tmp_path), "--bf16", "false"]
    )
    assert (training.max_steps, training.alpha, training.output_dir) == (3, 0.0, str(tmp_path))
    assert training.beta == 0.1 and training.objective == "rpo"  # from the YAML
    assert model.model_name_or_path == "builtin:smollm2-135m-instruct" and model.use_peft
    assert data.dataset == "builtin:gsm8k_pairs" and data.num_eval == 8
    assert drift.drift and [type(c).__name__ for c in drift.callbacks()] == ["LikelihoodDriftCallback"]


def test_drift_can_be_switched_off_and_tuned():
    _, _, _, drift = parse_recipe_args(RPOConfig, RPO_YAML, ["--drift", "false"])
    assert drift.callbacks() == []
    _, _, _, drift = parse_recipe_args(RPOConfig, RPO_YAML, ["--drift_num_probes", "5", "--drift_eval_steps", "3"])
    (callback,) = drift.callbacks()
    assert (callback.num_probes, callback.eval_steps) == (5, 3)


def test_another_config_file_replaces_the_default(tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text(f"model_name_or_path: some/model\noutput_dir: {tmp_path}\nmax_steps: 7\n")
    data, training, model, drift = parse_recipe_args(RPOConfig, RPO_YAML, ["--config", str(other)])
    assert model.model_name_or_path == "some/model" and training.max_steps == 7 and not model.use_peft


def test_resume_picks_the_newest_checkpoint(tmp_path):
    assert last_checkpoint(str(tmp_path / "missing"), None) is None
    for step in (8, 16):
        (tmp_path / f"checkpoint-{step}").mkdir()
    assert last_checkpoint(str(tmp_path), None) == str(tmp_path / "checkpoint-16")
    assert last_checkpoint(str(tmp_path), "false") is None
    assert last_checkpoint(str(tmp_path), str(tmp_path / "checkpoint-8")) == str(tmp_path / "checkpoint-8")
