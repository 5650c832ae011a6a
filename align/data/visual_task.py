"""A seeded synthetic image task where only one region answers the question: UV-CoT's default prompts.

An image is a 128 × 128 white canvas on a 4 × 4 grid of 32 px cells. Three or four cells hold a 2 px
outline box, each in its own colour (red, green, blue, yellow); inside each box sits a 16 × 16 patch
of horizontal stripes, vertical stripes or a checkerboard (period 2 px, half the pixels black). The
question names one box's colour; the answer is its patch's pattern, one word. All three patterns
average to the same grey, so at the vision encoder's resolution (the whole image resized to 32 px,
4 image pixels per input pixel) they look alike, while a 32 px crop of the box shows them pixel for
pixel: the model has to pick the region before it can answer (the measured contrast is in
tests/data/test_visual_task.py).

A prompt row (the on-policy loop's input)::

    {"prompt": [{"role": "user", "content": [{"type": "image"},
                 {"type": "text", "text": "Which pattern is inside the red box? Please provide the bounding ..."}]}],
     "images": ["/abs/path/<layout hash>.png"],
     "question": "Which pattern is inside the red box?",
     "answer": "vertical",                          # what visual_answer_checker compares with
     "box": [0.5, 0.25, 0.75, 0.5]}                 # the box's cell, normalised (x1, y1, x2, y2)

The text is the question followed by :data:`~align.data.boxes.BOX_PROMPT` (which starts with its
space), as in the official data. A completion is UV-CoT's three turns
(:func:`~align.data.boxes.uvcot_completion`): the box as text, a user turn with the crop and
:data:`~align.data.boxes.ANSWER_PROMPT` followed by the question with no space (the official
joining), and the answer.

Train and test are disjoint by image: a layout's split is fixed by a hash of the layout (cells,
colours, patterns), not by the seed, so no seed's train set holds a test image; the seed only picks
which layouts are drawn and which box each question asks about. Images are rendered once into
``$ALIGN_CACHE_DIR/data/visual_patterns/`` (default ``~/.cache/align``) as PNG named by the layout's
hash, written to a temporary file and renamed into place, so concurrent processes never see a
half-written file; rows hold absolute paths, so every file a run writes stays JSON.

``builtin:visual_patterns`` (:func:`builtin_visual_patterns`) is 512 train / 256 test rows with seed 0;
``data/visual_task.py`` writes the same rows as JSONL with their images into a folder.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import re
import tempfile
from pathlib import Path

import numpy as np

from align.data.boxes import BOX_PROMPT, box_to_pixels, crop_image, format_box, uvcot_completion

__all__ = [
    "CANVAS",
    "CELL",
    "CELL_QUESTION_TEMPLATE",
    "COLOURS",
    "PATTERNS",
    "QUESTION_TEMPLATE",
    "answer_word",
    "builtin_visual_patterns",
    "check_answer",
    "render_layout",
    "visual_patterns",
    "warmup_row",
]

CANVAS, CELL, GRID, PATCH = 128, 32, 4, 16
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 25),
    "green": (20, 160, 40),
    "blue": (30, 60, 230),
    "yellow": (230, 200, 0),
}
PATTERNS = ("horizontal", "vertical", "checkerboard")
QUESTION_TEMPLATE = "Which pattern is inside the {colour} box?"
# The same question with the box named by its cell in words (``ask="cell"``): finding the region is then
# reading the question, not the image, which a model too small to locate colours can still learn.
CELL_QUESTION_TEMPLATE = "Which pattern is inside the box in row {row}, column {column}?"
ASK = ("colour", "cell")
# Part of every image's file name: bump it when the drawing changes, so no stale cached image is reused.
_RENDER_VERSION = "v1"
_SPLITS = {"train": "train", "test": "test", "eval": "test", "validation": "test"}

# (cell index 0-15 row-major, colour, pattern) per box, sorted by cell: one image.
Layout = tuple[tuple[int, str, str], ...]


def _cache_dir() -> Path:
    # The same root as align.models' built-in models; not imported from there, which would load torch.
    return Path(os.environ.get("ALIGN_CACHE_DIR", Path.home() / ".cache" / "align")).expanduser()


def _canonical_split(split: str) -> str:
    if split not in _SPLITS:
        raise ValueError(f"visual patterns have the splits 'train' and 'test' (alias 'eval', 'validation'), "
                         f"not {split!r}")
    return _SPLITS[split]


def _layout_key(layout: Layout) -> str:
    text = ";".join(f"{cell}:{colour}:{pattern}" for cell, colour, pattern in layout)
    return hashlib.sha256(f"{_RENDER_VERSION}|{text}".encode()).hexdigest()


def _split_of(layout: Layout, test_percent: int) -> str:
    """``"test"`` for about ``test_percent``% of layouts, fixed by a hash of the layout (not the seed)."""
    text = ";".join(f"{cell}:{colour}:{pattern}" for cell, colour, pattern in layout)
    digest = hashlib.sha256(text.encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") % 100 < test_percent else "train"


def _cell_box(cell: int) -> list[float]:
    """The cell's normalised (x1, y1, x2, y2); exact in binary, since cells are quarters of the canvas."""
    row, col = divmod(cell, GRID)
    return [col * CELL / CANVAS, row * CELL / CANVAS, (col + 1) * CELL / CANVAS, (row + 1) * CELL / CANVAS]


def _patch(pattern: str) -> np.ndarray:
    """A PATCH × PATCH mask of the black pixels: every other row, column, or both alternating."""
    yy, xx = np.mgrid[0:PATCH, 0:PATCH]
    black = {"horizontal": yy % 2 == 0, "vertical": xx % 2 == 0, "checkerboard": (xx + yy) % 2 == 0}
    return black[pattern]


def render_layout(layout: Layout):
    """The RGB ``PIL.Image`` of ``layout``: per box a 2 px outline 2 px inside its cell, and the
    pattern's 16 × 16 patch in the middle of the cell."""
    from PIL import Image

    canvas = np.full((CANVAS, CANVAS, 3), 255, dtype=np.uint8)
    for cell, colour, pattern in layout:
        row, col = divmod(cell, GRID)
        y0, x0 = row * CELL, col * CELL
        canvas[y0 + 2 : y0 + CELL - 2, x0 + 2 : x0 + CELL - 2] = COLOURS[colour]
        canvas[y0 + 4 : y0 + CELL - 4, x0 + 4 : x0 + CELL - 4] = 255
        margin = (CELL - PATCH) // 2
        patch = canvas[y0 + margin : y0 + margin + PATCH, x0 + margin : x0 + margin + PATCH]
        patch[_patch(pattern)] = 0
    return Image.fromarray(canvas, mode="RGB")


def _write_png(image, path: Path) -> Path:
    """Save ``image`` as PNG at ``path`` atomically (temporary file in the same folder, then ``os.replace``)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buffer.getvalue())
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; a shared cache should stay readable
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def _draw_layout(rng: random.Random) -> Layout:
    k = rng.choice((3, 4))
    cells = rng.sample(range(GRID * GRID), k)
    colours = rng.sample(list(COLOURS), k)
    return tuple(sorted((cell, colour, rng.choice(PATTERNS)) for cell, colour in zip(cells, colours)))


def visual_patterns(
    n: int, *, seed: int, split: str = "train", test_percent: int = 25, image_dir: str | os.PathLike | None = None,
    ask: str = "colour",
) -> list[dict]:  # fmt: skip
    """``n`` prompt rows (module docstring) of ``split``, deterministic in ``seed``, distinct images;
    the question names the box by its colour (``ask="colour"``) or by its cell (``"cell"``: row and
    column, 1 to 4 from the top left), with the same images, answers and boxes.

    Layouts are drawn from a stream seeded by ``seed`` and ``split`` and kept when their hash puts
    them in ``split`` (about ``test_percent``% of layouts are test) and they are new; the question
    asks about one of the layout's boxes, drawn from the same stream. Images go to ``image_dir``
    (default ``$ALIGN_CACHE_DIR/data/visual_patterns``), named by the layout's hash; one already
    there is not written again.
    """
    split = _canonical_split(split)
    if ask not in ASK:
        raise ValueError(f"ask must be one of {ASK}, got {ask!r}")
    if n < 0 or not 0 < test_percent < 100:
        raise ValueError(f"need n >= 0 and 0 < test_percent < 100, got n={n}, test_percent={test_percent}")
    folder = Path(image_dir if image_dir is not None else _cache_dir() / "data" / "visual_patterns").resolve()
    rng = random.Random(f"visual_patterns:{seed}:{split}")
    rows, seen = [], set()
    while len(rows) < n:
        layout = _draw_layout(rng)
        target = rng.choice(layout)  # drawn before the checks, so the stream does not depend on them
        if layout in seen or _split_of(layout, test_percent) != split:
            continue
        seen.add(layout)
        path = folder / f"{_layout_key(layout)[:20]}.png"
        if not path.exists():
            _write_png(render_layout(layout), path)
        cell, colour, pattern = target
        row, column = divmod(cell, GRID)
        question = (QUESTION_TEMPLATE.format(colour=colour) if ask == "colour"
                    else CELL_QUESTION_TEMPLATE.format(row=row + 1, column=column + 1))  # fmt: skip
        content = [{"type": "image"}, {"type": "text", "text": question + BOX_PROMPT}]
        rows.append({"prompt": [{"role": "user", "content": content}], "images": [str(path)], "question": question,
                     "answer": pattern, "box": _cell_box(cell)})  # fmt: skip
    return rows


def builtin_visual_patterns(split: str = "train", *, ask: str = "colour") -> list[dict]:
    """The ``builtin:visual_patterns`` prompt rows: 512 train / 256 test, seed 0 (``ask="cell"``:
    ``builtin:visual_patterns_cell``, the same images and boxes asked about by cell)."""
    split = _canonical_split(split)
    return visual_patterns(512 if split == "train" else 256, seed=0, split=split, ask=ask)


# -- answers and the labelled warm-up ---------------------------------------------------------------

_WORD = re.compile(r"[^\W_]+")


def answer_word(text: str) -> str:
    """The answer's first word, lowercased, without punctuation or markdown (``"**Vertical**."`` →
    ``"vertical"``); ``""`` when there is none."""
    match = _WORD.search(text)
    return match.group(0).lower() if match else ""


def check_answer(text: str, answer: str) -> bool:
    """Whether ``text``'s first word (:func:`answer_word`) is the reference ``answer``."""
    return answer_word(text) == answer.strip().lower()


def warmup_row(row: dict, *, min_half: int = 16, crop_dir: str | os.PathLike | None = None) -> dict:
    """A labelled single row for the supervised warm-up (the paper's labelled-fraction variant):
    ``row``'s prompt and image, the completion :func:`~align.data.boxes.uvcot_completion` with the
    true box (:func:`~align.data.boxes.format_box`) and answer, and ``completion_images`` = [the true
    box's crop] (:func:`~align.data.boxes.crop_image`, saved once beside the image or in ``crop_dir``)."""
    from PIL import Image

    image_path = row["images"][0]
    with Image.open(image_path) as image:  # reads the header only
        size = image.size
    folder = crop_dir if crop_dir is not None else Path(image_path).parent
    crop, _ = crop_image(image_path, box_to_pixels(row["box"], size), folder, min_half=min_half)
    return {
        "prompt": row["prompt"],
        "images": list(row["images"]),
        "completion": uvcot_completion(format_box(row["box"]), row["question"], row["answer"]),
        "completion_images": [crop],
    }
