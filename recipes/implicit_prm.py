"""Implicit PRM: an outcome model whose token log-ratios are process rewards (Yuan et al. 2024).

    accelerate launch recipes/implicit_prm.py                   # offline default: SmolLM2 + the multistep task
    accelerate launch recipes/implicit_prm.py --objective implicit_prm_dpo --dataset_builder all_pairs
    accelerate launch recipes/implicit_prm.py --iterations 0 --dataset labelled.jsonl   # train on a labelled set
    accelerate launch --config_file accelerate_configs/zero3.yaml recipes/implicit_prm.py \\
        --config recipes/configs/implicit_prm_paper.yaml

With ``--iterations 1`` (the default) the run is the on-policy loop's stages ``generate → judge →
dataset → train → best_of_n``: N solutions per training problem from the generator (the starting
model), labelled by the verifier (``--judge``), made into labelled completions (CE, builder
``labelled``) or every correct × incorrect pair (DPO, ``all_pairs``), trained with
``ImplicitPRMTrainer``; then best-of-N on held-out problems with the trained model as the process
reward model, and step-error detection when ``--step_checker`` is given. With ``--iterations 0``
it trains on ``--dataset`` (a hub id or a local file with prompt / completion / label columns; for
DPO also chosen / rejected pairs). Re-running the same command resumes where it stopped.
"""

from __future__ import annotations

import logging
from pathlib import Path

from accelerate import PartialState

from align.cli import ConfigError, DataArguments, parse_recipe_args, run_recipe
from align.distributed import finish_distributed
from align.loops import LoopArguments, OnPolicyLoop
from align.loops.stages import BestOfN, BestOfNArguments, BuildDataset, Generate, Judge, Train
from align.runner import run_training
from align.trainers import ImplicitPRMConfig, ImplicitPRMTrainer

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "implicit_prm.yaml"
BUILDERS = {"implicit_prm_ce": "labelled", "implicit_prm_dpo": "all_pairs"}


def main(argv: list[str] | None = None):
    data_args, training_args, model_args, drift_args, benchmark_args, loop_args, bon_args = parse_recipe_args(
        ImplicitPRMConfig, DEFAULT_CONFIG, argv, data_classes=(DataArguments, LoopArguments, BestOfNArguments)
    )
    logging.basicConfig(level=logging.INFO if training_args.should_log else logging.WARNING)
    if loop_args.iterations > 1:
        raise ConfigError(
            f"--iterations {loop_args.iterations}: an implicit PRM is trained once, from the generator's samples "
            "(--iterations 1) or from --dataset (--iterations 0)"
        )
    if loop_args.iterations == 1:
        loop = OnPolicyLoop(
            loop_args=loop_args, training_args=training_args, model_args=model_args, drift_args=drift_args,
            benchmark_args=benchmark_args, trainer_cls=ImplicitPRMTrainer,
            method=f"implicit_prm/{training_args.objective}", default_builder=BUILDERS[training_args.objective],
            stages=(Generate(), Judge(), BuildDataset(), Train(), BestOfN(bon_args)),
        )  # fmt: skip
        summaries = loop.run()
        finish_distributed(PartialState())
        return summaries

    trainer = run_training(
        ImplicitPRMTrainer, data_args=data_args, training_args=training_args, model_args=model_args,
        drift_args=drift_args, benchmark_args=benchmark_args, method=f"implicit_prm/{training_args.objective}",
        start_over=loop_args.start_over,
    )  # fmt: skip
    finish_distributed(PartialState())
    return trainer


if __name__ == "__main__":
    run_recipe(main)
