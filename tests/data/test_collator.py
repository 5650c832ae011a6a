"""The collator's padded and packed layouts hold the same sequences and give the same log-probs."""

import pytest
import torch
from datasets import Dataset

from align.data import PreferenceCollator, load_preference_dataset, tokenize_dataset

PAD = 99
# Ragged K: row 0 has 2 completions, row 1 has 1.
ROWS = [
    {"prompt_ids": [1, 2], "completion_ids": [[3, 4, 5], [6]], "scores": [0.5, -1.0], "pair_prob": 0.75},
    {"prompt_ids": [7], "completion_ids": [[8, 9]], "scores": [2.0], "pair_prob": 0.25},
]


def test_padded_layout():
    out = PreferenceCollator(PAD)(ROWS)
    assert set(out) == {
        "group_mask",
        "completion_token_counts",
        "scores",
        "pair_prob",
        "input_ids",
        "attention_mask",
        "completion_mask",
    }
    assert out["group_mask"].tolist() == [[True, True], [True, False]]
    assert out["completion_token_counts"].tolist() == [[3, 1], [2, 0]]
    assert out["scores"].dtype == torch.float32 and out["scores"].tolist() == [[0.5, -1.0], [2.0, 0.0]]
    assert out["pair_prob"].tolist() == [0.75, 0.25]
    assert out["input_ids"].tolist() == [[1, 2, 3, 4, 5], [1, 2, 6, PAD, PAD], [7, 8, 9, PAD, PAD]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 0, 0]]
    assert out["completion_mask"].tolist() == [[0, 0, 1, 1, 1], [0, 0, 1, 0, 0], [0, 1, 1, 0, 0]]


def test_packed_layout():
    out = PreferenceCollator(PAD, padding_free=True)(ROWS)
    assert "attention_mask" not in out
    assert out["input_ids"].tolist() == [[1, 2, 3, 4, 5, 1, 2, 6, 7, 8, 9]]
    assert out["position_ids"].tolist() == [[0, 1, 2, 3, 4, 0, 1, 2, 0, 1, 2]]
    assert out["completion_mask"].tolist() == [[0, 0, 1, 1, 1, 0, 0, 1, 0, 1, 1]]
    assert out["seq_lens"].tolist() == [5, 3, 3]
    assert out["group_mask"].tolist() == [[True, True], [True, False]]


def test_shared_prompt_layout():
    """Row 0's second completion follows as a sequence of its own starting at position 2 (its
    prompt's length), the prompt packed once; the single-completion row is unchanged."""
    from align.logps import packed_completion_index

    out = PreferenceCollator(PAD, padding_free=True, share_prompt=True)(ROWS)
    assert out["input_ids"].tolist() == [[1, 2, 3, 4, 5, 6, 7, 8, 9]]
    assert out["position_ids"].tolist() == [[0, 1, 2, 3, 4, 2, 0, 1, 2]]
    assert out["completion_mask"].tolist() == [[0, 0, 1, 1, 1, 1, 0, 1, 1]]
    assert out["seq_lens"].tolist() == [5, 1, 3]
    assert out["completion_token_counts"].tolist() == [[3, 1], [2, 0]]
    index = packed_completion_index(out)
    # token 6 (row position 5) is predicted by the prompt's last token (position 1), like token 3
    assert index.keep.tolist() == [1, 2, 3, 1, 6, 7]
    assert index.targets.tolist() == [3, 4, 5, 6, 8, 9]
    assert index.seq.tolist() == [0, 0, 0, 1, 2, 2] and index.num_seqs == 3
    unshared = packed_completion_index(PreferenceCollator(PAD, padding_free=True)(ROWS))
    assert unshared.keep.tolist() == [1, 2, 3, 6, 8, 9] and unshared.targets.tolist() == index.targets.tolist()


def test_collator_rejects_empty_sequences():
    with pytest.raises(ValueError, match="batch row 0: completion 1 has no tokens"):
        PreferenceCollator(PAD)([{"prompt_ids": [1], "completion_ids": [[2], []]}])
    with pytest.raises(ValueError, match="non-empty prompt_ids"):
        PreferenceCollator(PAD)([{"prompt_ids": [], "completion_ids": [[2]]}])
    with pytest.raises(ValueError, match="batch row 0: scores has 1 values for 2 completions"):
        PreferenceCollator(PAD)([{"prompt_ids": [1], "completion_ids": [[2], [3]], "scores": [1.0]}])


def tokenized_rows(tokenizer):
    """Real conversational rows of different lengths, with all per-completion fields, and a ragged K."""
    answers = ["Step 1: 48 / 2 = 24 clips in May. Step 2: 48 + 24 = 72 clips. #### 72", "#### 56", "The answer is 72."]
    questions = [
        "How many clips did Natalia sell altogether in April and May?",
        "What is 7 times 8?",
        "Weng earns $12 an hour for babysitting. How much did she earn?",
    ]
    data = Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": q}],
                "completions": [[{"role": "assistant", "content": a}] for a in answers[i:] + answers[:i]],
                "labels": [1, 0, 0],
                "scores": [0.1, 0.2, 0.3],
                "win_rates": [0.9, 0.5, 0.1],
                "returns": [1, -1, 0],
                "ref_logps": [-10.0, -20.0, -30.0],
            }
            for i, q in enumerate(questions)
        ]
    )
    rows = list(tokenize_dataset(load_preference_dataset(data, kind="list"), tokenizer, max_length=256)[0])
    rows[1] = {k: v[:2] if isinstance(v, list) and k != "prompt_ids" else v for k, v in rows[1].items()}  # K = 2 here
    return rows


def test_real_rows_padded_and_packed_hold_the_same_tokens(tiny_tokenizer):
    rows = tokenized_rows(tiny_tokenizer)
    padded = PreferenceCollator(tiny_tokenizer.pad_token_id)(rows)
    packed = PreferenceCollator(tiny_tokenizer.pad_token_id, padding_free=True)(rows)
    expected = [r["prompt_ids"] + c for r in rows for c in r["completion_ids"]]  # row-major (b, k)
    real = padded["attention_mask"].bool()
    assert [ids[m].tolist() for ids, m in zip(padded["input_ids"], real)] == expected
    assert packed["input_ids"][0].tolist() == padded["input_ids"][real].tolist()
    assert packed["completion_mask"][0].tolist() == padded["completion_mask"][real].tolist()
    assert packed["seq_lens"].tolist() == [len(s) for s in expected]
    assert padded["group_mask"].tolist() == [[True] * 3, [True, True, False], [True] * 3]
    counts = [[len(c) for c in r["completion_ids"]] + [0] * (3 - len(r["completion_ids"])) for r in rows]
    assert padded["completion_token_counts"].tolist() == counts
    assert (padded["completion_mask"].sum(1) == padded["completion_token_counts"][padded["group_mask"]]).all()
    for name in ("labels", "scores", "win_rates", "returns", "ref_logps"):
        assert torch.equal(padded[name], packed[name]) and padded[name].dtype == torch.float32
    assert padded["ref_logps"].tolist()[1] == [-10.0, -20.0, 0.0]  # masked entry is 0


def completion_logps_sum(model, batch):
    """(N,) summed completion log-probs per sequence, from either layout."""
    ids, mask = batch["input_ids"], batch["completion_mask"][:, 1:].bool()
    if "position_ids" in batch:
        logits = model(input_ids=ids, position_ids=batch["position_ids"], attention_mask=None, use_cache=False).logits
    else:
        logits = model(input_ids=ids, attention_mask=batch["attention_mask"], use_cache=False).logits
    token_logps = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    if "position_ids" not in batch:
        return (token_logps * mask).sum(-1)
    seq = torch.repeat_interleave(torch.arange(len(batch["seq_lens"])), batch["seq_lens"])[1:]
    sums = torch.zeros(len(batch["seq_lens"]), dtype=token_logps.dtype)
    return sums.index_add_(0, seq[mask[0]], token_logps[0][mask[0]])


def test_packed_and_padded_log_probs_match_on_a_real_model(tiny_tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tiny_tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=tiny_tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    # float64: the sums are ~100 in size, so fp32 round-off alone (~1e-5) would blur a 1e-5 comparison.
    model = LlamaForCausalLM._from_config(config, attn_implementation="sdpa").double().eval()
    rows = tokenized_rows(tiny_tokenizer)
    with torch.no_grad():
        padded = completion_logps_sum(model, PreferenceCollator(tiny_tokenizer.pad_token_id)(rows))
        packed = completion_logps_sum(model, PreferenceCollator(tiny_tokenizer.pad_token_id, padding_free=True)(rows))
        alone = torch.cat(
            [
                completion_logps_sum(
                    model,
                    PreferenceCollator(0, padding_free=True)([{"prompt_ids": r["prompt_ids"], "completion_ids": [c]}]),
                )
                for r in rows
                for c in r["completion_ids"]
            ]
        )  # each sequence on its own, no mask at all
    assert padded.shape == (8,) and (padded < 0).all()
    torch.testing.assert_close(packed, padded, atol=1e-5, rtol=0)
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=0)
    # Without position_ids the packed sequences would attend to each other: the check has teeth.
    ids = PreferenceCollator(0, padding_free=True)(rows)
    with torch.no_grad():
        leaked = completion_logps_sum(
            model,
            {
                **{k: v for k, v in ids.items() if k != "position_ids"},
                "attention_mask": torch.ones_like(ids["input_ids"]),
            },
        )
    assert not torch.allclose(leaked, padded, atol=1e-3)
    # In float32 (what training runs) the layouts agree to round-off.
    model.float()
    with torch.no_grad():
        padded32 = completion_logps_sum(model, PreferenceCollator(tiny_tokenizer.pad_token_id)(rows))
        packed32 = completion_logps_sum(model, PreferenceCollator(tiny_tokenizer.pad_token_id, padding_free=True)(rows))
    torch.testing.assert_close(packed32, padded32, atol=0, rtol=1e-6)


# Rows with images, collated with the tiny LLaVA processor (16 <image> tokens per image).
VQA = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which clips?"}]}]
CROP = {"role": "user", "content": "Please answer the question based on the original image and local detail image."}


@pytest.fixture(scope="module")
def llava():
    from tests.tiny import build_tiny_llava

    return build_tiny_llava()


@pytest.fixture(scope="module")
def vision_rows(llava, tmp_path_factory):
    """Two list rows, K = 2 and 3: row b's prompt shows image b, completion (b, k) the crop (b, k) (none for (1, 2))."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    colours = iter(["red", "green", "blue", "white", "black", "yellow", "purple"])
    rows = []
    for b, k in enumerate((2, 3)):
        names = [f"{b}_{j}.png" for j in range(k + 1)]
        for name in names:
            Image.new("RGB", (24, 20), next(colours)).save(folder / name)
        completions = [[{"role": "assistant", "content": f"box {j}"}, CROP, {"role": "assistant", "content": "72"}]
                       for j in range(k)]  # fmt: skip
        crops = [[str(folder / name)] for name in names[1:]]
        if k == 3:
            completions[2], crops[2] = [{"role": "assistant", "content": "no box"}], []
        rows.append({"prompt": VQA, "images": [str(folder / names[0])], "completions": completions,
                     "completion_images": crops})  # fmt: skip
    tokenized, _ = tokenize_dataset(load_preference_dataset(Dataset.from_list(rows)), llava[1], max_length=None)
    return tokenized.to_list()


def test_images_reach_their_sequences_in_both_layouts(llava, vision_rows):
    from align.data.images import load_image

    model, processor = llava
    padded = PreferenceCollator(PAD, processor=processor)(vision_rows)
    packed = PreferenceCollator(PAD, padding_free=True, processor=processor)(vision_rows)
    # (b, k) order: each sequence shows its prompt's image, then its crop
    order = [
        [row["images"][0], *refs] for row in vision_rows for refs in row["completion_images"]
    ]
    expected = torch.cat([processor.image_processor(images=[load_image(r) for r in refs], return_tensors="pt")
                          ["pixel_values"] for refs in order])  # fmt: skip
    assert expected.shape[0] == 9
    for out in (padded, packed):
        assert set(out["vision"]) == {"pixel_values"}
        torch.testing.assert_close(out["vision"]["pixel_values"], expected, rtol=0, atol=0)
    image_id = processor.image_token_id
    per_sequence = (padded["input_ids"] == image_id).sum(dim=1).tolist()
    assert per_sequence == [16 * len(refs) for refs in order]
    packed_ids = packed["input_ids"][0].split(packed["seq_lens"].tolist())
    assert [int((ids == image_id).sum()) for ids in packed_ids] == per_sequence
    assert not (padded["completion_mask"].bool() & (padded["input_ids"] == image_id)).any()
    # the model finds one image's features per run of image tokens
    with torch.no_grad():
        out = model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"], **padded["vision"])
    assert out.logits.shape[:2] == padded["input_ids"].shape


def test_batches_without_images_have_no_vision_inputs(llava, vision_rows):
    processor = llava[1]
    text_only = [{"prompt_ids": row["prompt_ids"], "completion_ids": row["completion_ids"][2:],
                  "assistant_masks": row["assistant_masks"][2:]} for row in vision_rows[1:]]  # fmt: skip
    with_images = [{**row, "images": [], "completion_images": [[]]} for row in text_only]
    for rows in (text_only, with_images):
        out = PreferenceCollator(PAD, processor=processor)(rows)
        assert "vision" not in out
        assert out.keys() == PreferenceCollator(PAD)(text_only).keys()


def test_an_image_token_marked_as_trained_is_refused(llava, vision_rows):
    bad = [dict(row) for row in vision_rows]
    mask = list(bad[1]["assistant_masks"][1])
    mask[bad[1]["completion_ids"][1].index(llava[1].image_token_id)] = 1
    bad[1]["assistant_masks"] = [bad[1]["assistant_masks"][0], mask, bad[1]["assistant_masks"][2]]
    with pytest.raises(ValueError, match=r"^batch row 1: completion 1: image placeholder tokens are marked as trained"):
        PreferenceCollator(PAD, processor=llava[1])(bad)
    with pytest.raises(ValueError, match=r"^batch row 0 has images but the collator has no processor to make model"):
        PreferenceCollator(PAD)(vision_rows)
