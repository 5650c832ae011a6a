"""Tokenization splits prompt and completion exactly, ends plain completions with eos, and truncates loudly."""

import json
import logging
import os

import pytest
from datasets import Dataset
from trl.data_utils import apply_chat_template

from align.data import DataValidationError, carried, load_preference_dataset, tokenize_dataset, tokenize_row
from tests.tiny import build_tiny_llava, build_tokenizer

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


# Rows with images, tokenized by the tiny LLaVA processor (16 <image> tokens per image).
TOKENS_PER_IMAGE = 16
VQA = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which clips?"}]}]


def crop_turn(box: str, text: str = "Please answer the question based on the original image and local detail image."):
    return [
        {"role": "assistant", "content": box}, {"role": "user", "content": text}, {"role": "assistant", "content": "72"}
    ]  # fmt: skip


@pytest.fixture(scope="module")
def processor():
    return build_tiny_llava()[1]


@pytest.fixture
def vqa_file(tmp_path):
    from PIL import Image

    for i, colour in enumerate(("red", "green", "blue")):
        Image.new("RGB", (20, 16), colour).save(tmp_path / f"{i}.png")
    row = {"prompt": VQA, "images": ["0.png"], "chosen": crop_turn("[0.1, 0.1, 0.5, 0.5]"), "chosen_images": ["1.png"],
           "rejected": crop_turn("[0.5, 0.5, 0.9, 0.9]"), "rejected_images": ["2.png"]}  # fmt: skip
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps({**row, "chosen_images": ["2.png"]}) + "\n")
    return path


def test_images_are_expanded_carried_and_never_trained(processor, vqa_file):
    image_id = processor.image_token_id
    tokenized, stats = tokenize_dataset(load_preference_dataset(vqa_file), processor, max_length=None)
    assert stats["rows_out"] == 2
    assert tokenized.column_names == ["images", "completion_images", "prompt_ids", "completion_ids", "assistant_masks"]
    row = tokenized[0]
    assert row["prompt_ids"].count(image_id) == TOKENS_PER_IMAGE
    assert [ref["path"].rsplit("/", 1)[1] for refs in row["completion_images"] for ref in refs] == ["1.png", "2.png"]
    decode = processor.tokenizer.decode
    for ids, mask in zip(row["completion_ids"], row["assistant_masks"]):
        assert ids.count(image_id) == TOKENS_PER_IMAGE
        assert all(m == 0 for m, t in zip(mask, ids) if t == image_id)
        trained = decode([t for m, t in zip(mask, ids) if m])
        assert trained.endswith("<|im_end|>\n72<|im_end|>\n") and "<image>" not in trained
        # the prompt is a prefix of the whole conversation rendered at once
    row0 = load_preference_dataset(vqa_file)[0]
    assert tokenize_row(row0, processor)[0] == row["prompt_ids"]


def test_text_rows_tokenize_alike_with_the_processor_and_its_tokenizer(processor):
    ds = conversational(2)
    with_processor, _ = tokenize_dataset(ds, processor, max_length=None)
    with_tokenizer, _ = tokenize_dataset(ds, processor.tokenizer, max_length=None)
    assert with_processor.to_list() == with_tokenizer.to_list()


@pytest.mark.parametrize("overlong", ["drop", "error"])
def test_truncation_that_would_cut_an_image_makes_the_row_overlong(processor, vqa_file, overlong, caplog):
    ds = load_preference_dataset(vqa_file)
    prompt, completions = tokenize_row(ds[0], processor)
    prompt_len, first_crop = len(prompt), completions[0].index(processor.image_token_id)
    last_prompt_image = prompt_len - prompt[::-1].index(processor.image_token_id)  # one past its last token
    cases = {  # max_length, max_prompt_length: inside the crop's run, just before it, inside the prompt image's run
        "completion": (prompt_len + first_crop + 3, None),
        "before": (prompt_len + first_crop, None),
        "prompt": (None, prompt_len - last_prompt_image + 3),
    }
    kept, _ = tokenize_dataset(ds, processor, max_length=10_000, max_prompt_length=prompt_len - last_prompt_image + 16)
    assert len(kept) == 2 and kept[0]["prompt_ids"] == prompt[last_prompt_image - 16 :]  # cut before the image: kept
    fits, _ = tokenize_dataset(ds, processor, max_length=prompt_len + first_crop + TOKENS_PER_IMAGE + 2)
    assert len(fits) == 2  # the crop's run fits whole: the completion is cut after it
    for max_length, max_prompt_length in cases.values():
        kwargs = dict(max_length=max_length or 10_000, max_prompt_length=max_prompt_length, overlong=overlong)
        if overlong == "error":
            with pytest.raises(DataValidationError, match=r"2 of 2 rows would lose image tokens to truncation .*"
                                                          r"\(rows \[0, 1\]\); raise max_length or use overlong='drop'$"):  # fmt: skip
                tokenize_dataset(ds, processor, name=str(vqa_file), **kwargs)
        else:
            with caplog.at_level(logging.WARNING):
                tokenized, stats = tokenize_dataset(ds, processor, **kwargs)
            assert len(tokenized) == 0 and stats["rows_dropped"] == 2
            assert "would lose image tokens to truncation" in caplog.text


def test_literal_image_tokens_in_text_are_refused(processor, vqa_file):
    ds = load_preference_dataset(vqa_file).to_list()
    ds[1]["completions"][1][1]["content"][1]["text"] = "look at <image> again"
    expected = r"^train: row 1: field 'completions\[1\]': message 1: the text holds the processor's image token '<image>'"
    with pytest.raises(DataValidationError, match=expected + ", which would expand into image features"):
        tokenize_dataset(Dataset.from_list(ds), processor, max_length=None, name="train")


def test_image_rows_need_a_processor(processor, vqa_file):
    with pytest.raises(DataValidationError, match=r"^x: row 0: field 'images': the row has images but the processing "
                                                  "class is a tokenizer"):  # fmt: skip
        tokenize_dataset(load_preference_dataset(vqa_file), processor.tokenizer, max_length=None, name="x")


def test_tokenized_fingerprint_follows_a_rewritten_crop(processor, vqa_file):
    from PIL import Image

    first, _ = tokenize_dataset(load_preference_dataset(vqa_file), processor, max_length=None)
    Image.new("RGB", (20, 16), "white").save(vqa_file.parent / "2.png")
    os.utime(vqa_file.parent / "2.png", ns=(1, 1))
    again, _ = tokenize_dataset(load_preference_dataset(vqa_file), processor, max_length=None)
    assert first._fingerprint != again._fingerprint


def test_carried_columns_follow_their_completions_when_rows_are_regrouped():
    """Drift probes pick (best, worst) of a list row: masks and crops go with their completions, the prompt's
    images stay whole."""
    from align.callbacks.drift import list_probe_pairs

    a, b, c = ({"bytes": None, "path": f"/{n}.png"} for n in "abc")
    row = {"prompt_ids": [1, 2], "completion_ids": [[3], [4], [5]], "returns": [0.0, 1.0, -1.0],
           "assistant_masks": [[1], [1], [0]], "images": [a], "completion_images": [[b], [], [c]]}  # fmt: skip
    assert carried(row, [1, 2]) == {"assistant_masks": [[1], [0]], "images": [a], "completion_images": [[], [c]]}
    assert carried({"prompt_ids": [1], "assistant_masks": None}) == {}
    pairs, rows = list_probe_pairs(Dataset.from_list([row]))
    assert rows == [0]
    assert pairs[0]["completion_ids"] == [[4], [5]] and pairs[0]["completion_images"] == [[], [c]]
    assert pairs[0]["images"] == [a] and pairs[0]["assistant_masks"] == [[1], [0]]
