"""What a trainer recipe does between parsing its arguments and exiting, for every method.

:func:`run_training` checks everything it can before a model is loaded or a file is written (the
model path, a writable ``output_dir``, the run folder's config, every data row, the held-out
split), then trains, evaluates and saves, and records the run as finished. Re-running the same
command resumes from the last complete checkpoint, or, for a finished run, does nothing and says
where the results are; another config in the same ``output_dir`` is refused with the changed keys
(``--start_over true`` deletes the old run first).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from accelerate import PartialState
from transformers.trainer_utils import IntervalStrategy

from align.checkpoints import last_complete_checkpoint
from align.data import check_chat_template, load_preference_dataset, split_held_out
from align.loops.run import RunFolder, check_output_dir, run_config
from align.models import check_model_source, get_peft_config, load_model, load_processing_class

logger = logging.getLogger(__name__)

__all__ = ["run_training"]

def run_training(
    trainer_cls, *, data_args, training_args, model_args, drift_args, benchmark_args, method: str,
    start_over: bool = False,
):  # fmt: skip
    """Train ``trainer_cls`` on ``data_args``' dataset into ``training_args.output_dir``; return the
    trainer, or None for a run that had already finished."""
    state = PartialState()
    check_output_dir(training_args.output_dir)
    output_dir = Path(training_args.output_dir)
    config = run_config(method, training_args, model_args, drift_args, data=data_args)
    run = RunFolder(output_dir, config, start_over=start_over, main_process=state.is_main_process, create=False)
    if run.finished:
        if state.is_main_process:
            print(f"{output_dir} is a finished run: the model and its metrics are in {output_dir.resolve()}; nothing "
                  "to do (pass --start_over true to train it again)")  # fmt: skip
        return None

    # Every data error before the model path is even looked at, then the tokenizer's checks
    # (roles its chat template takes, the template's prefix rule, overlong prompts), then weights.
    kind = trainer_cls.data_kind(training_args)

    def load(source, split):
        return load_preference_dataset(source, split, kind=kind, identical_pairs=training_args.identical_pairs)

    train = load(data_args.dataset, data_args.dataset_split)
    if data_args.max_train_examples is not None:
        train = train.select(range(min(data_args.max_train_examples, len(train))))
    loaded = {data_args.dataset: train}  # as read, so chat-template errors name rows of the file
    evaluation = None
    if data_args.eval_dataset is not None:
        evaluation = loaded[data_args.eval_dataset] = load(data_args.eval_dataset, data_args.eval_split)
    elif data_args.num_eval > 0:
        train, evaluation = split_held_out(train, data_args.num_eval, seed=training_args.seed, source=data_args.dataset)
    check_model_source(model_args.model_name_or_path)
    tokenizer = load_processing_class(model_args)  # a processor for a vision-language model
    for source, dataset in loaded.items():
        check_chat_template(dataset, tokenizer, name=source)
    train = trainer_cls.prepare_dataset(train, tokenizer, training_args, name="train")
    if evaluation is not None:
        evaluation = trainer_cls.prepare_dataset(evaluation, tokenizer, training_args, name="eval")
    elif training_args.eval_strategy != IntervalStrategy.NO or training_args.eval_on_start:
        logger.warning("no evaluation data (num_eval=0, no eval_dataset): evaluation during training is off")
        training_args.eval_strategy, training_args.eval_on_start = IntervalStrategy.NO, False
    if evaluation is None and drift_args.drift and drift_args.drift_num_probes >= len(train):
        # the probes are held back from the training pairs; keep at least one pair to train on
        probes = len(train) - 1
        logger.warning("likelihood drift: %d training pairs cannot spare %d probe pairs; using %d (set "
                       "--drift_num_probes, or give --eval_dataset / --num_eval)",
                       len(train), drift_args.drift_num_probes, probes)  # fmt: skip
        drift_args = dataclasses.replace(drift_args, drift=probes > 0, drift_num_probes=max(probes, 1))

    run.create()
    model = load_model(model_args)
    trainer = trainer_cls(
        model=model, args=training_args, train_dataset=train, eval_dataset=evaluation, processing_class=tokenizer,
        peft_config=get_peft_config(model_args), callbacks=[*drift_args.callbacks(), *benchmark_args.callbacks()],
    )  # fmt: skip
    resume = training_args.resume_from_checkpoint  # an explicit checkpoint folder, else the newest complete one
    if resume in (None, "", "true", "True") or not Path(resume).is_dir():
        resume = last_complete_checkpoint(output_dir, remove_partial=state.is_main_process)
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_metrics("train", result.metrics)  # train_results.json: runtime, samples/s, the whole run's loss
    if evaluation is not None:
        # the Trainer evaluates at the last step when eval_steps divides max_steps: reuse that
        final = [e for e in trainer.state.log_history if "eval_loss" in e and e.get("step") == result.global_step]
        metrics = {k: v for k, v in final[-1].items() if k.startswith("eval_")} if final else trainer.evaluate()
        trainer.save_metrics("eval", metrics)
    # The final save overwrites the model files in output_dir; a run killed during it is not yet
    # finished, so the re-run resumes from the final checkpoint (no step trained) and saves again.
    trainer.save_model(str(output_dir))
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(str(output_dir))
        run.mark_finished({"global_step": result.global_step, "train_loss": result.training_loss})
        print(f"Saved the trained model to {output_dir.resolve()}")
    return trainer
