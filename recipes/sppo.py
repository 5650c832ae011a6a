"""SPPO: self-play preference optimization, on-policy, for a number of iterations.

    accelerate launch recipes/sppo.py                      # offline default: SmolLM2 + arithmetic, 3 iterations
    accelerate launch recipes/sppo.py --iterations 1 --output_dir outputs/try
    accelerate launch --config_file accelerate_configs/zero3.yaml recipes/sppo.py --config recipes/configs/sppo_paper.yaml

Each iteration samples K completions per prompt from π_t, judges them (``--judge``: a verifier,
a reward model or a pairwise judge from align.rewards), turns them into (y_w, y_l, P̂_w, P̂_l, p)
pairs and trains π_{t+1} with reference π_t. Everything lands in ``output_dir`` (a run folder,
one subfolder per iteration); re-running the same command resumes where it stopped.
"""

from __future__ import annotations

import logging
from pathlib import Path

from accelerate import PartialState

from align.cli import parse_recipe_args, run_recipe
from align.distributed import finish_distributed
from align.loops import LoopArguments, OnPolicyLoop
from align.trainers import SPPOConfig, SPPOTrainer

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "sppo.yaml"


def main(argv: list[str] | None = None) -> list[dict]:
    loop_args, training_args, model_args, drift_args, benchmark_args = parse_recipe_args(
        SPPOConfig, DEFAULT_CONFIG, argv, data_classes=(LoopArguments,)
    )
    logging.basicConfig(level=logging.INFO if training_args.should_log else logging.WARNING)
    loop = OnPolicyLoop(
        loop_args=loop_args,
        training_args=training_args,
        model_args=model_args,
        drift_args=drift_args,
        benchmark_args=benchmark_args,
        trainer_cls=SPPOTrainer,
        default_builder="sppo_pairs",
        method=f"sppo/{training_args.objective}",
    )
    summaries = loop.run()
    finish_distributed(PartialState())
    return summaries


if __name__ == "__main__":
    run_recipe(main)
