"""``report_to=["tensorboard"]`` on a real short run: the event files, read back with TensorBoard's
own reader, hold every logged scalar (the loss, the objective's terms, the ``drift/*`` probes and
the ``benchmark/*`` runs) at the step the trainer logged it, with the value the trainer, the
drift callback and the benchmark hook recorded."""

import json
from collections import defaultdict

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers.integrations.integration_utils import rewrite_logs

from align.callbacks import LikelihoodDriftCallback
from align.data.gsm8k import LOCAL_GSM8K_TEST
from align.evaluation.gsm8k import GSM8KConfig
from align.evaluation.hook import BenchmarkCallback, GSM8KBenchmark
from align.trainers import RPOTrainer
from tests.trainers.common import pair_dataset
from tests.trainers.test_base import config, load

MAX_STEPS, LOGGING_STEPS, PROBE_STEPS = 5, 2, 2
MEASURED = [0, 2, 4, 5]  # step 0, every 2 steps, and the end (5: neither a logging nor a probe step)


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _f32(value: float) -> float:
    return float(np.float32(value))  # TensorBoard stores scalars as float32


@pytest.fixture(scope="module")
def run(tiny_model_dir, tmp_path_factory):
    if not LOCAL_GSM8K_TEST.is_file():
        pytest.skip(f"the GSM8K test set is not at {LOCAL_GSM8K_TEST}")
    tmp_path = tmp_path_factory.mktemp("trackers")
    logdir = tmp_path / "tensorboard"
    with pytest.MonkeyPatch.context() as patch:
        # transformers 5 has no TrainingArguments.logging_dir: TensorBoardCallback reads this
        # variable when it is built (else it writes to <output_dir>/runs/<date>_<host>)
        patch.setenv("TENSORBOARD_LOGGING_DIR", str(logdir))
        bench = GSM8KBenchmark(GSM8KConfig(limit=3, max_new_tokens=8, batch_size=4))
        drift = LikelihoodDriftCallback(num_probes=2, eval_steps=PROBE_STEPS)
        callbacks = [drift, BenchmarkCallback(bench, every_steps=2)]
        args = config(tmp_path, max_steps=MAX_STEPS, logging_steps=LOGGING_STEPS, learning_rate=5e-2,
                      report_to=["tensorboard"])  # fmt: skip
        model, tok = load(tiny_model_dir)
        trainer = RPOTrainer(model, args, pair_dataset(10), None, tok, callbacks=callbacks)
        trainer.train()
    files = sorted(logdir.glob("events.out.tfevents.*"))
    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0})  # 0: keep every point
    events.Reload()
    scalars = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    return trainer, tmp_path / "out", scalars, files, bench


def test_every_logged_scalar_reaches_tensorboard_at_its_step(run):
    trainer, _, scalars, *_ = run
    expected = defaultdict(list)
    for entry in trainer.state.log_history:
        logs = {k: v for k, v in entry.items() if k != "step"}
        for tag, value in rewrite_logs(logs).items():  # the tag names TensorBoardCallback writes
            expected[tag].append((entry["step"], _f32(value)))
    # nothing lost, nothing extra, each point at the trainer's step and with its value
    assert scalars == dict(expected)


def test_loss_and_objective_terms_at_the_logging_steps(run):
    trainer, _, scalars, *_ = run
    loss_logs = [h for h in trainer.state.log_history if "loss" in h]
    assert [h["step"] for h in loss_logs] == [2, 4]
    assert [step for step, _ in scalars["train/loss"]] == [2, 4]
    for name in ("loss/objective", "dpo", "nll", "rewards/chosen", "rewards/rejected", "rewards/margins",
                 "rewards/accuracies", "logps/chosen", "logps/rejected"):  # fmt: skip
        points = dict(scalars[f"train/{name}"])
        assert all(points[h["step"]] == _f32(h[name]) for h in loss_logs), name
    # RPO's loss is the DPO term plus alpha (1) times the NLL term
    for step, loss in scalars["train/loss"]:
        assert loss == pytest.approx(dict(scalars["train/dpo"])[step] + dict(scalars["train/nll"])[step], rel=1e-5)


def test_drift_probes_at_step_zero_every_two_steps_and_the_end(run):
    _, out, scalars, *_ = run
    records = _lines(out / "likelihood_drift.jsonl")
    assert [r["step"] for r in records] == MEASURED
    for name in ("chosen_logps", "rejected_logps", "chosen_change_per_token", "margin", "rewards/margins",
                 "displacement_rate", "topk_entropy", "ches"):  # fmt: skip
        assert scalars[f"train/drift/{name}"] == [(r["step"], _f32(r[name])) for r in records], name
    assert scalars["train/drift/chosen_change"][0] == (0, 0.0)  # the step-0 baseline
    # the gradient cosine is measured every 4th measurement: only at step 0 here
    assert scalars["train/drift/grad_cosine"] == [(0, _f32(records[0]["grad_cosine"]))]


def test_benchmark_at_step_zero_every_two_steps_and_the_end(run):
    _, out, scalars, _, bench = run
    records = _lines(out / "benchmark.jsonl")
    assert [r["step"] for r in records] == MEASURED
    names = [key for key in records[0] if key not in ("step", "benchmark")]
    assert bench.headline in names
    for name in names:
        assert scalars[f"train/benchmark/gsm8k/{name}"] == [(r["step"], _f32(r[name])) for r in records], name


def test_the_end_measurements_are_logged_before_the_trackers_close(run):
    """The report_to integrations end their runs in on_train_end, which runs before the align
    callbacks' (TensorBoard then opens a second writer, MLflow starts a new run): the last step
    is measured at its on_step_end, before the Trainer's summary log."""
    trainer, _, _, files, bench = run
    history = trainer.state.log_history
    summary = next(i for i, h in enumerate(history) if "train_runtime" in h)
    assert summary == len(history) - 1
    assert [h["step"] for h in history if "drift/margin" in h][-1] == MAX_STEPS
    assert [h["step"] for h in history if f"benchmark/gsm8k/{bench.headline}" in h][-1] == MAX_STEPS
    assert len(files) == 1  # one writer for the whole run
