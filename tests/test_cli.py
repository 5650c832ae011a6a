"""Recipe plumbing: the default YAML, command-line overrides, and which checkpoint a re-run resumes."""

import re
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


import pytest  # noqa: E402


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


@pytest.mark.parametrize("name", ["implicit_prm.yaml", "implicit_prm_paper.yaml"])
def test_implicit_prm_configs_parse(name):
    from align.cli import DataArguments
    from align.loops.stages import BestOfNArguments
    from align.trainers import ImplicitPRMConfig

    _, training, model, _, _, loop, best_of_n = parse_recipe_args(
        ImplicitPRMConfig, ROOT / "recipes" / "configs" / name, ["--bf16", "false"],
        data_classes=(DataArguments, LoopArguments, BestOfNArguments),
    )  # fmt: skip
    assert loop.iterations == 1 and training.beta == 0.05 and training.objective.startswith("implicit_prm_")
    assert best_of_n.n_values()[0] == 1 and best_of_n.prm_kwargs()["split"] in ("newline", "blank_line")


@pytest.mark.parametrize("name", ["safe_align.yaml", "safe_align_paper.yaml"])
def test_safe_align_configs_parse(name):
    from align.cli import DataArguments
    from align.trainers import SafeAlignConfig
    from recipes.safe_align import SafetyRunArguments

    data, training, _, _, _, run = parse_recipe_args(
        SafeAlignConfig, ROOT / "recipes" / "configs" / name, ["--bf16", "false"],
        data_classes=(DataArguments, SafetyRunArguments),
    )  # fmt: skip
    assert run.variant_list() == ["sft", "safe_align", "npo"] and training.objective == "safe_align"
    assert training.red_weight == 0.1 and training.threshold == 1.0 and training.beta == 0.1
    assert data.dataset in ("builtin:safety", "declare-lab/HarmfulQA")


# -- mistakes on the command line and in the YAML: one clear message, raised while parsing ------------------

from align.cli import ConfigError  # noqa: E402


def _parse(argv, config=RPO_YAML):
    return parse_recipe_args(RPOConfig, config, [*argv, "--bf16", "false"], data_classes=RPO_CLASSES)


def test_abbreviated_flags_are_refused_with_the_close_names():
    with pytest.raises(ConfigError, match=r"unknown option --max_step; did you mean --max_steps"):
        _parse(["--max_step", "1"])
    with pytest.raises(ConfigError, match="unexpected value 'extra'"):
        _parse(["--max_steps", "2", "extra"])


@pytest.mark.parametrize("value", ["-1e-4", "-0.5", "-3", "-.5", "-1E+2"])
def test_negative_numbers_are_values_not_flags(value):
    # a negative learning rate reaches the range check (and is refused there, naming it) ...
    with pytest.raises(ConfigError, match=f"learning_rate must be >= 0, got {float(value)}"):
        _parse(["--learning_rate", value])
    # ... while a field that may be negative takes it
    _, training, *_ = _parse(["--max_grad_norm", value])
    assert training.max_grad_norm == float(value)


def test_yaml_type_error_names_file_key_value_and_type(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("output_dir: out\nlearning_rate: fast\n")
    with pytest.raises(ConfigError) as err:
        _parse(["--config", str(bad)])
    message = str(err.value)
    assert message == f"{bad}: key 'learning_rate': value 'fast' is not a number"
    for text, expected in (
        ("max_steps: 1.5\n", "key 'max_steps': value 1.5 is not an integer"),
        ("bf16: maybe\n", "key 'bf16': value 'maybe' is not true or false"),
        ("lr_scheduler_type: cosin\n", "key 'lr_scheduler_type': value 'cosin' is not one of linear, cosine"),
        ("beta: [0.1]\n", "key 'beta': got a list [0.1]; expected a number"),
        ("max_stepz: 3\n", "unknown key 'max_stepz'; did you mean 'max_steps'"),
        ("max_steps: [1\n", "line 2, column 1: invalid YAML"),
        ("- 1\n- 2\n", "expected a mapping of keys to values, got a list"),
    ):
        bad.write_text(text)
        with pytest.raises(ConfigError, match=re.escape(expected)) as err:
            _parse(["--config", str(bad)])
        assert str(bad) in str(err.value) and len(str(err.value).splitlines()) <= 2
    with pytest.raises(ConfigError, match="--config .*missing.yaml: no such file"):
        _parse(["--config", str(tmp_path / "missing.yaml")])


def test_yaml_values_of_the_right_type_parse(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("output_dir: out\nmax_steps: 4.0\nbf16: false\nlora_target_modules: [q_proj, v_proj]\nbeta: 1\n")
    _, training, model, *_ = _parse(["--config", str(good)])
    assert (training.max_steps, training.beta, model.lora_target_modules) == (4, 1.0, ["q_proj", "v_proj"])


def test_bad_objective_judge_and_ranges_fail_while_parsing():
    from align.trainers import SPPOConfig

    def sppo(*argv):
        return parse_recipe_args(SPPOConfig, ROOT / "recipes" / "configs" / "sppo.yaml", [*argv, "--bf16", "false"],
                                 data_classes=(LoopArguments,))  # fmt: skip

    for argv, expected in (
        (["--judge", "gsm8k_verifie"], "unknown reward 'gsm8k_verifie'; known rewards: gsm8k, gsm8k_verifier"),
        (["--judge", "lm_judge", "--judge_options", '{"modle": "x"}'], "reward 'lm_judge'"),
        (["--judge_options", "{x"], "--judge_options is not valid JSON"),
        (["--beta", "0"], "SPPO.beta must be a positive number, got 0.0"),
        (["--temperature", "-1"], "temperature must be >= 0"),
        (["--top_p", "0"], "top_p must be in (0, 1]"),
        (["--num_samples", "0"], "num_samples must be a positive integer"),
        (["--iterations", "-1"], "iterations must be >= 0"),
        (["--sampling_precision", "fp16"], "sampling_precision must be auto, model or bf16, got 'fp16'"),
    ):
        with pytest.raises(ConfigError, match=re.escape(expected)):
            sppo(*argv)
    with pytest.raises(ConfigError, match="unknown objective 'rpoo'"):
        _parse(["--objective", "rpoo"])
