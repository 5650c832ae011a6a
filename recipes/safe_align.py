"""SAFE-ALIGN against safe-only SFT and NPO: train each on conversations labelled safe or harmful,
then compare harmful behaviour, over-refusal and utility before and after.

    accelerate launch recipes/safe_align.py                           # offline default: SmolLM2 + the stand-in set
    accelerate launch recipes/safe_align.py --variants safe_align --threshold 2.0
    accelerate launch recipes/safe_align.py --config recipes/configs/safe_align_paper.yaml   # HarmfulQA, 7B

Variants (``--variants``, comma-separated, in order), each a ``SafeAlignTrainer`` run into
``output_dir/<variant>`` with the config's other settings:

- ``sft``: safe-only SFT (``safe_align`` with ``red_weight: 0``; the harmful rows are not trained on),
- ``safe_align``: NLL on safe responses plus ascent on harmful ones, bounded by ``threshold``,
- ``npo``: NLL on safe responses plus NPO on harmful ones, against the starting model.

Then the starting model and each trained one are evaluated (:mod:`align.evaluation.safety`): the
harmful-behaviour rate on held-out prompts (``--safety_judge``: ``safety_rules`` for the stand-in
set, ``openai_safety_judge`` for real data), the over-refusal rate on held-out benign prompts, the
held-out arithmetic accuracy and the held-out safe/harmful responses' NLL; the table is printed
and written to ``output_dir/safety_table.md``. Re-running the same command resumes: finished
trainings and evaluations are not redone, a killed one continues from its last checkpoint or
answer chunk.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from accelerate import PartialState

from align.cli import DataArguments, parse_recipe_args, run_recipe
from align.distributed import finish_distributed
from align.runner import run_training
from align.trainers import SafeAlignConfig, SafeAlignTrainer

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "safe_align.yaml"
# variant → (objective, overrides of the config)
VARIANTS = {"sft": ("safe_align", {"red_weight": 0.0}), "safe_align": ("safe_align", {}), "npo": ("npo", {})}
TABLE_FILE = "safety_table.md"


@dataclass
class SafetyRunArguments:
    """Which variants to train and how to evaluate them (align.evaluation.safety)."""

    variants: str = field(
        default="sft,safe_align,npo", metadata={"help": f"Comma-separated, of {', '.join(VARIANTS)}."}
    )
    safety_judge: str = field(default="safety_rules", metadata={"help": "Verifier plug-in: is an answer safe?"})
    safety_judge_options: str = field(default="{}", metadata={"help": "JSON options for the safety judge."})
    safety_prompts: str = field(default="builtin:safety_prompts", metadata={"help": "Held-out prompt rows."})
    safety_prompts_split: str = field(default="test", metadata={"help": "Split of the held-out prompts."})
    safety_nll_data: str | None = field(default="builtin:safety", metadata={"help": "Held-out labelled rows (NLL)."})
    safety_nll_split: str = field(default="test", metadata={"help": "Split of the held-out labelled rows."})
    safety_utility: str | None = field(default="builtin:arithmetic", metadata={"help": "Held-out utility problems."})
    safety_limit: int | None = field(default=None, metadata={"help": "The first N rows of each held-out set."})
    safety_max_new_tokens: int = field(default=64, metadata={"help": "Tokens per evaluation answer (greedy)."})
    safety_batch_size: int = field(default=32, metadata={"help": "Sequences per generate call."})
    start_over: bool = field(default=False, metadata={"help": "Delete the runs in output_dir and train again."})

    def __post_init__(self) -> None:  # while parsing: a mistake is one line naming the file or flag
        from align.rewards import check_reward_spec

        self.variant_list()
        check_reward_spec(self.safety_judge, **self.judge_options())

    def variant_list(self) -> list[str]:
        names = [v.strip() for v in self.variants.split(",") if v.strip()]
        unknown = [v for v in names if v not in VARIANTS]
        if not names or unknown or len(set(names)) != len(names):
            raise ValueError(f"--variants must name distinct variants of {', '.join(VARIANTS)}, got {self.variants!r}")
        return names

    def judge_options(self) -> dict:
        from align.rewards import reward_options

        return reward_options(self.safety_judge_options, "safety_judge_options")

    def evaluation(self, max_length: int | None):
        from align.evaluation.safety import SafetyConfig

        return SafetyConfig(
            prompts=self.safety_prompts, prompts_split=self.safety_prompts_split, nll_data=self.safety_nll_data,
            nll_split=self.safety_nll_split, utility=self.safety_utility, limit=self.safety_limit,
            max_new_tokens=self.safety_max_new_tokens, batch_size=self.safety_batch_size, max_length=max_length,
        )  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, dict]:
    data_args, training_args, model_args, drift_args, benchmark_args, run_args = parse_recipe_args(
        SafeAlignConfig, DEFAULT_CONFIG, argv, data_classes=(DataArguments, SafetyRunArguments)
    )
    logging.basicConfig(level=logging.INFO if training_args.should_log else logging.WARNING)
    variants, judge_options = run_args.variant_list(), run_args.judge_options()
    evaluation = run_args.evaluation(training_args.max_length)

    root = Path(training_args.output_dir)
    for name in variants:
        objective, overrides = VARIANTS[name]
        args = dataclasses.replace(training_args, output_dir=str(root / name), objective=objective, **overrides)
        run_training(
            SafeAlignTrainer, data_args=data_args, training_args=args, model_args=model_args, drift_args=drift_args,
            benchmark_args=benchmark_args, method=f"safe_align/{name}", start_over=run_args.start_over,
        )  # fmt: skip

    models = {"start": model_args.model_name_or_path, **{name: str(root / name) for name in variants}}
    results = {name: evaluate(name, spec, evaluation, run_args, judge_options, root) for name, spec in models.items()}
    if PartialState().is_main_process:
        from align.evaluation.safety import safety_table
        from align.io import write_text_atomic

        table = safety_table({_LABELS.get(n, n): m for n, m in results.items()})
        write_text_atomic(root / TABLE_FILE, table)
        print(f"\nSafety before and after ({run_args.safety_judge}; held-out sets, greedy answers):\n\n{table}")
    finish_distributed(PartialState())
    return results


_LABELS = {"start": "start (no training)", "sft": "safe-only SFT", "safe_align": "SAFE-ALIGN", "npo": "NPO"}


def evaluate(name: str, spec: str, evaluation, run_args: SafetyRunArguments, judge_options: dict, root: Path) -> dict:
    """The safety metrics of one model, from ``root/safety_eval/<name>/`` when an evaluation with
    the same settings finished there (its answers are cached per chunk, so a killed one resumes)."""
    from align.evaluation import distributed_accelerator, load_eval_model
    from align.evaluation.safety import run_safety
    from align.io import atomic_write_json
    from align.rewards import load_reward

    folder = root / "safety_eval" / name
    # a variant trained again (--start_over with another config) has the same folder but a new run.json
    run_file = Path(spec) / "run.json"
    trained_by = json.loads(run_file.read_text())["fingerprint"] if run_file.exists() else None
    settings = {"model": spec, "trained_by": trained_by, "evaluation": dataclasses.asdict(evaluation),
                "judge": run_args.safety_judge, "judge_options": judge_options}  # fmt: skip
    settings = json.loads(json.dumps(settings))  # as read back from result.json (tuples become lists)
    done = folder / "result.json"
    if done.exists() and (previous := json.loads(done.read_text()))["settings"] == settings:
        return previous["metrics"]
    accelerator = distributed_accelerator()
    model, tokenizer = load_eval_model(spec)
    main = accelerator is None or accelerator.is_main_process
    judge = load_reward(run_args.safety_judge, **judge_options) if main else None
    metrics = run_safety(model, tokenizer, evaluation, judge=judge, accelerator=accelerator, output_dir=folder,
                         cache_key=settings)  # fmt: skip
    if main:
        atomic_write_json(done, {"settings": settings, "metrics": metrics})
    return metrics


if __name__ == "__main__":
    run_recipe(main)
