"""Preference-data schemas: detect the input format, validate every row, normalise to one form.

Every objective reads the same internal row::

    {"prompt": str | list[message],            # message = {"role": str, "content": str}
     "completions": [K × (str | list[message])],   # K = 2 for pairs, 1 for singles, ≥ 2 per list row
     # optional, one float per completion (K values):
     "labels", "scores", "win_rates", "returns", "ref_logps",
     # optional, one float per example (pairs only):
     "pair_prob"}

Accepted inputs (``kind``):

- ``"pair"``: TRL's preference format ``prompt``/``chosen``/``rejected``, standard (strings) or
  conversational (message lists), including the implicit-prompt form (only ``chosen``/``rejected``
  full conversations; the shared prefix becomes the prompt via ``trl.data_utils.maybe_extract_prompt``).
  completions = [chosen, rejected]. Optional ``win_rates`` (P̂_w, P̂_l), ``pair_prob``, ``scores``,
  ``ref_chosen_logps``/``ref_rejected_logps`` (→ ``ref_logps``).
- ``"list"``: ``prompt`` + ``completions`` (K ≥ 2 on each row; K may differ between rows, e.g. a
  different number of samples per prompt: :class:`~align.data.PreferenceCollator` pads a batch to
  its largest K and marks the real completions in ``group_mask``) + optional per-completion lists
  (the row's K values each).
- ``"single"``: ``prompt`` + ``completion`` + optional ``label`` (→ ``labels = [label]``); TRL's
  unpaired-preference (KTO) format.

Conversational rows are checked like TRL's conversational format: every message is a
``{"role", "content"}`` dict with a role in :data:`ROLES`; the prompt ends with a ``user`` or
``tool`` message (the turn the model answers: the tokenizer adds the generation prompt after it);
a completion starts and ends with an ``assistant`` message and may hold ``user``/``tool`` turns in
between (a multi-turn conversation): only the assistant turns' tokens are trained and counted
(``assistant_masks``, :func:`align.data.tokenize_row`), the others are context.
Given a tokenizer, :func:`check_chat_template` also renders, for each role the data uses, the
first row holding it, and refuses a role the chat template raises on or leaves out.

A pair whose chosen equals its rejected (the same string, or the same messages) carries no
preference: ``identical_pairs="drop"`` (default) drops such rows with a warning giving the count
and the first rows, ``"error"`` refuses them, ``"keep"`` keeps them (for tools that must stay
row-aligned with their input). Within a list of K completions repeats are kept: they are samples
(SPPO samples K answers per prompt, and a confident policy repeats itself), and the win rates
count each sample, so dropping repeats would bias P̂.

Rows with images (a vision-language model's data; :mod:`align.data.images`) add columns: ``images``
(the prompt's images, in order; ``image``: one image), and per completion ``chosen_images`` /
``rejected_images`` (pair), ``completion_images`` (list: K lists; single: one list). A value is a
path (relative paths are taken from the data file's folder), encoded bytes, a PIL image or a
``{"bytes", "path"}`` dict (``datasets.Image``'s storage). Such rows are conversational, and their
message content may be a list of parts ``{"type": "text", "text"}`` / ``{"type": "image"}``; the
image placeholders of the prompt and of each completion are filled by that part's images in order,
and a part with images but no placeholder gets them at the start of its first user message (TRL's
``prepare_multimodal_messages`` rule; for a completion [assistant, user, assistant] that is the
user turn). Images go in user or system turns only: the model's own turns are text. Internal rows of
a dataset with any image column get ``images`` (list of ``{"bytes", "path"}``, paths absolute) and
``completion_images`` (K such lists) on every row (rows without images: empty lists), and message
content as parts throughout; every image is opened once here, so a missing or unreadable file is
reported before a model loads. Datasets without images are stored as before.

Validation happens here, before any tokenization or training, and reports problems by source, row
(0-based) and field: ``data/train.jsonl: row 12: field 'chosen': empty completion``; a field
that is present but null is reported as ``is null``, one that is absent as ``missing``.
"""

from __future__ import annotations

import io
import logging
import math
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from trl.data_utils import is_conversational, maybe_extract_prompt

__all__ = [
    "IDENTICAL_PAIRS",
    "KINDS",
    "PER_COMPLETION_FIELDS",
    "PER_EXAMPLE_FIELDS",
    "ROLES",
    "IMAGE_COLUMNS",
    "DataValidationError",
    "check_chat_template",
    "check_kind",
    "detect_kind",
    "normalize_rows",
]

logger = logging.getLogger(__name__)

KINDS = {
    "pair": ("prompt", "chosen", "rejected"),
    "list": ("prompt", "completions"),
    "single": ("prompt", "completion"),
}
PER_COMPLETION_FIELDS = ("labels", "scores", "win_rates", "returns", "ref_logps")
PER_EXAMPLE_FIELDS = ("pair_prob",)
_PROBABILITIES = {"label", "labels", "win_rates", "pair_prob"}  # must lie in [0, 1]
MAX_REPORTED_ERRORS = 10
# TRL's roles (trl.data_utils refuses others) and the ones transformers' chat-template docs use; a
# tool result is "tool" (Llama 3.1's template also reads "ipython", OpenAI's old API "function":
# write those as "tool"). Anything else would be rendered verbatim by a ChatML template or dropped.
ROLES = ("system", "user", "assistant", "tool")
PROMPT_END_ROLES = ("user", "tool")  # TRL adds the generation prompt after these (trl.data_utils.apply_chat_template)
IDENTICAL_PAIRS = ("drop", "error", "keep")
IMAGE_COLUMNS = ("images", "completion_images")  # of internal rows
# Raw image columns, by the kind that reads them (``image``: one prompt image).
_IMAGE_INPUTS = {
    "pair": ("chosen_images", "rejected_images"), "list": ("completion_images",), "single": ("completion_images",)
}  # fmt: skip
_IMAGE_ROLES = ("user", "system")


class DataValidationError(ValueError):
    """A dataset does not fit the schema. ``errors`` holds the reported per-row messages."""

    def __init__(self, message: str, errors: Sequence[str] = ()):
        super().__init__(message)
        self.errors = list(errors)


class _FieldError(Exception):
    """The first problem found in a row: which field, what is wrong."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field, self.message = field, message


def detect_kind(columns: Iterable[str]) -> str | None:
    """``"pair"``, ``"list"`` or ``"single"`` from a dataset's column names; None if none fits."""
    cols = set(columns)
    if cols & {"chosen", "rejected"}:
        return "pair"
    if "completions" in cols:
        return "list"
    if "completion" in cols:
        return "single"
    return None


def check_kind(found: str, wanted: str | None, source: str, columns: Iterable[str]) -> None:
    """Fail clearly when a dataset of kind ``found`` is given to an objective that needs ``wanted``.

    Kinds must match exactly: a list of two completions carries no preference order, so it is not
    silently taken for a (chosen, rejected) pair.
    """
    if wanted is not None and found != wanted:
        raise DataValidationError(
            f"{source}: the objective needs a {wanted!r} dataset ({'/'.join(KINDS[wanted])}) but this is a "
            f"{found!r} dataset (columns found: {', '.join(sorted(columns))})"
        )


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_text(value: Any, field: str, what: str, parts: bool = False) -> None:
    """A non-blank string, or a non-empty list of {"role", "content"} messages not all blank; with ``parts``
    (rows with images) content may also be a list of text/image parts (an image is not blank)."""
    if value is None:
        raise _FieldError(field, "is null")
    if isinstance(value, str):
        if not value.strip():
            raise _FieldError(field, f"empty {what}")
        return
    if not isinstance(value, list):
        raise _FieldError(
            field,
            f"expected a string or a list of {{'role', 'content'}} messages, "
            f"got {type(value).__name__} {_short(value)}",
        )
    if not value:
        raise _FieldError(field, f"empty {what} (no messages)")
    for j, message in enumerate(value):
        _check_message(message, field, j, parts)
    if not any(_text(m["content"]).strip() or _image_parts(m) for m in value):
        raise _FieldError(field, f"empty {what} (every message is blank)")


def _text(content: str | list[dict]) -> str:
    return content if isinstance(content, str) else "".join(p.get("text") or "" for p in content)


def _image_parts(message: dict) -> int:
    content = message["content"]
    return 0 if isinstance(content, str) else sum(part["type"] == "image" for part in content)


def _check_message(message: Any, field: str, j: int, parts: bool = False) -> None:
    if not isinstance(message, dict):
        raise _FieldError(field, f"message {j} must be a dict with string 'role' and 'content', got {_short(message)}")
    for key in ("role", "content"):
        if key not in message:
            raise _FieldError(field, f"message {j} has no {key!r} (keys: {', '.join(map(str, message))})")
        if message[key] is None:
            raise _FieldError(field, f"message {j}: {key!r} is null")
        if key == "content" and parts and isinstance(message[key], list):
            _check_parts(message[key], field, j)
        elif not isinstance(message[key], str):
            got = f"{type(message[key]).__name__} {_short(message[key])}"
            raise _FieldError(field, f"message {j}: {key!r} must be a string, got {got}")
    if message["role"] not in ROLES:
        raise _FieldError(
            field, f"message {j}: role {message['role']!r} is not one of {', '.join(map(repr, ROLES))}"
        )
    if _image_parts(message) and message["role"] not in _IMAGE_ROLES:
        raise _FieldError(
            field,
            f"message {j} (role {message['role']!r}) holds an image part; images may appear only in user/system "
            "turns (the model's own turns are text)",
        )


def _check_parts(content: list, field: str, j: int) -> None:
    """TRL's content parts: ``{"type": "text", "text": str}`` or an image placeholder ``{"type": "image"}``."""
    for p, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            continue
        if kind == "image" and part.get("image") is None:
            continue
        if kind == "image":
            raise _FieldError(
                field,
                f"message {j}: part {p}: an image part is a placeholder {{'type': 'image'}}; give the image itself in "
                "the row's image column (images, chosen_images, ...)",
            )
        raise _FieldError(
            field,
            f"message {j}: part {p} must be {{'type': 'text', 'text': str}} or {{'type': 'image'}}, got {_short(part)}",
        )


def _check_roles(prompt: list[dict], completions: list, names: list[str]) -> None:
    """The prompt ends with the turn the model answers; a completion starts with that answer and ends
    with a model turn. User and tool turns between are context: their tokens get no loss
    (:func:`align.data.tokenize_row` masks them), but a completion that starts or ends with one
    would train on nothing at its start, or end on a turn the model never finishes."""
    last = prompt[-1]["role"]
    if last not in PROMPT_END_ROLES:
        raise _FieldError(
            "prompt",
            f"the last message must be a {' or '.join(map(repr, PROMPT_END_ROLES))} message (the turn the model "
            f"answers), got {last!r}",
        )
    for name, completion in zip(names, completions):
        for j, message in enumerate(completion):
            role = message["role"]
            if j in (0, len(completion) - 1) and role != "assistant":
                where = "first" if j == 0 else "last"
                raise _FieldError(
                    name,
                    f"message {j}: role {role!r}: the {where} message of a completion must be an 'assistant' message "
                    f"(a completion starts with the model's answer to the prompt and ends with a model turn)",
                )
            if role == "system":
                raise _FieldError(
                    name, f"message {j}: role 'system' inside a completion; put system messages in the prompt"
                )


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool):  # labels are often stored as booleans (TRL's KTO format)
        value = float(value)
    if not isinstance(value, numbers.Real):
        raise _FieldError(field, f"expected a number, got {type(value).__name__} {_short(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise _FieldError(field, f"value is {value} (NaN or infinite)")
    if field in _PROBABILITIES and not 0.0 <= value <= 1.0:
        raise _FieldError(field, f"probability {value} outside [0, 1]")
    if field.startswith("ref_") and value > 0:
        raise _FieldError(field, f"log-probability {value} > 0")
    return value


def _numbers(value: Any, field: str, k: int) -> list[float]:
    if not isinstance(value, (list, tuple)):
        raise _FieldError(field, f"expected a list of {k} numbers, got {type(value).__name__} {_short(value)}")
    if len(value) != k:
        raise _FieldError(field, f"has {len(value)} values but the row has {k} completions")
    return [_number(v, field) for v in value]


def _require(row: dict, names: Iterable[str]) -> None:
    for name in names:
        if name not in row:
            raise _FieldError(
                name, f"missing; fields found: {', '.join(sorted(k for k, v in row.items() if v is not None))}"
            )
        if row[name] is None:
            raise _FieldError(name, "is null")


class _IdenticalPair(Exception):
    """An implicit-prompt pair whose chosen equals its rejected: no prompt can be extracted from it."""


def _same(a: str | list[dict], b: str | list[dict]) -> bool:
    """Equal strings, or equal messages once keys that are None (Arrow's filler for absent keys) are left out."""
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return [{k: v for k, v in m.items() if v is not None} for m in a] == [
        {k: v for k, v in m.items() if v is not None} for m in b
    ]


def _pair(row: dict, parts: bool = False) -> tuple[dict, list[str]]:
    _require(row, ("chosen", "rejected"))
    for name in ("chosen", "rejected"):
        _check_text(row[name], name, "completion", parts)
    if type(row["chosen"]) is not type(row["rejected"]):
        raise _FieldError("rejected", "one of chosen/rejected is conversational and the other is a string")
    implicit = "prompt" not in row
    if implicit and _same(row["chosen"], row["rejected"]):
        raise _IdenticalPair  # nothing to extract: TRL would split two equal strings at their last character
    if not implicit:  # checked first: TRL's helpers below index into it
        _check_text(row["prompt"], "prompt", "prompt", parts)
    example = {k: row[k] for k in ("prompt", "chosen", "rejected") if k in row}
    # TRL extracts the prompt when it is implicit or a redundant string next to full conversations;
    # a conversational prompt with string answers is a format mix, reported below, not extracted away.
    if not (isinstance(row.get("prompt"), list) and isinstance(row["chosen"], str)):
        example = maybe_extract_prompt(example)
    if implicit and not example["prompt"]:
        raise _FieldError(
            "prompt",
            "no prompt column, and none could be extracted: chosen and rejected must start "
            "with the same prompt and then differ",
        )
    out = {"prompt": example["prompt"], "completions": [example["chosen"], example["rejected"]]}
    if row.get("ref_chosen_logps") is not None or row.get("ref_rejected_logps") is not None:
        _require(row, ("ref_chosen_logps", "ref_rejected_logps"))
        out["ref_logps"] = [
            _number(row["ref_chosen_logps"], "ref_chosen_logps"),
            _number(row["ref_rejected_logps"], "ref_rejected_logps"),
        ]
    if row.get("pair_prob") is not None:
        out["pair_prob"] = _number(row["pair_prob"], "pair_prob")
    return out, ["chosen", "rejected"]


def _list(row: dict, parts: bool = False) -> tuple[dict, list[str]]:
    _require(row, ("prompt", "completions"))
    completions = row["completions"]
    if not isinstance(completions, list):
        raise _FieldError("completions", f"expected a list of completions, got {type(completions).__name__}")
    if len(completions) < 2:
        raise _FieldError("completions", f"a list needs at least 2 completions, got {len(completions)}")
    return {"prompt": row["prompt"], "completions": completions}, [f"completions[{i}]" for i in range(len(completions))]


def _single(row: dict, parts: bool = False) -> tuple[dict, list[str]]:
    _require(row, ("prompt", "completion"))
    out = {"prompt": row["prompt"], "completions": [row["completion"]]}
    if row.get("label") is not None:
        out["labels"] = [_number(row["label"], "label")]
    return out, ["completion"]


_NORMALIZERS = {"pair": _pair, "list": _list, "single": _single}


def _normalize_row(row: dict, kind: str, identical_pairs: str = "drop", image_root: Path | None = None) -> dict | None:
    """One raw row of the given kind → the internal form; raises ``_FieldError`` on the first problem.

    None: a pair whose chosen equals its rejected, to drop (``identical_pairs="drop"``). ``image_root``: the
    folder relative image paths are read from, given for the rows of a dataset with image columns only.
    """
    parts = image_root is not None
    try:
        out, names = _NORMALIZERS[kind](row, parts)
    except _IdenticalPair:
        if identical_pairs == "keep":
            raise _FieldError("prompt", "no prompt column, and none can be extracted: chosen equals rejected") from None
        return _identical(identical_pairs)
    completions = out["completions"]
    for name, completion in zip(names, completions):
        _check_text(completion, name, "completion", parts)
    _check_text(out["prompt"], "prompt", "prompt", parts)
    conversational = is_conversational({"prompt": out["prompt"]})
    for name, completion in zip(names, completions):
        if isinstance(completion, list) != conversational:
            raise _FieldError(name, "prompt and completion mix conversational (messages) and standard (string) formats")
    if conversational:
        _check_roles(out["prompt"], completions, names)
    if parts:
        _add_images(out, row, kind, names, image_root)
    k = len(completions)
    for name in PER_COMPLETION_FIELDS:
        if row.get(name) is not None:
            if name in out:
                raise _FieldError(name, f"given twice (also derived from other columns of a {kind} row)")
            out[name] = _numbers(row[name], name, k)
    if kind == "pair" and identical_pairs != "keep" and _same(*out["completions"]):
        if not parts or out["completion_images"][0] == out["completion_images"][1]:  # other crops: a preference
            return _identical(identical_pairs)
    return out


def _add_images(out: dict, row: dict, kind: str, names: list[str], root: Path) -> None:
    """Read a row's image columns into ``out["images"]`` / ``out["completion_images"]`` (module docstring),
    opening each image once, and write its messages as content parts with one placeholder per image."""
    k = len(out["completions"])
    for name in sorted({column for columns in _IMAGE_INPUTS.values() for column in columns} - set(_IMAGE_INPUTS[kind])):
        if row.get(name) is not None:
            wanted = " and ".join(_IMAGE_INPUTS[kind])
            raise _FieldError(name, f"not a column of a {kind} row; the images of its completions go in {wanted}")
    if row.get("image") is not None and row.get("images") is not None:
        raise _FieldError("image", "given together with 'images'; put every prompt image in 'images'")
    if row.get("image") is not None:
        images = [_image_ref(row["image"], "image", root)]
    else:
        images = [_image_ref(v, f"images[{i}]", root) for i, v in enumerate(_image_list(row.get("images"), "images"))]
    if kind == "pair":
        columns = [(name, row.get(name)) for name in _IMAGE_INPUTS["pair"]]
    else:
        given = row.get("completion_images")
        if kind == "single" and isinstance(given, list) and not (len(given) == 1 and isinstance(given[0], list)):
            given = [given]  # a single row's one list
        if given is not None and (not isinstance(given, list) or len(given) != k):
            got = f"{len(given)} lists" if isinstance(given, list) else type(given).__name__
            raise _FieldError("completion_images", f"expected one list of images per completion ({k}), got {got}")
        columns = [(f"completion_images[{j}]", given[j] if given is not None else None) for j in range(k)]
    completion_images = [
        [_image_ref(v, f"{column}[{i}]", root) for i, v in enumerate(_image_list(value, column))]
        for column, value in columns
    ]
    if not isinstance(out["prompt"], list):
        if images or any(completion_images):
            raise _FieldError("prompt", "rows with images must be conversational (lists of messages), not strings")
    else:
        out["prompt"] = _placeholders(out["prompt"], images, "prompt", "images")
        out["completions"] = [
            _placeholders(completion, refs, name, column)
            for completion, refs, name, (column, _) in zip(out["completions"], completion_images, names, columns)
        ]
    out["images"], out["completion_images"] = images, completion_images


def _image_list(value: Any, field: str) -> list:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise _FieldError(field, f"expected a list of images, got {type(value).__name__} {_short(value)}")
    return list(value)


def _placeholders(messages: list[dict], images: list[dict], field: str, column: str) -> list[dict]:
    """``messages`` with content as parts and one image placeholder per image (module docstring)."""
    from align.data.images import fill_images

    count = sum(_image_parts(message) for message in messages)
    if count and count != len(images):
        raise _FieldError(field, f"{count} image placeholder(s) but {column} has {len(images)} image(s)")
    try:
        filled = fill_images(messages, images, name=field)
    except ValueError as err:
        raise _FieldError(field, str(err).removeprefix(f"{field}: ")) from None
    return [
        {**message, "content": [{"type": "text", "text": message["content"]}]}
        if isinstance(message["content"], str)
        else {**message, "content": [{k: v for k, v in part.items() if k != "image"} for part in message["content"]]}
        for message in filled
    ]


def _image_ref(value: Any, field: str, root: Path) -> dict:
    """An image value as ``{"bytes", "path"}`` (a path made absolute against ``root``), after opening it once."""
    from PIL import Image

    if isinstance(value, Image.Image):
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        return {"bytes": buffer.getvalue(), "path": None}
    if isinstance(value, Mapping) and set(value) <= {"bytes", "path"}:
        data, path = value.get("bytes"), value.get("path")
        if data is None and path is None:
            raise _FieldError(field, "an image dict with neither 'bytes' nor 'path'")
        if data is not None:
            if not isinstance(data, (bytes, bytearray)):
                raise _FieldError(field, f"'bytes' must be bytes, got {type(data).__name__}")
            _open(io.BytesIO(data), field)
            return {"bytes": bytes(data), "path": path if isinstance(path, str) else None}
        value = path
    if isinstance(value, (bytes, bytearray)):
        _open(io.BytesIO(value), field)
        return {"bytes": bytes(value), "path": None}
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        raise _FieldError(
            field,
            f"expected an image path, bytes, a PIL image or a {{'bytes', 'path'}} dict, got {type(value).__name__} "
            f"{_short(value)}",
        )
    path = Path(root, value).absolute()
    if not path.is_file():
        raise _FieldError(field, f"no such file '{path}'")
    _open(path, field)
    return {"bytes": None, "path": str(path)}


def _open(source: Any, field: str) -> None:
    """Decode the whole image once, so that a truncated file fails here, not in the middle of training."""
    from PIL import Image

    try:
        with Image.open(source) as image:
            image.load()
    except Exception as err:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ... on bad files
        raise _FieldError(field, f"cannot read image ({type(err).__name__}: {err})") from None


def _identical(identical_pairs: str) -> None:
    if identical_pairs == "error":
        raise _FieldError(
            "rejected", "equals 'chosen' (the pair prefers nothing); identical_pairs='drop' drops such pairs"
        )
    return None


def _row_signature(out: dict) -> tuple:
    """What every row of one dataset must share: the message format and the optional fields (not K:
    the collator pads a batch's lists to its largest K and masks the rest)."""
    fields = tuple(name for name in (*PER_COMPLETION_FIELDS, *PER_EXAMPLE_FIELDS) if name in out)
    return isinstance(out["prompt"], list), fields


def normalize_rows(
    parts: Sequence[tuple[str, Sequence[dict]]],
    kind: str | None = None,
    *,
    identical_pairs: str = "drop",
    tokenizer=None,
    image_root: str | os.PathLike | None = None,
) -> tuple[list[dict], str]:
    """Validate and normalise rows given as ``[(source name, rows), ...]``; return (internal rows, kind).

    ``kind`` is what the caller (the objective) needs; None accepts whatever the columns say. Every
    row is checked; the first :data:`MAX_REPORTED_ERRORS` problems are reported together with the
    count of all bad rows, so one run shows the extent of the damage. ``identical_pairs``: what
    happens to a pair whose chosen equals its rejected (see the module docstring). Given a
    ``tokenizer``, conversational rows are also checked against its chat template
    (:func:`check_chat_template`), naming the file row of the failing example. ``image_root``: the
    folder relative image paths are taken from (the data file's; None: the working directory); when
    any row has an image column, every row gets :data:`IMAGE_COLUMNS` (module docstring).
    """
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)} or None, got {kind!r}")
    if identical_pairs not in IDENTICAL_PAIRS:
        raise ValueError(f"identical_pairs must be one of {IDENTICAL_PAIRS}, got {identical_pairs!r}")
    sources = ", ".join(name for name, _ in parts)
    if not any(rows for _, rows in parts):
        raise DataValidationError(f"{sources}: no rows")
    for name, rows in parts:
        columns = sorted({key for row in rows if isinstance(row, dict) for key in row})
        found = detect_kind(columns)
        if found is None:
            raise DataValidationError(
                f"{name}: cannot tell the preference format from the columns found ({', '.join(columns)}); expected "
                + "; ".join(f"{'/'.join(c)} ({k})" for k, c in KINDS.items())
            )
        check_kind(found, kind, name, columns)
        kind = kind or found
    image_inputs = {"images", "image", *(column for columns in _IMAGE_INPUTS.values() for column in columns)}
    rows_with = (row for _, rows in parts for row in rows if isinstance(row, dict))
    vision = any(row.get(column) is not None for row in rows_with for column in image_inputs)
    root = Path(image_root or ".").absolute() if vision else None

    normalized, errors, bad_rows, dropped = [], [], 0, []
    reference = None  # (signature, "where") of the first good row: every other row must match it
    probes: dict[str, tuple[str, dict]] = {}  # role → (where, row): the first row using it
    for name, rows in parts:
        for i, row in enumerate(rows):
            where = f"row {i}" if len(parts) == 1 else f"{name} row {i}"
            try:
                if not isinstance(row, dict):
                    raise _FieldError("<row>", f"expected a JSON object, got {type(row).__name__}")
                out = _normalize_row(row, kind, identical_pairs, root)
                if out is None:
                    dropped.append(where)
                    continue
                signature = _row_signature(out)
                if reference is None:
                    reference = (signature, where)
                else:
                    _check_consistent(signature, *reference)
                normalized.append(out)
                if tokenizer is not None and isinstance(out["prompt"], list):
                    _add_probes(probes, f"{name}: row {i}", out)
            except _FieldError as err:
                bad_rows += 1
                if len(errors) < MAX_REPORTED_ERRORS:
                    errors.append(f"{name}: row {i}: field '{err.field}': {err.message}")
    total = sum(len(rows) for _, rows in parts)
    _raise_row_errors(errors, bad_rows, total)
    if dropped:
        if not normalized:
            raise DataValidationError(
                f"{sources}: every pair ({len(dropped)}) has chosen equal to rejected ({_first(dropped)}); "
                f"nothing is left to train on"
            )
        logger.warning(
            "%s: dropped %d of %d pairs whose chosen equals rejected (%s); identical_pairs='error' refuses them",
            sources, len(dropped), total, _first(dropped),
        )  # fmt: skip
    _probe_chat_template(probes, tokenizer)
    return normalized, kind


def _first(where: list[str]) -> str:
    """"rows 3, 7" (or "a.jsonl row 3, b.jsonl row 7"), the first :data:`MAX_REPORTED_ERRORS` of them."""
    shown = ", ".join(where[:MAX_REPORTED_ERRORS]) + (", ..." if len(where) > MAX_REPORTED_ERRORS else "")
    if not where[0].startswith("row "):  # several sources: each names its file
        return shown
    return shown if len(where) == 1 else "rows " + shown.replace("row ", "")


def check_chat_template(rows: Iterable[dict], tokenizer, name: str = "dataset") -> None:
    """Check that ``tokenizer``'s chat template renders every role that internal ``rows`` use.

    For each role, the first row holding it is rendered (prompt + first completion) with the
    content of that role's messages replaced by unique markers; a template that raises, or whose
    output lacks a marker (it dropped the message, as some do with ``system``), is an error naming
    ``name``, the row and the message. The real row is rendered, not a made-up conversation, so a
    template's own rules (alternating turns, a tool call before a tool result) hold as in training.
    Standard (string) rows need no template and pass. Reads rows until every role of :data:`ROLES`
    is seen, so at worst one pass over the dataset, no tokenizing.
    """
    probes: dict[str, tuple[str, dict]] = {}
    for i, row in enumerate(rows):
        if not isinstance(row["prompt"], list):
            return
        _add_probes(probes, f"{name}: row {i}", row)
        if len(probes) == len(ROLES):
            break
    _probe_chat_template(probes, tokenizer)


def _add_probes(probes: dict[str, tuple[str, dict]], where: str, row: dict) -> None:
    for message in (*row["prompt"], *row["completions"][0]):
        probes.setdefault(message["role"], (where, row))


def _probe_chat_template(probes: dict[str, tuple[str, dict]], tokenizer) -> None:
    for role, (where, row) in probes.items():
        messages, markers = [], []  # markers: (field, message index, marker text)
        for field, part in (("prompt", row["prompt"]), ("completions[0]", row["completions"][0])):
            for j, message in enumerate(part):
                message = {k: v for k, v in message.items() if v is not None}  # Arrow fills absent keys with None
                if message["role"] == role:
                    markers.append((field, j, f"align-probe-{len(markers)}-end"))
                    text = markers[-1][2]  # as a text part where the row's content is parts (rows with images)
                    parts = isinstance(message["content"], list)
                    message["content"] = [{"type": "text", "text": text}] if parts else text
                messages.append(message)
        field, j, _ = markers[0]
        try:
            text = tokenizer.apply_chat_template(messages, tokenize=False)
        except Exception as err:  # a template is user code: jinja errors, raise_exception, KeyError, ...
            raise DataValidationError(
                f"{where}: field '{field}': message {j}: the tokenizer's chat template fails on this row (the first "
                f"with a {role!r} message): {type(err).__name__}: {err}"
            ) from err
        for field, j, marker in markers:
            if marker not in text:
                raise DataValidationError(
                    f"{where}: field '{field}': message {j}: the tokenizer's chat template leaves out this {role!r} "
                    f"message (its content is not in the rendered text), so training would not see it; merge it into "
                    f"another message or use a tokenizer whose template renders {role!r} messages"
                )


def _raise_row_errors(errors: list[str], bad_rows: int, total: int, rows: str = "rows") -> None:
    """Raise the collected per-row ``errors`` (the first :data:`MAX_REPORTED_ERRORS` of ``bad_rows``
    bad rows out of ``total``) as one :class:`DataValidationError`; nothing when there are none."""
    if not errors:
        return
    if bad_rows == 1:
        raise DataValidationError(errors[0], errors)
    shown = f"first {len(errors)}" if bad_rows > len(errors) else "all"
    message = f"{bad_rows} of {total} {rows} are invalid ({shown} shown):\n  " + "\n  ".join(errors)
    raise DataValidationError(message, errors)


def _check_consistent(signature: tuple, reference: tuple, where: str) -> None:
    (conv, fields), (conv0, fields0) = signature, reference
    if conv != conv0:
        style = {True: "conversational", False: "standard (string)"}
        raise _FieldError("prompt", f"row is {style[conv]} but {where} is {style[conv0]}")
    if fields != fields0:
        missing, extra = set(fields0) - set(fields), set(fields) - set(fields0)
        field = min(missing or extra)
        state = "missing" if missing else "present"
        raise _FieldError(
            field,
            f"{state} here but {'present' if missing else 'absent'} in {where} "
            f"(optional fields must be on every row or none)",
        )
