"""Hold rows of a training set back for evaluation, shrinking the held-out part for a small set."""

from __future__ import annotations

import logging

from datasets import Dataset

from align.data.formats import DataValidationError

__all__ = ["split_held_out"]

logger = logging.getLogger(__name__)


def split_held_out(
    dataset: Dataset, num_eval: int, *, seed: int, min_train: int = 1, source: str = "dataset"
) -> tuple[Dataset, Dataset]:
    """``(train, held_out)``: ``num_eval`` rows of ``dataset`` held back for evaluation, the rest to train on.

    The rows are drawn by ``dataset.train_test_split(test_size=n, seed=seed, shuffle=True)``, the
    split the RPO recipe has always made, so a run that fits keeps its rows. With N rows, n =
    min(num_eval, N − min_train): a dataset too small to hold ``num_eval`` rows back and still
    train on ``min_train`` holds back fewer, with a warning saying how many and what to set; one
    that cannot hold back a single row is an error naming ``source``, its size and what to set.
    The dataset's recorded kind (:func:`align.data.dataset_kind`) carries over to both parts.
    """
    if num_eval < 1 or min_train < 1:
        raise ValueError(f"num_eval and min_train must be >= 1, got num_eval={num_eval}, min_train={min_train}")
    size = len(dataset)
    held = min(num_eval, size - min_train)
    if held < 1:
        raise DataValidationError(
            f"{source}: too few rows ({size}) to hold any back for evaluation (num_eval={num_eval}) and keep "
            f"{min_train} to train on; give evaluation data with --eval_dataset, or set --num_eval 0 to train "
            f"without evaluation"
        )
    if held < num_eval:
        logger.warning(
            "%s: %d rows: holding back %d for evaluation, not num_eval=%d, to keep %d to train on; set --num_eval %d "
            "to silence this, or give evaluation data with --eval_dataset",
            source, size, held, num_eval, size - held, held,
        )  # fmt: skip
    parts = dataset.train_test_split(test_size=held, seed=seed, shuffle=True)
    return parts["train"], parts["test"]
