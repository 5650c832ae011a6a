"""Safety conversations: the HarmfulQA layout and OpenAI messages as labelled single rows.

**HarmfulQA layout** (``declare-lab/HarmfulQA``, Bhardwaj & Poria 2023): a row per harmful question
whose ``blue_conversations`` (helpful and harmless) and ``red_conversations`` (harmful) map a
conversation id to ShareGPT-style turns ``{"from": "human" | "gpt", "value": str}``. Read through
``datasets``, an id that another row has but this row lacks is present with the value None; such
ids are skipped. An optional ``system`` column (a string; not in HarmfulQA, used by the stand-in
set) becomes the system message of each of the row's conversations. Other columns (``topic``,
``question``, ``id``, ...) are ignored. :func:`harmfulqa_to_single` turns every conversation into
one internal ``single`` row, label 1 for blue and 0 for red, "human" → ``user``, "gpt" →
``assistant``.

**OpenAI messages**: rows with ``messages`` (``{"role", "content"}`` dicts) and an optional
``label`` (true/1 = safe, false/0 = harmful; strings such as "safe" are refused, so one spelling
means one thing); :func:`messages_to_single` makes one single row per conversation.

Both use one split rule (:func:`split_conversation`): the prompt is the leading system message(s)
plus the first user turn; the completion is every later turn and must start with an assistant
turn; trailing user or tool turns (nothing answers them) are dropped and counted; a conversation
without an assistant turn is an error. :func:`align.data.load_preference_dataset` detects both
layouts by their columns and converts them before :func:`align.data.normalize_rows`. Errors name
the file, the row, the field (``blue_conversations['3']``, ``messages``) and the turn.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from align.data.formats import MAX_REPORTED_ERRORS, DataValidationError, _check_message, _FieldError, _short

__all__ = ["HARMFULQA_COLUMNS", "harmfulqa_to_single", "messages_to_single", "split_conversation"]

logger = logging.getLogger(__name__)

HARMFULQA_COLUMNS = ("blue_conversations", "red_conversations")
_HARMFULQA_ROLES = {"human": "user", "gpt": "assistant"}
_LABELS = {"blue_conversations": 1.0, "red_conversations": 0.0}


# -- the split rule and the two converters ----------------------------------------------------------


def split_conversation(messages: list[dict], field: str, turn: str = "message") -> tuple[list[dict], list[dict], int]:
    """``(prompt, completion, dropped)`` of one checked conversation of ``{"role", "content"}`` messages.

    prompt = the leading system message(s) + the first user turn; completion = every later turn,
    starting with an assistant turn, with trailing user/tool turns (unanswered) removed; ``dropped``
    counts those. Raises ``_FieldError(field, ...)`` naming the ``turn`` index (in ``messages``) of
    an empty conversation, a first turn that is not the user's (an assistant turn, or a tool turn),
    a system message after the first user turn, a blank user or assistant turn, a second user turn
    before any answer, and a conversation with no assistant turn.
    """
    if not messages:
        raise _FieldError(field, "empty conversation (no turns)")
    for j, message in enumerate(messages):
        if message["role"] in ("user", "assistant") and not message["content"].strip():
            raise _FieldError(field, f"{turn} {j}: blank {message['role']} turn")
    start = 0
    while start < len(messages) and messages[start]["role"] == "system":
        start += 1
    if start == len(messages):
        raise _FieldError(field, "only system messages: no user turn to answer")
    if messages[start]["role"] != "user":
        raise _FieldError(
            field,
            f"{turn} {start}: the conversation must start with a user turn (after any system messages), "
            f"got {messages[start]['role']!r}",
        )
    for j in range(start + 1, len(messages)):
        if messages[j]["role"] == "system":
            raise _FieldError(field, f"{turn} {j}: a system message after the first user turn")
    end = len(messages)
    while end > start + 1 and messages[end - 1]["role"] != "assistant":
        end -= 1
    if end == start + 1:
        raise _FieldError(field, "no assistant turn: nothing answers the user, so there is nothing to train on")
    if messages[start + 1]["role"] != "assistant":
        raise _FieldError(
            field,
            f"{turn} {start + 1}: the turn after the first user turn must be an assistant turn (its answer), "
            f"got {messages[start + 1]['role']!r}",
        )
    return messages[: start + 1], messages[start + 1 : end], len(messages) - end


def _convert(
    rows: Sequence[Any], source: str, layout: str, conversations: Callable[[dict], Iterator[tuple]]
) -> list[dict]:
    """Single rows from ``conversations(row)``, which yields ``(field, messages, turn word, system
    messages, extra fields)`` per conversation of a row and raises ``_FieldError`` on a bad one.
    Every row is checked; problems are reported like :func:`align.data.normalize_rows` does (the
    first :data:`~align.data.formats.MAX_REPORTED_ERRORS` of them, with the count of bad rows)."""
    out: list[dict] = []
    errors: list[str] = []
    bad_rows = total = trailing = 0
    for i, row in enumerate(rows):
        try:
            if not isinstance(row, dict):
                raise _FieldError("<row>", f"expected a JSON object, got {type(row).__name__}")
            for field, messages, turn, system, extra in conversations(row):
                prompt, completion, dropped = split_conversation(messages, field, turn)
                out.append({"prompt": system + prompt, "completion": completion, **extra})
                total, trailing = total + 1, trailing + (dropped > 0)
        except _FieldError as err:
            bad_rows += 1
            if len(errors) < MAX_REPORTED_ERRORS:
                errors.append(f"{source}: row {i}: field '{err.field}': {err.message}")
    if errors:
        if bad_rows == 1:
            raise DataValidationError(errors[0], errors)
        shown = f"first {len(errors)}" if bad_rows > len(errors) else "all"
        raise DataValidationError(
            f"{bad_rows} of {len(rows)} rows ({layout}) are invalid ({shown} shown):\n  " + "\n  ".join(errors), errors
        )
    if trailing:
        logger.warning(
            "%s: dropped the trailing user/tool turn(s) of %d of %d conversations (nothing answers them)",
            source, trailing, total,
        )  # fmt: skip
    return out


def harmfulqa_to_single(rows: Sequence[Any], source: str) -> list[dict]:
    """HarmfulQA-layout rows (see the module docstring) → single rows ``prompt``/``completion``/``label``.

    Each source row gives one row per conversation that is not None: its blue conversations
    (label 1.0) in id order, then its red ones (label 0.0). ``source`` names the file in errors:
    ``data.json: row 4: field 'blue_conversations['3']': turn 2: 'from' is 'bot', expected 'human' or 'gpt'``.
    """
    return _convert(rows, source, "HarmfulQA layout", _harmfulqa_conversations)


def _harmfulqa_conversations(row: dict) -> Iterator[tuple]:
    system = row.get("system")
    if system is not None and (not isinstance(system, str) or not system.strip()):
        raise _FieldError("system", f"expected a non-blank string, got {type(system).__name__} {_short(system)}")
    system = [{"role": "system", "content": system}] if system is not None else []
    for column in HARMFULQA_COLUMNS:
        conversations = row.get(column)
        if conversations is None:
            continue
        if not isinstance(conversations, dict):
            got = f"{type(conversations).__name__} {_short(conversations)}"
            raise _FieldError(column, f"expected a dict of conversation id → list of turns, got {got}")
        for cid, turns in conversations.items():
            if turns is not None:  # None: an id of another row, filled in by Arrow
                field = f"{column}[{cid!r}]"
                yield field, _sharegpt_messages(turns, field), "turn", system, {"label": _LABELS[column]}


def _sharegpt_messages(turns: Any, field: str) -> list[dict]:
    """``[{"from", "value"}, ...]`` → ``[{"role", "content"}, ...]``, checking every turn."""
    if not isinstance(turns, list):
        raise _FieldError(field, f"expected a list of turns, got {type(turns).__name__} {_short(turns)}")
    messages = []
    for j, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise _FieldError(field, f"turn {j}: expected a dict with 'from' and 'value', got {_short(turn)}")
        for key in ("from", "value"):
            if turn.get(key) is None:
                state = "is null" if key in turn else f"is missing (keys: {', '.join(map(str, turn))})"
                raise _FieldError(field, f"turn {j}: {key!r} {state}")
            if not isinstance(turn[key], str):
                raise _FieldError(
                    field, f"turn {j}: {key!r} must be a string, got {type(turn[key]).__name__} {_short(turn[key])}"
                )
        if turn["from"] not in _HARMFULQA_ROLES:
            raise _FieldError(field, f"turn {j}: 'from' is {turn['from']!r}, expected 'human' or 'gpt'")
        messages.append({"role": _HARMFULQA_ROLES[turn["from"]], "content": turn["value"]})
    return messages


def messages_to_single(rows: Sequence[Any], source: str) -> list[dict]:
    """OpenAI-format rows (``messages`` + optional ``label``) → single rows, one per source row (so
    row numbers stay those of the file). The label is passed on as it is and checked by
    :func:`align.data.normalize_rows` (a number in [0, 1] or a boolean, on every row or none)."""
    return _convert(rows, source, "OpenAI messages", _messages_conversation)


def _messages_conversation(row: dict) -> Iterator[tuple]:
    messages = row.get("messages")
    if not isinstance(messages, list):
        raise _FieldError("messages", "is missing" if messages is None else f"must be a list, got {_short(messages)}")
    for j, message in enumerate(messages):
        _check_message(message, "messages", j)
    # Arrow gives every message the keys any message has (None where absent): leave those out.
    messages = [{k: v for k, v in m.items() if v is not None} for m in messages]
    yield "messages", messages, "message", [], {"label": row["label"]} if row.get("label") is not None else {}
