"""The benchmark hook: a trainer runs GSM8K at step 0, every N steps and at the end, with the
model being trained, logs it with the other metrics, and resumes; the recipes parse its flags."""

import json

import pytest

from align.cli import DataArguments, parse_recipe_args
from align.evaluation.gsm8k import GSM8KConfig, run_gsm8k
from align.evaluation.hook import BenchmarkArguments, BenchmarkCallback, GSM8KBenchmark, build_benchmark
from align.loops import LoopArguments
from align.trainers import RPOConfig, RPOTrainer
from tests.trainers.common import pair_dataset
from tests.trainers.test_base import config, load


def _gsm8k_file(tmp_path, n=3):
    path = tmp_path / "gsm.jsonl"
    rows = [{"question": f"What is {i} + 2?", "answer": f"{i} + 2 = {i + 2}\n#### {i + 2}"} for i in range(n)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_trainer_runs_the_benchmark_at_start_every_n_steps_and_at_the_end(tiny_model_dir, tmp_path):
    bench = GSM8KBenchmark(GSM8KConfig(limit=3, max_new_tokens=6, batch_size=4, data_file=str(_gsm8k_file(tmp_path))))
    model, tok = load(tiny_model_dir)
    initial_answers = run_gsm8k(model, tok, bench.config, output_dir=tmp_path / "before")
    args = config(tmp_path, max_steps=3, learning_rate=5e-2, logging_steps=1)
    trainer = RPOTrainer(model, args, pair_dataset(8), None, tok, callbacks=[BenchmarkCallback(bench, every_steps=2)])
    trainer.train()
    out = tmp_path / "out"

    records = _lines(out / "benchmark.jsonl")
    assert [r["step"] for r in records] == [0, 2, 3]  # step 0, every 2 steps, the end
    assert all(r["benchmark"] == "gsm8k" and r["num_problems"] == 3 for r in records)
    # logged through the Trainer next to the loss, under benchmark/gsm8k/<metric>
    logged = [h for h in trainer.state.log_history if "benchmark/gsm8k/flexible-extract" in h]
    assert [h["step"] for h in logged] == [0, 2, 3]
    assert all(key.startswith("benchmark/gsm8k/") or key in ("step", "epoch") for h in logged for key in h)
    # the loss logs keep the objective's metrics (a benchmark log does not swallow the buffered ones)
    losses = [h for h in trainer.state.log_history if "loss" in h]
    assert [h["step"] for h in losses] == [1, 2, 3] and all("rewards/margins" in h for h in losses)

    # it sampled the model being trained: step 0 = the initial model, the end = the final model
    def outputs(folder):
        return [r["outputs"] for r in _lines(folder / "samples.jsonl")]

    assert outputs(out / "benchmark" / "gsm8k" / "step-0") == outputs(tmp_path / "before")
    final = run_gsm8k(trainer.model, tok, bench.config, output_dir=tmp_path / "after")
    assert outputs(out / "benchmark" / "gsm8k" / "step-3") == outputs(tmp_path / "after")
    assert outputs(tmp_path / "after") != outputs(tmp_path / "before")  # training changed the answers
    for metric in ("strict-match", "flexible-extract", "verifier"):  # under lm-eval's and our own names
        assert all(f"benchmark/gsm8k/{metric}" in h for h in logged)
        assert records[-1][metric] == final[metric] and records[0][metric] == initial_answers[metric]


def test_a_resumed_run_keeps_the_records_up_to_its_checkpoint(tiny_model_dir, tmp_path):
    bench = GSM8KBenchmark(GSM8KConfig(limit=2, max_new_tokens=4, data_file=str(_gsm8k_file(tmp_path, 2))))
    args = {"max_steps": 4, "save_strategy": "steps", "save_steps": 2, "learning_rate": 5e-3}
    model, tok = load(tiny_model_dir)
    RPOTrainer(
        model, config(tmp_path, **args), pair_dataset(8), None, tok, callbacks=[BenchmarkCallback(bench, every_steps=1)]
    ).train()
    full = _lines(tmp_path / "out" / "benchmark.jsonl")
    assert [r["step"] for r in full] == [0, 1, 2, 3, 4]

    model, tok = load(tiny_model_dir)
    trainer = RPOTrainer(
        model, config(tmp_path, **args), pair_dataset(8), None, tok, callbacks=[BenchmarkCallback(bench, every_steps=1)]
    )
    trainer.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-2"))
    resumed = _lines(tmp_path / "out" / "benchmark.jsonl")
    assert [r["step"] for r in resumed] == [0, 1, 2, 3, 4]
    assert resumed[:3] == full[:3]  # kept as they were, not measured again


def test_recipes_parse_the_benchmark_flags():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    argv = ["--benchmark", "gsm8k", "--benchmark_limit", "20", "--benchmark_every_steps", "50", "--bf16", "false"]
    _, _, _, _, bench, *_ = parse_recipe_args(
        RPOConfig, root / "recipes" / "configs" / "rpo.yaml", argv, data_classes=(DataArguments, LoopArguments)
    )
    assert (bench.benchmark, bench.benchmark_limit, bench.benchmark_every_steps) == ("gsm8k", 20, 50)
    [callback] = bench.callbacks()
    assert (
        isinstance(callback, BenchmarkCallback) and callback.every_steps == 50 and callback.benchmark.config.limit == 20
    )
    _, _, _, _, off, *_ = parse_recipe_args(RPOConfig, root / "recipes" / "configs" / "rpo.yaml", ["--bf16", "false"],
                                       data_classes=(DataArguments, LoopArguments))  # fmt: skip
    assert not off.enabled and off.callbacks() == []


def test_bad_benchmark_settings_fail_before_training():
    with pytest.raises(ValueError, match="--benchmark must be one of gsm8k, alpaca_eval, safety or none, got 'mmlu'"):
        BenchmarkArguments(benchmark="mmlu")
    with pytest.raises(ValueError, match="--benchmark_judge_options is not valid JSON"):
        build_benchmark(BenchmarkArguments(benchmark="alpaca_eval", benchmark_judge_options="{nope"))


def test_alpaca_eval_as_a_training_hook(tiny_model_dir, tmp_path):
    """AlpacaEval on 2 instructions at step 0 and the end, judged by a local LM judge (the tiny model)."""
    from align.evaluation.alpaca_eval import DEFAULT_REFERENCE

    if not DEFAULT_REFERENCE.is_file():
        pytest.skip("../shared/data/alpaca_eval is not present")
    args = BenchmarkArguments(benchmark="alpaca_eval", benchmark_limit=2, benchmark_max_new_tokens=4, benchmark_batch_size=2,
                              benchmark_judge_options=json.dumps({"model": str(tiny_model_dir)}))  # fmt: skip
    [callback] = args.callbacks()
    model, tok = load(tiny_model_dir)
    trainer = RPOTrainer(model, config(tmp_path, max_steps=1), pair_dataset(4), None, tok, callbacks=[callback])
    trainer.train()
    records = _lines(tmp_path / "out" / "benchmark.jsonl")
    assert [r["step"] for r in records] == [0, 1] and all(r["n_total"] == 2 for r in records)
    assert all(0 <= r["win_rate"] <= 100 and 0 <= r["length_controlled_winrate"] <= 100 for r in records)
    logged = [h for h in trainer.state.log_history if "benchmark/alpaca_eval/win_rate" in h]
    assert [h["step"] for h in logged] == [0, 1]
    outputs = json.loads((tmp_path / "out" / "benchmark" / "alpaca_eval" / "step-1" / "model_outputs.json").read_text())
    assert len(outputs) == 2 and outputs[0]["generator"] == "policy"
