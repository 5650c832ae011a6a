"""HAEPO: listwise Plackett-Luce policy optimisation, on-policy, for a number of iterations.

    accelerate launch recipes/haepo.py                      # offline default: SmolLM2 + arithmetic, 3 iterations
    accelerate launch recipes/haepo.py --iterations 1 --output_dir outputs/try
    accelerate launch recipes/haepo.py --judge my_rm:score --judge_options '{"kind": "reward"}'

Each iteration samples K completions per prompt from π_t, gives each a return from the judge
(``--judge``: a verifier's 0/1 verdict, a reward model's or process reward model's score, or a
pairwise judge's win rate; builder ``lists``, ``--dataset_options '{"returns": "scores"}'`` to
choose) and trains π_{t+1} with HAEPOTrainer, whose KL term holds it near π_t, the frozen previous
policy. Everything lands in ``output_dir`` (a run folder, one subfolder per iteration);
re-running the same command resumes where it stopped.
"""

from __future__ import annotations

import logging
from pathlib import Path

from accelerate import PartialState

from align.cli import parse_recipe_args, run_recipe
from align.distributed import finish_distributed
from align.loops import LoopArguments, OnPolicyLoop
from align.trainers import HAEPOConfig, HAEPOTrainer

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "haepo.yaml"


def main(argv: list[str] | None = None) -> list[dict]:
    loop_args, training_args, model_args, drift_args, benchmark_args = parse_recipe_args(
        HAEPOConfig, DEFAULT_CONFIG, argv, data_classes=(LoopArguments,)
    )
    logging.basicConfig(level=logging.INFO if training_args.should_log else logging.WARNING)
    loop = OnPolicyLoop(
        loop_args=loop_args, training_args=training_args, model_args=model_args, drift_args=drift_args,
        benchmark_args=benchmark_args, trainer_cls=HAEPOTrainer, default_builder="lists", method="haepo",
    )  # fmt: skip
    summaries = loop.run()
    finish_distributed(PartialState())
    return summaries


if __name__ == "__main__":
    run_recipe(main)
