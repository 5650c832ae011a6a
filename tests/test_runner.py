"""recipes/rpo.py as a user runs it (align.runner.run_training), on a tiny model: every input error
before the model loads and before anything is written, safe re-runs, and exact resumes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from align.cli import ConfigError
from align.data import DataValidationError
from align.loops import ConfigChangedError
from tests.scripts import load_script
from tests.trainers.common import pair_dataset

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rpo():
    return load_script("recipes/rpo.py")


def write_pairs(path: Path, n: int = 12) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in pair_dataset(n).to_list()))
    return path


def args(model, dataset, out, *more):
    return ["--model_name_or_path", str(model), "--dataset", str(dataset), "--output_dir", str(out), "--bf16", "false",
            "--max_steps", "4", "--save_steps", "2", "--eval_steps", "4", "--logging_steps", "2", "--num_eval", "4",
            "--drift_num_probes", "4", "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "4",
            "--disable_tqdm", "true", *more]  # fmt: skip


def files(folder: Path) -> dict:
    return {p.relative_to(folder): (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def finished(rpo, tiny_model_dir, tmp_path_factory):
    """One uninterrupted run: (output folder, dataset file, its train_results.json)."""
    tmp = tmp_path_factory.mktemp("rpo")
    dataset, out = write_pairs(tmp / "pairs.jsonl"), tmp / "run"
    trainer = rpo.main(args(tiny_model_dir, dataset, out))
    # the final evaluation is the Trainer's own at the last step (eval_steps divides max_steps)
    assert [e["step"] for e in trainer.state.log_history if "eval_loss" in e] == [0, 4]
    return out, dataset, json.loads((out / "train_results.json").read_text())


def test_a_finished_run_is_recorded_and_a_rerun_changes_nothing(rpo, tiny_model_dir, finished, capsys):
    out, dataset, results = finished
    record = json.loads((out / "run.json").read_text())
    assert record["finished"]["global_step"] == 4 and record["config"]["training"]["max_steps"] == 4
    before = files(out)
    assert rpo.main(args(tiny_model_dir, dataset, out)) is None
    assert files(out) == before
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    final_eval = [e for e in state["log_history"] if "eval_loss" in e][-1]
    assert json.loads((out / "eval_results.json").read_text())["eval_loss"] == final_eval["eval_loss"]
    assert f"{out} is a finished run" in capsys.readouterr().out


def test_a_changed_config_is_refused_naming_the_keys(rpo, tiny_model_dir, finished):
    out, dataset, _ = finished
    before = files(out)
    with pytest.raises(ConfigChangedError) as err:
        rpo.main(args(tiny_model_dir, dataset, out, "--learning_rate", "1e-4", "--objective", "dpo"))
    assert "changed: training.learning_rate: 0.0002 → 0.0001; training.objective: 'rpo' → 'dpo'" in str(err.value)
    assert "--start_over true" in str(err.value) and files(out) == before


def test_a_kill_during_the_final_save_resumes_to_the_same_model_and_metrics(rpo, tiny_model_dir, finished, tmp_path):
    """The state a kill during the final save leaves: the final checkpoint complete, the model
    files in output_dir half-written, the run not marked finished. The re-run trains no step,
    and its model and train_loss equal the uninterrupted run's."""
    import shutil

    from safetensors.torch import load_file

    out, dataset, results = finished
    killed = tmp_path / "killed"
    shutil.copytree(out, killed)
    record = json.loads((killed / "run.json").read_text())
    del record["finished"]
    (killed / "run.json").write_text(json.dumps(record))
    (killed / "adapter_model.safetensors").write_bytes(b"half")
    (killed / "train_results.json").unlink()
    rpo.main(args(tiny_model_dir, dataset, killed))
    resumed = json.loads((killed / "train_results.json").read_text())
    assert resumed["train_loss"] == pytest.approx(results["train_loss"], rel=1e-9)
    assert sorted(p.name for p in killed.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]  # no step 5
    assert json.loads((killed / "run.json").read_text())["finished"]["global_step"] == 4
    ours, theirs = load_file(killed / "adapter_model.safetensors"), load_file(out / "adapter_model.safetensors")
    assert ours.keys() == theirs.keys() and all((ours[k] == theirs[k]).all() for k in ours)


def test_bad_data_is_reported_before_the_model_path_and_nothing_is_written(rpo, tmp_path):
    bad = tmp_path / "pairs.jsonl"
    rows = pair_dataset(6).to_list()
    rows[3]["prompt"] = None
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    with pytest.raises(DataValidationError, match=r"pairs.jsonl: row 3: field 'prompt'.*null"):
        rpo.main(args(tmp_path / "no-such-model", bad, out))
    assert not out.exists()


def test_a_missing_model_path_is_named_and_nothing_is_written(rpo, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match=r"model_name_or_path: .*no-such-model: no such folder"):
        rpo.main(args(tmp_path / "no-such-model", write_pairs(tmp_path / "pairs.jsonl"), out))
    assert not out.exists()


def test_bad_numbers_fail_while_parsing(rpo, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="learning_rate must be >= 0"):
        rpo.main(args(tiny_model_dir, write_pairs(tmp_path / "pairs.jsonl"), out, "--learning_rate", "-1e-4"))
    assert not out.exists()


def test_a_tiny_dataset_holds_back_fewer_rows_with_one_warning(rpo, tiny_model_dir, tmp_path, caplog):
    """5 pairs with num_eval 8 (the recipe's default): 4 held out with a warning, 1 trained on."""
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        rpo.main(args(tiny_model_dir, write_pairs(tmp_path / "pairs.jsonl", 5), out, "--num_eval", "8",
                      "--max_steps", "1"))  # fmt: skip
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("holding back 4 for evaluation, not num_eval=8" in w and "--num_eval" in w for w in warnings)
    assert json.loads((out / "run.json").read_text())["finished"]["global_step"] == 1
