"""The synthetic visual-patterns task: deterministic per seed, train and test disjoint by image, a
pattern the whole image blurs away but the oracle crop shows, UV-CoT's turns, the answer checker."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from align.data.boxes import ANSWER_PROMPT, BOX_PROMPT, parse_box
from align.data.visual_task import (
    CELL,
    PATTERNS,
    answer_word,
    builtin_visual_patterns,
    check_answer,
    render_layout,
    visual_patterns,
    warmup_row,
)
from tests.scripts import load_script


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGN_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def pixels(path):
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def pattern_of(patch: np.ndarray) -> str:
    """Which pattern a 16 × 16 RGB patch shows, read from its black pixels (None if none fits)."""
    black = patch.max(axis=-1) == 0
    yy, xx = np.mgrid[0:16, 0:16]
    masks = {"horizontal": yy % 2 == 0, "vertical": xx % 2 == 0, "checkerboard": (xx + yy) % 2 == 0}
    return next((name for name, mask in masks.items() if (black == mask).all()), None)


def test_rows_are_deterministic_per_seed_and_images_match_their_names(tmp_path):
    a = visual_patterns(24, seed=3, image_dir=tmp_path / "a")
    b = visual_patterns(24, seed=3, image_dir=tmp_path / "b")
    other = visual_patterns(24, seed=4, image_dir=tmp_path / "a")
    strip = [{**r, "images": [r["images"][0].rsplit("/", 1)[1]]} for r in a]
    assert strip == [{**r, "images": [r["images"][0].rsplit("/", 1)[1]]} for r in b]
    assert [r["images"] for r in a] != [r["images"] for r in other]
    for ra, rb in zip(a, b):  # same name, same pixels, whichever folder rendered it
        assert (pixels(ra["images"][0]) == pixels(rb["images"][0])).all()
    assert len({r["images"][0] for r in a}) == 24  # distinct images
    json.dumps(a)  # every row stays JSON


def test_prompt_row_shape_and_official_joining():
    row = visual_patterns(1, seed=0)[0]
    question = row["question"]
    assert question.startswith("Which pattern is inside the ") and question.endswith(" box?")
    (message,) = row["prompt"]
    assert message["role"] == "user"
    assert message["content"] == [{"type": "image"}, {"type": "text", "text": question + BOX_PROMPT}]
    assert "? Please provide the bounding box" in question + BOX_PROMPT  # one space, as the official data
    assert row["answer"] in PATTERNS and len(row["images"]) == 1
    assert row["images"][0].startswith("/")  # absolute, so a loop's files can hold it
    x1, y1, x2, y2 = row["box"]
    assert (x2 - x1, y2 - y1) == (0.25, 0.25)


def test_splits_are_disjoint_by_image_and_builtin_sizes():
    train, test = builtin_visual_patterns("train"), builtin_visual_patterns("test")
    assert (len(train), len(test)) == (512, 256)
    assert builtin_visual_patterns("eval") == test
    other_seed_train = visual_patterns(256, seed=1, split="train")
    test_images = {r["images"][0] for r in test}
    # the split is a hash of the layout, not the seed: no seed's train set holds a test image
    assert not test_images & {r["images"][0] for r in train}
    assert not test_images & {r["images"][0] for r in other_seed_train}
    for split in (train, test):  # every answer well represented
        counts = {p: sum(r["answer"] == p for r in split) for p in PATTERNS}
        assert min(counts.values()) > len(split) / 5, counts


def test_the_whole_image_blurs_the_pattern_the_crop_shows_it():
    """The point of the task: after the vision encoder's 32 px resize of the 128 px image, a
    horizontal and a vertical patch differ ~15× less than in the 32 px crop of their cell (measured:
    0.26 vs 3.83 in the processor's normalised units), so the answer needs the right region."""
    from tests.tiny import build_tiny_llava

    processor = build_tiny_llava()[1].image_processor
    cell = 6  # row 1, column 2
    layouts = {p: ((cell, "red", p), (9, "blue", "checkerboard"), (15, "green", "vertical")) for p in PATTERNS}
    images = {p: render_layout(layout) for p, layout in layouts.items()}
    region = (2 * CELL, CELL, 3 * CELL, 2 * CELL)
    full = processor([images[p] for p in PATTERNS], return_tensors="pt")["pixel_values"]
    crop = processor([images[p].crop(region) for p in PATTERNS], return_tensors="pt")["pixel_values"]
    assert full.shape == crop.shape == (3, 3, 32, 32)
    for i, j in ((0, 1), (0, 2), (1, 2)):
        full_diff, crop_diff = (full[i] - full[j]).abs().max(), (crop[i] - crop[j]).abs().max()
        assert crop_diff > 3.5 and crop_diff > 10 * full_diff, (PATTERNS[i], PATTERNS[j], full_diff, crop_diff)


def test_oracle_crop_holds_the_patch_and_the_warmup_turns_read_back(tmp_path):
    rows = visual_patterns(12, seed=0)
    for row in rows:
        warm = warmup_row(row, crop_dir=tmp_path / "crops")
        (crop_path,) = warm["completion_images"]
        crop = pixels(crop_path)
        assert crop.shape == (32, 32, 3)  # min_half 16: the cell itself, never resized by a 32 px encoder
        assert pattern_of(crop[8:24, 8:24]) == row["answer"]
        # the same crop as cutting the cell out of the image
        x1, y1, x2, y2 = (int(v * 128) for v in row["box"])
        assert (pixels(row["images"][0])[y1:y2, x1:x2] == crop).all()
        # the warm-up completion writes the box so that parse_box reads back the true cell
        box_text, answer_turn, answer = warm["completion"]
        assert parse_box(box_text["content"]) == tuple(row["box"])
        assert answer_turn["content"][1]["text"] == ANSWER_PROMPT + row["question"]
        assert answer["content"] == row["answer"] and check_answer(answer["content"], row["answer"])


def test_warmup_row_reuses_its_crop(tmp_path):
    row = visual_patterns(1, seed=0)[0]
    first = warmup_row(row)
    path = first["completion_images"][0]
    mtime = os.stat(path).st_mtime_ns
    assert warmup_row(row) == first and os.stat(path).st_mtime_ns == mtime
    assert first["prompt"] == row["prompt"] and first["images"] == row["images"]


@pytest.mark.parametrize(
    "text, word, reference, right",
    [
        ("vertical", "vertical", "vertical", True),
        ("Vertical.", "vertical", "vertical", True),
        ("**Horizontal** stripes", "horizontal", "horizontal", True),
        ("  checkerboard, I think", "checkerboard", "Checkerboard ", True),
        ("vertically", "vertically", "vertical", False),
        ("It is vertical", "it", "vertical", False),  # the first word is the answer, as the task asks
        ("horizontal", "horizontal", "vertical", False),
        ("", "", "vertical", False),
    ],
)
def test_answer_word_and_checker(text, word, reference, right):
    assert answer_word(text) == word
    assert check_answer(text, reference) is right


def test_data_script_writes_rows_and_images(tmp_path):
    script = load_script("data/visual_task.py")
    out = tmp_path / "out"
    script.main(["--n_train", "6", "--n_test", "4", "--n_warmup", "2", "--seed", "5", "--output_dir", str(out)])
    train = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    test = [json.loads(line) for line in (out / "test.jsonl").read_text().splitlines()]
    warm = [json.loads(line) for line in (out / "warmup.jsonl").read_text().splitlines()]
    assert train == visual_patterns(6, seed=5, split="train", image_dir=out / "images")
    assert test == visual_patterns(4, seed=5, split="test", image_dir=out / "images")
    assert warm == [warmup_row(r) for r in train[:2]]
    assert all(r["images"][0].startswith(str(out / "images")) for r in train + test)
    assert len(list((out / "images").glob("*.png"))) == 6 + 4 + 2
    assert not list((out / "images").glob(".*"))  # no temporary file left behind


def test_cell_questions_name_the_true_box_by_row_and_column(tmp_path):
    """ask="cell": the same images, answers and boxes, the question naming the box's cell."""
    by_colour = visual_patterns(16, seed=3, split="test", image_dir=tmp_path)
    by_cell = visual_patterns(16, seed=3, split="test", image_dir=tmp_path, ask="cell")
    for a, b in zip(by_colour, by_cell):
        assert (a["images"], a["answer"], a["box"]) == (b["images"], b["answer"], b["box"])
        x1, y1, _, _ = b["box"]
        assert b["question"] == f"Which pattern is inside the box in row {int(y1 * 4) + 1}, column {int(x1 * 4) + 1}?"
        assert b["prompt"][0]["content"][1]["text"] == b["question"] + BOX_PROMPT
    with pytest.raises(ValueError, match="ask must be one of"):
        visual_patterns(1, seed=0, ask="shape")
