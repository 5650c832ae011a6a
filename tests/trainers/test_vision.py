"""Vision-language models in the spine, on the tiny LLaVA (tests/tiny.py): per-completion images reach
the model, packed == padded, log-probs over completion text tokens only, the fused head, and the
trainer's processor, packing and reference paths."""

import json
import logging

import pytest
import torch
from PIL import Image
from transformers import AutoConfig, AutoModelForImageTextToText
from trl.trainer.utils import add_fused_lm_head

from align.attention import use_varlen_attention
from align.data import PreferenceCollator, prepare_preference_dataset
from align.data.boxes import BOX_PROMPT, format_box, uvcot_completion
from align.logps import completion_logps
from align.trainers import UVCoTConfig, UVCoTTrainer
from tests.tiny import build_tiny_llava, build_tiny_llava_dir

QUESTIONS = [
    ("Which pattern is inside the red box?", "horizontal", "vertical", (0.0, 0.0, 0.5, 0.5), (0.5, 0.5, 1.0, 1.0)),
    ("Which pattern is inside the blue box?", "checkerboard", "horizontal", (0.5, 0.0, 1.0, 0.5), (0.25, 0.25, 0.75, 0.75)),
    ("Which pattern is inside the green box?", "vertical", "checkerboard", (0.0, 0.5, 0.5, 1.0), (0.0, 0.0, 0.5, 0.5)),
    ("What is 7 times 8?", "56", "54", (0.25, 0.0, 0.75, 0.5), (0.5, 0.0, 1.0, 0.5)),
]  # fmt: skip


def write_image(path, seed: int, size: int = 40) -> str:
    """A seeded noise PNG (every seed looks different to the vision tower)."""
    g = torch.Generator().manual_seed(seed)
    Image.fromarray((torch.rand(size, size, 3, generator=g) * 255).byte().numpy()).save(path)
    return str(path)


def write_jsonl(rows: list[dict], path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def uvcot_rows(folder, n: int = 4, *, crop_seed: int = 100, scores=(0.0, -2.0)) -> list[dict]:
    """UV-CoT pairs: the prompt shows the image and asks for a box; each completion is [its box, the
    user turn showing its own crop, the answer] (``chosen_images`` / ``rejected_images``)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        question, good, bad, good_box, bad_box = QUESTIONS[i % len(QUESTIONS)]
        rows.append({
            "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question + BOX_PROMPT}]}],
            "chosen": uvcot_completion(format_box(good_box), question, good),
            "rejected": uvcot_completion(format_box(bad_box), question, bad),
            "images": [write_image(folder / f"image{i}.png", i)],
            "chosen_images": [write_image(folder / f"chosen{i}-{crop_seed}.png", crop_seed + 2 * i)],
            "rejected_images": [write_image(folder / f"rejected{i}-{crop_seed}.png", crop_seed + 2 * i + 1)],
            "scores": list(scores),
        })  # fmt: skip
    return rows


def uvcot_pairs(folder, **kwargs) -> str:
    """:func:`uvcot_rows` as a JSONL file in ``folder`` (its images beside it); returns the path."""
    return write_jsonl(uvcot_rows(folder, **kwargs), folder / "pairs.jsonl")


def without_images(rows: list[dict], path) -> str:
    """The same conversations as text (image parts and image columns removed), as a JSONL file."""

    def strip(messages):
        return [{**m, "content": "".join(p["text"] for p in m["content"] if p["type"] == "text")}
                if isinstance(m["content"], list) else m for m in messages]  # fmt: skip

    return write_jsonl([{k: strip(row[k]) for k in ("prompt", "chosen", "rejected")} for row in rows], path)


@pytest.fixture(scope="module")
def llava():
    model, processor = build_tiny_llava(seed=0)
    add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    assert use_varlen_attention(model)
    return model.eval(), processor


def tokenized(dataset, processor):
    rows, _ = prepare_preference_dataset(dataset, processor, kind="pair", max_length=512, name="test")
    return rows


def batch(rows, processor, packed: bool) -> dict:
    return PreferenceCollator(processor.tokenizer.pad_token_id, padding_free=packed, processor=processor)(list(rows))


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "padded"])
def test_changing_one_crop_changes_only_that_completion(llava, tmp_path, packed):
    """Rejected's crop of row 1 swapped for another image: every other sequence's log-prob is equal
    and that one moves, so each completion's own images reach the model at its own placeholders."""
    model, processor = llava
    rows = uvcot_rows(tmp_path)
    data = write_jsonl(rows, tmp_path / "pairs.jsonl")
    rows[1]["rejected_images"] = [write_image(tmp_path / "other.png", seed=999)]
    changed = write_jsonl(rows, tmp_path / "changed.jsonl")
    results = []
    for dataset in (data, changed):
        with torch.no_grad():
            results.append(completion_logps(model, batch(tokenized(dataset, processor), processor, packed))["logps_sum"])
    before, after = results
    moved = (before - after).abs()
    assert moved[3] > 1e-3  # sequences in (b, k) order: row 1's rejected is sequence 3
    torch.testing.assert_close(after[[0, 1, 2, 4, 5, 6, 7]], before[[0, 1, 2, 4, 5, 6, 7]], rtol=0, atol=1e-6)


def test_packed_equals_padded_with_images(llava, tmp_path):
    """Log-probs, entropies and every parameter's gradient agree between one packed row (attention per
    sequence) and the padded batch (TRL's fused head), vision tower and projector included."""
    model, processor = llava
    rows = tokenized(uvcot_pairs(tmp_path), processor)
    results = {}
    for packed in (True, False):
        model.zero_grad()
        out = completion_logps(model, batch(rows, processor, packed), entropy=True)
        out["logps_sum"].sum().backward()
        results[packed] = (out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    (packed, grad_packed), (padded, grad_padded) = results[True], results[False]
    for key in ("logps_sum", "token_logps", "token_entropy"):
        torch.testing.assert_close(packed[key], padded[key], rtol=1e-5, atol=1e-5, msg=key)
    assert torch.equal(packed["token_mask"], padded["token_mask"])
    assert grad_packed.keys() == grad_padded.keys()
    assert any(name.startswith("model.vision_tower") for name in grad_packed)
    for name in grad_packed:
        torch.testing.assert_close(grad_packed[name], grad_padded[name], rtol=1e-4, atol=1e-6, msg=name)
    model.zero_grad()


def test_token_counts_are_the_completion_text_tokens(llava, tmp_path):
    """The counted tokens are those of the same conversations without images (the box and answer
    turns), and no image token is ever a completion token."""
    model, processor = llava
    rows = uvcot_rows(tmp_path)
    data = write_jsonl(rows, tmp_path / "pairs.jsonl")
    text_rows = tokenized(without_images(rows, tmp_path / "text.jsonl"), processor.tokenizer)
    expected = PreferenceCollator(processor.tokenizer.pad_token_id, padding_free=False)(list(text_rows))
    for packed in (True, False):
        inputs = batch(tokenized(data, processor), processor, packed)
        image_tokens = inputs["input_ids"] == model.config.image_token_id
        assert image_tokens.sum() == 16 * 2 * 2 * len(rows)  # prompt image + own crop, per sequence
        assert not (inputs["completion_mask"].bool() & image_tokens).any()
        with torch.no_grad():
            counts = completion_logps(model, inputs)["token_counts"]
        assert torch.equal(counts, expected["completion_mask"].sum(1)), packed


def test_fused_head_sum_equals_a_manual_log_softmax(llava, tmp_path):
    """completion_logps (fused head, padded; LM head at kept positions, packed) equals
    Σ_t log_softmax(logits_{t−1})[y_t] over completion tokens from the plain forward's full logits."""
    model, processor = llava
    rows = tokenized(uvcot_pairs(tmp_path), processor)
    inputs = batch(rows, processor, packed=False)
    with torch.no_grad():
        logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], **inputs["vision"]).logits
        logps = logits[:, :-1].float().log_softmax(-1).gather(-1, inputs["input_ids"][:, 1:, None]).squeeze(-1)
        manual = (logps * inputs["completion_mask"][:, 1:]).sum(1)
        for packed in (False, True):
            got = completion_logps(model, batch(rows, processor, packed))["logps_sum"]
            torch.testing.assert_close(got, manual, rtol=1e-5, atol=1e-4)


# -- the trainer with a processor --------------------------------------------------------------------


def config(tmp_path, **overrides):
    base = dict(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, per_device_eval_batch_size=4, max_steps=2,
        learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to="none", max_length=512, seed=0,
        disable_tqdm=True,
    )  # fmt: skip
    return UVCoTConfig(**{**base, **overrides})


def lora():
    from peft import LoraConfig

    return LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0, task_type="CAUSAL_LM")


def test_trainer_loads_a_vlm_by_name_with_its_processor(tmp_path):
    from transformers import LlavaForConditionalGeneration, LlavaProcessor

    folder = build_tiny_llava_dir(tmp_path / "tiny-llava")
    trainer = UVCoTTrainer(str(folder), config(tmp_path), uvcot_pairs(tmp_path / "data"))
    assert isinstance(trainer.model, LlavaForConditionalGeneration)
    assert isinstance(trainer.processing_class, LlavaProcessor)
    assert trainer.args.ddp_find_unused_parameters is True  # a batch without images trains no tower
    assert trainer.padding_free and trainer.data_collator.padding_free


@pytest.mark.parametrize("reference", ["model", "adapter", "precomputed"])
def test_reference_strategies_agree_on_images(tmp_path, reference):
    """At step 0 the reference is the policy itself, whichever way it is computed: the DPO term is
    exactly log 2, so the loss is w_dpo·log 2 + w_sft·(−log π(y_w)), the same for all three."""
    model, processor = build_tiny_llava(seed=0)
    peft = lora() if reference == "adapter" else None
    data = uvcot_pairs(tmp_path / "data")
    trainer = UVCoTTrainer(model, config(tmp_path, reference=reference), data, data, processor, peft_config=peft)
    metrics = trainer.evaluate()
    assert metrics["eval_rewards/margins"] == pytest.approx(0.0, abs=1e-5)
    assert metrics["eval_dpo"] == pytest.approx(0.6931472, abs=1e-5)
    model, _ = build_tiny_llava(seed=0)
    add_fused_lm_head(model)
    with torch.no_grad():
        policy = completion_logps(model, batch(tokenized(data, processor), processor, packed=False))["logps_sum"]
    assert metrics["eval_sft"] == pytest.approx(-policy[0::2].mean().item(), rel=1e-5)
    assert metrics["eval_loss"] == pytest.approx(0.1 * 0.6931472 - 0.9 * policy[0::2].mean().item(), rel=1e-5)


def test_precomputed_reference_on_images_is_cached_by_the_images(tmp_path, caplog):
    """Precomputed reference log-probs on an image dataset: cached under the dataset's fingerprint
    and reused by a second trainer; another crop is another dataset (a new cache entry) and other
    values for the row it changed."""
    caplog.set_level(logging.INFO, logger="align.trainers.base")
    rows = uvcot_rows(tmp_path / "data")
    data = write_jsonl(rows, tmp_path / "data" / "pairs.jsonl")
    rows[2]["chosen_images"] = [write_image(tmp_path / "data" / "other.png", seed=999)]
    changed = write_jsonl(rows, tmp_path / "data" / "changed.jsonl")
    columns = []
    for dataset in (data, data, changed):
        model, processor = build_tiny_llava(seed=0)
        trainer = UVCoTTrainer(model, config(tmp_path, reference="precomputed"), dataset, None, processor)
        columns.append(trainer.train_dataset["ref_logps"])
    assert len(list((tmp_path / "out" / "ref_logps").glob("*.json"))) == 2
    assert "reusing precomputed reference log-probs" in caplog.text
    assert columns[0] == columns[1]
    assert [a == b for a, b in zip(columns[0], columns[2])] == [True, True, False, True]
    assert columns[0][2][1] == columns[2][2][1]  # the rejected of that row kept its crop


def test_reference_none_is_refused_for_uvcot(tmp_path):
    model, processor = build_tiny_llava(seed=0)
    with pytest.raises(ValueError, match="needs reference log-probs"):
        UVCoTTrainer(model, config(tmp_path, reference="none"), uvcot_pairs(tmp_path / "data"), None, processor)


def test_models_that_cannot_pack_train_padded_with_one_warning(tmp_path, caplog):
    """A Qwen2-VL model (3-D mRoPE positions) asked to pack trains on padded rows, saying why once;
    LLaVA packs."""
    from align.attention import VARLEN_SDPA

    _, processor = build_tiny_llava(seed=0)
    tiny = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=len(processor.tokenizer))  # fmt: skip
    qwen = AutoConfig.for_model(
        "qwen2_vl", text_config={**tiny, "rope_parameters": {"rope_type": "default", "mrope_section": [2, 1, 1]}},
        vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=4),
    )  # fmt: skip
    caplog.set_level(logging.WARNING, logger="align.trainers.base")
    trainer = UVCoTTrainer(AutoModelForImageTextToText.from_config(qwen), config(tmp_path), None, None, processor)
    assert not trainer.padding_free and not trainer.data_collator.padding_free
    assert trainer.model.config._attn_implementation != VARLEN_SDPA
    padded = [r.getMessage() for r in caplog.records if "padded rows" in r.getMessage()]
    assert len(padded) == 1 and "mRoPE" in padded[0]
    caplog.clear()
    trainer = UVCoTTrainer(build_tiny_llava(seed=0)[0], config(tmp_path), None, None, processor)
    assert trainer.padding_free and trainer.model.config.text_config._attn_implementation == VARLEN_SDPA
    assert not [r for r in caplog.records if "padded rows" in r.getMessage()]


def test_gradient_accumulation_invariance_with_images(tmp_path):
    """One optimizer step on 4 image pairs: batch 4 × 1 step equals batch 1 × 4 accumulation steps,
    the vision tower's weights included (each micro-batch carries only its own rows' images)."""
    data = uvcot_pairs(tmp_path / "data")
    results = []
    for batch_size, accumulation in ((4, 1), (1, 4)):
        model, processor = build_tiny_llava(seed=0)
        args = config(
            tmp_path, max_steps=1, per_device_train_batch_size=batch_size, gradient_accumulation_steps=accumulation,
            optim="sgd", learning_rate=0.5, lr_scheduler_type="constant", max_grad_norm=1e9,
        )  # fmt: skip
        trainer = UVCoTTrainer(model, args, data, None, processor)
        trainer.train()
        results.append({n: p.detach().clone() for n, p in trainer.model.named_parameters()})
    initial = build_tiny_llava(seed=0)[0].state_dict()
    tower = [n for n in results[0] if n.startswith("model.vision_tower")]
    assert max((results[0][n] - initial[n]).abs().max().item() for n in tower) > 1e-4
    for name in results[0]:
        torch.testing.assert_close(results[0][name], results[1][name], rtol=0, atol=1e-6, msg=name)
