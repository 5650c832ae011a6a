"""Tokenize a prompt with K completions: chat template for conversations, eos for plain strings."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence

from datasets import Dataset

from align.data.formats import IMAGE_COLUMNS, MAX_REPORTED_ERRORS, DataValidationError
from align.data.images import fill_images, image_token_ids, is_processor, load_image, text_tokenizer
from align.data.render import assistant_mask, chat_ids, prefix_divergence, prompt_ids

__all__ = ["ASSISTANT_MASKS", "CARRIED_COLUMNS", "carried", "tokenize_dataset", "tokenize_row"]

# The optional per-completion token mask: carry it wherever tokenized completions are regrouped.
ASSISTANT_MASKS = "assistant_masks"
# Every optional column a tokenized completion needs besides its ids: the mask and the images of its sequence.
CARRIED_COLUMNS = (ASSISTANT_MASKS, *IMAGE_COLUMNS)

logger = logging.getLogger(__name__)


def carried(row: Mapping, ks: Sequence[int] | None = None) -> dict:
    """The :data:`CARRIED_COLUMNS` a tokenized row holds (not None), for its completions ``ks`` in that order
    (None: all): masks and completion images per completion, the prompt's ``images`` whole."""
    out = {}
    for name in CARRIED_COLUMNS:
        if row.get(name) is not None:
            per_row = name == "images"
            out[name] = row[name] if per_row or ks is None else [row[name][k] for k in ks]
    return out


def tokenize_row(row: dict, tokenizer, index: int = 0, source: str = "dataset", *, masks: bool = False) -> tuple:
    """Untruncated ``(prompt_ids, [completion_ids × K])`` for one internal row (errors name ``source``, ``index``);
    with ``masks=True`` also ``[assistant_mask × K]``, 1 on the tokens the model wrote.

    The prompt is rendered by :func:`align.data.prompt_ids`, the renderer the generator feeds to
    ``generate``, so a sampled completion is trained after exactly the ids it was sampled after.

    Conversational: completion k = chat_ids(prompt + completion_k) minus the prompt's ids, so the
    completion holds exactly the tokens the model generates after the generation prompt (its
    end-of-turn tokens included). The prefix must match: a template that renders the prompt
    differently alone than followed by an answer would train on a context the model never sees at
    inference, so it is an error, not a guess.

    Standard strings: completion = tokenizer(completion, add_special_tokens=False) + [eos], as TRL
    does, so the model learns to stop. Prompt and completion are tokenized separately: the split is
    then exact, at the cost of possibly different merges at the boundary than tokenizing the joined text.

    A multi-turn completion (assistant, user, ..., assistant) is rendered whole, and its mask marks the
    assistant turns (:func:`align.data.render.assistant_mask`); a completion of assistant messages
    only, and a string, is the model's own text throughout (all ones, without rendering anything).

    A row with images (``images`` / ``completion_images``, :mod:`align.data.formats`) needs a processor: the
    images fill the placeholders of the prompt and of each completion, and the processor expands each into
    its image tokens, which sit in user turns and so are never trained (mask 0). With a processor, text
    holding its literal image token (``<image>``) is refused: it would expand into image features.
    """
    prompt, completions = row["prompt"], row["completions"]
    if is_processor(tokenizer):
        prompt, completions = _with_images(row, tokenizer, index, source)
    elif any(row.get("images") or ()) or any(any(refs) for refs in row.get("completion_images") or ()):
        raise DataValidationError(
            f"{source}: row {index}: field 'images': the row has images but the processing class is a tokenizer; "
            "a vision-language model's processor (AutoProcessor) renders images"
        )
    decode = text_tokenizer(tokenizer).decode
    try:
        ids = prompt_ids(tokenizer, prompt, name=f"{source}: row {index}: field 'prompt'")
    except ValueError as err:  # empty, or a conversation without a chat template
        raise DataValidationError(str(err)) from err
    completion_ids, completion_masks = [], []
    if isinstance(prompt, list):
        for k, completion in enumerate(completions):
            full = chat_ids(tokenizer, prompt + completion)
            if (diverge := prefix_divergence(ids, full)) is not None:
                raise DataValidationError(
                    f"{source}: row {index}: field 'completions[{k}]': the chat template does not render the prompt (with the "
                    f"generation prompt) as a prefix of prompt + completion; they diverge at token {diverge}: "
                    f"{decode(ids[diverge:])!r} vs {decode(full[diverge : diverge + 8])!r}"
                )
            completion_ids.append(full[len(ids) :])
            if masks and any(message["role"] != "assistant" for message in completion):
                try:
                    mask = assistant_mask(tokenizer, prompt, completion, full, len(ids), name=f"field 'completions[{k}]'")
                except ValueError as err:
                    raise DataValidationError(f"{source}: row {index}: {err}") from err
                completion_masks.append(mask)
            else:
                completion_masks.append([1] * len(completion_ids[-1]))
    else:
        tokenizer = text_tokenizer(tokenizer)
        eos = tokenizer.eos_token_id
        if eos is None:
            raise ValueError("the tokenizer has no eos_token_id, needed to end standard (string) completions")
        for completion in completions:
            tokens = list(tokenizer(completion, add_special_tokens=False)["input_ids"])
            completion_ids.append(tokens if tokens[-1:] == [eos] else tokens + [eos])
            completion_masks.append([1] * len(completion_ids[-1]))
    return (ids, completion_ids, completion_masks) if masks else (ids, completion_ids)


def _with_images(row: dict, processor, index: int, source: str) -> tuple[list | str, list]:
    """The row's prompt and completions with their images in the image parts (as PIL images, loaded once)."""
    tokens = [t for t in (getattr(processor, "image_token", None), getattr(processor, "video_token", None)) if t]
    prompt, completions = row["prompt"], row["completions"]
    for name, messages in (("prompt", prompt), *((f"completions[{k}]", c) for k, c in enumerate(completions))):
        for j, message in enumerate(messages if isinstance(messages, list) else [{"content": messages}]):
            content = message["content"]
            for text in [content] if isinstance(content, str) else [p.get("text") or "" for p in content or ()]:
                if token := next((t for t in tokens if t in text), None):
                    raise DataValidationError(
                        f"{source}: row {index}: field '{name}': message {j}: the text holds the processor's image "
                        f"token {token!r}, which would expand into image features; use an {{'type': 'image'}} part "
                        "and the row's image columns"
                    )
    if row.get("images") is None:
        return prompt, completions
    try:
        prompt = fill_images(prompt, [load_image(ref) for ref in row["images"]], name="'prompt'")
        completions = [
            fill_images(completion, [load_image(ref) for ref in refs], name=f"'completions[{k}]'")
            for k, (completion, refs) in enumerate(zip(completions, row["completion_images"], strict=True))
        ]
    except ValueError as err:
        raise DataValidationError(f"{source}: row {index}: field {err}") from err
    return prompt, completions


def _cuts_an_image(ids: list[int], keep: slice, image_ids: set[int]) -> bool:
    """Whether keeping ``ids[keep]`` drops an image token (a cut image has more features than tokens left)."""
    kept = range(len(ids))[keep]
    return bool(image_ids) and any(t in image_ids for i, t in enumerate(ids) if i not in kept)


def _tokenize_and_truncate(
    row: dict, index: int, tokenizer, max_length: int | None, max_prompt_length: int | None, source: str, masked: bool
) -> dict:
    prompt_ids, completion_ids, masks = tokenize_row(row, tokenizer, index, source, masks=True)
    image_ids = set(image_token_ids(tokenizer))
    prompt_truncated = max_prompt_length is not None and len(prompt_ids) > max_prompt_length
    cut_image = prompt_truncated and _cuts_an_image(prompt_ids, slice(-max_prompt_length, None), image_ids)
    if prompt_truncated:
        prompt_ids = prompt_ids[-max_prompt_length:]  # keep the end: the question and the generation prompt
    room = (sys.maxsize if max_length is None else max_length) - len(prompt_ids)
    cut_image = cut_image or any(_cuts_an_image(c, slice(0, max(room, 0)), image_ids) for c in completion_ids)
    overlong = room < 1 or cut_image
    truncated = 0 if overlong else sum(len(c) > room for c in completion_ids)
    completion_ids = [[] for _ in completion_ids] if overlong else [c[:room] for c in completion_ids]
    masks = [m[: len(c)] for m, c in zip(masks, completion_ids)]
    if not overlong and (k := next((k for k, m in enumerate(masks) if not any(m)), None)) is not None:
        raise DataValidationError(
            f"{source}: row {index}: field 'completions[{k}]': no assistant token is left to train on after truncating "
            f"to max_length={max_length}; raise max_length or shorten the conversation"
        )
    out = {
        "prompt_ids": prompt_ids,
        "completion_ids": completion_ids,
        "_overlong": overlong,
        "_cut_image": cut_image,
        "_truncated": truncated,
        "_prompt_truncated": prompt_truncated,
    }
    if masked:
        out["assistant_masks"] = masks
    return out


def tokenize_dataset(
    dataset: Dataset,
    tokenizer,
    *,
    max_length: int | None,
    max_prompt_length: int | None = None,
    overlong: str = "drop",
    num_proc: int | None = None,
    name: str = "dataset",
) -> tuple[Dataset, dict[str, int]]:
    """Tokenize internal rows (from :func:`load_preference_dataset`) into ``prompt_ids`` + ``completion_ids``.

    Each output row holds ``prompt_ids: list[int]``, ``completion_ids: list[list[int]]`` (K lists)
    and the row's optional float fields; when some completion of the dataset holds a user or tool
    turn, also ``assistant_masks: list[list[int]]`` (aligned with ``completion_ids``, 1 on the tokens
    the model wrote: only those are trained and counted). Datasets of single-turn completions get no
    such column, so their rows and fingerprints are what they were. Every sequence prompt + completion_k fits ``max_length``
    (None: no limit):

    - ``max_prompt_length`` (optional) truncates prompts first, keeping their end;
    - a row whose prompt leaves no room for one completion token is *overlong*: ``overlong="drop"``
      drops it with a warning (count and first row indices), ``"error"`` raises
      :class:`DataValidationError` naming the rows;
    - completions longer than the room left are truncated, keeping their start (counted and logged);
    - truncation never cuts an image's tokens, nor drops them: a row where it would (a prompt image before
      the kept end, a completion image after the room left) is overlong too. The model would find fewer
      image tokens than image features.

    Rows with images (a processor as ``tokenizer``) keep their ``images`` / ``completion_images`` columns.

    Errors name the dataset as ``name`` (e.g. its file) and the row. Returns the tokenized dataset and stats: ``rows_in``, ``rows_out``, ``rows_dropped``,
    ``prompts_truncated``, ``completions_truncated``.
    """
    if overlong not in ("drop", "error"):
        raise ValueError(f"overlong must be 'drop' or 'error', got {overlong!r}")
    if max_length is not None and max_length < 2:
        raise ValueError(f"max_length must be >= 2 (one prompt and one completion token), got {max_length}")
    if max_prompt_length is not None and not 1 <= max_prompt_length < (max_length or max_prompt_length + 1):
        raise ValueError(f"max_prompt_length must be >= 1 and < max_length={max_length}, got {max_prompt_length}")
    masked = "completions" in dataset.column_names and any(
        isinstance(completion, list) and any(message["role"] != "assistant" for message in completion)
        for completions in dataset["completions"]
        for completion in completions
    )
    tokenized = dataset.map(
        _tokenize_and_truncate,
        with_indices=True,
        fn_kwargs={
            "tokenizer": tokenizer,
            "max_length": max_length,
            "max_prompt_length": max_prompt_length,
            "source": name,
            "masked": masked,
        },
        remove_columns=["prompt", "completions"],
        num_proc=num_proc,
        desc="Tokenizing preference data",
    )
    dropped = [i for i, flag in enumerate(tokenized["_overlong"]) if flag]
    cut = {i for i, flag in enumerate(tokenized["_cut_image"]) if flag}
    stats = {
        "rows_in": len(dataset),
        "rows_out": len(dataset) - len(dropped),
        "rows_dropped": len(dropped),
        "prompts_truncated": sum(tokenized["_prompt_truncated"]),
        "completions_truncated": sum(tokenized["_truncated"]),
    }
    if dropped:
        no_room = [i for i in dropped if i not in cut]
        what = "; ".join(
            f"{name}: {len(found)} of {len(dataset)} rows {reason} (rows [{_listed(found)}])"
            for found, reason in (
                (no_room, f"have a prompt that leaves no room for a completion token under max_length={max_length}"),
                (sorted(cut), f"would lose image tokens to truncation under max_length={max_length}, "
                 f"max_prompt_length={max_prompt_length} (an image is never cut)"),
            )
            if found
        )  # fmt: skip
        if overlong == "error":
            fixes = "raise max_length, set max_prompt_length," if no_room else "raise max_length"  # images are never cut
            raise DataValidationError(f"{what}; {fixes} or use overlong='drop'")
        logger.warning("dropped rows: %s", what)
        keep = set(dropped)
        tokenized = tokenized.select([i for i in range(len(tokenized)) if i not in keep])
    if stats["prompts_truncated"]:
        logger.warning(
            "%s: truncated %d prompts to max_prompt_length=%d (kept their end)",
            name,
            stats["prompts_truncated"],
            max_prompt_length,
        )
    if stats["completions_truncated"]:
        logger.warning(
            "%s: truncated %d completions to fit max_length=%d (kept their start)",
            name,
            stats["completions_truncated"],
            max_length,
        )
    return tokenized.remove_columns(["_overlong", "_cut_image", "_truncated", "_prompt_truncated"]), stats


def _listed(rows: list[int]) -> str:
    return ", ".join(map(str, rows[:MAX_REPORTED_ERRORS])) + (", ..." if len(rows) > MAX_REPORTED_ERRORS else "")
