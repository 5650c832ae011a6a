"""Recipe plumbing: the default YAML, command-line overrides, and which checkpoint a re-run resumes."""

from pathlib import Path

from align.cli import DataArguments, last_checkpoint, parse_recipe_args
from align.loops import LoopArguments
from align.trainers import RPOConfig

ROOT = Path(__file__).resolve().parents[1]
RPO_YAML = ROOT / "recipes" / "configs" / "rpo.yaml"
RPO_CLASSES = (DataArguments, LoopArguments)  # what recipes/rpo.py parses


def test_default_yaml_with_command_line_overrides(tmp_path):
    data, training, model, drift, _, loop = parse_recipe_args(
        RPOConfig,
        RPO_YAML,
        ["--max_steps", "3", "--alpha", "0", "--output_dir", str(tmp_path), "--bf16", "false"],
        data_classes=RPO_CLASSES,
    )
    assert loop.iterations == 0  # rpo.yaml: one training run, not the loop
    assert (training.max_steps, training.alpha, training.output_dir) == (3, 0.0, str(tmp_path))
    assert training.beta == 0.1 and training.objective == "rpo"  # from the YAML
    assert model.model_name_or_path == "builtin:smollm2-135m-instruct" and model.use_peft
    assert data.dataset == "builtin:gsm8k_pairs" and data.num_eval == 8
    assert drift.drift and [type(c).__name__ for c in drift.callbacks()] == ["LikelihoodDriftCallback"]


def test_drift_can_be_switched_off_and_tuned():
    _, _, _, drift, _, _ = parse_recipe_args(RPOConfig, RPO_YAML, ["--drift", "false"], data_classes=RPO_CLASSES)
    assert drift.callbacks() == []
    _, _, _, drift, _, _ = parse_recipe_args(
        RPOConfig, RPO_YAML, ["--drift_num_probes", "5", "--drift_eval_steps", "3"], data_classes=RPO_CLASSES
    )
    (callback,) = drift.callbacks()
    assert (callback.num_probes, callback.eval_steps) == (5, 3)


def test_another_config_file_replaces_the_default(tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text(f"model_name_or_path: some/model\noutput_dir: {tmp_path}\nmax_steps: 7\n")
    _, training, model, _, _, _ = parse_recipe_args(
        RPOConfig, RPO_YAML, ["--config", str(other)], data_classes=RPO_CLASSES
    )
    assert model.model_name_or_path == "some/model" and training.max_steps == 7 and not model.use_peft


def test_resume_picks_the_newest_checkpoint(tmp_path):
    assert last_checkpoint(str(tmp_path / "missing"), None) is None
    for step in (8, 16):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-24").mkdir()  # killed while saving: no trainer_state.json
    assert last_checkpoint(str(tmp_path), None) == str(tmp_path / "checkpoint-16")
    assert last_checkpoint(str(tmp_path), "false") is None
    assert last_checkpoint(str(tmp_path), str(tmp_path / "checkpoint-8")) == str(tmp_path / "checkpoint-8")


def test_partial_checkpoints_are_never_resumed_from(tmp_path):
    from align.checkpoints import last_complete_checkpoint

    assert last_complete_checkpoint(tmp_path) is None
    (tmp_path / "checkpoint-2").mkdir()
    (tmp_path / "checkpoint-2" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-3").mkdir()
    (tmp_path / "checkpoint-3" / "adapter_model.safetensors").write_text("half")
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")
    assert (tmp_path / "checkpoint-3").exists()
    assert last_complete_checkpoint(tmp_path, remove_partial=True) == str(tmp_path / "checkpoint-2")
    assert not (tmp_path / "checkpoint-3").exists()


def test_loop_configs_parse():
    from align.trainers import SPPOConfig

    for name, config_cls, classes in (("sppo.yaml", SPPOConfig, (LoopArguments,)), ("sppo_paper.yaml", SPPOConfig, (LoopArguments,)),
                                      ("rpo_loop.yaml", RPOConfig, RPO_CLASSES)):  # fmt: skip
        parsed = parse_recipe_args(
            config_cls, ROOT / "recipes" / "configs" / name, ["--bf16", "false"], data_classes=classes
        )
        loop = parsed[-1] if config_cls is RPOConfig else parsed[0]
        assert loop.iterations >= 2, name
    _, training, _, _, _ = parse_recipe_args(SPPOConfig, ROOT / "recipes" / "configs" / "sppo_paper.yaml", ["--bf16", "false"],
                                          data_classes=(LoopArguments,))  # fmt: skip
    assert training.beta == 0.001 and training.objective == "sppo"
