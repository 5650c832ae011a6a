"""Iterative RPO (DPO + NLL on the winner): one training run on a pair dataset, or the on-policy loop.

    accelerate launch recipes/rpo.py                                  # offline default: SmolLM2 + GSM8K pairs
    accelerate launch recipes/rpo.py --config recipes/configs/rpo_loop.yaml   # the iterative loop on GSM8K
    accelerate launch recipes/rpo.py --max_steps 5 --output_dir outputs/try
    accelerate launch --config_file accelerate_configs/zero3.yaml recipes/rpo.py --config my_rpo.yaml

The YAML (default: recipes/configs/rpo.yaml) documents the run; any field can be overridden on
the command line. Re-running the same command resumes from the newest checkpoint in output_dir.
With ``iterations`` > 0 (rpo_loop.yaml) each iteration samples N solutions per GSM8K problem from
the current model, labels them with the verifier, pairs winners with losers (the gold solution
is the winner when no sample is correct) and trains the next model against the current one.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from accelerate import PartialState

from align.cli import DataArguments, last_checkpoint, parse_recipe_args
from align.data import load_preference_dataset
from align.distributed import finish_distributed
from align.loops import LoopArguments, OnPolicyLoop, rpo_pairs
from align.models import get_peft_config, load_model, load_tokenizer
from align.trainers import RPOConfig, RPOTrainer

logger = logging.getLogger(__name__)
DEFAULT_CONFIG = Path(__file__).parent / "configs" / "rpo.yaml"


def main(argv: list[str] | None = None):
    data_args, training_args, model_args, drift_args, benchmark_args, loop_args = parse_recipe_args(
        RPOConfig, DEFAULT_CONFIG, argv, data_classes=(DataArguments, LoopArguments)
    )
    logging.basicConfig(level=logging.INFO if training_args.should_log else logging.WARNING)
    if loop_args.iterations > 0:
        loop = OnPolicyLoop(
            loop_args=loop_args, training_args=training_args, model_args=model_args, drift_args=drift_args, benchmark_args=benchmark_args,
            trainer_cls=RPOTrainer, method="iterative_rpo",
            build_pairs=functools.partial(rpo_pairs, pairs_per_prompt=loop_args.pairs_per_prompt),
        )  # fmt: skip
        summaries = loop.run()
        finish_distributed(PartialState())
        return summaries

    tokenizer = load_tokenizer(model_args)
    model = load_model(model_args)

    train = load_preference_dataset(data_args.dataset, split=data_args.dataset_split)
    if data_args.max_train_examples is not None:
        train = train.select(range(min(data_args.max_train_examples, len(train))))
    if data_args.eval_dataset is not None:
        evaluation = load_preference_dataset(data_args.eval_dataset, split=data_args.eval_split)
    elif data_args.num_eval > 0:
        split = train.train_test_split(test_size=data_args.num_eval, seed=training_args.seed, shuffle=True)
        train, evaluation = split["train"], split["test"]
    else:
        evaluation = None

    trainer = RPOTrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        callbacks=[*drift_args.callbacks(), *benchmark_args.callbacks()],
    )
    result = trainer.train(
        resume_from_checkpoint=last_checkpoint(training_args.output_dir, training_args.resume_from_checkpoint)
    )
    trainer.save_metrics("train", result.metrics)  # train_results.json: runtime, samples/s, loss
    if evaluation is not None:
        trainer.evaluate()
    trainer.save_model(training_args.output_dir)
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(training_args.output_dir)
        print(f"Saved the trained model to {Path(training_args.output_dir).resolve()}")
    finish_distributed(trainer.accelerator)
    return trainer


if __name__ == "__main__":
    main()
