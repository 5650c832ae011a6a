"""One call from any accepted dataset to tokenized rows ready for :class:`PreferenceCollator`."""

from __future__ import annotations

import os
from collections.abc import Sequence

from datasets import Dataset

from align.data.formats import DataValidationError, check_kind
from align.data.loading import dataset_kind, load_preference_dataset
from align.data.tokenize import tokenize_dataset

__all__ = ["prepare_preference_dataset"]

_GROUP_SIZES = {"pair": lambda k: k == 2, "single": lambda k: k == 1, "list": lambda k: k >= 2}


def prepare_preference_dataset(
    dataset: str | os.PathLike | Dataset,
    tokenizer,
    *,
    kind: str | None = None,
    required_fields: Sequence[str] = (),
    max_length: int | None,
    max_prompt_length: int | None = None,
    overlong: str = "drop",
    identical_pairs: str = "drop",
    num_proc: int | None = None,
    name: str | None = None,
) -> tuple[Dataset, dict[str, int]]:
    """Validate (kind and ``required_fields``, e.g. ``("win_rates",)``) and tokenize a dataset.

    ``dataset`` is anything :func:`load_preference_dataset` accepts (raw or already normalised), or
    an already tokenized dataset (``prompt_ids``/``completion_ids`` columns), which is only checked.
    ``name`` names an in-memory dataset in errors (e.g. "train"; files are named by their path). Returns the tokenized dataset and
    the stats of :func:`tokenize_dataset` (all zero drops for an already tokenized one).

    This is the check to run before a model loads: it needs only the tokenizer and raises every
    data error training would meet, in this order: the file (encoding, JSON, Parquet), each row's
    schema, nulls and roles, the objective's kind, identical pairs (``identical_pairs``: "drop" |
    "error" | "keep"), the chat template against every role used, the objective's fields, then per
    row while tokenizing (once) the chat-template prefix rule and ``max_length``. Pass the result
    to the trainer, which takes tokenized rows as they are.
    """
    name = (name or "dataset") if isinstance(dataset, Dataset) else str(dataset)
    if isinstance(dataset, Dataset) and {"prompt_ids", "completion_ids"} <= set(dataset.column_names):
        found = dataset_kind(dataset)
        if found is not None:
            check_kind(found, kind, name, dataset.column_names)
        elif kind is not None:  # tokenized elsewhere: the group sizes are all we can check
            bad = [i for i, ids in enumerate(dataset["completion_ids"]) if not _GROUP_SIZES[kind](len(ids))]
            if bad:
                raise DataValidationError(
                    f"{name}: the objective needs a {kind!r} dataset but {len(bad)} tokenized rows have a number of "
                    f"completions that does not fit it (rows {bad[:10]}{', ...' if len(bad) > 10 else ''})"
                )
        _check_fields(dataset, required_fields, name)
        n = len(dataset)
        return dataset, {
            "rows_in": n,
            "rows_out": n,
            "rows_dropped": 0,
            "prompts_truncated": 0,
            "completions_truncated": 0,
        }
    dataset = load_preference_dataset(
        dataset, kind=kind, name=name, identical_pairs=identical_pairs, tokenizer=tokenizer
    )
    _check_fields(dataset, required_fields, name)
    return tokenize_dataset(
        dataset,
        tokenizer,
        max_length=max_length,
        max_prompt_length=max_prompt_length,
        overlong=overlong,
        num_proc=num_proc,
        name=name,
    )


def _check_fields(dataset: Dataset, required: Sequence[str], name: str) -> None:
    missing = [f for f in required if f not in dataset.column_names]
    if missing:
        raise DataValidationError(
            f"{name}: the objective needs the field(s) {', '.join(map(repr, missing))} but the dataset has none "
            f"(columns: {', '.join(dataset.column_names)})"
        )
