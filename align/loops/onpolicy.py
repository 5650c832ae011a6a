"""The on-policy iteration engine: a sequence of named, resumable stages per iteration
(:mod:`align.loops.stages`; by default evaluate → generate → judge → dataset → train → evaluate).

Iteration t starts from π_t (the base model for t = 0, else iteration t−1's trained model),
samples K completions per prompt from π_t, judges them, builds the trainer's dataset with the
dataset builder named in the config (:mod:`align.loops.builders`), and trains
π_{t+1} against the reference π_t (with LoRA: π_t is the base with every earlier adapter merged,
and the reference is the fresh adapter disabled; with full fine-tuning: a frozen copy of π_t).
Every stage writes its files atomically and is recorded in the iteration's manifest
(:mod:`align.loops.run`), so re-running the same command resumes at the first unfinished stage.

Multi-process: generation is sharded across processes (align.generation), training runs on all;
judging, pair building and the files are the main process's, the others wait at a barrier.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accelerate import PartialState

from align.checkpoints import last_complete_checkpoint
from align.data import read_rows
from align.io import read_jsonl
from align.loops.builders import check_builder, get_builder
from align.loops.run import RunFolder, atomic_write_json, check_output_dir, read_json, run_config
from align.loops.stages import DEFAULT_STAGES, IterationState, Stage, StageConfigError

logger = logging.getLogger(__name__)

__all__ = ["LoopArguments", "OnPolicyLoop", "iteration_slice", "load_prompt_rows"]

@dataclass
class LoopArguments:
    """The on-policy loop: which prompts, how many samples, which judge, how many iterations."""

    iterations: int = field(default=3, metadata={"help": "On-policy iterations (0: train once on --dataset, no loop)."})
    prompts: str = field(
        default="builtin:arithmetic", metadata={"help": "Prompt dataset (hub id, local file, builtin:<name>)."}
    )
    prompts_split: str = field(default="train", metadata={"help": "Its split."})
    prompts_per_iteration: int = field(
        default=64, metadata={"help": "Fresh prompts per iteration: iteration t uses the t-th slice (wrapping around)."}
    )
    prompt_field: str = field(default="prompt", metadata={"help": "Column holding the prompt (text or messages)."})
    eval_prompts: str | None = field(
        default="builtin:arithmetic", metadata={"help": "Held-out prompts (none: no evaluation)."}
    )
    eval_prompts_split: str = field(default="test", metadata={"help": "Their split."})
    num_eval_prompts: int = field(default=64, metadata={"help": "Held-out prompts evaluated after each iteration."})
    judge: str = field(
        default="gsm8k_verifier",
        metadata={"help": "align.rewards plug-in: a verifier, reward model, process reward model or pairwise judge."},
    )
    judge_options: str = field(
        default="{}", metadata={"help": "JSON options for the judge, e.g. '{\"batch_size\": 8}'."}
    )
    num_samples: int = field(default=4, metadata={"help": "K completions per prompt."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature (the SPPO paper: 0.7)."})
    top_p: float = field(default=0.9, metadata={"help": "Nucleus sampling (the SPPO paper: 0.9)."})
    max_new_tokens: int = field(default=64, metadata={"help": "Tokens per sampled completion."})
    generation_batch_size: int = field(
        default=128,
        metadata={
            "help": "Sequences decoded together (batch_size // K prompts at a time); fewer, with a warning, where their "
            "KV cache would not fit in half the free memory."
        },
    )
    generation_chunk_size: int = field(
        default=32, metadata={"help": "Prompts per resumable generation chunk (caps a batch at chunk × K sequences)."}
    )
    # The default keeps the model's dtype: bf16 samples are ~1.5x faster on this CPU, but over 3
    # paired seeds the default SPPO run gained less held-out accuracy from them (README, SPPO).
    sampling_precision: str = field(
        default="model",
        metadata={"help": "Precision of the K samples: 'model' (the model's dtype), 'bf16' (bfloat16 autocast: "
                  "faster where bf16 matmuls are, but it lowered the default SPPO run's accuracy gain) or "
                  "'auto' (bf16 when training uses --bf16 and the device has fast bf16 matmuls). Held-out "
                  "evaluation always decodes in the model's dtype."},
    )  # fmt: skip
    eval_max_new_tokens: int | None = field(
        default=None, metadata={"help": "Tokens per evaluation answer (default: max_new_tokens)."}
    )
    dataset_builder: str | None = field(
        default=None,
        metadata={"help": "How judged samples become training rows (align.loops.builders: sppo_pairs, rpo_pairs, "
                  "all_pairs, labelled); default: the recipe's."},
    )  # fmt: skip
    dataset_options: str = field(
        default="{}", metadata={"help": "JSON options for the dataset builder, e.g. '{\"skip_ties\": false}'."}
    )
    start_over: bool = field(
        default=False, metadata={"help": "Delete a run folder made by a different config and restart."}
    )
    stop_after: str | None = field(
        default=None,
        metadata={"help": "End the run after this stage, in the first iteration with stages still to run after it "
                  "(e.g. 'dataset': sample and label only)."},
    )

    def __post_init__(self) -> None:
        """Refuse a bad loop config while the arguments are parsed: before a run folder is written,
        a model loaded or a sample drawn (a misspelt judge used to fail after run.json existed)."""
        from align.generation import SamplingConfig
        from align.rewards import check_reward_spec

        for name in ("iterations", "prompts_per_iteration", "num_eval_prompts"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.iterations == 0:
            return  # no loop: the sampling and judge fields are unused
        if self.sampling_precision not in ("auto", "model", "bf16"):
            raise ValueError(f"sampling_precision must be auto, model or bf16, got {self.sampling_precision!r}")
        SamplingConfig(num_samples=self.num_samples, max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                       top_p=self.top_p, batch_size=self.generation_batch_size, chunk_size=self.generation_chunk_size)  # fmt: skip
        if self.eval_max_new_tokens is not None and self.eval_max_new_tokens < 1:
            raise ValueError(f"eval_max_new_tokens must be >= 1, got {self.eval_max_new_tokens}")
        check_reward_spec(self.judge, **self.judge_kwargs())
        if self.dataset_builder is not None:
            check_builder(self.dataset_builder, self.dataset_kwargs())

    def judge_kwargs(self) -> dict:
        from align.rewards import reward_options

        return reward_options(self.judge_options, "judge_options")

    def dataset_kwargs(self) -> dict:
        from align.rewards import reward_options

        return reward_options(self.dataset_options, "dataset_options")


PROMPT_FIELDS = ("answer", "solution", "images")


def load_prompt_rows(
    source: str, split: str, prompt_field: str = "prompt", fields: Sequence[str] = PROMPT_FIELDS
) -> list[dict]:
    """Prompt rows ``{"prompt", "answer"?, "solution"?, "images"?}`` (and any other of ``fields``) from any
    source align reads. ``images`` (``image``: one) fill the prompt's image placeholders when it is
    sampled (:meth:`OnPolicyLoop.generation_prompt`); relative image paths are resolved against the
    folder of the file they come from."""
    rows = []
    for name, part in read_rows(source, split):
        folder = Path(name).parent if Path(name).is_file() else None
        for i, row in enumerate(part):
            if prompt_field not in row:
                raise ValueError(f"{name}: row {i}: no {prompt_field!r} field (has {sorted(row)}); set --prompt_field")
            item = {"prompt": row[prompt_field]}
            if row.get("image") is not None and row.get("images") is None:
                row = {**row, "images": [row["image"]]}
            for key in fields:
                if row.get(key) is not None:
                    item[key] = row[key]
            if "images" in item:
                if not isinstance(item["images"], list) or not all(isinstance(v, str) for v in item["images"]):
                    raise ValueError(f"{name}: row {i}: field 'images': prompt images must be a list of file paths")
                item["images"] = [str(folder / v) if folder and not Path(v).is_absolute() else v for v in item["images"]]
            rows.append(item)
    if not rows:
        raise ValueError(f"{source} [{split}]: no prompts")
    return rows


def iteration_slice(rows: list[dict], t: int, size: int) -> list[dict]:
    """Iteration t's prompts: the t-th slice of ``size`` rows, wrapping around (every row when
    ``size`` is 0 or covers them all), each tagged with its ``index`` in ``rows``."""
    if size <= 0 or size >= len(rows):
        return [dict(r, index=i) for i, r in enumerate(rows)]
    start = (t * size) % len(rows)
    indices = [(start + i) % len(rows) for i in range(size)]
    return [dict(rows[i], index=i) for i in indices]


class OnPolicyLoop:
    """Run ``loop_args.iterations`` on-policy iterations of ``trainer_cls`` into ``args.output_dir``.

    Each iteration runs ``stages`` in order (default :data:`align.loops.stages.DEFAULT_STAGES`).
    The ``dataset`` stage turns the judged samples into the trainer's rows with the builder
    ``loop_args.dataset_builder`` names, else ``default_builder`` (:mod:`align.loops.builders`)."""

    prompt_fields: tuple[str, ...] = PROMPT_FIELDS  # what a prompt row keeps besides its prompt

    def __init__(
        self,
        *,
        loop_args: LoopArguments,
        training_args,
        model_args,
        trainer_cls,
        default_builder: str,
        drift_args=None,
        benchmark_args=None,
        method: str,
        stages: Sequence[Stage] = DEFAULT_STAGES,
    ):
        self.loop_args, self.training_args, self.model_args = loop_args, training_args, model_args
        self.trainer_cls, self.drift_args, self.method = trainer_cls, drift_args, method
        self.builder_name = loop_args.dataset_builder or default_builder
        self.build_dataset = get_builder(self.builder_name, loop_args.dataset_kwargs())
        names = [stage.name for stage in stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        if loop_args.stop_after is not None and loop_args.stop_after not in names:
            raise StageConfigError(
                f"--stop_after {loop_args.stop_after!r} is not a stage of this run: {', '.join(names)}"
            )
        self.stages = tuple(stages)
        # not part of the run's config: adding a benchmark to a finished run re-runs only that stage
        self.benchmark_args = benchmark_args
        self.benchmark = benchmark_args.build() if benchmark_args is not None else None
        self.state = PartialState()

    # -- setup ---------------------------------------------------------------------------------

    def config(self) -> dict:
        # how to start or where to stop is not what the run is; the builder is, also the recipe's default
        loop = dataclasses.replace(self.loop_args, start_over=False, stop_after=None, dataset_builder=self.builder_name)
        return run_config(self.method, self.training_args, self.model_args, self.drift_args, loop=loop)

    def _barrier(self) -> None:
        self.state.wait_for_everyone()

    @property
    def main(self) -> bool:
        return self.state.is_main_process

    # -- models ----------------------------------------------------------------------------------

    def load_policy(self, run: RunFolder, t: int):
        """π_t: the base model for t = 0; else the base with adapters 0..t−1 merged (LoRA) or
        iteration t−1's saved model (full fine-tuning)."""
        from align.models import load_model

        if t > 0 and not self.model_args.use_peft:
            previous = run.iteration(t - 1).model_dir
            args = dataclasses.replace(self.model_args, model_name_or_path=str(previous))
            return load_model(args, for_training=True)
        model = load_model(self.model_args, for_training=True)
        if t > 0:
            from peft import PeftModel

            for i in range(t):
                model = PeftModel.from_pretrained(model, str(run.iteration(i).model_dir)).merge_and_unload()
        return model

    # -- stages ------------------------------------------------------------------------------------

    def sampling(self, *, greedy: bool = False, t: int = 0, prompts: int | None = None):
        """Iteration ``t``'s sampling settings, or with ``greedy`` those of held-out evaluation on
        ``prompts`` prompts. Held-out answers are not resumed chunk by chunk, so their chunks are as
        large as a batch allows while every process still gets one (one answer per prompt: a
        ``generation_chunk_size`` chunk would cap a batch at that many sequences; measured on the
        default task, 64 greedy answers in fp32 take 10.3 s as one batch and 13.4 s as two, the
        same answers)."""
        from align.generation import SamplingConfig

        la = self.loop_args
        chunk_size = la.generation_chunk_size
        if greedy and prompts:
            per_process = -(-prompts // self.state.num_processes)
            chunk_size = max(chunk_size, min(la.generation_batch_size, per_process))
        return SamplingConfig(
            num_samples=1 if greedy else la.num_samples,
            max_new_tokens=(la.eval_max_new_tokens or la.max_new_tokens) if greedy else la.max_new_tokens,
            temperature=0.0 if greedy else la.temperature,
            top_p=1.0 if greedy else la.top_p,
            seed=self.training_args.seed * 1000 + t,
            batch_size=la.generation_batch_size,
            chunk_size=chunk_size,
            precision="model" if greedy else self.sampling_precision(),
        )

    def sampling_precision(self) -> str:
        """The K samples' precision: ``--sampling_precision``, with ``auto`` resolved to ``bf16`` when
        training runs in bf16 (``--bf16``) on a device with fast bf16 matmuls, else ``model``."""
        from align.generation import fast_bf16

        chosen = self.loop_args.sampling_precision
        if chosen != "auto":
            return chosen
        return "bf16" if self.training_args.bf16 and fast_bf16(self.training_args.device) else "model"

    @staticmethod
    def generation_prompt(row: dict):
        """What the model is sampled on for a prompt row: its prompt, with its ``images`` (file paths)
        filled into the image placeholders (:func:`align.data.images.fill_images`)."""
        if not row.get("images"):
            return row["prompt"]
        from align.data.images import fill_images

        return fill_images(row["prompt"], row["images"], name=f"prompt {row.get('index', '')}".strip())

    def generate(
        self, it, model, tokenizer, prompts: list[dict], *, accelerator=None, chunks=None, sampling=None
    ) -> list[list[str]]:
        """K samples per prompt (``sampling``: default the loop's); finished chunks persist in
        ``chunks`` (default ``samples.chunks/``) so a killed run regenerates only the chunk it was in."""
        from align.generation import HFGenerator

        chunks = it.chunks if chunks is None else chunks
        done = {}
        if chunks.exists():
            for path in sorted(chunks.glob("chunk-*.json")):
                done[int(path.stem.split("-")[1])] = read_json(path)

        def on_chunk(index: int, results: list[list[str]]) -> None:
            if self.main:
                atomic_write_json(chunks / f"chunk-{index:05d}.json", results)

        generator = HFGenerator(model, tokenizer, accelerator, show_progress=self.main)
        return generator.generate(
            [self.generation_prompt(p) for p in prompts], sampling or self.sampling(t=it.index), on_chunk=on_chunk,
            done_chunks=done,
        )  # fmt: skip

    def judge(self, judge, prompts: list[dict], samples: list[list[str]]) -> list[dict]:
        from align.rewards import score_groups

        references = [p.get("answer", p.get("solution")) for p in prompts]
        # a vision judge sees the image the answer is about
        judgements = score_groups(judge, [self.generation_prompt(p) for p in prompts], samples, references=references)
        judged = []
        for prompt, completions, j in zip(prompts, samples, judgements):
            item = {**prompt, "completions": completions, "win_rates": [float(x) for x in j.win_rates],
                    "preference": [[float(x) for x in row] for row in j.preference]}  # fmt: skip
            if j.scores is not None:
                item["scores"] = [float(x) for x in j.scores]
            if j.correct is not None:
                item["correct"] = [bool(x) for x in j.correct]
            if j.steps is not None:
                item["step_rewards"] = [list(s.rewards) for s in j.steps]
                item["outcome_rewards"] = [s.outcome for s in j.steps]
            judged.append(item)
        return judged

    def evaluate(
        self, model, tokenizer, judge, eval_rows: list[dict], *, accelerator=None, baseline: list[str] | None = None
    ) -> dict:
        """Greedy answers to the held-out prompts: accuracy for a verifier, else the win rate of
        these answers against the starting model's (``baseline``) under the judge (``None`` on the
        processes other than the main one: they only generate)."""
        from align.generation import HFGenerator
        from align.rewards import checked_verdicts, compare_answers, reward_kind

        generator = HFGenerator(model, tokenizer, accelerator, show_progress=self.main)
        greedy = self.sampling(greedy=True, prompts=len(eval_rows))
        answers = [c[0] for c in generator.generate([self.generation_prompt(r) for r in eval_rows], greedy)]
        prompts = [r["prompt"] for r in eval_rows]
        result: dict[str, Any] = {"answers": answers}
        if judge is None:  # not the main process: it judges
            return result
        if reward_kind(judge) == "verifier":
            correct = checked_verdicts(judge, prompts, answers, [r.get("answer", r.get("solution")) for r in eval_rows])
            result["accuracy"] = float(correct.mean())
        elif baseline is not None:
            result["win_rate_vs_start"] = float(compare_answers(judge, prompts, answers, baseline).mean())
        return result

    def run_benchmark(self, it, stage: str, model, tokenizer, *, accelerator=None) -> None:
        """The ``benchmark`` (or, on the starting model, ``benchmark_start``) stage: the configured
        benchmark on ``model``, its files in ``<iteration>/<stage>/``, its metrics in the manifest.
        A stage finished under other benchmark settings is run again."""
        from align.loops.run import fingerprint

        folder = it.path / stage
        if self.main and folder.exists():  # a killed attempt: its answers may be partial or stale
            shutil.rmtree(folder)
        self._barrier()
        metrics = self.benchmark.run(model, tokenizer, accelerator=accelerator, output_dir=folder)
        if self.main:
            it.finish(
                stage, {"benchmark": self.benchmark.name, "settings": fingerprint(self.benchmark.settings()), **metrics}
            )
        self._barrier()

    def train(self, it, model, tokenizer, pairs: list[dict], *, trainer_cls=None, args=None, model_dir=None,
              drift: bool = True):  # fmt: skip
        """Train on ``pairs`` (the iteration's rows) from ``model`` and save the result into the
        iteration's ``model/``; a stage that trains something else (a warm-up) passes its own trainer
        class, arguments (their ``output_dir`` holds the checkpoints) and ``model_dir``."""
        from align.data import load_preference_dataset
        from align.models import get_peft_config

        trainer_cls = trainer_cls or self.trainer_cls
        model_dir = Path(model_dir or it.model_dir)
        if args is None:
            args = copy.deepcopy(self.training_args)
            args.output_dir = str(it.train_dir)
        args.seed = self.training_args.seed + it.index
        callbacks = []
        if drift and self.drift_args is not None and self.drift_args.drift:
            # probes: the iteration's first pairs (displacement is a property of the trained pairs); from
            # labelled single completions and from lists (best vs worst return) the callback makes the
            # pairs itself, skipping rows that give none, so it gets every row
            (callback,) = self.drift_args.callbacks()
            whole = bool(pairs) and ("completion" in pairs[0] or "completions" in pairs[0])
            probes = pairs if whole else pairs[: callback.num_probes]
            callback.probe_dataset = load_preference_dataset(probes, name=f"{it.dataset} (drift probes)")
            callbacks.append(callback)
        if self.benchmark is not None and self.benchmark_args.benchmark_every_steps:
            from align.evaluation.hook import BenchmarkCallback

            # the loop's own benchmark stage covers the start and the end of each iteration
            callbacks.append(BenchmarkCallback(self.benchmark, every_steps=self.benchmark_args.benchmark_every_steps,
                                               at_start=False, at_end=False))  # fmt: skip
        # normalised here, not by Dataset.from_list: rows with images mix text and content-part messages
        train = load_preference_dataset(pairs, kind=trainer_cls.data_kind(args), name=str(it.dataset),
                                        identical_pairs=args.identical_pairs)  # fmt: skip
        trainer = trainer_cls(
            model=model, args=args, train_dataset=train, eval_dataset=None, processing_class=tokenizer,
            peft_config=get_peft_config(self.model_args), callbacks=callbacks,
        )  # fmt: skip
        resume = last_complete_checkpoint(args.output_dir, remove_partial=self.main)
        self._barrier()
        result = trainer.train(resume_from_checkpoint=resume)
        # save into a temp folder, then rename: a half-saved model is never taken for a finished one
        partial = model_dir.with_name(model_dir.name + ".partial")
        if self.main and partial.exists():
            shutil.rmtree(partial)
        trainer.save_model(str(partial))
        if self.main:
            tokenizer.save_pretrained(str(partial))
            if model_dir.exists():
                shutil.rmtree(model_dir)
            partial.rename(model_dir)
        return trainer, result.metrics

    # -- the loop ----------------------------------------------------------------------------------

    def run(self) -> list[dict]:
        from align.models import check_model_source, load_processing_class
        from accelerate.utils import broadcast_object_list

        from align.rewards import load_reward, reward_kind

        la = self.loop_args
        # Everything that can fail on the user's input fails before run.json is written.
        check_output_dir(self.training_args.output_dir)
        run = RunFolder(self.training_args.output_dir, self.config(), start_over=la.start_over, main_process=self.main,
                        create=False)  # fmt: skip
        fields = self.prompt_fields
        prompts = load_prompt_rows(la.prompts, la.prompts_split, la.prompt_field, fields)
        eval_rows = (
            load_prompt_rows(la.eval_prompts, la.eval_prompts_split, la.prompt_field, fields)[: la.num_eval_prompts]
            if la.eval_prompts
            else []
        )
        check_model_source(self.model_args.model_name_or_path)
        tokenizer = load_processing_class(self.model_args)  # a processor for a vision-language model
        # The judge runs on the main process only (a reward model or PRM would be one more model per
        # process); the others learn its kind, which decides what the stages do.
        judge = load_reward(la.judge, **la.judge_kwargs()) if self.main else None
        kind = [reward_kind(judge)]
        broadcast_object_list(kind, from_process=0)
        self.judge_kind = kind[0]
        for stage in self.stages:
            stage.check(self)
        self._barrier()  # every process has read run.json before the main one may rewrite it
        run.create()
        self._barrier()
        summaries = []
        for t in range(la.iterations):
            state = IterationState(self, run, run.iteration(t), iteration_slice(prompts, t, la.prompts_per_iteration),
                                   eval_rows, tokenizer, judge)  # fmt: skip
            stop = False
            for i, stage in enumerate(self.stages):
                if stage.applies(state) and not stage.done(state):
                    logger.info("iteration %d: %s", t, stage.name)
                    state.it.begin(stage.name)  # its manifest entry then records its seconds
                    stage.run(state)
                if stage.name == la.stop_after:
                    stop = any(s.applies(state) and not s.done(state) for s in self.stages[i + 1 :])
                    if stop:
                        break
            state.release()
            summaries.append(self.summary(run, t))
            if self.main:
                print(self.table(run, t + 1), flush=True)
                print(self.times_table(run, t + 1), flush=True)
            if stop:
                if self.main:
                    print(f"{run.root}: stopped after the {la.stop_after} stage as asked; its files are in "
                          f"{state.it.path.resolve()}", flush=True)  # fmt: skip
                return summaries
        if self.main:
            print(f"{run.root}: {la.iterations} iterations finished; the last model is in "
                  f"{run.iteration(la.iterations - 1).model_dir.resolve()}", flush=True)  # fmt: skip
        return summaries

    # -- reporting -----------------------------------------------------------------------------------

    def summary(self, run: RunFolder, t: int) -> dict:
        it = run.iteration(t)
        manifest = it.manifest()["stages"]
        dataset = manifest.get("dataset", {})
        out = {"iteration": t + 1, "pairs": dataset.get("pairs", dataset.get("lists", dataset.get("rows")))}
        out["sample_accuracy"] = manifest.get("judge", {}).get("sample_accuracy")
        for key in ("accuracy", "win_rate_vs_start"):
            if key in manifest.get("evaluate", {}):
                out[key] = manifest["evaluate"][key]
        if self.benchmark is not None and "benchmark" in manifest:
            out[f"benchmark/{self.benchmark.name}/{self.benchmark.headline}"] = manifest["benchmark"].get(
                self.benchmark.headline
            )
        out["seconds"] = {name: entry["seconds"] for name, entry in manifest.items() if "seconds" in entry}
        drift = it.train_dir / "likelihood_drift.jsonl"
        if drift.exists():
            last = read_jsonl(drift)[-1]
            out["chosen_drift"] = last.get("chosen_change_per_token")
            out["rejected_drift"] = last.get("rejected_change_per_token")
            out["displacement_rate"] = last.get("displacement_rate")
        return out

    def table(self, run: RunFolder, iterations: int) -> str:
        """Markdown table: held-out score per iteration, the benchmark's headline metric (when one
        is configured) and the chosen/rejected drift."""
        stages = run.iteration(0).manifest()["stages"]
        first = stages.get("evaluate_start", {})
        metric = "accuracy" if "accuracy" in first or self.loop_args.judge.startswith("gsm8k") else "win_rate_vs_start"
        bench = None if self.benchmark is None else f"benchmark/{self.benchmark.name}/{self.benchmark.headline}"
        bench_title = "" if bench is None else f" {self.benchmark.name} {self.benchmark.headline.replace('_', ' ')} |"
        # list data (HAEPO): the drift probes are each list's best- and worst-return completions
        kind = self.trainer_cls.data_kind(self.training_args)
        unit, chosen, rejected = ("lists", "best", "worst") if kind == "list" else ("pairs", "chosen", "rejected")
        unit = "rows" if kind == "single" else unit
        lines = [
            f"| iteration | {unit} | sample accuracy | held-out {metric.replace('_', ' ')} |{bench_title} Δ {chosen} logp/tok | Δ {rejected} logp/tok | displaced |",
            "|---|---|---|---|" + ("---|" if bench else "") + "---|---|---|",
        ]
        if metric in first or (bench and "benchmark_start" in stages):
            start_bench = f" {_fmt(stages.get('benchmark_start', {}).get(self.benchmark.headline))} |" if bench else ""
            lines.append(f"| 0 (start) | | | {_fmt(first.get(metric))} |{start_bench} | | |")
        for t in range(iterations):
            s = self.summary(run, t)
            cell = f" {_fmt(s.get(bench))} |" if bench else ""
            lines.append(
                f"| {t + 1} | {s.get('pairs', '')} | {_fmt(s.get('sample_accuracy'))} | {_fmt(s.get(metric))} |{cell} "
                f"{_fmt(s.get('chosen_drift'), '+.3f')} | {_fmt(s.get('rejected_drift'), '+.3f')} | {_fmt(s.get('displacement_rate'))} |"
            )
        return "\n".join(lines)


    def times_table(self, run: RunFolder, iterations: int) -> str:
        """Markdown table: wall-clock seconds of each stage per iteration, as recorded in the
        manifests (a stage resumed after a crash counts only the run that finished it; loading a
        model counts in the first stage that needs it)."""
        times = [self.summary(run, t)["seconds"] for t in range(iterations)]
        names = [stage.name for stage in self.stages if any(stage.name in row for row in times)]
        lines = ["| iteration | " + " | ".join(f"{name} s" for name in names) + " | total s |",
                 "|---|" + "---|" * (len(names) + 1)]  # fmt: skip
        for t, row in enumerate(times):
            cells = "".join(f" {_fmt(row.get(name), '.0f')} |".replace("  |", " |") for name in names)
            lines.append(f"| {t + 1} |{cells} {sum(row.values()):.0f} |")
        return "\n".join(lines)


def _fmt(value, spec: str = ".3f") -> str:
    return "" if value is None else format(value, spec)
