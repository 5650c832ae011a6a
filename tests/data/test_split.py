"""split_held_out: the recipe's seeded split when the data is large enough, fewer rows or one clear error when not."""

import pytest
from datasets import Dataset

from align.data import DataValidationError, dataset_kind, load_preference_dataset, split_held_out


def pairs(n):
    rows = [{"prompt": f"q{i}", "chosen": "a", "rejected": "b"} for i in range(n)]
    return load_preference_dataset(Dataset.from_list(rows))


def test_a_large_enough_dataset_splits_as_the_recipe_always_did(caplog):
    data = pairs(20)
    with caplog.at_level("WARNING"):
        train, held_out = split_held_out(data, 8, seed=3)
    expected = data.train_test_split(test_size=8, seed=3, shuffle=True)
    assert list(held_out["prompt"]) == list(expected["test"]["prompt"])
    assert list(train["prompt"]) == list(expected["train"]["prompt"])
    assert sorted([*train["prompt"], *held_out["prompt"]]) == sorted(data["prompt"]) and len(held_out) == 8
    assert dataset_kind(train) == dataset_kind(held_out) == "pair"
    assert caplog.text == ""
    assert list(split_held_out(data, 8, seed=4)[1]["prompt"]) != list(held_out["prompt"])  # the seed picks the rows


def test_a_small_dataset_holds_back_fewer_rows_with_a_warning(caplog):
    with caplog.at_level("WARNING", logger="align.data.split"):
        train, held_out = split_held_out(pairs(5), 8, seed=0, source="data/x.jsonl")
    assert (len(train), len(held_out)) == (1, 4)
    assert "data/x.jsonl: 5 rows: holding back 4 for evaluation, not num_eval=8, to keep 1 to train on" in caplog.text
    assert "--num_eval 4" in caplog.text and "--eval_dataset" in caplog.text
    train, held_out = split_held_out(pairs(5), 8, seed=0, min_train=3)
    assert (len(train), len(held_out)) == (3, 2)


@pytest.mark.parametrize(("size", "min_train"), [(1, 1), (4, 4)])
def test_nothing_to_hold_back_is_one_clear_error(size, min_train):
    with pytest.raises(DataValidationError) as info:
        split_held_out(pairs(size), 8, seed=0, min_train=min_train, source="data/x.jsonl")
    message = str(info.value)
    assert message.startswith(f"data/x.jsonl: too few rows ({size}) to hold any back for evaluation (num_eval=8)")
    assert f"keep {min_train} to train on" in message and "--eval_dataset" in message and "--num_eval 0" in message


def test_num_eval_must_be_positive():
    with pytest.raises(ValueError, match="num_eval and min_train must be >= 1"):
        split_held_out(pairs(4), 0, seed=0)
