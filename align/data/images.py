"""Images in preference data: processors, image values, placeholders in messages, the model's image inputs.

An *image value* is a path, raw encoded bytes, a ``PIL.Image.Image`` or a ``{"bytes", "path"}`` dict
(``datasets.Image``'s storage; the bytes win when both are set). Loaded rows hold the dict form
(:mod:`align.data.formats`). A message's ``content`` is a string or a list of parts
``{"type": "text", "text": ...}`` / ``{"type": "image"}`` (TRL's multimodal convention);
:func:`fill_images` puts the values into the image parts, which is what a processor's
``apply_chat_template`` reads to render, expand and process them.

The one rule for the image inputs of a batch (:func:`vision_inputs`): the images of N sequences,
flattened in sequence order and within a sequence in placeholder order. Every supported model
scatters image features into the image-token positions in row-major token order, so this order is
right for a padded batch (row n = sequence n) and a packed one (the N sequences in one row) alike.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from typing import Any

__all__ = [
    "fill_images",
    "image_token_ids",
    "is_processor",
    "load_image",
    "message_images",
    "text_tokenizer",
    "vision_inputs",
]


def is_processor(processing_class: Any) -> bool:
    """Whether ``processing_class`` is a transformers processor (a ``ProcessorMixin``: a tokenizer plus an
    image processor), as opposed to a plain tokenizer."""
    from transformers import ProcessorMixin

    return isinstance(processing_class, ProcessorMixin)


def text_tokenizer(processing_class: Any) -> Any:
    """The tokenizer of a processor; a tokenizer itself otherwise (pad, eos and decode live there)."""
    return processing_class.tokenizer if is_processor(processing_class) else processing_class


def image_token_ids(processing_class: Any) -> list[int]:
    """The ids a processor expands image (and video) placeholders into; [] for a tokenizer."""
    if not is_processor(processing_class):
        return []
    ids = (*processing_class.image_token_ids, *processing_class.video_token_ids)
    return [i for i in ids if i is not None]


def load_image(value: Any):
    """``value`` (any image value, module docstring) as an RGB ``PIL.Image.Image``, fully read.

    The last step is transformers' ``load_image`` (EXIF orientation applied, then RGB), what a processor's
    ``apply_chat_template`` does to a path: rendering and :func:`vision_inputs` see the same pixels and size."""
    from PIL import Image
    from transformers.image_utils import load_image as hf_load_image

    if isinstance(value, Mapping):
        value = value.get("bytes") if value.get("bytes") is not None else value.get("path")
    if isinstance(value, Image.Image):
        return hf_load_image(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = io.BytesIO(bytes(value))
    elif not isinstance(value, (str, os.PathLike)):
        raise TypeError(
            f"an image must be a path, bytes, a PIL image or a {{'bytes', 'path'}} dict, got {type(value).__name__}"
        )
    with Image.open(value) as image:
        return hf_load_image(image)


def _parts(message: Mapping) -> list:
    content = message.get("content")
    return content if isinstance(content, list) else []


def _is_image_part(part: Any) -> bool:
    return isinstance(part, Mapping) and part.get("type") == "image"


def fill_images(messages: list[dict], images: list | None, *, name: str = "prompt") -> list[dict]:
    """A copy of ``messages`` whose image parts are ``{"type": "image", "image": value}``, filled from
    ``images`` in order; raises ``ValueError`` starting with ``name`` when the counts differ.

    Messages with no image part at all get ``len(images)`` image parts at the start of their first user
    message (``trl.data_utils.prepare_multimodal_messages``' rule). Content then becomes a list of parts
    throughout (strings → text parts), and keys that are None (Arrow's filler for absent keys) are
    dropped from the parts. Without images and image parts, the messages are returned unchanged (copied).
    """
    from trl.data_utils import prepare_multimodal_messages

    images = list(images or [])
    messages = [dict(message) for message in messages]
    has_parts = any(_is_image_part(part) for message in messages for part in _parts(message))
    if not images and not has_parts:
        return messages
    if images and not has_parts:
        first_user = next((i for i, message in enumerate(messages) if message["role"] == "user"), None)
        if first_user is None:
            raise ValueError(f"{name}: {len(images)} image(s) given but no user message to show them in")
        content = messages[first_user]["content"]
        text = [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
        messages[first_user]["content"] = [{"type": "image"} for _ in images] + text
    for message in messages:
        # All content as parts, so TRL's helper below only counts and fills (it inserts images into string
        # content, which would put them a second time into a later user turn).
        if isinstance(message.get("content"), str):
            message["content"] = [{"type": "text", "text": message["content"]}]
        elif isinstance(message.get("content"), list):
            message["content"] = [{k: v for k, v in part.items() if v is not None} for part in message["content"]]
    try:
        return prepare_multimodal_messages(messages, images)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from err


def message_images(messages: list[dict]) -> list:
    """The image values held by the image parts of ``messages``, in order."""
    return [
        part["image"]
        for message in messages
        for part in _parts(message)
        if _is_image_part(part) and part.get("image") is not None
    ]


def vision_inputs(processing_class: Any, images_per_sequence: list[list], input_ids) -> dict:
    """The image-side model inputs for N sequences: ``images_per_sequence[n]`` are sequence n's image values in
    placeholder order, ``input_ids`` the batch they go with ((N, L) padded or (1, T) packed).

    The processor's own image processing (``processor(images=...)``, its defaults included) on the images
    flattened in sequence order (module docstring): LLaVA gives ``pixel_values`` (N_img, 3, H, W), Qwen2-VL
    adds ``image_grid_thw``. A processor that asks for ``mm_token_type_ids`` (Qwen2.5-VL: its 3-D positions
    need them) gets them built from ``input_ids``: 1 on image tokens, 2 on video tokens, 0 elsewhere, pads
    included. ``{}`` when no sequence has an image.
    """
    import torch

    if not any(images_per_sequence):
        return {}
    images = [[load_image(value) for value in sequence] for sequence in images_per_sequence]
    out = dict(processing_class(images=images, return_tensors="pt"))
    if getattr(processing_class, "return_mm_token_type_ids", False):
        types = processing_class.create_mm_token_type_ids(input_ids.tolist())
        out["mm_token_type_ids"] = torch.tensor(types, dtype=torch.long)
    return out
