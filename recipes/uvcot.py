"""UV-CoT: visual chain-of-thought preferences for vision-language models, on-policy.

    accelerate launch recipes/uvcot.py                     # offline default: a tiny LLaVA on builtin:visual_patterns
    accelerate launch recipes/uvcot.py --iterations 1 --output_dir outputs/try
    accelerate launch --config_file accelerate_configs/zero2.yaml recipes/uvcot.py --config recipes/configs/uvcot_paper.yaml

Each iteration π_t proposes K regions per question (turn 1), each region is parsed (an unparseable
one falls back to the centre box, counted), cropped by the official rule and answered once from the
image and its crop (turn 2); the judge scores the answers, pairs of samples whose scores differ by at
least 1 become (chosen, rejected) and π_{t+1} is trained with UVCoTTrainer: score-aware DPO on both
assistant turns plus SFT on the winner. ``--warmup_fraction`` first teaches the base model boxes on
that fraction of the prompts with their true regions (the paper's labelled variant). Everything
lands in ``output_dir``; re-running the same command resumes where it stopped.
"""

from __future__ import annotations

import logging
from pathlib import Path

from accelerate import PartialState

from align.cli import parse_recipe_args, run_recipe
from align.distributed import finish_distributed
from align.loops import LoopArguments
from align.loops.uvcot import UVCoTArguments, UVCoTLoop
from align.trainers.uvcot import UVCoTConfig, UVCoTTrainer

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "uvcot.yaml"


def main(argv: list[str] | None = None) -> list[dict]:
    loop_args, training_args, model_args, drift_args, benchmark_args, uvcot_args = parse_recipe_args(
        UVCoTConfig, DEFAULT_CONFIG, argv, data_classes=(LoopArguments, UVCoTArguments)
    )
    logging.basicConfig(level=logging.INFO if training_args.should_log else logging.WARNING)
    loop = UVCoTLoop(
        loop_args=loop_args, uvcot_args=uvcot_args, training_args=training_args, model_args=model_args,
        drift_args=drift_args, benchmark_args=benchmark_args, trainer_cls=UVCoTTrainer, default_builder="uvcot_pairs",
        method="uvcot",
    )  # fmt: skip
    summaries = loop.run()
    finish_distributed(PartialState())
    return summaries


if __name__ == "__main__":
    run_recipe(main)
