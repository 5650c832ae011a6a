"""UV-CoT's box rules on hand-derived numbers: parsing (decimals only, text after '#' ignored, exactly
four numbers), normalised vs pixel boxes in the padded-square frame, the crop's minimum half-size,
shifts at the borders and clamping on small images, and IoU."""

from pathlib import Path

import pytest

from align.data.boxes import FALLBACK_BOX, box_to_pixels, crop_region, iou, parse_box


@pytest.mark.parametrize(
    "text, integers, expected",
    [
        ("[0.12, 0.30, 0.56, 0.78]", False, (0.12, 0.30, 0.56, 0.78)),
        ("The region is .5, .25, -0.75, 1.0.", False, (0.5, 0.25, -0.75, 1.0)),
        ("[0.1, 0.2, 0.3, 0.4] # but 0.9 is also nice", False, (0.1, 0.2, 0.3, 0.4)),  # after '#': ignored
        ("[0.1, 0.2, 0.3]", False, None),  # three numbers
        ("[0.1, 0.2, 0.3, 0.4, 0.5]", False, None),  # five
        ("[10, 20, 300, 400]", False, None),  # integers are not read by the official pattern
        ("[10, 20, 300, 400]", True, (10.0, 20.0, 300.0, 400.0)),
        ("[10, 20.5, 300, 400]", False, None),  # one decimal among integers: one number found
        ("no box at all", False, None),
        ("", False, None),
    ],
)
def test_parse_box(text, integers, expected):
    assert parse_box(text, integers=integers) == expected


def test_normalised_and_pixel_boxes_in_the_padded_square():
    # 640 × 480: L = 640, the short side is padded by (640 - 480) // 2 = 80 above and below
    assert box_to_pixels(FALLBACK_BOX, (640, 480)) == (160, 80, 480, 400)
    assert box_to_pixels((100, 100, 200, 200), (640, 480)) == (100, 20, 200, 120)  # pixels: offset too
    assert box_to_pixels((100, 50, 200, 60), (640, 480)) == (100, 0, 200, 0)  # clamped at 0
    # 480 × 640: the offset is on x
    assert box_to_pixels(FALLBACK_BOX, (480, 640)) == (80, 160, 400, 480)
    assert box_to_pixels(FALLBACK_BOX, (640, 480), padded_square=False) == (160, 160, 480, 480)
    assert box_to_pixels((0.5, 0.25, 0.75, 0.5), (128, 128)) == (64, 32, 96, 64)  # square: no offset
    # the sum decides: 1.2 + 1.2 + 1.3 + 1.3 = 5.0 is read as pixels
    assert box_to_pixels((1.2, 1.2, 1.3, 1.3), (640, 640)) == (1.2, 1.2, 1.3, 1.3)


def test_crop_regions():
    # a small central box: the square of half-side 168 around its centre (320, 240)
    assert crop_region((160, 80, 480, 400), (640, 480)) == (152, 72, 488, 408)
    # at the top-left corner: shifted right and down to start at 0
    assert crop_region((0, 0, 10, 10), (640, 480)) == (0, 0, 336, 336)
    # at the bottom-right corner: shifted left and up to end at the border
    assert crop_region((630, 470, 640, 480), (640, 480)) == (304, 144, 640, 480)
    # a box larger than the minimum: half-side max(320, 240) = 320, then clamped to the image
    assert crop_region((0, 0, 640, 480), (640, 480)) == (0, 0, 640, 480)
    # an image smaller than 2·168 on both sides: the whole image
    assert crop_region((50, 20, 60, 30), (200, 100)) == (0, 0, 200, 100)
    # a reversed (zero-area) box still gives the minimum square around its midpoint (300, 240)
    assert crop_region((320, 260, 280, 220), (640, 480)) == (132, 72, 468, 408)
    # the tiny task's rule: a 32 px cell of a 128 px image with min_half 16 is cropped exactly
    assert crop_region((64, 32, 96, 64), (128, 128), min_half=16) == (64, 32, 96, 64)
    with pytest.raises(ValueError, match="min_half must be a positive"):
        crop_region((0, 0, 1, 1), (10, 10), min_half=0)


def test_iou():
    assert iou((0, 0, 2, 2), (0, 0, 2, 2)) == 1.0
    assert iou((0, 0, 2, 2), (1, 0, 3, 2)) == pytest.approx(2 / 6)
    assert iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0
    assert iou((0, 0, 1, 1), (1, 0, 2, 1)) == 0.0  # touching edges
    assert iou((2, 2, 0, 0), (0, 0, 2, 2)) == 0.0  # a reversed box has no area
    assert iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0  # empty union


def test_format_box_reads_back_through_the_official_pattern():
    from align.data.boxes import format_box

    assert format_box([0.5, 0.25, 0.75, 0.5]) == "[0.50, 0.25, 0.75, 0.50]"
    assert parse_box(format_box([0.0, 1.0, 0.125, 0.5])) == (0.0, 1.0, 0.12, 0.5)  # two decimals, round half even


def test_uvcot_completion_turns():
    from align.data.boxes import ANSWER_PROMPT, uvcot_completion

    box, user, answer = uvcot_completion("[0.10, 0.20, 0.30, 0.40]", "Which one?", "vertical")
    assert box == {"role": "assistant", "content": "[0.10, 0.20, 0.30, 0.40]"}
    assert user["content"] == [{"type": "image"}, {"type": "text", "text": ANSWER_PROMPT + "Which one?"}]
    assert ANSWER_PROMPT.endswith(".") and "image.Which one?" in user["content"][1]["text"]  # official: no space
    assert answer == {"role": "assistant", "content": "vertical"}


def test_crop_image_saves_the_region_once_named_by_its_inputs(tmp_path):
    from PIL import Image

    from align.data.boxes import crop_image

    image = Image.new("RGB", (128, 96), (255, 255, 255))
    image.putpixel((70, 40), (255, 0, 0))
    image.save(tmp_path / "a.png")
    # box (64, 32)-(80, 48): half 8 < min_half 16, so the 32 px square around (72, 40): (56, 24)-(88, 56)
    path, region = crop_image(tmp_path / "a.png", (64, 32, 80, 48), tmp_path / "crops", min_half=16)
    assert region == (56, 24, 88, 56)
    crop = Image.open(path)
    assert crop.size == (32, 32) and crop.getpixel((70 - 56, 40 - 24)) == (255, 0, 0)
    mtime = Path(path).stat().st_mtime_ns
    again, _ = crop_image(tmp_path / "a.png", (64, 32, 80, 48), tmp_path / "crops", min_half=16)
    assert again == path and Path(path).stat().st_mtime_ns == mtime  # not written twice
    other, _ = crop_image(tmp_path / "a.png", (0, 0, 16, 16), tmp_path / "crops", min_half=16)
    assert other != path and sorted(p.name for p in (tmp_path / "crops").iterdir()) == sorted(
        [Path(path).name, Path(other).name]
    )  # no temporary file left behind
