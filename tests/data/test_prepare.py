"""prepare_preference_dataset: raw, normalised or tokenized data in; checked, tokenized rows out."""

import json

import pytest
from datasets import Dataset, load_from_disk

from align.data import DataValidationError, dataset_kind, load_preference_dataset, prepare_preference_dataset

PAIRS = [
    {
        "prompt": [{"role": "user", "content": f"What is {i} + {i}?"}],
        "chosen": [{"role": "assistant", "content": f"#### {2 * i}"}],
        "rejected": [{"role": "assistant", "content": f"#### {2 * i + 1}"}],
        "win_rates": [0.75, 0.25],
    }
    for i in range(4)
]


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_raw_file_and_loaded_dataset_give_the_same_rows(tiny_tokenizer, tmp_path):
    path = write(tmp_path / "pairs.jsonl", PAIRS)
    direct, stats = prepare_preference_dataset(
        path, tiny_tokenizer, kind="pair", required_fields=["win_rates"], max_length=128
    )
    assert stats["rows_out"] == 4 and dataset_kind(direct) == "pair"
    loaded = load_preference_dataset(path)  # a recipe loads with kind=None; the trainer prepares with its kind
    via_load, _ = prepare_preference_dataset(loaded, tiny_tokenizer, kind="pair", max_length=128, name="train")
    assert via_load.to_list() == direct.to_list()
    assert all(len(r["completion_ids"]) == 2 and r["win_rates"] == [0.75, 0.25] for r in direct)


def test_kind_is_remembered_through_normalising_tokenizing_and_saving(tiny_tokenizer, tmp_path):
    loaded = load_preference_dataset(Dataset.from_list(PAIRS))
    assert dataset_kind(loaded) == "pair" and loaded.column_names == ["prompt", "completions", "win_rates"]
    assert load_preference_dataset(loaded, kind="pair") is loaded  # already normalised: not redone
    with pytest.raises(DataValidationError, match=r"^train: the objective needs a 'list' dataset .* 'pair' dataset"):
        prepare_preference_dataset(loaded, tiny_tokenizer, kind="list", max_length=128, name="train")
    tokenized, _ = prepare_preference_dataset(loaded, tiny_tokenizer, kind="pair", max_length=128)
    tokenized.save_to_disk(str(tmp_path / "tok"))
    reloaded = load_from_disk(str(tmp_path / "tok"))
    again, stats = prepare_preference_dataset(reloaded, tiny_tokenizer, kind="pair", max_length=128)
    assert again is reloaded and stats["rows_dropped"] == 0
    with pytest.raises(DataValidationError, match="needs a 'single' dataset"):
        prepare_preference_dataset(reloaded, tiny_tokenizer, kind="single", max_length=128)


def test_a_list_of_two_is_not_taken_for_a_pair():
    lists = Dataset.from_list([{"prompt": "p", "completions": ["a", "b"], "returns": [1.0, 0.0]}])
    with pytest.raises(DataValidationError, match="needs a 'pair' dataset .* is a 'list' dataset"):
        load_preference_dataset(lists, kind="pair")


def _ragged_lists(conversational: bool) -> list[dict]:
    """Lists of K = 2, 4, 3 completions, one return each."""

    def text(content, role):
        return [{"role": role, "content": content}] if conversational else content

    return [
        {"prompt": text(f"What is {i} + {i}?", "user"), "completions": [text(f" {2 * i + j}", "assistant") for j in range(k)],
         "returns": [float(j) for j in range(k)]}
        for i, k in enumerate((2, 4, 3))
    ]  # fmt: skip


@pytest.mark.parametrize("conversational", [False, True], ids=["standard", "conversational"])
def test_lists_of_different_k_tokenize_and_collate(tiny_tokenizer, conversational):
    """Each row keeps its own K through Arrow, tokenizing and collating: group_mask marks the real
    completions, the returns sit under them, and each sequence is its prompt + its completion."""
    from align.data import PreferenceCollator
    from align.data.tokenize import tokenize_row

    rows = _ragged_lists(conversational)
    tokenized, stats = prepare_preference_dataset(Dataset.from_list(rows), tiny_tokenizer, kind="list", max_length=None)
    assert dataset_kind(tokenized) == "list" and stats["rows_out"] == 3
    assert [len(c) for c in tokenized["completion_ids"]] == [2, 4, 3]
    assert tokenized["returns"] == [r["returns"] for r in rows]
    for i, row in enumerate(rows):  # each row tokenized as on its own
        prompt, completions = tokenize_row(row, tiny_tokenizer)
        assert tokenized[i]["prompt_ids"] == prompt and tokenized[i]["completion_ids"] == completions

    batch = PreferenceCollator(tiny_tokenizer.pad_token_id)(list(tokenized))
    assert batch["group_mask"].tolist() == [[True, True, False, False], [True] * 4, [True, True, True, False]]
    assert batch["returns"].tolist() == [[0, 1, 0, 0], [0, 1, 2, 3], [0, 1, 2, 0]]
    assert batch["input_ids"].shape[0] == 9  # 2 + 4 + 3 sequences, row-major
    sequences = [r["prompt_ids"] + c for r in tokenized for c in r["completion_ids"]]
    for seq, ids, mask in zip(sequences, batch["input_ids"].tolist(), batch["attention_mask"].tolist()):
        assert ids[: sum(mask)] == seq


def test_tokenized_elsewhere_is_checked_by_group_size(tiny_tokenizer):
    tokenized = Dataset.from_dict({"prompt_ids": [[1, 2], [3]], "completion_ids": [[[4], [5]], [[6], [7], [8]]]})
    with pytest.raises(DataValidationError, match=r"needs a 'pair' dataset but 1 tokenized rows .* \(rows \[1\]\)"):
        prepare_preference_dataset(tokenized, tiny_tokenizer, kind="pair", max_length=None)
    assert prepare_preference_dataset(tokenized, tiny_tokenizer, kind="list", max_length=None)[0] is tokenized


def test_missing_required_field_names_it(tiny_tokenizer):
    data = Dataset.from_list([{k: v for k, v in row.items() if k != "win_rates"} for row in PAIRS])
    with pytest.raises(
        DataValidationError, match=r"^eval: the objective needs the field\(s\) 'win_rates', 'pair_prob'"
    ):
        prepare_preference_dataset(
            data, tiny_tokenizer, kind="pair", required_fields=["win_rates", "pair_prob"], max_length=128, name="eval"
        )


def test_no_max_length_means_no_truncation(tiny_tokenizer):
    rows = [{"prompt": "Q?", "completion": "The quick brown fox jumps over the lazy dog " * 20, "label": 1}]
    tokenized, stats = prepare_preference_dataset(
        Dataset.from_list(rows), tiny_tokenizer, kind="single", max_length=None
    )
    full = tiny_tokenizer(rows[0]["completion"], add_special_tokens=False)["input_ids"] + [tiny_tokenizer.eos_token_id]
    assert tokenized[0]["completion_ids"] == [full] and stats["completions_truncated"] == 0


def test_file_errors_name_the_file_and_num_proc_gives_the_same_rows(tiny_tokenizer, tmp_path):
    path = write(tmp_path / "pairs.jsonl", PAIRS)
    with pytest.raises(DataValidationError, match=rf"^{path}: 4 of 4 rows have a prompt that leaves no room"):
        prepare_preference_dataset(path, tiny_tokenizer, kind="pair", max_length=4, overlong="error", name="train")
    one, _ = prepare_preference_dataset(path, tiny_tokenizer, kind="pair", max_length=24)
    two, _ = prepare_preference_dataset(path, tiny_tokenizer, kind="pair", max_length=24, num_proc=2)
    assert one.to_list() == two.to_list()


def test_identical_pairs_option_reaches_the_loader(tiny_tokenizer, tmp_path, caplog):
    rows = [*PAIRS, {**PAIRS[1], "rejected": PAIRS[1]["chosen"]}]
    path = write(tmp_path / "pairs.jsonl", rows)
    with caplog.at_level("WARNING", logger="align.data.formats"):
        tokenized, stats = prepare_preference_dataset(path, tiny_tokenizer, kind="pair", max_length=128)
    assert stats["rows_in"] == len(tokenized) == 4
    assert "dropped 1 of 5 pairs whose chosen equals rejected (row 4)" in caplog.text
    with pytest.raises(DataValidationError, match=rf"^{path}: row 4: field 'rejected': equals 'chosen'"):
        prepare_preference_dataset(path, tiny_tokenizer, kind="pair", max_length=128, identical_pairs="error")


def test_trainer_config_passes_identical_pairs_through(tiny_model_dir, tmp_path, caplog):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from align.trainers import PreferenceConfig, RPOConfig, RPOTrainer

    with pytest.raises(ValueError, match="identical_pairs must be 'drop' or 'error', got 'skip'"):
        PreferenceConfig(output_dir=str(tmp_path / "o"), report_to="none", identical_pairs="skip")
    model, tok = AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)
    data = Dataset.from_list([*PAIRS, {**PAIRS[2], "rejected": PAIRS[2]["chosen"]}])
    args = dict(output_dir=str(tmp_path / "o"), report_to="none", max_length=128)
    with pytest.raises(DataValidationError, match=r"^train: row 4: field 'rejected': equals 'chosen'"):
        RPOTrainer(model, RPOConfig(**args, identical_pairs="error"), data, processing_class=tok)
    with caplog.at_level("WARNING", logger="align.data.formats"):
        trainer = RPOTrainer(model, RPOConfig(**args), data, processing_class=tok)
    assert len(trainer.train_dataset) == 4 and "train: dropped 1 of 5 pairs" in caplog.text
