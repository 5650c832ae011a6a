"""Validation errors name the source file, the row (0-based) and the field, before any training."""

import json
import math

import pytest
from datasets import Dataset

from align.data import DataValidationError, load_preference_dataset
from align.data.formats import MAX_REPORTED_ERRORS, detect_kind

USER = {"role": "user", "content": "What is 7 times 8?"}
GOOD = {"role": "assistant", "content": "56"}
BAD = {"role": "assistant", "content": "54"}
PAIR = {"prompt": "Q: 7 * 8?", "chosen": " 56", "rejected": " 54"}
CONV = {"prompt": [USER], "chosen": [GOOD], "rejected": [BAD]}
LIST = {"prompt": "Q", "completions": ["a", "b", "c", "d"]}


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))  # json.dumps writes NaN as NaN
    return path


# (rows, kind, bad row, field, message fragment): one bad row after good ones.
CASES = {
    "missing column": (
        [PAIR, {"prompt": "p", "chosen": "a"}],
        None,
        1,
        "rejected",
        "missing; fields found: chosen, prompt",
    ),
    "null rejected": ([PAIR, {**PAIR, "rejected": None}], None, 1, "rejected", "is null"),
    "null chosen": ([PAIR, {**PAIR, "chosen": None}], None, 1, "chosen", "is null"),
    # a null prompt is not an implicit prompt (the field is there, its value is missing)
    "null prompt": ([PAIR, PAIR, PAIR, {**PAIR, "prompt": None}], None, 3, "prompt", "is null"),
    "null conversational prompt": ([CONV, {**CONV, "prompt": None}], None, 1, "prompt", "is null"),
    "null completion": ([{"prompt": "p", "completion": None}], "single", 0, "completion", "is null"),
    "null completions": ([LIST, {**LIST, "completions": None}], "list", 1, "completions", "is null"),
    "null among completions": (
        [LIST, {**LIST, "completions": ["a", None, "c", "d"]}],
        "list",
        1,
        "completions[1]",
        "is null",
    ),
    "null message content": (
        [CONV, {**CONV, "chosen": [{"role": "assistant", "content": None}]}],
        None,
        1,
        "chosen",
        "message 0: 'content' is null",
    ),
    "null message role": (
        [CONV, CONV, {**CONV, "prompt": [{"role": None, "content": "hi"}]}],
        None,
        2,
        "prompt",
        "message 0: 'role' is null",
    ),
    "empty string": ([PAIR, PAIR, {**PAIR, "chosen": ""}], None, 2, "chosen", "empty completion"),
    "whitespace only": ([PAIR, {**PAIR, "rejected": " \n\t"}], None, 1, "rejected", "empty completion"),
    "empty message list": ([CONV, {**CONV, "chosen": []}], None, 1, "chosen", "empty completion (no messages)"),
    "blank message": (
        [CONV, {**CONV, "rejected": [{"role": "assistant", "content": "  "}]}],
        None,
        1,
        "rejected",
        "empty completion",
    ),
    "chosen is an int": ([PAIR, {**PAIR, "chosen": 5}], None, 1, "chosen", "expected a string or a list"),
    "message without role": (
        [CONV, {**CONV, "chosen": [{"content": "56"}]}],
        None,
        1,
        "chosen",
        "message 0 has no 'role' (keys: content)",
    ),
    "content not a string": (
        [CONV, {**CONV, "rejected": [{"role": "assistant", "content": 54}]}],
        None,
        1,
        "rejected",
        "message 0: 'content' must be a string, got int",
    ),
    "unknown role": (
        [CONV, {**CONV, "prompt": [{"role": "wizard", "content": "Cast a spell."}]}],
        None,
        1,
        "prompt",
        "message 0: role 'wizard' is not one of 'system', 'user', 'assistant', 'tool'",
    ),
    "role in capitals": ([CONV, {**CONV, "prompt": [{"role": "User", "content": "hi"}]}], None, 1, "prompt", "'User'"),
    "unknown role in a completion": (
        [CONV, {**CONV, "chosen": [{"role": "bot", "content": "56"}]}],
        None,
        1,
        "chosen",
        "role 'bot' is not one of",
    ),
    "prompt ends with the assistant": (
        [CONV, {**CONV, "prompt": [USER, GOOD]}],
        None,
        1,
        "prompt",
        "the last message must be a 'user' or 'tool' message (the turn the model answers), got 'assistant'",
    ),
    "prompt of a system message only": (
        [{**CONV, "prompt": [{"role": "system", "content": "Be brief."}]}],
        None,
        0,
        "prompt",
        "got 'system'",
    ),
    "completion ending with a user turn": (
        [CONV, {**CONV, "rejected": [BAD, USER]}],
        None,
        1,
        "rejected",
        "message 1: role 'user': the last message of a completion must be an 'assistant' message",
    ),
    "listed completion ending with a tool turn": (
        [{"prompt": [USER], "completions": [[GOOD], [BAD, {"role": "tool", "content": "42"}]]}],
        None,
        0,
        "completions[1]",
        "message 1: role 'tool': the last message of a completion must be an 'assistant'",
    ),
    "completion starting with a user turn": (
        [CONV, {**CONV, "chosen": [USER, GOOD]}],
        None,
        1,
        "chosen",
        "message 0: role 'user': the first message of a completion must be an 'assistant' message",
    ),
    "system message inside a completion": (
        [CONV, {**CONV, "chosen": [GOOD, {"role": "system", "content": "Be brief."}, GOOD]}],
        None,
        1,
        "chosen",
        "message 1: role 'system' inside a completion",
    ),
    # TRL extracts the shared prefix [USER, GOOD], which ends with the assistant's turn
    "implicit prompt diverging at a user turn": (
        [{"chosen": [USER, GOOD, USER, GOOD], "rejected": [USER, GOOD, {**USER, "content": "And 9 * 8?"}, BAD]}],
        None,
        0,
        "prompt",
        "must be a 'user' or 'tool' message (the turn the model answers), got 'assistant'",
    ),
    "identical pair refused": (
        [PAIR, {**PAIR, "rejected": PAIR["chosen"]}],
        None,
        1,
        "rejected",
        "equals 'chosen' (the pair prefers nothing)",
    ),
    "message not a dict": ([CONV, {**CONV, "prompt": ["hi"]}], None, 1, "prompt", "message 0 must be a dict"),
    "scores not numbers": (
        [{**PAIR, "scores": [1, 2]}, {**PAIR, "scores": ["high", "low"]}],
        None,
        1,
        "scores",
        "expected a number, got str",
    ),
    "scores not a list": ([{**PAIR, "scores": 3.0}], None, 0, "scores", "expected a list of 2 numbers"),
    "scores length": (
        [{**PAIR, "scores": [1, 2]}, {**PAIR, "scores": [1.0]}],
        None,
        1,
        "scores",
        "has 1 values but the row has 2 completions",
    ),
    "returns length": ([{**LIST, "returns": [1, 2, 3]}], "list", 0, "returns", "has 3 values but the row has 4"),
    "NaN score": ([{**PAIR, "scores": [1, 2]}, {**PAIR, "scores": [math.nan, 1.0]}], None, 1, "scores", "NaN"),
    "infinite return": ([{**LIST, "returns": [1, 2, math.inf, 0]}], None, 0, "returns", "NaN or infinite"),
    "win rate above 1": ([{**PAIR, "win_rates": [1.2, 0.1]}], None, 0, "win_rates", "probability 1.2 outside [0, 1]"),
    "pair_prob below 0": (
        [{**PAIR, "pair_prob": 0.5}, {**PAIR, "pair_prob": -0.1}],
        None,
        1,
        "pair_prob",
        "outside [0, 1]",
    ),
    "label 2": ([{"prompt": "p", "completion": "c", "label": 2}], "single", 0, "label", "probability 2.0 outside"),
    "positive ref logp": (
        [{**PAIR, "ref_chosen_logps": 1.5, "ref_rejected_logps": -3}],
        None,
        0,
        "ref_chosen_logps",
        "log-probability 1.5 > 0",
    ),
    "half of ref logps": ([{**PAIR, "ref_chosen_logps": -1.5}], None, 0, "ref_rejected_logps", "missing"),
    # K may differ between list rows; a row's per-completion values must still match its own K
    "bad completion among ragged lists": (
        [LIST, {**LIST, "completions": ["a", "b"]}, {**LIST, "completions": ["a", " ", "c"]}],
        "list",
        2,
        "completions[1]",
        "empty completion",
    ),
    "returns of another row's K": (
        [{**LIST, "returns": [1, 2, 3, 4]}, {"prompt": "Q", "completions": ["a", "b", "c"], "returns": [1, 2, 3, 4]}],
        "list",
        1,
        "returns",
        "has 4 values but the row has 3 completions",
    ),
    "returns on some ragged rows": (
        [{**LIST, "returns": [1, 2, 3, 4]}, {"prompt": "Q", "completions": ["a", "b"]}],
        "list",
        1,
        "returns",
        "missing here but present in row 0",
    ),
    "list of one": ([{**LIST, "completions": ["a"]}], "list", 0, "completions", "at least 2 completions"),
    "completions not a list": ([{**LIST, "completions": "a"}], "list", 0, "completions", "expected a list"),
    "empty prompt": ([PAIR, {**PAIR, "prompt": "  "}], None, 1, "prompt", "empty prompt"),
    "empty prompt messages": ([CONV, {**CONV, "prompt": []}], None, 1, "prompt", "empty prompt"),
    "implicit prompt, nothing shared": ([{"chosen": "abc", "rejected": "xyz"}], None, 0, "prompt", "none could be"),
    "implicit prompt, no answer": ([{"chosen": [USER, GOOD], "rejected": [USER]}], None, 0, "prompt", "none could be"),
    "mixed formats in a row": (
        [{"prompt": "Q", "completions": ["a", [GOOD]]}],
        None,
        0,
        "completions[1]",
        "mix conversational",
    ),
    "conversational prompt, string answers": ([{**PAIR, "prompt": [USER]}], None, 0, "chosen", "mix conversational"),
    "mixed formats across rows": ([PAIR, CONV], None, 1, "prompt", "row is conversational but row 0 is standard"),
    "optional field on some rows": ([{**PAIR, "scores": [1, 2]}, PAIR], None, 1, "scores", "missing here but present"),
    "row not an object": ([PAIR, ["a", "b"]], None, 1, "<row>", "expected a JSON object"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_validation_error_names_file_row_and_field(tmp_path, case):
    rows, kind, row, field, fragment = CASES[case]
    path = write(tmp_path / "train.jsonl", rows)
    with pytest.raises(DataValidationError) as info:
        load_preference_dataset(path, kind=kind, identical_pairs="error")
    message = str(info.value)
    assert message.startswith(f"{path}: row {row}: field '{field}': "), message
    assert fragment in message, message
    assert isinstance(info.value, ValueError)


def test_unknown_columns_name_the_columns_found(tmp_path):
    path = write(tmp_path / "train.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(DataValidationError, match=r"train\.jsonl: cannot tell .* columns found \(answer, question\)"):
        load_preference_dataset(path)
    with pytest.raises(DataValidationError, match=r"train\.jsonl: no rows"):
        load_preference_dataset(write(path, []))


def test_many_bad_rows_are_collected_with_a_count(tmp_path):
    rows = [PAIR if i % 3 == 0 else {**PAIR, "chosen": ""} for i in range(30)]  # 20 bad rows
    with pytest.raises(DataValidationError) as info:
        load_preference_dataset(write(tmp_path / "train.jsonl", rows))
    message, errors = str(info.value), info.value.errors
    assert message.startswith(f"20 of 30 rows are invalid (first {MAX_REPORTED_ERRORS} shown)")
    assert len(errors) == MAX_REPORTED_ERRORS
    assert errors[0] == f"{tmp_path / 'train.jsonl'}: row 1: field 'chosen': empty completion"
    assert errors[1].startswith(f"{tmp_path / 'train.jsonl'}: row 2: ") and all(e in message for e in errors)


def test_a_few_bad_rows_are_all_shown(tmp_path):
    rows = [PAIR, {**PAIR, "chosen": 1}, {**PAIR, "scores": [1]}]
    with pytest.raises(DataValidationError, match=r"^2 of 3 rows are invalid \(all shown\)") as info:
        load_preference_dataset(write(tmp_path / "train.jsonl", rows))
    assert [e.split(": ")[1] for e in info.value.errors] == ["row 1", "row 2"]


@pytest.mark.parametrize(
    ("columns", "kind"),
    [
        (["prompt", "chosen", "rejected"], "pair"),
        (["chosen", "rejected"], "pair"),
        (["prompt", "completions", "returns"], "list"),
        (["prompt", "completion", "label"], "single"),
        (["prompt", "answer"], None),
    ],
)
def test_detect_kind(columns, kind):
    assert detect_kind(columns) == kind


def test_identical_pairs_are_dropped_with_a_count_and_the_rows(tmp_path, caplog):
    same_text = {**PAIR, "rejected": PAIR["chosen"]}
    same_messages = {**CONV, "rejected": [dict(GOOD)]}  # an equal copy, not the same object
    same_implicit = {"chosen": [USER, GOOD], "rejected": [USER, GOOD]}  # no prompt can be extracted from it
    rows = [PAIR, PAIR, PAIR, same_text, PAIR, same_text, PAIR, PAIR]
    path = write(tmp_path / "train.jsonl", rows)
    with caplog.at_level("WARNING", logger="align.data.formats"):
        ds = load_preference_dataset(path)
    assert len(ds) == 6 and all(c[0] != c[1] for c in ds["completions"])
    assert f"{path}: dropped 2 of 8 pairs whose chosen equals rejected (rows 3, 5)" in caplog.text
    assert "identical_pairs='error'" in caplog.text

    caplog.clear()
    conv = write(tmp_path / "conv.jsonl", [CONV, same_messages, same_implicit, CONV])
    with caplog.at_level("WARNING", logger="align.data.formats"):
        assert len(load_preference_dataset(conv)) == 2
    assert "dropped 2 of 4 pairs whose chosen equals rejected (rows 1, 2)" in caplog.text


def test_identical_pairs_refused_with_the_option(tmp_path):
    rows = [PAIR, {**PAIR, "rejected": " 56"}, {**CONV, "rejected": [GOOD]}]
    with pytest.raises(DataValidationError) as info:
        load_preference_dataset(write(tmp_path / "train.jsonl", rows), identical_pairs="error")
    assert str(info.value).startswith("2 of 3 rows are invalid (all shown)")
    assert info.value.errors[0] == (
        f"{tmp_path / 'train.jsonl'}: row 1: field 'rejected': equals 'chosen' (the pair prefers nothing); "
        "identical_pairs='drop' drops such pairs"
    )
    assert info.value.errors[1].startswith(f"{tmp_path / 'train.jsonl'}: row 2: field 'rejected': equals 'chosen'")
    with pytest.raises(ValueError, match="identical_pairs must be one of"):
        load_preference_dataset(write(tmp_path / "t.jsonl", [PAIR]), identical_pairs="skip")


def test_identical_pairs_kept_on_request_and_every_pair_identical(tmp_path):
    same = {**PAIR, "rejected": PAIR["chosen"]}
    path = write(tmp_path / "train.jsonl", [same, PAIR])
    assert load_preference_dataset(path, identical_pairs="keep")["completions"] == [[" 56", " 56"], [" 56", " 54"]]
    with pytest.raises(DataValidationError, match=r"row 0: field 'prompt': .* none can be extracted: chosen equals"):
        load_preference_dataset(
            write(tmp_path / "implicit.jsonl", [{"chosen": [USER, GOOD], "rejected": [USER, GOOD]}]),
            identical_pairs="keep",
        )
    with pytest.raises(
        DataValidationError, match=r"train\.jsonl: every pair \(1\) has chosen equal to rejected \(row 0\); nothing"
    ):
        load_preference_dataset(write(path, [same]))


def test_identical_messages_compare_equal_after_arrow_fills_absent_keys():
    # Arrow gives every message of a column every key seen in it: "name" comes back as None where absent.
    named = {"role": "assistant", "content": "56", "name": "bot"}
    ds = Dataset.from_list([{**CONV, "chosen": [named]}, {**CONV, "rejected": [GOOD]}, CONV])
    assert ds[1]["chosen"] == [{**GOOD, "name": None}] and ds[1]["rejected"] == [GOOD]
    kept = load_preference_dataset(ds, identical_pairs="keep")
    assert len(kept) == 3 and len(load_preference_dataset(ds)) == 2  # row 1 is an identical pair


def test_repeats_within_a_list_are_samples_not_errors(tmp_path):
    rows = [{"prompt": "Q", "completions": ["a", "a", "b"]}, {"prompt": "Q", "completions": ["c", "c", "c"]}]
    assert load_preference_dataset(write(tmp_path / "k.jsonl", rows), kind="list", identical_pairs="error")[
        "completions"
    ] == [["a", "a", "b"], ["c", "c", "c"]]


def test_conversations_with_system_and_tool_turns_are_accepted(tmp_path):
    system = {"role": "system", "content": "Answer with a number."}
    call = {"role": "assistant", "content": "calculator(7 * 8)"}
    tool = {"role": "tool", "content": "56"}
    rows = [{"prompt": [system, USER, call, tool], "chosen": [GOOD], "rejected": [BAD]}]
    ds = load_preference_dataset(write(tmp_path / "tools.jsonl", rows))
    assert ds[0]["prompt"][-1] == tool and ds[0]["completions"] == [[GOOD], [BAD]]


# Rows with images: every problem is found while loading (each image opened once), before a model loads.
VQA = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which clips?"}]}]


def crop_turn(box: str) -> list[dict]:
    return [
        {"role": "assistant", "content": box},
        {"role": "user", "content": "Please answer the question based on the original image and local detail image."},
        {"role": "assistant", "content": "72"},
    ]


@pytest.fixture
def image_dir(tmp_path):
    from PIL import Image

    for i, colour in enumerate(("red", "green", "blue")):
        Image.new("RGB", (20, 16), colour).save(tmp_path / f"{i}.png")
    (tmp_path / "text.png").write_text("this is not a picture")
    (tmp_path / "cut.png").write_bytes((tmp_path / "0.png").read_bytes()[:60])
    return tmp_path


VISION_PAIR = {
    "prompt": VQA,
    "images": ["0.png"],
    "chosen": crop_turn("[0.1, 0.1, 0.5, 0.5]"),
    "rejected": crop_turn("[0.5, 0.5, 0.9, 0.9]"),
    "chosen_images": ["1.png"],
    "rejected_images": ["2.png"],
}
IMAGE_CASES = {
    "missing file": ({**VISION_PAIR, "images": ["nowhere.png"]}, "images[0]", "no such file '{dir}/nowhere.png'"),
    "not an image": (
        {**VISION_PAIR, "rejected_images": ["text.png"]},
        "rejected_images[0]",
        "cannot read image (UnidentifiedImageError: cannot identify image file",
    ),
    "truncated image": ({**VISION_PAIR, "chosen_images": ["cut.png"]}, "chosen_images[0]", "cannot read image ("),
    "a number": ({**VISION_PAIR, "images": [3]}, "images[0]", "expected an image path, bytes, a PIL image"),
    "too few prompt images": (
        {**VISION_PAIR, "images": []}, "prompt", "1 image placeholder(s) but images has 0 image(s)"
    ),  # fmt: skip
    "too many rejected images": (
        {**VISION_PAIR, "rejected": [{**VISION_PAIR["rejected"][0]}, {"role": "user", "content": [{"type": "image"}]},
                                     VISION_PAIR["rejected"][2]], "rejected_images": ["1.png", "2.png"]},
        "rejected",
        "1 image placeholder(s) but rejected_images has 2 image(s)",
    ),  # fmt: skip
    "image in an assistant turn": (
        {**VISION_PAIR, "chosen": [{"role": "assistant", "content": [{"type": "image"}]}, *crop_turn("x")[1:]]},
        "chosen",
        "message 0 (role 'assistant') holds an image part; images may appear only in user/system turns",
    ),
    "images but no user turn to show them in": (
        {**VISION_PAIR, "chosen": crop_turn("x")[:1]},
        "chosen",
        "1 image(s) given but no user message to show them in",
    ),
    "an image value inside a part": (
        {**VISION_PAIR, "prompt": [{"role": "user", "content": [{"type": "image", "image": "0.png"}]}]},
        "prompt",
        "message 0: part 0: an image part is a placeholder {'type': 'image'}",
    ),
    "an unknown part": (
        {**VISION_PAIR, "prompt": [{"role": "user", "content": [{"type": "audio"}]}]},
        "prompt",
        "message 0: part 0 must be {'type': 'text', 'text': str} or {'type': 'image'}",
    ),
    "image and images": ({**VISION_PAIR, "image": "0.png"}, "image", "given together with 'images'"),
    "a list column on a pair": (
        {**VISION_PAIR, "completion_images": [[], []]}, "completion_images", "not a column of a pair row"
    ),  # fmt: skip
    "string rows with images": (
        {"prompt": "Q", "chosen": "a", "rejected": "b", "images": ["0.png"]},
        "prompt",
        "rows with images must be conversational",
    ),
}


@pytest.mark.parametrize("row, field, message", IMAGE_CASES.values(), ids=IMAGE_CASES.keys())
def test_image_rows_errors_name_file_row_and_field(image_dir, row, field, message):
    path = write(image_dir / "train.jsonl", [VISION_PAIR, row])
    with pytest.raises(DataValidationError) as info:
        load_preference_dataset(path)
    expected = f"{path}: row 1: field '{field}': {message.replace('{dir}', str(image_dir))}"
    assert str(info.value).startswith(expected), str(info.value)


def test_bytes_that_are_no_image_name_the_dataset_row_and_field():
    rows = [{**VISION_PAIR, "images": [{"bytes": b"GIF89a broken", "path": "x.gif"}], "chosen_images": [b"\x89PNG"]}]
    expected = r"^train: row 0: field 'images\[0\]': cannot read image \(UnidentifiedImageError"
    with pytest.raises(DataValidationError, match=expected):
        load_preference_dataset(Dataset.from_list(rows), name="train")


def test_list_and_single_rows_read_completion_images(image_dir):
    listed = {"prompt": VQA, "images": ["0.png"], "completions": [crop_turn("a"), crop_turn("b"), [GOOD]],
              "completion_images": [["1.png"], ["2.png"], []]}  # fmt: skip
    ds = load_preference_dataset(write(image_dir / "list.jsonl", [listed]))
    assert [[ref["path"] for ref in refs] for refs in ds[0]["completion_images"]] == [
        [str(image_dir / "1.png")], [str(image_dir / "2.png")], []
    ]
    single = {"prompt": VQA, "image": "0.png", "completion": crop_turn("a"), "completion_images": ["1.png"]}
    wrapped = {**single, "completion_images": [["2.png"]]}
    ds = load_preference_dataset(write(image_dir / "single.jsonl", [single, wrapped]))
    assert ds[0]["images"] == [{"bytes": None, "path": str(image_dir / "0.png")}]
    paths = [refs[0][0]["path"] for refs in ds["completion_images"]]
    assert paths == [str(image_dir / "1.png"), str(image_dir / "2.png")]
    with pytest.raises(DataValidationError, match=r"row 0: field 'completion_images': expected one list of images per "
                                                  r"completion \(3\), got 2 lists"):  # fmt: skip
        load_preference_dataset(write(image_dir / "bad.jsonl", [{**listed, "completion_images": [[], []]}]))


def test_rows_without_images_join_a_dataset_with_images(image_dir):
    """Every row gets both image columns, and content as parts (Arrow stores one type per column)."""
    ds = load_preference_dataset(write(image_dir / "train.jsonl", [VISION_PAIR, CONV]))
    assert ds[1]["images"] == [] and ds[1]["completion_images"] == [[], []]
    assert ds[1]["prompt"] == [{"role": "user", "content": [{"type": "text", "text": USER["content"]}]}]
    # the crop's placeholder went to the start of the completion's user turn
    turn = ds[0]["completions"][0][1]["content"]
    assert [part["type"] for part in turn] == ["image", "text"]


def test_a_pair_with_the_same_text_but_other_crops_is_a_preference(image_dir):
    same_text = {**VISION_PAIR, "rejected": VISION_PAIR["chosen"]}
    same_crop = {**same_text, "rejected_images": ["1.png"]}
    ds = load_preference_dataset(write(image_dir / "train.jsonl", [same_text, same_crop]))
    assert len(ds) == 1 and ds[0]["completion_images"][1][0]["path"].endswith("2.png")
