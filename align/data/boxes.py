"""Boxes for UV-CoT (Zhao et al. 2025): the region a model proposes, parsed, mapped to pixels, cropped.

The rules follow the official code (kesenzhao/UV-CoT, ``cropwithbbox`` and the box parsing in
``muffin/train/train_utils.py`` and ``muffin/llava15_gen_data_next.py``), so data made here matches
data made there; where that code depends on a model's conventions the convention is an option.

- :func:`parse_box`: the numbers of the answer before any ``#``, by the official pattern
  ``[-+]?\\d*\\.\\d+`` (decimals only: "0.2" and ".5" match, "2" does not); exactly four give a box,
  anything else None (the caller falls back to :data:`FALLBACK_BOX` and counts it). ``integers=True``
  also reads whole numbers, for models that answer in integer pixels.
- :func:`box_to_pixels`: a box whose four values sum below 5 is normalised and scaled by
  L = max(W, H); pixels are then in the frame of the image padded to an L × L square (LLaVA's
  ``image_aspect_ratio: pad``), so the padding offset o = (L − S) // 2 on the short side S is
  subtracted (clamped at 0), for pixel boxes too, as the official code does;
  ``padded_square=False`` skips it for processors that do not pad.
- :func:`crop_region`: the square around the box centre c = ((x1 + x2) // 2, (y1 + y2) // 2) with
  half-side h = max((x2 − x1) // 2, (y2 − y1) // 2, ``min_half``), shifted right/down to start inside
  the image, then left/up to end inside it, then clamped to [0, W] × [0, H] (so an image smaller than
  2h on a side gives a narrower crop). ``min_half`` keeps the crop at least as large as the vision
  encoder's input: 168 for a 336 px CLIP (the official training data), 112 for 224 px (the official
  evaluation loader).
- :func:`iou`: intersection over union of two (x1, y1, x2, y2) boxes; 0 when the union is empty.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "ANSWER_PROMPT",
    "BOX_PROMPT",
    "FALLBACK_BOX",
    "box_question",
    "box_to_pixels",
    "crop_image",
    "crop_region",
    "format_box",
    "iou",
    "parse_box",
    "uvcot_completion",
]

# Appended to the question in the first turn (official data, e.g. cot_one/viscot_363k_rlhf_30.jsonl).
BOX_PROMPT = " Please provide the bounding box coordinate of the region that can help you answer the question better."
# Opens the second turn, which shows the original image and the crop; the question follows with no space.
ANSWER_PROMPT = "Please answer the question based on the original image and local detail image."
# The official replacement for a box that does not parse into four numbers: the centre of the image.
FALLBACK_BOX = (0.25, 0.25, 0.75, 0.75)

_DECIMALS = re.compile(r"[-+]?\d*\.\d+")
_NUMBERS = re.compile(r"[-+]?(?:\d*\.\d+|\d+)")

Box = tuple[float, float, float, float]


def parse_box(text: str, *, integers: bool = False) -> Box | None:
    """The box in a model's answer (module docstring), or None when it does not hold exactly four numbers."""
    numbers = (_NUMBERS if integers else _DECIMALS).findall(text.split("#")[0])
    return tuple(float(n) for n in numbers) if len(numbers) == 4 else None  # type: ignore[return-value]


def box_to_pixels(box: Sequence[float], size: tuple[int, int], *, padded_square: bool = True) -> Box:
    """``box`` (normalised when its values sum below 5, else pixels) in pixels of the ``size`` = (W, H) image."""
    width, height = size
    x1, y1, x2, y2 = (float(v) for v in box)
    if x1 + y1 + x2 + y2 < 5:
        scale = max(width, height)
        x1, y1, x2, y2 = x1 * scale, y1 * scale, x2 * scale, y2 * scale
    if padded_square:
        offset = abs(width - height) // 2
        if width > height:
            y1, y2 = max(0.0, y1 - offset), max(0.0, y2 - offset)
        else:
            x1, x2 = max(0.0, x1 - offset), max(0.0, x2 - offset)
    return x1, y1, x2, y2


def crop_region(box_px: Sequence[float], size: tuple[int, int], *, min_half: int = 168) -> Box:
    """The (left, upper, right, lower) pixel region to crop around ``box_px`` (module docstring), as
    ``PIL.Image.crop`` takes it."""
    if min_half < 1:
        raise ValueError(f"min_half must be a positive number of pixels, got {min_half}")
    width, height = size
    x1, y1, x2, y2 = box_px
    cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
    half = max((x2 - x1) // 2, (y2 - y1) // 2, min_half)
    cx, cy = cx + max(0, half - cx), cy + max(0, half - cy)  # starts inside the image
    cx, cy = cx - max(0, cx + half - width), cy - max(0, cy + half - height)  # ends inside it
    return max(0, cx - half), max(0, cy - half), min(width, cx + half), min(height, cy + half)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """|a ∩ b| / |a ∪ b| for (x1, y1, x2, y2) boxes; a reversed box has no area; 0 when the union is empty."""
    def area(x1, y1, x2, y2):
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)

    inter = area(max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
    union = area(*a) + area(*b) - inter
    return inter / union if union > 0 else 0.0


def format_box(box: Sequence[float]) -> str:
    """A normalised box as a model should write it: ``[0.50, 0.25, 0.75, 0.50]`` (two decimals, which
    the official decimals-only pattern of :func:`parse_box` reads back)."""
    return "[" + ", ".join(f"{v:.2f}" for v in box) + "]"


def uvcot_completion(box_text: str, question: str, answer: str) -> list[dict]:
    """UV-CoT's completion: the region as text, the user turn showing its crop (an image part, filled
    by the completion's image) with :data:`ANSWER_PROMPT` and the question joined with no space (the
    official joining), and the answer. Only the two assistant turns are trained."""
    return [
        {"role": "assistant", "content": box_text},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": ANSWER_PROMPT + question}]},
        {"role": "assistant", "content": answer},
    ]


def crop_image(
    image_path: str | os.PathLike, box_px: Sequence[float], folder: str | os.PathLike, *, min_half: int
) -> tuple[str, Box]:
    """Crop ``image_path`` around ``box_px`` (pixels, :func:`box_to_pixels`) by :func:`crop_region` and
    save it as PNG in ``folder``, named by a hash of the image's path and the region: a pure function
    of its inputs, written once (to a temporary file, then renamed), so resumed stages and concurrent
    processes agree on the file. Returns (the crop's absolute path, the pixel region)."""
    from PIL import Image

    with Image.open(image_path) as image:
        image = image.convert("RGB")
    region = crop_region(box_px, image.size, min_half=min_half)
    key = hashlib.sha1(f"{os.path.abspath(image_path)}|{[int(v) for v in region]}".encode()).hexdigest()[:20]
    path = Path(folder).resolve() / f"{key}.png"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{key}.{os.getpid()}.tmp.png")
        image.crop(tuple(int(v) for v in region)).save(tmp)
        os.replace(tmp, path)
    return str(path), region


def box_question(prompt: str | list[dict]) -> str:
    """The question a turn-1 prompt asks: its first user message's text (text parts joined), without
    :data:`BOX_PROMPT` at its end."""
    if isinstance(prompt, str):
        text = prompt
    else:
        user = next((m for m in prompt if m.get("role") == "user"), None)
        content = user.get("content", "") if user else ""
        text = content if isinstance(content, str) else "".join(
            part.get("text") or "" for part in content if part.get("type") == "text"
        )
    return text.removesuffix(BOX_PROMPT)
