"""Preference-data schemas: detect the input format, validate every row, normalise to one form.

Every objective reads the same internal row::

    {"prompt": str | list[message],            # message = {"role": str, "content": str}
     "completions": [K × (str | list[message])],
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
- ``"list"``: ``prompt`` + ``completions`` (K ≥ 2, the same K on every row) + optional per-completion lists.
- ``"single"``: ``prompt`` + ``completion`` + optional ``label`` (→ ``labels = [label]``); TRL's
  unpaired-preference (KTO) format.

Validation happens here, before any tokenization or training, and reports problems by source, row
(0-based) and field: ``data/train.jsonl: row 12: field 'chosen': empty completion``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

from trl.data_utils import is_conversational, maybe_extract_prompt

__all__ = [
    "KINDS",
    "PER_COMPLETION_FIELDS",
    "PER_EXAMPLE_FIELDS",
    "DataValidationError",
    "check_kind",
    "detect_kind",
    "normalize_rows",
]

KINDS = {
    "pair": ("prompt", "chosen", "rejected"),
    "list": ("prompt", "completions"),
    "single": ("prompt", "completion"),
}
PER_COMPLETION_FIELDS = ("labels", "scores", "win_rates", "returns", "ref_logps")
PER_EXAMPLE_FIELDS = ("pair_prob",)
_PROBABILITIES = {"label", "labels", "win_rates", "pair_prob"}  # must lie in [0, 1]
MAX_REPORTED_ERRORS = 10


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


def _check_text(value: Any, field: str, what: str) -> None:
    """A non-blank string, or a non-empty list of {"role", "content"} messages not all blank."""
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
        if not (
            isinstance(message, dict)
            and isinstance(message.get("role"), str)
            and isinstance(message.get("content"), str)
        ):
            raise _FieldError(
                field, f"message {j} must be a dict with string 'role' and 'content', got {_short(message)}"
            )
    if not any(m["content"].strip() for m in value):
        raise _FieldError(field, f"empty {what} (every message is blank)")


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
        if row.get(name) is None:
            raise _FieldError(
                name, f"missing; fields found: {', '.join(sorted(k for k, v in row.items() if v is not None))}"
            )


def _pair(row: dict) -> tuple[dict, list[str]]:
    _require(row, ("chosen", "rejected"))
    for name in ("chosen", "rejected"):
        _check_text(row[name], name, "completion")
    if type(row["chosen"]) is not type(row["rejected"]):
        raise _FieldError("rejected", "one of chosen/rejected is conversational and the other is a string")
    implicit = row.get("prompt") is None
    if not implicit:  # checked first: TRL's helpers below index into it
        _check_text(row["prompt"], "prompt", "prompt")
    example = {k: row[k] for k in ("prompt", "chosen", "rejected") if row.get(k) is not None}
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


def _list(row: dict) -> tuple[dict, list[str]]:
    _require(row, ("prompt", "completions"))
    completions = row["completions"]
    if not isinstance(completions, list):
        raise _FieldError("completions", f"expected a list of completions, got {type(completions).__name__}")
    if len(completions) < 2:
        raise _FieldError("completions", f"a list needs at least 2 completions, got {len(completions)}")
    return {"prompt": row["prompt"], "completions": completions}, [f"completions[{i}]" for i in range(len(completions))]


def _single(row: dict) -> tuple[dict, list[str]]:
    _require(row, ("prompt", "completion"))
    out = {"prompt": row["prompt"], "completions": [row["completion"]]}
    if row.get("label") is not None:
        out["labels"] = [_number(row["label"], "label")]
    return out, ["completion"]


_NORMALIZERS = {"pair": _pair, "list": _list, "single": _single}


def _normalize_row(row: dict, kind: str) -> dict:
    """One raw row of the given kind → the internal form; raises ``_FieldError`` on the first problem."""
    out, names = _NORMALIZERS[kind](row)
    completions = out["completions"]
    for name, completion in zip(names, completions):
        _check_text(completion, name, "completion")
    _check_text(out["prompt"], "prompt", "prompt")
    conversational = is_conversational({"prompt": out["prompt"]})
    for name, completion in zip(names, completions):
        if isinstance(completion, list) != conversational:
            raise _FieldError(name, "prompt and completion mix conversational (messages) and standard (string) formats")
    k = len(completions)
    for name in PER_COMPLETION_FIELDS:
        if row.get(name) is not None:
            if name in out:
                raise _FieldError(name, f"given twice (also derived from other columns of a {kind} row)")
            out[name] = _numbers(row[name], name, k)
    return out


def _row_signature(out: dict) -> tuple:
    """What every row of one dataset must share: K (for lists), the message format, the optional fields."""
    fields = tuple(name for name in (*PER_COMPLETION_FIELDS, *PER_EXAMPLE_FIELDS) if name in out)
    return len(out["completions"]), isinstance(out["prompt"], list), fields


def normalize_rows(parts: Sequence[tuple[str, Sequence[dict]]], kind: str | None = None) -> tuple[list[dict], str]:
    """Validate and normalise rows given as ``[(source name, rows), ...]``; return (internal rows, kind).

    ``kind`` is what the caller (the objective) needs; None accepts whatever the columns say. Every
    row is checked; the first :data:`MAX_REPORTED_ERRORS` problems are reported together with the
    count of all bad rows, so one run shows the extent of the damage.
    """
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)} or None, got {kind!r}")
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

    normalized, errors, bad_rows = [], [], 0
    reference = None  # (signature, "where") of the first good row: every other row must match it
    for name, rows in parts:
        for i, row in enumerate(rows):
            try:
                if not isinstance(row, dict):
                    raise _FieldError("<row>", f"expected a JSON object, got {type(row).__name__}")
                out = _normalize_row(row, kind)
                signature = _row_signature(out)
                if reference is None:
                    reference = (signature, f"row {i}" if len(parts) == 1 else f"{name} row {i}")
                else:
                    _check_consistent(signature, *reference)
                normalized.append(out)
            except _FieldError as err:
                bad_rows += 1
                if len(errors) < MAX_REPORTED_ERRORS:
                    errors.append(f"{name}: row {i}: field '{err.field}': {err.message}")
    if errors:
        if bad_rows == 1:
            raise DataValidationError(errors[0], errors)
        total = sum(len(rows) for _, rows in parts)
        shown = f"first {len(errors)}" if bad_rows > len(errors) else "all"
        raise DataValidationError(
            f"{bad_rows} of {total} rows are invalid ({shown} shown):\n  " + "\n  ".join(errors), errors
        )
    return normalized, kind


def _check_consistent(signature: tuple, reference: tuple, where: str) -> None:
    (k, conv, fields), (k0, conv0, fields0) = signature, reference
    if k != k0:
        raise _FieldError(
            "completions", f"row has {k} completions but {where} had {k0} (K must be the same on every row)"
        )
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
