"""data/ches_filter.py: CHES per pair, aligned with the input rows, and dropping the highest-CHES pairs."""

import json
import math
import re
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

from align.callbacks import measure_pairs
from align.data import prepare_preference_dataset, write_jsonl
from tests.scripts import load_script
from tests.trainers.common import pair_dataset

ROOT = Path(__file__).resolve().parents[2]
OVERLONG_AT = 3
MAX_LENGTH = 64
# CHES is a difference of large inner products: float32 sums differ slightly with the batch packing
TOL = {"rel": 1e-5, "abs": 1e-3}


ches_filter = load_script("data/ches_filter.py")


@pytest.fixture(scope="module")
def raw_rows():
    """8 distinct pairs, and at index 3 one whose prompt alone is longer than MAX_LENGTH tokens."""
    rows = pair_dataset(8).to_list()
    overlong = {**rows[0], "prompt": [{"role": "user", "content": "What is 7 times 8? " * 40}]}
    return rows[:OVERLONG_AT] + [overlong] + rows[OVERLONG_AT:]


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


@pytest.fixture(scope="module")
def expected_ches(model, raw_rows, tiny_tokenizer):
    """CHES of the 8 scorable rows (input order, the overlong one left out), measured directly."""
    scorable = [r for i, r in enumerate(raw_rows) if i != OVERLONG_AT]
    rows, stats = prepare_preference_dataset(pair_dataset(8), tiny_tokenizer, kind="pair", max_length=MAX_LENGTH)
    assert stats["rows_dropped"] == 0 and len(scorable) == 8
    values = measure_pairs(model, rows, pad_token_id=tiny_tokenizer.pad_token_id, batch_size=3).ches.tolist()
    assert len(set(values)) == 8  # distinct, so "the top half" is unambiguous
    return values


def test_scores_stay_aligned_with_rows_when_tokenization_drops_one(model, tiny_tokenizer, raw_rows, expected_ches):
    scores = ches_filter.score_ches(model, tiny_tokenizer, raw_rows, max_length=MAX_LENGTH, batch_size=3)
    assert len(scores) == len(raw_rows)
    assert math.isnan(scores[OVERLONG_AT])
    assert scores[:OVERLONG_AT] + scores[OVERLONG_AT + 1 :] == pytest.approx(expected_ches, **TOL)
    # without the overlong row nothing is dropped, and the scores are the same
    scorable = [r for i, r in enumerate(raw_rows) if i != OVERLONG_AT]
    assert ches_filter.score_ches(model, tiny_tokenizer, scorable, max_length=MAX_LENGTH, batch_size=8) == pytest.approx(expected_ches, **TOL)


def test_an_identical_pair_is_scored_in_place(model, tiny_tokenizer, raw_rows, expected_ches):
    """Training drops pairs whose chosen equals rejected; scoring must keep them, or every later
    score would land on the wrong row."""
    rows = [r for i, r in enumerate(raw_rows) if i != OVERLONG_AT]
    same = {**rows[1], "rejected": rows[1]["chosen"]}
    scores = ches_filter.score_ches(model, tiny_tokenizer, [rows[0], same, *rows[1:]], max_length=MAX_LENGTH,
                                    batch_size=3)  # fmt: skip
    assert len(scores) == 9 and not math.isnan(scores[1])
    assert [scores[0], *scores[2:]] == pytest.approx(expected_ches, **TOL)


def test_select_top_picks_the_highest_scored_and_skips_nan():
    scores = [0.5, math.nan, 3.0, -1.0, 3.0, 2.0]
    assert ches_filter.select_top(scores, 0.5) == ([2, 4], 3.0)  # 5 scored -> floor(2.5) = 2
    assert ches_filter.select_top(scores, 0.6) == ([2, 4, 5], 2.0)
    assert ches_filter.select_top(scores, 0.0) == ([], None)
    with pytest.raises(ValueError):
        ches_filter.select_top(scores, 1.5)


def test_cli_drops_the_higher_ches_half_and_writes_the_scores(tiny_model_dir, raw_rows, expected_ches, tmp_path, capsys):
    data = write_jsonl(raw_rows, tmp_path / "pairs.jsonl")
    out = tmp_path / "filtered.jsonl"
    ches_filter.main([
        "--model", str(tiny_model_dir), "--dataset", str(data), "--output", str(out),
        "--drop_top", "0.5", "--max_length", str(MAX_LENGTH), "--batch_size", "3",
    ])  # fmt: skip
    printed = capsys.readouterr().out
    assert f"1 of 9 rows not scored (prompt too long for --max_length {MAX_LENGTH})" in printed
    threshold = sorted(expected_ches)[4]  # the lowest of the 4 highest
    assert "dropped 4 of 8 scored pairs" in printed
    assert float(re.search(r"CHES >= (\S+) ", printed).group(1)) == pytest.approx(threshold, **TOL)

    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(written) == 5  # 4 lowest-CHES pairs + the unscored row
    unscored = [r for r in written if r["ches"] is None]
    assert [{k: v for k, v in r.items() if k != "ches"} for r in unscored] == [raw_rows[OVERLONG_AT]]
    scorable = [r for i, r in enumerate(raw_rows) if i != OVERLONG_AT]
    lowest = sorted(range(8), key=lambda i: expected_ches[i])[:4]
    kept = [r for r in written if r["ches"] is not None]
    assert [{k: v for k, v in r.items() if k != "ches"} for r in kept] == [scorable[i] for i in sorted(lowest)]
    assert [r["ches"] for r in kept] == pytest.approx([expected_ches[i] for i in sorted(lowest)], **TOL)
    assert max(r["ches"] for r in kept) < threshold

    ches_filter.main([
        "--model", str(tiny_model_dir), "--dataset", str(data), "--output", str(out),
        "--max_length", str(MAX_LENGTH), "--drop_unscored",
    ])  # fmt: skip
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["ches"] for r in written] == pytest.approx(expected_ches, **TOL)
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_missing_model_is_named(tmp_path, capsys):
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(SystemExit):
        ches_filter.main(["--model", missing, "--dataset", "x.jsonl", "--output", str(tmp_path / "o.jsonl")])
    assert missing in capsys.readouterr().err
