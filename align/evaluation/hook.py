"""Benchmarks during training: every N steps of a trainer and at the end of every loop iteration.

``--benchmark gsm8k`` (or ``alpaca_eval``, or ``safety``) in any recipe runs that benchmark on a
subset (``--benchmark_limit``, default 50) of its test set (safety: of its held-out prompts, utility
problems and NLL rows, :mod:`align.evaluation.safety`):

- in a trainer, :class:`BenchmarkCallback` runs it at step 0, every ``--benchmark_every_steps``
  steps (0: never in between) and at the end of training, with the model being trained (sampling
  sharded across the training processes, ZeRO-3 parameters gathered, see
  :class:`align.generation.HFGenerator`). Its metrics are logged through the Trainer as
  ``benchmark/<name>/<metric>`` next to the loss (so every ``report_to`` integration gets them)
  and appended to ``<output_dir>/benchmark.jsonl``; each run's files (per-example outputs) are
  kept in ``<output_dir>/benchmark/<name>/step-<N>/``;
- in an on-policy loop (:class:`align.loops.OnPolicyLoop`) it runs on the starting model and on
  the model each iteration trained, as the ``benchmark`` stage of the iteration folder (resumable
  like every stage), and its headline metric is a column of the loop's summary table.

A benchmark is greedy by default (its answers are then deterministic, so runs compare).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

__all__ = [
    "BENCHMARK_PREFIX",
    "Benchmark",
    "BenchmarkArguments",
    "BenchmarkCallback",
    "SafetyBenchmark",
    "build_benchmark",
]

logger = logging.getLogger(__name__)

BENCHMARK_PREFIX = "benchmark/"
BENCHMARKS = ("gsm8k", "alpaca_eval", "safety")
# The judge of a benchmark when --benchmark_judge is not given.
DEFAULT_JUDGES = {"alpaca_eval": "lm_judge", "safety": "safety_rules"}


@dataclass
class BenchmarkArguments:
    """A benchmark run during training (align.evaluation.hook); off by default."""

    benchmark: str = field(
        default="none", metadata={"help": "Benchmark run during training: gsm8k, alpaca_eval, safety or none."}
    )
    benchmark_limit: int = field(
        default=50, metadata={"help": "Problems / instructions per benchmark run (the first N)."}
    )
    benchmark_every_steps: int = field(
        default=0, metadata={"help": "Trainer: also run every N steps (0: at step 0 and the end only)."}
    )
    benchmark_max_new_tokens: int = field(default=256, metadata={"help": "Tokens per benchmark answer."})
    benchmark_batch_size: int = field(default=32, metadata={"help": "Sequences per generate call."})
    benchmark_num_fewshot: int = field(
        default=0, metadata={"help": "GSM8K: few-shot exemplars (0: zero-shot chain of thought)."}
    )
    benchmark_judge: str | None = field(
        default=None,
        metadata={"help": "The judge (align.rewards plug-in): AlpacaEval's pairwise judge (default lm_judge), the "
                  "safety benchmark's verifier (default safety_rules)."},
    )  # fmt: skip
    benchmark_judge_options: str = field(default="{}", metadata={"help": "JSON options for the judge."})

    def __post_init__(self) -> None:
        if self.benchmark not in (*BENCHMARKS, "none"):
            raise ValueError(f"--benchmark must be one of {', '.join(BENCHMARKS)} or none, got {self.benchmark!r}")
        if self.benchmark_limit < 1 or self.benchmark_every_steps < 0:
            raise ValueError("--benchmark_limit must be >= 1 and --benchmark_every_steps >= 0")
        if self.benchmark_max_new_tokens < 1 or self.benchmark_batch_size < 1 or self.benchmark_num_fewshot < 0:
            raise ValueError("--benchmark_max_new_tokens and --benchmark_batch_size must be >= 1, --benchmark_num_fewshot >= 0")
        if self.benchmark in DEFAULT_JUDGES:  # a misspelt judge fails now, not after the first training steps
            from align.rewards import check_reward_spec

            check_reward_spec(self.judge_spec(), **self.judge_options())

    def judge_spec(self) -> str:
        return self.benchmark_judge or DEFAULT_JUDGES[self.benchmark]

    def judge_options(self) -> dict:
        from align.rewards import reward_options

        return reward_options(self.benchmark_judge_options, "benchmark_judge_options")

    @property
    def enabled(self) -> bool:
        return self.benchmark != "none"

    def build(self) -> Benchmark | None:
        return build_benchmark(self) if self.enabled else None

    def callbacks(self) -> list:
        """The trainer callback of a recipe's single training run (none when off)."""
        benchmark = self.build()
        return [] if benchmark is None else [BenchmarkCallback(benchmark, every_steps=self.benchmark_every_steps)]


class Benchmark:
    """One benchmark on a fixed subset: ``run(model, tokenizer, accelerator=, output_dir=)`` →
    flat metrics ``{name: float}``; ``headline`` names the metric a summary table shows."""

    name: str
    headline: str

    def run(
        self, model: Any, tokenizer: Any, *, accelerator: Any = None, output_dir: str | Path | None = None
    ) -> dict[str, float]:
        raise NotImplementedError

    def settings(self) -> dict:
        """Everything that shapes the results (a changed setting re-runs a loop's benchmark stage)."""
        raise NotImplementedError


class GSM8KBenchmark(Benchmark):
    name, headline = "gsm8k", "flexible-extract"

    def __init__(self, config) -> None:
        self.config = config

    def run(self, model, tokenizer, *, accelerator=None, output_dir=None):
        from align.evaluation.gsm8k import run_gsm8k

        # the cache key: the sampled model changes during training, so no cross-run cache
        metrics = run_gsm8k(model, tokenizer, self.config, output_dir=output_dir, accelerator=accelerator,
                            cache_key={"unique": str(output_dir)}, show_progress=False)  # fmt: skip
        return {k: float(v) for k, v in metrics.items()}

    def settings(self) -> dict:
        return {"name": self.name, **asdict(self.config)}


class _JudgedBenchmark(Benchmark):
    """A benchmark with a judge plug-in (``judge_spec``, ``judge_options``), built once on first
    use and only where it is used (the main process): the default AlpacaEval judge loads a model."""

    judge_spec: str
    judge_options: dict
    _judge = None

    def judge(self):
        if self._judge is None:
            from align.rewards import load_reward

            self._judge = load_reward(self.judge_spec, **self.judge_options)
        return self._judge


class AlpacaEvalBenchmark(_JudgedBenchmark):
    name, headline = "alpaca_eval", "length_controlled_winrate"

    def __init__(self, *, judge: str, judge_options: dict, limit: int, max_new_tokens: int, batch_size: int) -> None:
        self.judge_spec, self.judge_options = judge, judge_options
        self.limit, self.max_new_tokens, self.batch_size = limit, max_new_tokens, batch_size

    def run(self, model, tokenizer, *, accelerator=None, output_dir=None):
        from align.evaluation.alpaca_eval import run_alpaca_eval
        from align.generation import SamplingConfig

        sampling = SamplingConfig(
            num_samples=1, max_new_tokens=self.max_new_tokens, temperature=0.0, batch_size=self.batch_size
        )
        main = accelerator is None or accelerator.is_main_process
        metrics = run_alpaca_eval(
            model, tokenizer, judge=self.judge() if main else None, output_dir=output_dir, limit=self.limit,
            sampling=sampling, accelerator=accelerator, name="policy", show_progress=False,
            cache_key={"unique": str(output_dir)},  # the weights change during training: no cross-run cache
        )  # fmt: skip
        return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}

    def settings(self) -> dict:
        return {"name": self.name, "judge": self.judge_spec, "judge_options": self.judge_options, "limit": self.limit,
                "max_new_tokens": self.max_new_tokens, "batch_size": self.batch_size}  # fmt: skip


class SafetyBenchmark(_JudgedBenchmark):
    """Harmful-behaviour rate, over-refusal, utility and safe/harmful NLL (:mod:`align.evaluation.safety`)."""

    name, headline = "safety", "harmful_rate"

    def __init__(self, config, *, judge: str = DEFAULT_JUDGES["safety"], judge_options: dict | None = None) -> None:
        self.config, self.judge_spec, self.judge_options = config, judge, judge_options or {}

    def run(self, model, tokenizer, *, accelerator=None, output_dir=None):
        from align.evaluation.safety import run_safety

        main = accelerator is None or accelerator.is_main_process
        judge = self.judge() if main else None  # the main process judges
        metrics = run_safety(model, tokenizer, self.config, judge=judge, accelerator=accelerator, output_dir=output_dir,
                             cache_key={"unique": str(output_dir)}, show_progress=False)  # fmt: skip
        return {k: float(v) for k, v in metrics.items()}

    def settings(self) -> dict:
        return {"name": self.name, "judge": self.judge_spec, "judge_options": self.judge_options, **asdict(self.config)}


def build_benchmark(args: BenchmarkArguments) -> Benchmark:
    if args.benchmark == "gsm8k":
        from align.evaluation.gsm8k import GSM8KConfig

        config = GSM8KConfig(limit=args.benchmark_limit, num_fewshot=args.benchmark_num_fewshot,
                             max_new_tokens=args.benchmark_max_new_tokens, batch_size=args.benchmark_batch_size)  # fmt: skip
        return GSM8KBenchmark(config)
    if args.benchmark == "alpaca_eval":
        return AlpacaEvalBenchmark(judge=args.judge_spec(), judge_options=args.judge_options(),
                                   limit=args.benchmark_limit,
                                   max_new_tokens=args.benchmark_max_new_tokens, batch_size=args.benchmark_batch_size)  # fmt: skip
    if args.benchmark == "safety":
        from align.evaluation.safety import SafetyConfig

        config = SafetyConfig(limit=args.benchmark_limit, max_new_tokens=args.benchmark_max_new_tokens,
                              batch_size=args.benchmark_batch_size)  # fmt: skip
        return SafetyBenchmark(config, judge=args.judge_spec(), judge_options=args.judge_options())
    raise ValueError(f"unknown benchmark {args.benchmark!r}; known: {', '.join(BENCHMARKS)}")


class BenchmarkCallback(TrainerCallback):
    """Run ``benchmark`` at step 0 (``at_start``), every ``every_steps`` steps and at the end of
    training (``at_end``) on the model being trained; see the module docstring for the outputs.

    Every process must take part (sampling is sharded); the main process writes the files. A
    resumed run keeps the records up to its checkpoint's step and goes on from there.
    """

    def __init__(
        self, benchmark: Benchmark, *, every_steps: int = 0, at_start: bool = True, at_end: bool = True
    ) -> None:
        self.benchmark, self.every_steps, self.at_start, self.at_end = benchmark, every_steps, at_start, at_end
        self.trainer = None
        self.records: list[dict] = []

    def bind(self, trainer) -> None:
        self.trainer = trainer

    @property
    def jsonl(self) -> Path:
        return Path(self.trainer.args.output_dir) / "benchmark.jsonl"

    def on_train_begin(self, args, state, control, **kwargs):
        if self.trainer is None:
            raise RuntimeError(
                "BenchmarkCallback is not bound: add it with PreferenceTrainer(callbacks=[...]) or trainer.add_callback"
            )
        self.records = []
        if state.global_step > 0 and self.jsonl.exists():  # resumed: keep what the checkpoint's run had measured
            lines = self.jsonl.read_text().splitlines()
            self.records = [r for r in map(json.loads, filter(str.strip, lines)) if r["step"] <= state.global_step]
        elif self.at_start:
            self.evaluate(state)

    def on_step_end(self, args, state, control, **kwargs):
        # The end is run at the last step, before the report_to integrations close their runs in
        # their on_train_end (which runs before this callback's); on_train_end is the fallback.
        at_end = self.at_end and control.should_training_stop
        if self.every_steps and state.global_step % self.every_steps == 0 or at_end:
            self.evaluate(state)

    def on_train_end(self, args, state, control, **kwargs):
        if self.at_end and (not self.records or self.records[-1]["step"] != state.global_step):
            self.evaluate(state)

    def evaluate(self, state) -> dict[str, float]:
        from align.data import write_jsonl

        trainer = self.trainer
        name = self.benchmark.name
        folder = Path(trainer.args.output_dir) / "benchmark" / name / f"step-{state.global_step}"
        # A run killed during this measurement left answers of a model that is not this one
        # (training restarted from an earlier checkpoint): start the folder afresh.
        if folder.exists() and trainer.is_world_process_zero():
            shutil.rmtree(folder)
        trainer.accelerator.wait_for_everyone()
        metrics = self.benchmark.run(
            trainer.model_wrapped, trainer.processing_class, accelerator=trainer.accelerator, output_dir=folder
        )
        self.records.append({"step": state.global_step, "benchmark": name, **metrics})
        if trainer.is_world_process_zero():
            write_jsonl(self.records, self.jsonl)
        logger.info("benchmark %s at step %d: %s = %.4f", name, state.global_step, self.benchmark.headline,
                    metrics.get(self.benchmark.headline, float("nan")))  # fmt: skip
        # Logging resets the Trainer's should_log flag (DefaultFlowCallback.on_log); keep the
        # Trainer's own pending loss log of this step.
        should_log = trainer.control.should_log
        trainer.log({f"{BENCHMARK_PREFIX}{name}/{key}": value for key, value in metrics.items()})
        trainer.control.should_log = should_log
        return metrics
