"""Iterative RPO (DPO + NLL on the winner): one training run on a pair dataset, or the on-policy loop.

    accelerate launch recipes/rpo.py                                  # offline default: SmolLM2 + GSM8K pairs
    accelerate launch recipes/rpo.py --config recipes/configs/rpo_loop.yaml   # the iterative loop on GSM8K
    accelerate launch recipes/rpo.py --max_steps 5 --output_dir outputs/try
    accelerate launch --config_file accelerate_configs/zero3.yaml recipes/rpo.py --config my_rpo.yaml

The YAML (default: recipes/configs/rpo.yaml) documents the run; any field can be overridden on
the command line. Re-running the same command resumes from the newest checkpoint in output_dir (a
finished run does nothing); another config in the same output_dir is refused (--start_over true).
With ``iterations`` > 0 (rpo_loop.yaml) each iteration samples N solutions per GSM8K problem from
the current model, labels them with the verifier, pairs winners with losers (the gold solution
is the winner when no sample is correct) and trains the next model against the current one.
"""

from __future__ import annotations

import logging
from pathlib import Path

from accelerate import PartialState

from align.cli import DataArguments, parse_recipe_args, run_recipe
from align.distributed import finish_distributed
from align.loops import LoopArguments, OnPolicyLoop
from align.runner import run_training
from align.trainers import RPOConfig, RPOTrainer

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "rpo.yaml"


def main(argv: list[str] | None = None):
    data_args, training_args, model_args, drift_args, benchmark_args, loop_args = parse_recipe_args(
        RPOConfig, DEFAULT_CONFIG, argv, data_classes=(DataArguments, LoopArguments)
    )
    logging.basicConfig(level=logging.INFO if training_args.should_log else logging.WARNING)
    if loop_args.iterations > 0:
        loop = OnPolicyLoop(
            loop_args=loop_args, training_args=training_args, model_args=model_args, drift_args=drift_args, benchmark_args=benchmark_args,
            trainer_cls=RPOTrainer, method="iterative_rpo", default_builder="rpo_pairs",
        )  # fmt: skip
        summaries = loop.run()
        finish_distributed(PartialState())
        return summaries

    trainer = run_training(
        RPOTrainer, data_args=data_args, training_args=training_args, model_args=model_args, drift_args=drift_args,
        benchmark_args=benchmark_args, method="rpo", start_over=loop_args.start_over,
    )  # fmt: skip
    finish_distributed(PartialState())
    return trainer


if __name__ == "__main__":
    run_recipe(main)
