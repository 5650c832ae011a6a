"""Images in rows and batches (align.data.images) and the renderer with a processor, on the tiny LLaVA processor
(16 ``<image>`` tokens per image, CLIP image processor at 32 px)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from align.data.images import (
    fill_images,
    image_token_ids,
    is_processor,
    load_image,
    message_images,
    text_tokenizer,
    vision_inputs,
)
from align.data.render import assistant_mask, chat_ids, prompt_ids
from tests.tiny import build_tiny_llava

TOKENS_PER_IMAGE = 16
QUESTION = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which clips?"}]}]
# UV-CoT's completion: the box, then the crop shown with the question again, then the answer.
COMPLETION = [
    {"role": "assistant", "content": "[0.25, 0.25, 0.75, 0.75]"},
    {"role": "user", "content": "Please answer the question based on the original image and local detail image."},
    {"role": "assistant", "content": "The answer is 72."},
]


@pytest.fixture(scope="module")
def processor():
    return build_tiny_llava()[1]


def picture(seed: int, size: tuple[int, int] = (40, 30)) -> Image.Image:
    """A deterministic noise image: different seeds give different pixels after resizing."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=generator, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy(), "RGB")


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_processor_and_tokenizer_are_told_apart(processor):
    assert is_processor(processor) and not is_processor(processor.tokenizer)
    assert text_tokenizer(processor) is processor.tokenizer
    assert text_tokenizer(processor.tokenizer) is processor.tokenizer
    assert image_token_ids(processor) == [processor.tokenizer.convert_tokens_to_ids("<image>")]
    assert image_token_ids(processor.tokenizer) == []


def test_every_image_value_loads_to_the_same_rgb_pixels(tmp_path):
    image = picture(0)
    path = tmp_path / "a.png"
    image.save(path)
    grey = image.convert("L")  # converted to RGB on load
    expected = np.asarray(image)
    dicts = ({"bytes": png(image), "path": None}, {"bytes": None, "path": str(path)})
    for value in (image, png(image), str(path), path, *dicts):
        loaded = load_image(value)
        assert loaded.mode == "RGB" and np.array_equal(np.asarray(loaded), expected), type(value)
    assert load_image(grey).mode == "RGB"
    with pytest.raises(TypeError, match="an image must be a path, bytes"):
        load_image(3)


def test_fill_images_fills_placeholders_in_order():
    a, b = picture(0), picture(1)
    content = [{"type": "image", "text": None}, {"type": "text", "text": "x"}, {"type": "image"}]
    messages = [{"role": "user", "content": content}]
    filled = fill_images(messages, [a, b])
    expected = [{"type": "image", "image": a}, {"type": "text", "text": "x"}, {"type": "image", "image": b}]
    assert filled[0]["content"] == expected
    assert message_images(filled) == [a, b]
    assert messages[0]["content"][0] == {"type": "image", "text": None}  # the input is not changed
    with pytest.raises(ValueError, match=r"^completions\[1\]: Number of images provided \(1\) does not match .*\(2\)"):
        fill_images(messages, [a], name="completions[1]")


def test_images_without_placeholders_go_before_the_first_user_message():
    """TRL's rule, per part: for UV-CoT's completion that is the crop's user turn, not the box's assistant turn."""
    crop = picture(2)
    filled = fill_images(COMPLETION, [crop], name="completions[0]")
    assert filled[0]["content"] == [{"type": "text", "text": COMPLETION[0]["content"]}]
    assert filled[1]["content"][0] == {"type": "image", "image": crop}
    assert filled[1]["content"][1] == {"type": "text", "text": COMPLETION[1]["content"]}
    assert message_images(filled) == [crop]
    with pytest.raises(ValueError, match="no user message"):
        fill_images(COMPLETION[:1], [crop], name="completions[0]")


def test_messages_without_images_stay_as_they_are():
    assert fill_images(COMPLETION, []) == COMPLETION
    assert message_images(COMPLETION) == []


def test_vision_inputs_follow_the_sequence_order(processor):
    """pixel_values row i is the i-th image of the sequences flattened in order, whatever the value's form."""
    a, b, c = picture(0), picture(1), picture(2)
    single = {id(x): processor.image_processor(images=[x], return_tensors="pt")["pixel_values"][0] for x in (a, b, c)}
    ids = torch.zeros(3, 4, dtype=torch.long)
    out = vision_inputs(processor, [[a], [], [png(b), {"bytes": png(c), "path": None}]], ids)
    assert set(out) == {"pixel_values"}
    assert out["pixel_values"].shape == (3, 3, 32, 32)
    for row, image in zip(out["pixel_values"], (a, b, c)):
        torch.testing.assert_close(row, single[id(image)])
    assert vision_inputs(processor, [[], []], ids) == {}


def test_vision_inputs_builds_mm_token_type_ids_when_the_processor_asks(processor):
    image_id = image_token_ids(processor)[0]
    ids = torch.tensor([[5, image_id, image_id, 7], [image_id, 3, 0, 0]])
    processor.return_mm_token_type_ids = True
    try:
        out = vision_inputs(processor, [[picture(0)], [picture(1)]], ids)
    finally:
        del processor.return_mm_token_type_ids  # back to the class default (False)
    assert out["mm_token_type_ids"].tolist() == [[0, 1, 1, 0], [1, 0, 0, 0]]


def test_processor_renders_images_into_their_token_runs(processor):
    prompt = fill_images(QUESTION, [picture(0)])
    completion = fill_images(COMPLETION, [picture(1)], name="completions[0]")
    ids = prompt_ids(processor, prompt)
    full = chat_ids(processor, prompt + completion)
    image_id = image_token_ids(processor)[0]
    assert full[: len(ids)] == ids
    assert ids.count(image_id) == TOKENS_PER_IMAGE and full.count(image_id) == 2 * TOKENS_PER_IMAGE
    # text-only conversations render as the tokenizer renders them
    text = [{"role": "user", "content": "What is 7 times 8?"}]
    assert prompt_ids(processor, text) == prompt_ids(processor.tokenizer, text)
    assert prompt_ids(processor, "plain text") == prompt_ids(processor.tokenizer, "plain text")


def test_assistant_mask_with_a_processor_trains_the_model_turns_only(processor):
    prompt = fill_images(QUESTION, [picture(0)])
    completion = fill_images(COMPLETION, [picture(1)], name="completions[0]")
    start = len(prompt_ids(processor, prompt))
    full = chat_ids(processor, prompt + completion)
    mask = assistant_mask(processor, prompt, completion, full, start)
    completion_ids = full[start:]
    image_id = image_token_ids(processor)[0]
    assert all(m == 0 for m, t in zip(mask, completion_ids) if t == image_id)
    decode = processor.tokenizer.decode
    runs, current = [], []
    for m, t in zip(mask, completion_ids):
        if m:
            current.append(t)
        elif current:
            runs, current = runs + [current], []
    runs += [current] if current else []
    assert [decode(r) for r in runs] == ["[0.25, 0.25, 0.75, 0.75]<|im_end|>\n", "The answer is 72.<|im_end|>\n"]


def test_a_processor_without_chat_template_is_named(processor):
    template = processor.chat_template
    processor.chat_template = None
    try:
        with pytest.raises(ValueError, match="the processor has no chat template"):
            prompt_ids(processor, QUESTION)
    finally:
        processor.chat_template = template


def test_image_values_of_every_form_render_alike(processor, tmp_path):
    """A processor is handed PIL images for bytes and {bytes, path} values (it reads paths and PIL images only)."""
    image = picture(3)
    image.save(tmp_path / "a.png")
    ids = {
        kind: prompt_ids(processor, fill_images(QUESTION, [value]))
        for kind, value in (("pil", image), ("path", str(tmp_path / "a.png")), ("bytes", png(image)),
                            ("dict", {"bytes": None, "path": str(tmp_path / "a.png")}))
    }  # fmt: skip
    assert len(set(map(tuple, ids.values()))) == 1


def test_exif_orientation_is_applied_as_transformers_does(tmp_path):
    from transformers.image_utils import load_image as hf_load_image

    image = picture(4, size=(40, 20))
    exif = image.getexif()
    exif[0x0112] = 6  # rotated 90° clockwise: the loaded image is 20 × 40
    image.save(tmp_path / "r.jpg", exif=exif)
    loaded = load_image(str(tmp_path / "r.jpg"))
    assert loaded.size == (20, 40) == hf_load_image(str(tmp_path / "r.jpg")).size
    assert load_image((tmp_path / "r.jpg").read_bytes()).size == (20, 40)
