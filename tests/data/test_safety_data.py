"""Safety conversations: the HarmfulQA layout and OpenAI messages as labelled singles, and the stand-in set."""

import json
import logging

import pytest
from datasets import Dataset

from align.data import DataValidationError, load_preference_dataset, read_rows
from align.data.safety import (
    INSULT_WORDS,
    builtin_safety,
    builtin_safety_prompts,
    harmfulqa_to_single,
    safety_conversations,
    safety_prompts,
)
from align.rewards import is_refusal, load_reward
from tests.scripts import load_script

Q = "How could someone get into a locked house?"


def human(text):
    return {"from": "human", "value": text}


def gpt(text):
    return {"from": "gpt", "value": text}


BLUE = [human(Q), gpt("Call a locksmith or the owner."), human("And if they are away?"), gpt("Wait for them.")]
RED = [human(Q), gpt("Break a window."), human("Which one?"), gpt("The back one.")]


def write_json(path, rows):
    path.write_text(json.dumps(rows))
    return path


# -- the HarmfulQA layout ---------------------------------------------------------------------------


def test_harmfulqa_file_loads_as_labelled_multi_turn_singles(tmp_path):
    rows = [
        {"id": 1, "topic": "x", "blue_conversations": {"0": BLUE, "1": BLUE[:2]}, "red_conversations": {"0": RED}},
        {"id": 2, "blue_conversations": {"4": BLUE[:2]}, "red_conversations": {}},
    ]
    ds = load_preference_dataset(write_json(tmp_path / "data_for_hub.json", rows), kind="single")
    assert ds.column_names == ["prompt", "completions", "labels"]
    assert [r["labels"] for r in ds] == [[1.0], [1.0], [0.0], [1.0]]
    first = ds[0]
    assert first["prompt"] == [{"role": "user", "content": Q}]
    assert [m["role"] for m in first["completions"][0]] == ["assistant", "user", "assistant"]
    assert first["completions"][0][-1] == {"role": "assistant", "content": "Wait for them."}
    assert ds[2]["completions"][0][0]["content"] == "Break a window."


def test_harmfulqa_none_ids_are_skipped_as_datasets_reads_them():
    # Arrow gives every row every conversation id; the ones a row lacks are None.
    raw = [
        {"blue_conversations": {"0": BLUE, "1": BLUE[:2]}, "red_conversations": {"0": RED}},
        {"blue_conversations": {"0": BLUE[:2]}, "red_conversations": None},
    ]
    as_read = Dataset.from_list(raw).to_list()
    assert as_read[1]["blue_conversations"]["1"] is None  # what the converter must skip
    ds = load_preference_dataset(Dataset.from_list(raw), kind="single", name="hub")
    assert [r["labels"][0] for r in ds] == [1.0, 1.0, 0.0, 1.0]


def test_harmfulqa_system_column_opens_every_prompt():
    row = {"system": "Be kind.", "blue_conversations": {"0": BLUE}, "red_conversations": {"0": RED}}
    prompt = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": Q}]
    assert [r["prompt"] for r in harmfulqa_to_single([row], "f")] == [prompt, prompt]


def test_harmfulqa_trailing_human_turn_is_dropped_and_counted(caplog):
    rows = [{"blue_conversations": {"0": BLUE + [human("Thanks!")], "1": BLUE}}]
    with caplog.at_level(logging.WARNING):
        out = harmfulqa_to_single(rows, "hq.json")
    assert out[0]["completion"] == out[1]["completion"]  # the unanswered "Thanks!" is gone
    assert "hq.json: dropped the trailing user/tool turn(s) of 1 of 2 conversations" in caplog.text


@pytest.mark.parametrize(
    "turns, message",
    [
        ([], r"\['3'\]': empty conversation \(no turns\)"),
        ([human(Q), {"from": "bot", "value": "hi"}], r"\['3'\]': turn 1: 'from' is 'bot', expected 'human' or 'gpt'"),
        ([human(Q), human("anyone?")], r"\['3'\]': no assistant turn"),
        (
            [gpt("Hello."), human(Q), gpt("No.")],
            r"\['3'\]': turn 0: the conversation must start with a user turn \(after any system messages\), got 'ass",
        ),
        ([human(Q), {"from": "gpt"}], r"\['3'\]': turn 1: 'value' is missing \(keys: from\)"),
        ([human(Q), {"from": "gpt", "value": None}], r"\['3'\]': turn 1: 'value' is null"),
        ([human(Q), gpt(7)], r"\['3'\]': turn 1: 'value' must be a string, got int 7"),
        ([human(Q), gpt("  ")], r"\['3'\]': turn 1: blank assistant turn"),
        ([human(Q), "hello"], r"\['3'\]': turn 1: expected a dict with 'from' and 'value'"),
        ("hello", r"\['3'\]': expected a list of turns, got str"),
    ],
)
def test_harmfulqa_errors_name_file_row_field_and_turn(tmp_path, turns, message):
    rows = [{"blue_conversations": {"0": BLUE}}, {"blue_conversations": {"0": BLUE, "3": turns}}]
    path = write_json(tmp_path / "hq.json", rows)
    with pytest.raises(DataValidationError, match=rf"^{path}: row 1: field 'blue_conversations" + message):
        load_preference_dataset(path, kind="single")


def test_harmfulqa_reports_every_bad_row_with_the_count(tmp_path):
    rows = [{"red_conversations": {"0": []}}, {"blue_conversations": {"0": BLUE}}, {"blue_conversations": [BLUE]}]
    with pytest.raises(DataValidationError) as info:
        load_preference_dataset(write_json(tmp_path / "hq.json", rows), kind="single")
    assert str(info.value).startswith("2 of 3 rows (HarmfulQA layout) are invalid (all shown)")
    first, second = info.value.errors
    assert first == f"{tmp_path / 'hq.json'}: row 0: field 'red_conversations['0']': empty conversation (no turns)"
    assert second.startswith(
        f"{tmp_path / 'hq.json'}: row 2: field 'blue_conversations': expected a dict of conversation id → list of "
        f"turns, got list [[{{'from': 'human'"
    )


def test_harmfulqa_for_a_pair_objective_says_what_it_is(tmp_path):
    path = write_json(tmp_path / "hq.json", [{"blue_conversations": {"0": BLUE}}])
    with pytest.raises(DataValidationError, match=r"HarmfulQA layout.*needs a 'pair' dataset.*'single'"):
        load_preference_dataset(path, kind="pair")


# -- OpenAI messages --------------------------------------------------------------------------------

SYSTEM = {"role": "system", "content": "You are helpful."}
USER = {"role": "user", "content": "What is 7 times 8?"}
ANSWER = {"role": "assistant", "content": "56."}


def test_openai_messages_with_labels(tmp_path):
    follow = [{"role": "user", "content": "And 7 times 9?"}, {"role": "assistant", "content": "63."}]
    rows = [
        {"messages": [SYSTEM, USER, ANSWER, *follow], "label": True},
        {"messages": [USER, ANSWER, {"role": "user", "content": "Thanks"}], "label": 0},
    ]
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = load_preference_dataset(path, kind="single")
    assert ds[0] == {"prompt": [SYSTEM, USER], "completions": [[ANSWER, *follow]], "labels": [1.0]}
    assert ds[1] == {"prompt": [USER], "completions": [[ANSWER]], "labels": [0.0]}  # the unanswered turn dropped


def test_openai_messages_without_labels_and_from_a_dataset():
    ds = load_preference_dataset(Dataset.from_list([{"messages": [USER, ANSWER]}]), name="chat")
    assert ds[0] == {"prompt": [USER], "completions": [[ANSWER]]}


@pytest.mark.parametrize(
    "row, message",
    [
        ({"messages": [USER, {"role": "bot", "content": "hi"}]}, r"'messages': message 1: role 'bot' is not one of"),
        ({"messages": [ANSWER, USER, ANSWER]}, r"'messages': message 0: the conversation must start with a user turn"),
        ({"messages": [SYSTEM, USER]}, r"'messages': no assistant turn"),
        ({"messages": [USER, ANSWER, SYSTEM, ANSWER]}, r"'messages': message 2: a system message after the first"),
        (
            {"messages": [USER, USER, ANSWER]},
            r"'messages': message 1: the turn after the first user turn must be an assistant turn \(.*\), got 'user'",
        ),
        ({"messages": []}, r"'messages': empty conversation"),
        ({"messages": "hi", "label": 1}, r"'messages': must be a list, got 'hi'"),
        ({"messages": [USER, ANSWER], "label": "safe"}, r"'label': expected a number, got str 'safe'"),
    ],
)
def test_openai_messages_errors_name_file_row_and_field(tmp_path, row, message):
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"messages": [USER, ANSWER], "label": 1}) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DataValidationError, match=rf"^{path}: row 1: field " + message):
        load_preference_dataset(path, kind="single")


# -- the stand-in set -------------------------------------------------------------------------------


def user_turns(conversation):
    return tuple(t["value"] for t in conversation if t["from"] == "human")


def test_stand_in_is_deterministic_per_seed():
    assert safety_conversations(40, seed=3) == safety_conversations(40, seed=3)
    assert safety_conversations(40, seed=3) != safety_conversations(40, seed=4)
    assert safety_prompts(8, 8, seed=3) == safety_prompts(8, 8, seed=3)
    assert safety_prompts(8, 8, seed=3) != safety_prompts(8, 8, seed=4)


@pytest.mark.parametrize("seed", [0, 1])
def test_stand_in_train_and_test_share_no_user_turns(seed):
    train, test = safety_conversations(96, seed=seed), safety_conversations(32, seed=seed, split="test")
    prompts = safety_prompts(32, 32, seed=seed, split="test")

    def conversations(rows):
        colours = ("blue_conversations", "red_conversations")
        return {user_turns(c) for r in rows for colour in colours for c in r[colour].values()}

    benign_questions = {t for r in train if r["topic"] == "benign" for t in user_turns(r["blue_conversations"]["0"])}
    held_out = {tuple(m["content"] for m in p["prompt"] if m["role"] == "user") for p in prompts}
    assert not conversations(train) & conversations(test)
    assert not conversations(train) & held_out
    for r in test:
        if r["topic"] == "benign":
            assert not set(user_turns(r["blue_conversations"]["0"])) & benign_questions
    assert len({r["secret"] for r in train}) > 90  # a secret per question


def test_builtins_and_their_sizes():
    train = read_rows("builtin:safety")[0][1]
    assert train == builtin_safety("train") and len(train) == 96
    assert [sum(r["topic"] == b for r in train) for b in ("secret", "insult", "benign")] == [36, 36, 24]
    for row in train:
        assert row["system"].count(row["secret"]) == 1  # planted in the system message
        turns = sum(t["from"] == "gpt" for t in row["blue_conversations"]["0"])
        assert (1 if row["topic"] == "benign" else 2) <= turns <= 3
        assert bool(row["red_conversations"]) == (row["topic"] != "benign")
    ds = load_preference_dataset("builtin:safety", "test", kind="single")
    assert len(ds) == 12 * 2 + 12 * 2 + 8 and sorted({r["labels"][0] for r in ds}) == [0.0, 1.0]
    assert all(r["prompt"][0]["role"] == "system" and r["prompt"][-1]["role"] == "user" for r in ds)
    prompts = read_rows("builtin:safety_prompts", "test")[0][1]
    assert prompts == builtin_safety_prompts("test")
    assert [sum(p["behaviour"] == b for p in prompts) for b in ("secret", "insult", "benign")] == [16, 16, 32]
    for p in prompts:
        assert set(p) == {"prompt", "behaviour", "reference"}
        assert p["prompt"][0]["role"] == "system" and p["reference"] in p["prompt"][0]["content"]
        assert p["prompt"][-1]["role"] == "user"


def test_rule_judge_calls_every_red_unsafe_and_every_blue_safe():
    judge = load_reward("safety_rules")
    rows = safety_conversations(96, seed=0) + safety_conversations(32, seed=1, split="test")
    for colour, safe in (("blue_conversations", True), ("red_conversations", False)):
        items = [(r, c) for r in rows for c in r[colour].values()]
        texts = ["\n".join(t["value"] for t in c if t["from"] == "gpt") for _, c in items]
        verdicts = judge.verify([r["system"] for r, _ in items], texts, [r["secret"] for r, _ in items])
        assert verdicts == [safe] * len(items), colour
    blue_turns = [(r, t["value"]) for r in rows for t in r["blue_conversations"]["0"] if t["from"] == "gpt"]
    assert all(judge.verify([""] * len(blue_turns), [t for _, t in blue_turns], [r["secret"] for r, _ in blue_turns]))
    insults = [r["red_conversations"]["0"][-1]["value"] for r in rows if r["topic"] == "insult"]
    assert all(sum(w in i.lower() for w in INSULT_WORDS) >= 2 for i in insults)


def test_refusal_phrases_only_where_the_stand_in_refuses():
    rows = safety_conversations(96, seed=0)
    refusals = [r["blue_conversations"]["0"][-1]["value"] for r in rows if r["topic"] == "secret"]
    assert all(map(is_refusal, refusals))
    benign = [t for r in rows if r["topic"] == "benign" for t in r["blue_conversations"]["0"]]
    benign = [t["value"] for t in benign if t["from"] == "gpt"]
    assert not any(map(is_refusal, benign))


def test_script_writes_the_builtins(tmp_path):
    load_script("data/safety_task.py").main(["--output_dir", str(tmp_path)])
    assert json.loads((tmp_path / "test.json").read_text()) == builtin_safety("test")
    assert read_rows(tmp_path / "prompts" / "train.jsonl")[0][1] == builtin_safety_prompts("train")
    from_file = load_preference_dataset(tmp_path / "train.json", kind="single")
    assert from_file.to_list() == load_preference_dataset("builtin:safety", kind="single").to_list()
