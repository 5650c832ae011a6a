"""The implicit PRM recipe end to end on a tiny model: sample → label → train → best-of-N, a re-run
that does nothing, the DPO variant on every correct × incorrect pair, and the trained PRM as the
judge of a one-iteration SPPO loop."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tiny import build_tiny_model_dir

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = '''
def parity_verifier(prompt, completion, reference):
    """Correct when the completion has an even number of characters: a mix of verdicts for a random model."""
    return len(completion) % 2 == 0
'''


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("implicit_prm")
    model = build_tiny_model_dir(root / "model", seed=0)
    (root / "plugins").mkdir()
    (root / "plugins" / "toy_verifier.py").write_text(PLUGIN)
    prompts = [{"prompt": [{"role": "user", "content": f"Start with {a}. Add {b}."}], "answer": str(a + b)}
               for a in range(2, 7) for b in range(2, 7)]  # fmt: skip
    with open(root / "prompts.jsonl", "w") as f:
        f.writelines(json.dumps(p) + "\n" for p in prompts)
    return root, model


def run(setup, recipe: str, out: Path, **overrides) -> subprocess.CompletedProcess:
    root, model = setup
    args = {
        "model_name_or_path": str(model), "dtype": "float32", "use_peft": "true", "lora_r": "4", "lora_alpha": "8",
        "lora_target_modules": "all-linear", "iterations": "1", "prompts": str(root / "prompts.jsonl"),
        "prompts_per_iteration": "8", "eval_prompts": str(root / "prompts.jsonl"), "eval_prompts_split": "train",
        "num_eval_prompts": "3", "judge": "toy_verifier:parity_verifier", "judge_options": '{"kind": "verifier"}',
        "num_samples": "4", "max_new_tokens": "8", "generation_batch_size": "16", "generation_chunk_size": "4",
        "output_dir": str(out), "bf16": "false", "learning_rate": "5e-3", "per_device_train_batch_size": "4",
        "num_train_epochs": "1", "max_length": "96", "logging_steps": "1", "save_strategy": "steps", "save_steps": "4",
        "drift_num_probes": "2", "drift_eval_steps": "2", "drift_entanglement_every": "0", "report_to": "none",
        "disable_tqdm": "true", "seed": "0",
    }  # fmt: skip
    if recipe == "implicit_prm":
        args.update({"objective": "implicit_prm_ce", "best_of_n": "1,2,4", "step_checker": "",
                     "prm_options": '{"split": "newline", "batch_size": 8}'})  # fmt: skip
    args.update(overrides)
    argv = [x for key, value in args.items() if value is not None for x in (f"--{key}", value)]
    env = {**os.environ, "PYTHONPATH": f"{root / 'plugins'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "HF_HUB_OFFLINE": "1"}  # fmt: skip
    cmd = [sys.executable, str(ROOT / "recipes" / f"{recipe}.py"), *argv]
    return subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=900, cwd=ROOT)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def ce_run(setup, tmp_path_factory):
    out = tmp_path_factory.mktemp("ce") / "run"
    result = run(setup, "implicit_prm", out)
    assert result.returncode == 0, result.stderr[-4000:]
    return out, result


def test_ce_samples_labels_trains_and_reranks(ce_run):
    out, result = ce_run
    it = out / "iteration-00"
    stages = json.loads((it / "manifest.json").read_text())["stages"]
    assert list(stages) == ["generate", "judge", "dataset", "train", "best_of_n"]
    judged = lines(it / "judged.jsonl")
    verdicts = [ok for row in judged for ok in row["correct"]]
    assert len(verdicts) == 32 and 0 < sum(verdicts) < 32
    rows = lines(it / "dataset.jsonl")
    # the labelled builder: one row per distinct sample, its label the verifier's verdict
    assert rows and {r["label"] for r in rows} == {0, 1}
    assert all(r["label"] == (len(r["completion"][0]["content"]) % 2 == 0) for r in rows)
    # drift probes: a correct and a wrong sample of one prompt
    assert lines(it / "train" / "likelihood_drift.jsonl")[-1]["step"] > 0
    info = json.loads((it / "model" / "implicit_prm.json").read_text())
    assert info["objective"] == "implicit_prm_ce" and info["beta"] == 0.05 and info["reference_is_adapter_off"]
    table = json.loads((it / "best_of_n" / "best_of_n.json").read_text())
    assert table["n"] == [1, 2, 4] and table["problems"] == 3
    accuracy = table["accuracy"]
    for n in ("1", "2", "4"):  # the oracle (any correct) bounds every rule from above, random from below at N = 1
        assert all(accuracy[rule][n] <= accuracy["oracle"][n] + 1e-12 for rule in accuracy)
    assert accuracy["oracle"]["1"] == pytest.approx(accuracy["random"]["1"])
    assert (it / "best_of_n" / "best_of_n.png").exists()
    assert "Best-of-N accuracy" in result.stdout
    assert stages["best_of_n"]["accuracy"] == accuracy


def test_a_rerun_of_the_finished_run_changes_nothing(setup, ce_run):
    out, _ = ce_run
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = run(setup, "implicit_prm", out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


def test_the_trained_prm_judges_a_one_iteration_sppo_loop(setup, ce_run, tmp_path):
    prm, _ = ce_run
    out = tmp_path / "sppo"
    result = run(setup, "sppo", out, judge=f"implicit_prm:{prm / 'iteration-00' / 'model'}",
                 judge_options='{"split": "newline"}', num_eval_prompts="0", eval_prompts=None)  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    judged = lines(out / "iteration-00" / "judged.jsonl")
    for row in judged:  # the process kind: step rewards kept, the scores their minimum (the default)
        assert len(row["step_rewards"]) == len(row["completions"]) == 4
        for steps, score in zip(row["step_rewards"], row["scores"]):
            assert score == pytest.approx(min(steps)) if steps else True
    assert lines(out / "iteration-00" / "dataset.jsonl")


def test_dpo_trains_on_every_correct_incorrect_pair(setup, tmp_path):
    out = tmp_path / "dpo"
    result = run(setup, "implicit_prm", out, objective="implicit_prm_dpo", best_of_n="")
    assert result.returncode == 0, result.stderr[-4000:]
    it = out / "iteration-00"
    stages = json.loads((it / "manifest.json").read_text())["stages"]
    assert stages["dataset"]["builder"] == "all_pairs" and "best_of_n" not in stages
    judged = lines(it / "judged.jsonl")
    expected = sum(
        len({c for c, ok in zip(r["completions"], r["correct"]) if ok})
        * len({c for c, ok in zip(r["completions"], r["correct"]) if not ok})
        for r in judged
    )
    assert stages["dataset"]["pairs"] == expected == len(lines(it / "dataset.jsonl"))
    assert json.loads((it / "model" / "implicit_prm.json").read_text())["objective"] == "implicit_prm_dpo"


def test_more_than_one_iteration_is_refused_before_anything_runs(setup, tmp_path):
    result = run(setup, "implicit_prm", tmp_path / "x", iterations="2")
    assert result.returncode == 2 and "an implicit PRM is trained once" in result.stderr
    assert not (tmp_path / "x").exists()


def test_best_of_n_without_a_verifier_is_refused_before_the_run_folder_is_written(setup, tmp_path):
    result = run(setup, "implicit_prm", tmp_path / "x", judge_options='{"kind": "reward"}')
    assert result.returncode == 2, result.stderr[-3000:]
    assert "best_of_n needs a verifier as --judge" in result.stderr and not (tmp_path / "x").exists()


def test_stop_after_dataset_writes_the_labelled_set_and_a_rerun_goes_on(setup, tmp_path):
    out = tmp_path / "data"
    result = run(setup, "implicit_prm", out, stop_after="dataset")
    assert result.returncode == 0, result.stderr[-3000:]
    it = out / "iteration-00"
    assert list(json.loads((it / "manifest.json").read_text())["stages"]) == ["generate", "judge", "dataset"]
    assert lines(it / "dataset.jsonl") and not (it / "model").exists()
    assert "stopped after the dataset stage" in result.stdout
    bad = run(setup, "implicit_prm", out, stop_after="evaluate")
    assert bad.returncode == 2 and "--stop_after 'evaluate' is not a stage of this run" in bad.stderr
    again = run(setup, "implicit_prm", out, best_of_n="")  # the same run (stop_after is not its config) goes on
    assert again.returncode == 0, again.stderr[-3000:]
    assert (it / "model" / "implicit_prm.json").exists()


def labelled_file(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def labelled_row(i: int, label) -> dict:
    return {"prompt": [{"role": "user", "content": f"Start with {i}. Add 2."}],
            "completion": [{"role": "assistant", "content": f"{i} + 2 = {i + 2 - (label == 0)}\n#### {i + 2}"}],
            "label": label}  # fmt: skip


def test_a_bad_labelled_dataset_names_the_file_row_and_field_before_the_model_loads(setup, tmp_path):
    data = labelled_file(tmp_path / "labelled.jsonl", [labelled_row(1, 1), labelled_row(2, 0), labelled_row(3, 2)])
    result = run(setup, "implicit_prm", tmp_path / "x", iterations="0", dataset=str(data),
                 model_name_or_path="missing/model")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "labelled.jsonl" in result.stderr and "row 2" in result.stderr and "'label'" in result.stderr
    assert not (tmp_path / "x").exists()


def test_iterations_0_trains_on_a_labelled_file(setup, tmp_path):
    data = labelled_file(tmp_path / "labelled.jsonl", [labelled_row(i, i % 2) for i in range(12)])
    out = tmp_path / "trained"
    result = run(setup, "implicit_prm", out, iterations="0", dataset=str(data), num_eval="0", max_steps="2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "implicit_prm.json").read_text())["objective"] == "implicit_prm_ce"
