"""Given a tokenizer, every role the data uses is rendered by its chat template, checked before tokenizing."""

import copy
import json

import pytest
from datasets import Dataset

from align.data import DataValidationError, check_chat_template, load_preference_dataset, prepare_preference_dataset
from tests.tiny import CHATML_TEMPLATE

SYSTEM = {"role": "system", "content": "Answer with a number."}
USER = {"role": "user", "content": "What is 7 times 8?"}
CALL = {"role": "assistant", "content": "calculator(7 * 8)"}
TOOL = {"role": "tool", "content": "56"}
GOOD = {"role": "assistant", "content": "56"}
BAD = {"role": "assistant", "content": "54"}
PLAIN = {"prompt": [USER], "chosen": [GOOD], "rejected": [BAD]}
WITH_SYSTEM = {**PLAIN, "prompt": [SYSTEM, USER]}
WITH_TOOL = {**PLAIN, "prompt": [USER, CALL, TOOL]}

# A ChatML template that skips system messages without a word, and Gemma's way of refusing them.
LOOP = "{% for message in messages %}"
DROPS_SYSTEM = CHATML_TEMPLATE.replace(LOOP, "{% for message in messages if message['role'] != 'system' %}")
RAISES_ON_SYSTEM = (
    "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    + CHATML_TEMPLATE
)
DROPS_TOOL = CHATML_TEMPLATE.replace(LOOP, "{% for message in messages if message['role'] != 'tool' %}")


def with_template(tokenizer, template):
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.chat_template = template
    return tokenizer


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_template_that_accepts_every_role_passes(tiny_tokenizer, tmp_path):
    path = write(tmp_path / "train.jsonl", [PLAIN, WITH_SYSTEM, WITH_TOOL])
    assert len(load_preference_dataset(path, tokenizer=tiny_tokenizer)) == 3


def test_a_template_that_drops_system_messages_is_refused_naming_the_first_row(tiny_tokenizer, tmp_path):
    path = write(tmp_path / "train.jsonl", [PLAIN, PLAIN, WITH_SYSTEM, WITH_SYSTEM])
    with pytest.raises(DataValidationError) as info:
        load_preference_dataset(path, tokenizer=with_template(tiny_tokenizer, DROPS_SYSTEM))
    assert str(info.value).startswith(
        f"{path}: row 2: field 'prompt': message 0: the tokenizer's chat template leaves out this 'system' message"
    )
    assert len(load_preference_dataset(path)) == 4  # without a tokenizer only the schema is checked


def test_a_template_that_raises_on_a_role_is_refused_with_its_message(tiny_tokenizer, tmp_path):
    path = write(tmp_path / "train.jsonl", [PLAIN, WITH_SYSTEM])
    with pytest.raises(DataValidationError) as info:
        load_preference_dataset(path, tokenizer=with_template(tiny_tokenizer, RAISES_ON_SYSTEM))
    message = str(info.value)
    assert message.startswith(f"{path}: row 1: field 'prompt': message 0: the tokenizer's chat template fails"), message
    assert "'system'" in message and "System role not supported" in message


def test_a_dropped_tool_result_names_its_message(tiny_tokenizer, tmp_path):
    path = write(tmp_path / "tools.jsonl", [PLAIN, WITH_TOOL])
    expected = rf"^{path}: row 1: field 'prompt': message 2: .* leaves out this 'tool'"
    with pytest.raises(DataValidationError, match=expected):
        load_preference_dataset(path, tokenizer=with_template(tiny_tokenizer, DROPS_TOOL))


def test_no_chat_template_fails_for_conversations_only(tiny_tokenizer, tmp_path):
    tokenizer = with_template(tiny_tokenizer, None)
    with pytest.raises(DataValidationError, match=r"train\.jsonl: row 0: field '.*': message 0: the tokenizer's chat"):
        load_preference_dataset(write(tmp_path / "train.jsonl", [PLAIN]), tokenizer=tokenizer)
    strings = write(tmp_path / "strings.jsonl", [{"prompt": "Q", "chosen": "a", "rejected": "b"}])
    assert len(load_preference_dataset(strings, tokenizer=tokenizer)) == 1


def test_prepare_checks_the_template_before_tokenizing_and_names_the_dataset_row(tiny_tokenizer, tmp_path):
    tokenizer = with_template(tiny_tokenizer, DROPS_SYSTEM)
    path = write(tmp_path / "train.jsonl", [PLAIN, WITH_SYSTEM])
    with pytest.raises(DataValidationError, match=rf"^{path}: row 1: field 'prompt': message 0: .* 'system'"):
        prepare_preference_dataset(path, tokenizer, kind="pair", max_length=64)
    # a dataset loaded earlier (as a recipe does) is checked with its own row numbers
    loaded = load_preference_dataset(Dataset.from_list([WITH_SYSTEM]))
    with pytest.raises(DataValidationError, match=r"^train: row 0: field 'prompt': message 0: .* 'system'"):
        prepare_preference_dataset(loaded, tokenizer, kind="pair", max_length=64, name="train")
    with pytest.raises(DataValidationError, match=r"^probes: row 0: .* 'system'"):
        check_chat_template(loaded, tokenizer, "probes")
