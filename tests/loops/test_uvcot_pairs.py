"""uvcot_pairs on hand-made judged questions: the score gap, seeded sampling per question, the
next-step score, both rejected-crop modes, and length balancing against a literal port of the
official get_pairs_filter_shorten.py."""

import random

import numpy as np
import pandas as pd
import pytest

from align.data.boxes import ANSWER_PROMPT, BOX_PROMPT
from align.loops.builders import balance_lengths, get_builder, uvcot_pairs

QUESTION = "Which pattern is inside the red box?"
PROMPT = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION + BOX_PROMPT}]}]


def question(index, answers, **judge):
    """A judged question as UV-CoT's loop writes it: K regions, their crops, one answer each."""
    k = len(answers)
    return {"index": index, "prompt": PROMPT, "images": [f"/img/{index}.png"], "question": QUESTION,
            "answer": "vertical", "regions": [f"[0.{i}0, 0.25, 0.75, 0.50]" for i in range(k)],
            "crops": [f"/crops/{index}-{i}.png" for i in range(k)], "completions": list(answers), **judge}  # fmt: skip


def pair_ids(rows):
    """(chosen, rejected) sample ids, read back from the crops of each row."""
    return [(r["chosen_images"][0].rsplit("-", 1)[1][:-4], r["rejected"][0]["content"][3]) for r in rows]


def test_every_pair_with_a_gap_the_higher_score_chosen_and_the_row():
    item = question(7, ["vertical", "horizontal", "vertical", "checkerboard"], correct=[True, False, True, False])
    rows, stats = uvcot_pairs([item], pairs_per_question=None)
    # s = [0, -1, 0, -1]; combinations in order, the right answer chosen, equal scores never paired
    assert pair_ids(rows) == [("0", "1"), ("0", "3"), ("2", "1"), ("2", "3")]
    assert stats == {"questions": 1, "pairs": 4, "candidate_pairs": 4, "sampled_pairs": 4, "no_pair": 0,
                     "length_ratio": None, "dropped_by_length": 0}  # fmt: skip
    row = rows[2]
    assert row["prompt"] == PROMPT and row["images"] == ["/img/7.png"]
    answer_turn = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": ANSWER_PROMPT + QUESTION}]}
    assert row["chosen"] == [{"role": "assistant", "content": "[0.20, 0.25, 0.75, 0.50]"}, answer_turn,
                             {"role": "assistant", "content": "vertical"}]  # fmt: skip
    assert row["rejected"] == [{"role": "assistant", "content": "[0.10, 0.25, 0.75, 0.50]"}, answer_turn,
                               {"role": "assistant", "content": "horizontal"}]  # fmt: skip
    assert row["chosen_images"] == ["/crops/7-2.png"] and row["rejected_images"] == ["/crops/7-1.png"]
    assert row["scores"] == [0.0, -1.0]


def test_min_gap_and_scoring_judges():
    item = question(0, ["a", "b", "c"], scores=[0.0, -1.0, -2.0])
    assert pair_ids(uvcot_pairs([item], pairs_per_question=None)[0]) == [("0", "1"), ("0", "2"), ("1", "2")]
    rows, stats = uvcot_pairs([item, question(1, ["a", "b"], scores=[-1.0, -1.5])], min_gap=2)
    assert pair_ids(rows) == [("0", "2")] and rows[0]["scores"] == [0.0, -2.0]
    assert stats["no_pair"] == 1
    # a verifier's tie-broken scores are not claim counts: auto takes its verdicts
    both = question(0, ["a", "b"], correct=[False, True], scores=[0.4, 0.6])
    rows, _ = uvcot_pairs([both])
    assert pair_ids(rows) == [("1", "0")] and rows[0]["scores"] == [0.0, -1.0]
    assert uvcot_pairs([both], scores="scores")[0] == []  # gap 0.2 < 1
    with pytest.raises(ValueError, match=r"prompt 0: uvcot_pairs needs the judge's 'correct' \(it gave scores\)"):
        uvcot_pairs([question(0, ["a", "b"], scores=[0, -1])], scores="correct")


def test_pairs_are_sampled_per_question_seeded():
    items = [question(i, ["a", "b", "c", "d"], correct=[True, False, True, False]) for i in range(6)]
    items.append(question(6, ["a", "b"], correct=[True, False]))  # one pair only: kept
    rows, stats = uvcot_pairs(items, pairs_per_question=2, seed=3)
    assert stats["candidate_pairs"] == 6 * 4 + 1 and stats["sampled_pairs"] == stats["pairs"] == 6 * 2 + 1
    all_pairs = {("0", "1"), ("0", "3"), ("2", "1"), ("2", "3")}
    drawn = [tuple(pair_ids(rows[2 * i : 2 * i + 2])) for i in range(6)]
    assert all(len(set(d)) == 2 and set(d) <= all_pairs for d in drawn)
    assert pair_ids(rows[-1:]) == [("0", "1")]
    assert uvcot_pairs(items, pairs_per_question=2, seed=3)[0] == rows  # the same seed, the same draw
    # the draw depends on the seed and the question, not on the order of the questions
    assert uvcot_pairs(items[::-1], pairs_per_question=2, seed=3)[0][-2:] == rows[:2]
    draws = {tuple(pair_ids(uvcot_pairs(items[:1], seed=s)[0])) for s in range(12)}
    assert len(draws) > 3


def test_next_step_scores():
    item = question(0, ["a", "b"], scores=[0.0, -1.0], next_scores=[-3.0, 0.0])
    # gamma 0 ignores them; 0.5: s = [-1.5, -1.0], a gap of 0.5; 1: s = [-3, -1], the other one wins
    assert pair_ids(uvcot_pairs([item])[0]) == [("0", "1")]
    assert uvcot_pairs([item], gamma_next=0.5)[0] == []
    rows, _ = uvcot_pairs([item], gamma_next=1.0)
    assert pair_ids(rows) == [("1", "0")] and rows[0]["scores"] == [-1.0, -3.0]
    with pytest.raises(ValueError, match=r"prompt 0: gamma_next=0.5 needs 'next_scores', one per sample \(2\)"):
        uvcot_pairs([question(0, ["a", "b"], scores=[0.0, -1.0])], gamma_next=0.5)


def test_rejected_crop_own_or_the_winners():
    item = question(4, ["vertical", "horizontal"], correct=[False, True])
    (own,), _ = uvcot_pairs([item])
    (official,), _ = uvcot_pairs([item], rejected_crop="chosen")
    assert own["chosen_images"] == official["chosen_images"] == ["/crops/4-1.png"]
    assert own["rejected_images"] == ["/crops/4-0.png"]
    assert official["rejected_images"] == ["/crops/4-1.png"]  # y_l scored after the winner's crop
    assert own["rejected"] == official["rejected"]  # the text is y_l's own region and answer either way
    with pytest.raises(ValueError, match="rejected_crop must be one of"):
        uvcot_pairs([item], rejected_crop="loser")


def test_bad_inputs_and_options():
    with pytest.raises(ValueError, match=r"prompt 2: uvcot_pairs needs 'crops', one per sample \(2\)"):
        uvcot_pairs([{**question(2, ["a", "b"], correct=[True, False]), "crops": ["/c.png"]}])
    with pytest.raises(ValueError, match="min_gap must be > 0"):
        uvcot_pairs([], min_gap=0)
    with pytest.raises(ValueError, match="pairs_per_question must be >= 1"):
        uvcot_pairs([], pairs_per_question=0)
    build = get_builder("uvcot_pairs", {"rejected_crop": "chosen", "pairs_per_question": None})
    rows, _ = build([question(0, ["a", "b"], correct=[True, False])])
    assert rows[0]["rejected_images"] == rows[0]["chosen_images"]
    with pytest.raises(TypeError, match="it takes options"):
        get_builder("uvcot_pairs", {"pairs_per_prompt": 2})


# -- length balancing: utils/get_pairs_filter_shorten.py, literally (prints and file I/O left out) --------


def filter_pair_by_len(all_pairs_dicts, diff_len):
    remain_pair = []
    for pair in all_pairs_dicts:
        chosen_len = len(pair["chosen"].split())
        reject_len = len(pair["rejected"].split())
        pair_diff_len = (reject_len - chosen_len) / float(reject_len)
        if pair_diff_len > diff_len:
            continue
        if pair["chosen"].strip() == pair["rejected"].strip():
            continue
        remain_pair.append(pair)
    return remain_pair


def cal_pair_statistics(all_pairs):
    avg_win_len = 0.0
    avg_lose_len = 0.0
    shorten_cnt = 0
    longer_cnt = 0
    total = 0
    for i in range(len(all_pairs)):
        data = all_pairs[i]
        avg_win_len += len(data["chosen"].split())
        avg_lose_len += len(data["rejected"].split())
        if len(data["chosen"].split()) > len(data["rejected"].split()):
            longer_cnt += 1
        elif len(data["chosen"].split()) < len(data["rejected"].split()):
            shorten_cnt += 1
        total += 1
    avg_win_len /= total
    avg_lose_len /= total
    shorten_cnt /= total
    longer_cnt /= total
    return avg_win_len, avg_lose_len, shorten_cnt, longer_cnt


def cal_pair_search_difflen(wanted_pairs_dicts, use_len=True):
    shorten_ratios = np.arange(0, 1, 0.02)
    results = []
    for ratio in shorten_ratios:
        remain_pairs = filter_pair_by_len(wanted_pairs_dicts, ratio)
        avg_win_len, avg_lose_len, shorten_cnt, longer_cnt = cal_pair_statistics(remain_pairs)
        avg_diff_len = abs(avg_win_len - avg_lose_len) / avg_lose_len
        diff_shorter_longer_portion = abs(shorten_cnt - longer_cnt)
        results.append({
            "ratio": ratio,
            "total_diff_portion": avg_diff_len if use_len else diff_shorter_longer_portion,
        })  # fmt: skip
    df = pd.DataFrame(results)
    idmin = df["total_diff_portion"].idxmin()
    final_remain_pairs = filter_pair_by_len(wanted_pairs_dicts, df.iloc[idmin]["ratio"])
    return final_remain_pairs, df.iloc[idmin]["ratio"]


def words(rng, n):
    return " ".join(rng.choice(["the", "red", "box", "holds", "vertical", "stripes"]) for _ in range(n))


def test_length_balance_keeps_what_the_official_search_keeps():
    # by hand: winners of 2, 5 and 8 words against losers of 10, 5 and 4. r < 0.8 drops the first
    # (winner 80% shorter): averages 6.5 vs 4.5, off by 0.44; r >= 0.8 keeps all three: 5 vs 6.33, 0.21
    pairs = [("a b", "a b c d e f g h i j"), ("a b c d e", "v w x y z"), ("a b c d e f g h", "w x y z")]
    kept, ratio = balance_lengths(pairs)
    assert kept == [0, 1, 2] and ratio == pytest.approx(0.8)
    official, official_ratio = cal_pair_search_difflen([{"chosen": w, "rejected": l} for w, l in pairs])
    assert len(official) == 3 and official_ratio == ratio
    # random pair sets of short and long answers, some identical, through the builder
    rng = random.Random(0)
    for trial in range(25):
        pairs = []
        for _ in range(rng.randint(3, 12)):
            w, l = words(rng, rng.randint(1, 12)), words(rng, rng.randint(1, 12))  # noqa: E741
            pairs.append((w, w) if rng.random() < 0.1 else (w, l))
        pairs.append(("one two three", "one two"))  # a pair kept at every r: the official search never divides by 0
        items = [question(i, [w, l], correct=[True, False]) for i, (w, l) in enumerate(pairs)]
        rows, stats = uvcot_pairs(items, length_balance=True)
        official, official_ratio = cal_pair_search_difflen([{"chosen": w, "rejected": l} for w, l in pairs])
        assert [(r["chosen"][2]["content"], r["rejected"][2]["content"]) for r in rows] == [
            (p["chosen"], p["rejected"]) for p in official
        ], trial
        assert stats["length_ratio"] == official_ratio and stats["dropped_by_length"] == len(pairs) - len(official)


def test_length_balance_where_the_official_code_divides_by_zero():
    # an empty rejected answer is kept by the length rule (-inf); r < 0.5 leaves it alone (no words on average)
    assert balance_lengths([("a b", ""), ("a", "b c")]) == ([0, 1], pytest.approx(0.5))
    assert balance_lengths([("same", "same")]) == ([], 0.0)  # no r keeps a pair: r = 0, nothing kept
