"""The on-policy loop's stages: named, resumable steps that a method composes into an iteration.

An iteration runs its stages in order; a stage whose name is in the iteration's manifest
(``iteration-NN/manifest.json``, :mod:`align.loops.run`) is finished and skipped, so re-running the
same command resumes at the first unfinished stage. A stage writes its files atomically and then
records itself with :meth:`IterationFolder.finish` (main process); stages that only the main
process runs (judging, building the dataset) end with a barrier so the others see their files.

The built-in stages, in the order of :data:`DEFAULT_STAGES` (SPPO, iterative RPO):

========================  ==========================================================================
``evaluate_start``        greedy answers of π_0 to the held-out prompts (iteration 0 only)
``benchmark_start``       the configured benchmark on π_0 (iteration 0 only)
``generate``              K samples per prompt from π_t (``samples.jsonl``; resumable chunks)
``judge``                 the judge's verdicts, scores, step scores, preferences (``judged.jsonl``)
``dataset``               the named dataset builder's rows (``dataset.jsonl``)
``train``                 π_{t+1} trained on them (``train/`` checkpoints, ``model/``)
``evaluate``              greedy answers of π_{t+1} (``eval.json``)
``benchmark``             the benchmark on π_{t+1}
========================  ==========================================================================

A method adds its own stage by subclassing :class:`Stage` (a ``name`` and a ``run``) and listing
it, e.g. the implicit PRM's ``generate → judge → dataset → train → best_of_n``.
"""

from __future__ import annotations

import gc
import shutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from align.io import atomic_write_json, read_json, read_jsonl, write_jsonl
from align.loops.run import IterationFolder, RunFolder

if TYPE_CHECKING:
    from align.loops.onpolicy import OnPolicyLoop

__all__ = [
    "DEFAULT_STAGES",
    "Benchmark",
    "BenchmarkStart",
    "BuildDataset",
    "Evaluate",
    "EvaluateStart",
    "Generate",
    "IterationState",
    "Judge",
    "Stage",
    "StageConfigError",
    "Train",
]


@dataclass
class IterationState:
    """What the stages of one iteration share: the loop, its folders, this iteration's prompts, the
    tokenizer and judge (``None`` on processes other than the main one), and the models, each
    loaded at most once."""

    loop: OnPolicyLoop
    run: RunFolder
    it: IterationFolder
    prompts: list[dict]
    eval_rows: list[dict]
    tokenizer: Any
    judge: Any
    trainer: Any = None  # the trainer of this iteration's ``train`` stage, when it ran in this process
    _policy: Any = field(default=None, repr=False)
    _trained: Any = field(default=None, repr=False)

    @property
    def t(self) -> int:
        return self.it.index

    @property
    def main(self) -> bool:
        return self.loop.main

    def barrier(self) -> None:
        self.loop.state.wait_for_everyone()

    def policy(self):
        """π_t, the model the iteration starts from."""
        if self._policy is None:
            self._policy = self.loop.load_policy(self.run, self.t)
        return self._policy

    def trained(self) -> tuple[Any, Any]:
        """(π_{t+1}, its accelerator or None): the trainer's model when ``train`` ran here, else loaded."""
        if self._trained is None:
            if self.trainer is not None:
                self._trained = (self.trainer.model_wrapped, self.trainer.accelerator)
            else:
                self._trained = (self.loop.load_policy(self.run, self.t + 1), None)
        return self._trained

    def release(self) -> None:
        """Drop the models before the next iteration loads its own."""
        self._policy = self._trained = self.trainer = None
        gc.collect()


class StageConfigError(ValueError):
    """A stage cannot run with this loop's config: raised by :meth:`Stage.check` before the run
    folder is written or a model is loaded (best-of-N without a verifier as the judge), or by a
    stage whose inputs turned out too few (a dataset builder that made no rows)."""


class Stage:
    """One named, resumable step of an iteration. Subclasses set ``name`` and implement ``run``,
    which writes the stage's files and records it with ``state.it.finish(name, summary)``."""

    name: ClassVar[str] = ""
    first_iteration_only: ClassVar[bool] = False

    def check(self, loop: OnPolicyLoop) -> None:
        """Refuse a config this stage cannot run with (:class:`StageConfigError`); called on every
        process once the judge's kind is known, before anything is written."""

    def applies(self, state: IterationState) -> bool:
        """Whether the stage belongs to this iteration of this run at all."""
        return not self.first_iteration_only or state.t == 0

    def done(self, state: IterationState) -> bool:
        return state.it.done(self.name)

    def run(self, state: IterationState) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class EvaluateStart(Stage):
    name = "evaluate_start"
    first_iteration_only = True

    def applies(self, state: IterationState) -> bool:
        return super().applies(state) and bool(state.eval_rows)

    def run(self, state: IterationState) -> None:
        result = state.loop.evaluate(state.policy(), state.tokenizer, state.judge, state.eval_rows)
        if state.main:
            atomic_write_json(state.it.path / "eval_start.json", result)
            state.it.finish(self.name, {k: v for k, v in result.items() if not isinstance(v, list)})  # no answers
        state.barrier()


class _BenchmarkStage(Stage):
    def applies(self, state: IterationState) -> bool:
        return super().applies(state) and state.loop.benchmark is not None

    def done(self, state: IterationState) -> bool:
        # a stage finished under other benchmark settings is run again
        from align.loops.run import fingerprint

        it = state.it
        return it.done(self.name) and it.summary(self.name).get("settings") == fingerprint(
            state.loop.benchmark.settings()
        )


class BenchmarkStart(_BenchmarkStage):
    name = "benchmark_start"
    first_iteration_only = True

    def run(self, state: IterationState) -> None:
        state.loop.run_benchmark(state.it, self.name, state.policy(), state.tokenizer)


class Generate(Stage):
    name = "generate"

    def run(self, state: IterationState) -> None:
        it = state.it
        samples = state.loop.generate(it, state.policy(), state.tokenizer, state.prompts)
        if state.main:
            write_jsonl([{**p, "completions": s} for p, s in zip(state.prompts, samples)], it.samples)
            it.finish(self.name, {"prompts": len(state.prompts), "samples": sum(map(len, samples))})
            shutil.rmtree(it.chunks, ignore_errors=True)
        state.barrier()


class Judge(Stage):
    name = "judge"

    def source(self, it: IterationFolder):
        """The file of sampled rows to judge (their ``completions``)."""
        return it.samples

    def run(self, state: IterationState) -> None:
        it = state.it
        if state.main:
            rows = read_jsonl(self.source(it))
            prompts = [{k: v for k, v in r.items() if k != "completions"} for r in rows]
            judged = state.loop.judge(state.judge, prompts, [r["completions"] for r in rows])
            write_jsonl(judged, it.judged)
            summary: dict[str, Any] = {"prompts": len(judged)}
            if judged and "correct" in judged[0]:
                flat = [c for r in judged for c in r["correct"]]
                summary["sample_accuracy"] = sum(flat) / len(flat)
            it.finish(self.name, summary)
        state.barrier()


class BuildDataset(Stage):
    name = "dataset"

    def run(self, state: IterationState) -> None:
        it = state.it
        if state.main:
            rows, stats = state.loop.build_dataset(read_jsonl(it.judged))
            if not rows:  # a user's sizing, not a bug: one message, no traceback (align.cli.run_recipe)
                raise StageConfigError(
                    f"iteration {state.t}: the dataset builder {state.loop.builder_name!r} made no rows from "
                    f"{it.judged} ({stats}); more samples (--num_samples) or prompts (--prompts_per_iteration) needed"
                )
            write_jsonl(rows, it.dataset)
            it.finish(self.name, {"builder": state.loop.builder_name, **stats})
        state.barrier()


class Train(Stage):
    name = "train"

    def run(self, state: IterationState) -> None:
        rows = read_jsonl(state.it.dataset)
        state.trainer, metrics = state.loop.train(state.it, state.policy(), state.tokenizer, rows)
        if state.main:
            state.it.finish(self.name, {k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        state.barrier()


class Evaluate(Stage):
    name = "evaluate"

    def applies(self, state: IterationState) -> bool:
        return bool(state.eval_rows)

    def run(self, state: IterationState) -> None:
        model, accelerator = state.trained()
        start_file = state.run.iteration(0).path / "eval_start.json"
        baseline = None
        if start_file.exists() and state.loop.judge_kind != "verifier":
            baseline = read_json(start_file)["answers"]
        result = state.loop.evaluate(model, state.tokenizer, state.judge, state.eval_rows, accelerator=accelerator,
                                     baseline=baseline)  # fmt: skip
        if state.main:
            atomic_write_json(state.it.eval, result)
            state.it.finish(self.name, {k: v for k, v in result.items() if not isinstance(v, list)})  # no answers
        state.barrier()


class Benchmark(_BenchmarkStage):
    name = "benchmark"

    def run(self, state: IterationState) -> None:
        model, accelerator = state.trained()
        state.loop.run_benchmark(state.it, self.name, model, state.tokenizer, accelerator=accelerator)


DEFAULT_STAGES: tuple[Stage, ...] = (
    EvaluateStart(),
    BenchmarkStart(),
    Generate(),
    Judge(),
    BuildDataset(),
    Train(),
    Evaluate(),
    Benchmark(),
)


@dataclass
class BestOfNArguments:
    """The ``best_of_n`` stage: N samples per held-out problem (``--eval_prompts``, the first
    ``--num_eval_prompts``) from the starting model π_0, reranked by the model this iteration trained
    as a process reward model (``implicit_prm:<iteration model>``) — see
    :mod:`align.evaluation.best_of_n`. Sampling: the loop's temperature, top-p and token budget."""

    best_of_n: str = field(default="1,4,16", metadata={"help": "The N values, comma-separated ('' for no best-of-N)."})
    best_of_n_samples: int | None = field(
        default=None,
        metadata={"help": "Samples M per problem (default the largest N); N < M averages disjoint blocks."},
    )
    prm_options: str = field(
        default='{"split": "newline", "final_answer": "####"}',
        metadata={"help": "JSON options of the implicit_prm scorer (split, aggregate, beta, final_answer, ...)."},
    )
    step_checker: str | None = field(
        default=None,
        metadata={"help": "'package.module:function' (row, completion) -> a StepCheck, for step-error detection, "
                  "e.g. align.data.multistep:check_solution."},
    )  # fmt: skip

    def __post_init__(self) -> None:
        from align.rewards import check_reward_spec

        self.n_values()
        check_reward_spec("implicit_prm:<the trained model>", **self.prm_kwargs())
        if self.step_checker is not None and self.step_checker.strip().lower() in ("", "none"):
            self.step_checker = None  # the command line's way to switch a configured checker off
        if self.step_checker is not None:
            self.checker()

    def n_values(self) -> tuple[int, ...]:
        try:
            values = tuple(int(v) for v in self.best_of_n.split(",") if v.strip())
        except ValueError:
            raise ValueError(f"--best_of_n must be comma-separated integers, got {self.best_of_n!r}") from None
        if any(v < 1 for v in values):
            raise ValueError(f"--best_of_n values must be >= 1, got {self.best_of_n!r}")
        return values

    def prm_kwargs(self) -> dict:
        from align.rewards import reward_options

        return reward_options(self.prm_options, "prm_options")

    def checker(self):
        from align.rewards.registry import _import_attr

        checker = _import_attr(self.step_checker)
        if not callable(checker):
            raise TypeError(f"--step_checker {self.step_checker!r} is not a function")
        return checker


class BestOfN(Stage):
    """Best-of-N on the held-out problems with this iteration's model as the process reward model:
    samples from π_0 (the generator), verdicts from the loop's judge (a verifier), step scores from
    ``implicit_prm:<model>``; accuracy tables and plot, step-error detection with a step checker.
    Files in ``iteration-NN/best_of_n/``; resumable (sampling and scoring in chunks)."""

    name = "best_of_n"

    def __init__(self, args: BestOfNArguments) -> None:
        self.args = args

    def applies(self, state: IterationState) -> bool:
        return bool(state.eval_rows) and bool(self.args.n_values())

    def settings(self) -> str:
        from dataclasses import asdict

        from align.io import fingerprint

        return fingerprint(asdict(self.args))

    def done(self, state: IterationState) -> bool:
        # not part of the run's config, like a benchmark: other best-of-N settings run the stage
        # again on a finished run (the samples and scores it can reuse are cached)
        return state.it.done(self.name) and state.it.summary(self.name).get("settings") == self.settings()

    def check(self, loop: OnPolicyLoop) -> None:
        if self.args.n_values() and loop.judge_kind != "verifier":
            raise StageConfigError(
                f"best_of_n needs a verifier as --judge (correct or not per sample), got {loop.loop_args.judge!r} "
                f"(a {loop.judge_kind}); pass --best_of_n '' to skip best-of-N"
            )

    def run(self, state: IterationState) -> None:
        from accelerate import Accelerator

        from align.data import read_rows
        from align.evaluation.best_of_n import BestOfNConfig, best_of_n_markdown, run_best_of_n, step_errors_markdown
        from align.rewards import load_reward

        la, loop = state.loop.loop_args, state.loop
        n = self.args.n_values()
        config = BestOfNConfig(n=n, num_samples=self.args.best_of_n_samples, temperature=la.temperature, top_p=la.top_p,
                               max_new_tokens=la.max_new_tokens, batch_size=la.generation_batch_size,
                               seed=loop.training_args.seed)  # fmt: skip
        # the rows as the dataset has them (a step checker may need more than prompt and answer)
        rows = [row for _, part in read_rows(la.eval_prompts, la.eval_prompts_split) for row in part]
        rows = rows[: len(state.eval_rows)]
        generator = loop.load_policy(state.run, 0)  # π_0 afresh: training attached its adapter to the policy
        prm = load_reward(f"implicit_prm:{state.it.model_dir}", **self.args.prm_kwargs()) if state.main else None
        result = run_best_of_n(
            generator, state.tokenizer, rows, prm=prm, verifier=state.judge if state.main else None,
            output_dir=state.it.path / self.name, config=config, accelerator=Accelerator(),
            cache_key={"generator": loop.model_args.model_name_or_path}, prm_key={"prm": str(state.it.model_dir),
            "options": self.args.prm_kwargs()}, step_checker=self.args.checker() if self.args.step_checker else None,
            source=f"{la.eval_prompts} [{la.eval_prompts_split}]", show_progress=state.main,
        )  # fmt: skip
        del generator, prm
        if state.main:
            table = result["best_of_n"]
            summary = {"problems": len(rows), "settings": self.settings(), "accuracy": table.get("accuracy", {})}
            if result["step_errors"] is not None:
                errors = result["step_errors"]
                summary["step_errors"] = {k: v for k, v in errors.items() if not isinstance(v, (list, dict))}
            state.it.finish(self.name, summary)
            print(best_of_n_markdown(table), flush=True)
            if result["step_errors"] is not None:
                print(step_errors_markdown(result["step_errors"]), flush=True)
        state.barrier()
