"""Tokenization splits prompt and completion exactly, ends plain completions with eos, and truncates loudly."""

import logging

import pytest
from datasets import Dataset
from trl.data_utils import apply_chat_template

from align.data import DataValidationError, load_preference_dataset, tokenize_dataset
from tests.tiny import build_tokenizer

USER = {"role": "user", "content": "Natalia sold clips to 48 of her friends in April. How many in May?"}
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
ANSWERS = ["Step 1: 48 / 2 = 24 clips in May. #### 24", "The answer is 72.", "#### 56"]


def conversational(n=3):
    return load_preference_dataset(
        Dataset.from_list(
            [
                {
                    "prompt": [SYSTEM, USER] if i % 2 else [USER],
                    "completions": [[{"role": "assistant", "content": a}] for a in ANSWERS],
                    "returns": [1.0, 0.0, -1.0],
                }
                for i in range(n)
            ]
        )
    )


def standard(prompts, completions=("The answer is 72.", " 56")):
    return load_preference_dataset(
        Dataset.from_list([{"prompt": p, "chosen": completions[0], "rejected": completions[1]} for p in prompts])
    )


def test_conversational_split_is_exact(tiny_tokenizer):
    ds = conversational()
    tokenized, stats = tokenize_dataset(ds, tiny_tokenizer, max_length=512)
    assert stats == {"rows_in": 3, "rows_out": 3, "rows_dropped": 0, "prompts_truncated": 0, "completions_truncated": 0}
    for raw, row in zip(ds, tokenized):
        assert row["returns"] == [1.0, 0.0, -1.0]  # optional fields travel with the row
        assert len(row["completion_ids"]) == 3
        for completion, completion_ids in zip(raw["completions"], row["completion_ids"]):
            # TRL's string-level templating is the reference for where the prompt ends.
            text = apply_chat_template({"prompt": raw["prompt"], "completion": completion}, tiny_tokenizer)
            assert tiny_tokenizer.decode(row["prompt_ids"]) == text["prompt"]
            assert tiny_tokenizer.decode(completion_ids) == text["completion"]
            full = tiny_tokenizer.apply_chat_template(raw["prompt"] + completion, tokenize=False)
            assert tiny_tokenizer.decode(row["prompt_ids"] + completion_ids) == full
        assert tiny_tokenizer.decode(row["prompt_ids"]).endswith("<|im_start|>assistant\n")


def test_standard_strings_get_eos(tiny_tokenizer):
    ds = standard(["How many clips did Natalia sell?"], completions=("The answer is 72.", " 56<|im_end|>"))
    row = tokenize_dataset(ds, tiny_tokenizer, max_length=512)[0][0]
    eos = tiny_tokenizer.eos_token_id
    assert row["prompt_ids"] == tiny_tokenizer("How many clips did Natalia sell?")["input_ids"]
    chosen, rejected = row["completion_ids"]
    assert chosen == tiny_tokenizer("The answer is 72.", add_special_tokens=False)["input_ids"] + [eos]
    assert rejected[-1] == eos and rejected[-2] != eos  # already ended with eos: not doubled
    assert (
        tiny_tokenizer.decode(row["prompt_ids"] + chosen)
        == "How many clips did Natalia sell?The answer is 72.<|im_end|>"
    )


def test_overlong_rows_are_dropped_with_a_warning(tiny_tokenizer, caplog):
    long = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. " * 3
    prompts = ["Short?", long, "Short?", long, "Short?"]
    with caplog.at_level(logging.WARNING, logger="align.data.tokenize"):
        tokenized, stats = tokenize_dataset(standard(prompts), tiny_tokenizer, max_length=24)
    assert stats["rows_in"] == 5 and stats["rows_dropped"] == 2 and len(tokenized) == stats["rows_out"] == 3
    assert "dataset: 2 of 5 rows" in caplog.text and "rows [1, 3]" in caplog.text
    assert all(len(r["prompt_ids"]) == len(tiny_tokenizer("Short?")["input_ids"]) for r in tokenized)


def test_overlong_rows_raise_when_asked(tiny_tokenizer):
    long = "The quick brown fox jumps over the lazy dog. " * 10
    with pytest.raises(DataValidationError, match=r"1 of 2 rows .* max_length=16 \(rows \[0\]\)"):
        tokenize_dataset(standard([long, "Short?"]), tiny_tokenizer, max_length=16, overlong="error")


def test_long_completions_are_truncated_keeping_their_start(tiny_tokenizer, caplog):
    completion = "Step 1: 48 / 2 = 24 clips in May. Step 2: 48 + 24 = 72 clips. #### 72"
    ds = standard(["Q?", "Q?"], completions=(completion, " 56"))
    full = tiny_tokenizer(completion, add_special_tokens=False)["input_ids"]
    prompt_len = len(tiny_tokenizer("Q?")["input_ids"])
    with caplog.at_level(logging.WARNING, logger="align.data.tokenize"):
        tokenized, stats = tokenize_dataset(ds, tiny_tokenizer, max_length=prompt_len + 5)
    assert stats["completions_truncated"] == 2 and stats["rows_dropped"] == 0  # the two chosen; " 56" + eos fits
    assert "truncated 2 completions" in caplog.text
    for row in tokenized:
        assert row["completion_ids"][0] == full[:5]
        assert all(len(row["prompt_ids"]) + len(c) <= prompt_len + 5 for c in row["completion_ids"])


def test_max_prompt_length_keeps_the_end_of_the_prompt(tiny_tokenizer):
    ds = conversational(1)
    full = tokenize_dataset(ds, tiny_tokenizer, max_length=512)[0][0]
    cut, stats = tokenize_dataset(ds, tiny_tokenizer, max_length=512, max_prompt_length=6)
    assert stats["prompts_truncated"] == 1
    assert cut[0]["prompt_ids"] == full["prompt_ids"][-6:]  # still ends with the generation prompt
    assert cut[0]["completion_ids"] == full["completion_ids"]


def test_chat_template_that_breaks_the_prefix_is_an_error():
    # Renders a thinking block after the generation prompt that the full conversation lacks.
    tokenizer = build_tokenizer()
    tokenizer.chat_template = tokenizer.chat_template.replace(
        "<|im_start|>assistant\n{% endif %}", "<|im_start|>assistant\n<think></think>{% endif %}"
    )
    with pytest.raises(
        DataValidationError,
        match=r"^data/train\.jsonl: row 0: field 'completions\[0\]': the chat template does not render",
    ):
        tokenize_dataset(conversational(1), tokenizer, max_length=512, name="data/train.jsonl")


def test_argument_checks(tiny_tokenizer):
    ds = conversational(1)
    with pytest.raises(ValueError, match="overlong"):
        tokenize_dataset(ds, tiny_tokenizer, max_length=64, overlong="truncate")
    with pytest.raises(ValueError, match="max_prompt_length"):
        tokenize_dataset(ds, tiny_tokenizer, max_length=64, max_prompt_length=64)


def test_standard_prompt_is_rendered_as_for_sampling():
    """A tokenizer that adds BOS and appends EOS by default: the prompt gets the BOS once and no EOS
    (as :func:`align.data.prompt_ids` feeds it to ``generate``); the completion ends with one EOS."""
    from tests.data.test_render import build_llama3_tokenizer

    tokenizer = build_llama3_tokenizer(appends_eos=True)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    ds = standard(["<|begin_of_text|>Q?", "Q?"], completions=("The answer is 72.", " 56<|eot_id|>"))
    tokenized, _ = tokenize_dataset(ds, tokenizer, max_length=512)
    question = tokenizer("Q?", add_special_tokens=False)["input_ids"]
    for row in tokenized:
        assert row["prompt_ids"] == [bos, *question]
        chosen, rejected = row["completion_ids"]
        assert chosen == tokenizer("The answer is 72.", add_special_tokens=False)["input_ids"] + [eos]
        assert rejected.count(eos) == 1 and rejected[-1] == eos
