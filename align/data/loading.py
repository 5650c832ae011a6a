"""Load preference data from a file, a folder, a ``datasets.Dataset`` or the Hub (writers: :mod:`align.io`)."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

from datasets import Dataset, DatasetInfo
from datasets.fingerprint import Hasher

from align.data.formats import DataValidationError, check_chat_template, check_kind, detect_kind, normalize_rows
from align.data.safety import HARMFULQA_COLUMNS, harmfulqa_to_single, messages_to_single

__all__ = [
    "SUPPORTED_SUFFIXES",
    "dataset_kind",
    "load_preference_dataset",
    "read_rows",
]

SUPPORTED_SUFFIXES = (".jsonl", ".json", ".parquet")
BUILTIN_PREFIX = "builtin:"


_KIND_MARKER = "align.data preference rows, kind="


def load_preference_dataset(
    source: str | os.PathLike | Dataset | list[dict],
    split: str = "train",
    *,
    kind: str | None = None,
    name: str | None = None,
    identical_pairs: str = "drop",
    tokenizer=None,
) -> Dataset:
    """Load, validate and normalise a preference dataset (see :mod:`align.data.formats`).

    ``source`` is a local ``.jsonl``/``.json``/``.parquet`` file, a folder of them (read in sorted
    order), a ``datasets.Dataset``, a list of row dicts (``name`` names it), a built-in set (``builtin:gsm8k_pairs``, see
    :func:`align.data.gsm8k.builtin_gsm8k_pairs`; ``builtin:safety``, see
    :func:`align.data.safety.builtin_safety`), or otherwise a Hugging Face Hub id (``split``
    applies to hub ids and built-ins). Conversations in the HarmfulQA layout (``blue_conversations``/
    ``red_conversations``, e.g. ``declare-lab/HarmfulQA``) or the OpenAI messages format
    (``messages`` + optional ``label``) become labelled single rows first (:mod:`align.data.safety`).
    ``kind`` ("pair" | "list" | "single" | None = from the columns) is what the objective needs.
    Errors name the source (the file path or hub id; ``name`` for an in-memory Dataset), the row and
    the field. Returns a ``Dataset`` of internal rows: ``prompt``, ``completions``, the
    optional float fields and, for rows with images, ``images`` / ``completion_images`` (relative
    image paths are read from the data file's folder; the fingerprint covers the image files too).

    ``identical_pairs`` ("drop" | "error" | "keep"): pairs whose chosen equals rejected are dropped
    with a logged count, refused, or kept. Given a ``tokenizer``, conversational rows are also
    checked against its chat template (:func:`align.data.formats.check_chat_template`).

    The result records its kind (in ``info.description``, which ``map``/``select``/``save_to_disk``
    keep), so loading it again, or tokenizing it, is checked against the objective's kind without
    mistaking a normalised pair (K = 2 ``completions``) for an unordered list of two. Such a
    dataset is returned as it is (its identical pairs were handled when it was normalised); only
    the chat template is checked, with row numbers of that dataset.
    """
    if isinstance(source, Dataset) and (found := dataset_kind(source)) is not None:
        check_kind(found, kind, name or "dataset", source.column_names)
        if tokenizer is not None:
            check_chat_template(source.select_columns(["prompt", "completions"]), tokenizer, name or "dataset")
        return source
    parts = [_from_conversations(part, rows) for part, rows in read_rows(source, split, name=name)]
    local = not isinstance(source, (Dataset, list)) and Path(source).exists()
    root = (Path(source) if Path(source).is_dir() else Path(source).parent) if local else None
    rows, kind = normalize_rows(parts, kind, identical_pairs=identical_pairs, tokenizer=tokenizer, image_root=root)
    return _with_image_files(Dataset.from_list(rows, info=DatasetInfo(description=_KIND_MARKER + kind)), rows)


def _with_image_files(dataset: Dataset, rows: list[dict]) -> Dataset:
    """``dataset`` with a fingerprint that also covers the files its path images point to.

    A fingerprint hashes the rows, i.e. a path image's path, not its pixels; the reference log-probs
    cache (keyed by the fingerprint) would then serve a stale entry after an image is rewritten in
    place. Each file's size and modification time (ns) go into the fingerprint, as datasets itself
    does for its cache files; embedded bytes are in the rows already."""
    files = [
        ref["path"]
        for row in rows
        for ref in (*row.get("images", ()), *(ref for refs in row.get("completion_images", ()) for ref in refs))
        if ref["bytes"] is None
    ]
    if not files:
        return dataset
    stamps = [(f, (st := os.stat(f)).st_size, st.st_mtime_ns) for f in files]
    fingerprint = Hasher.hash([dataset._fingerprint, stamps])
    return Dataset(dataset.data, info=dataset.info, split=dataset.split, fingerprint=fingerprint)


def _from_conversations(name: str, rows: list) -> tuple[str, list]:
    """A source in the HarmfulQA layout or the OpenAI messages format as single rows (:mod:`align.data.safety`);
    any other source as it is. HarmfulQA gives a row per conversation, so later errors (the chat-template
    check) number the converted rows, and the name says so."""
    columns = {key for row in rows if isinstance(row, dict) for key in row}
    if columns & set(HARMFULQA_COLUMNS):
        return f"{name} (HarmfulQA layout, as one row per conversation)", harmfulqa_to_single(rows, name)
    if "messages" in columns and detect_kind(columns) is None:
        return name, messages_to_single(rows, name)
    return name, rows


def dataset_kind(dataset: Dataset) -> str | None:
    """The kind recorded by :func:`load_preference_dataset`, or None for a dataset it did not produce."""
    description = dataset.info.description or ""
    return description[len(_KIND_MARKER) :] if description.startswith(_KIND_MARKER) else None


def read_rows(
    source: str | os.PathLike | Dataset | list[dict], split: str = "train", *, name: str | None = None
) -> list[tuple[str, list[dict]]]:
    """Raw rows as ``[(source name, rows), ...]``: one entry per file, so errors point into the right file.

    JSON files are read with :mod:`json` rather than Arrow so that a row of the wrong type is reported
    by row and field instead of failing the whole file inside the Arrow reader.
    """
    if isinstance(source, Dataset):
        return [(name or "dataset", source.to_list())]
    if isinstance(source, list):  # rows in memory; a Dataset cannot hold text and content-part messages together
        return [(name or "rows", source)]
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in SUPPORTED_SUFFIXES)
        if not files:
            raise DataValidationError(f"{path}: no {'/'.join(SUPPORTED_SUFFIXES)} files in this folder")
        return [(str(f), _read_file(f)) for f in files]
    if path.suffix in SUPPORTED_SUFFIXES:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        return [(str(path), _read_file(path))]
    if str(source).startswith(BUILTIN_PREFIX):
        return [(f"{source} [{split}]", _builtin_rows(str(source), split))]
    # Anything else is a hub id; datasets honours HF_HUB_OFFLINE / HF_DATASETS_OFFLINE.
    from datasets import load_dataset

    return [(f"{source} [{split}]", load_dataset(str(source), split=split).to_list())]


def _builtin_rows(source: str, split: str) -> list[dict]:
    from align.data.gsm8k import builtin_gsm8k_pairs, builtin_gsm8k_prompts
    from align.data.multistep import builtin_multistep
    from align.data.safety import builtin_safety, builtin_safety_prompts
    from align.data.tasks import builtin_arithmetic
    from align.data.visual_task import builtin_visual_patterns

    # gsm8k_pairs: preference pairs; safety: HarmfulQA-layout conversations (labelled singles once loaded);
    # gsm8k, arithmetic, multistep: prompt rows (prompt/answer/solution) for loops; safety_prompts:
    # evaluation prompts (prompt/behaviour/reference); visual_patterns: image prompt rows (images, question,
    # answer, box) for UV-CoT.
    builtins = {
        "gsm8k_pairs": builtin_gsm8k_pairs,
        "gsm8k": builtin_gsm8k_prompts,
        "arithmetic": builtin_arithmetic,
        "multistep": builtin_multistep,
        "safety": builtin_safety,
        "safety_prompts": builtin_safety_prompts,
        "visual_patterns": builtin_visual_patterns,
        "visual_patterns_cell": functools.partial(builtin_visual_patterns, ask="cell"),
    }
    key = source.removeprefix(BUILTIN_PREFIX)
    if key not in builtins:
        raise ValueError(f"unknown dataset {source!r}; known: {', '.join(BUILTIN_PREFIX + k for k in builtins)}")
    return builtins[key](split)


def _read_file(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except (pa.ArrowException, OSError) as err:
            raise DataValidationError(f"{path}: not a readable Parquet file: {err}") from None
    text = _read_text(path)
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            if text.lstrip().startswith("["):  # a JSON array with a mistake, not JSON lines
                raise DataValidationError(f"{path}: line {err.lineno}: invalid JSON: {err.msg}") from None
            data = None  # JSON lines saved as .json, as datasets also accepts
        if isinstance(data, list):
            return data
        if isinstance(data, dict):  # {"data": [...]} or another single list field
            lists = [v for v in data.values() if isinstance(v, list)]
            if len(lists) == 1 and all(isinstance(r, dict) for r in lists[0]):
                return lists[0]
            raise DataValidationError(f"{path}: a JSON file must hold a list of rows (or one field holding it)")
    rows = []
    for line_no, line in enumerate(text.splitlines()):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataValidationError(f"{path}: line {line_no + 1}: invalid JSON: {err.msg}") from None
    return rows


def _read_text(path: Path) -> str:
    """The file as UTF-8 text (a leading byte-order mark, as Windows editors write, is skipped); a
    byte that is not UTF-8 is reported with its line and offset rather than as a bare UnicodeDecodeError."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        body = err.object  # the bytes after the byte-order mark: err.start counts from there
        line = body.count(b"\n", 0, err.start) + 1
        column = err.start - body.rfind(b"\n", 0, err.start)
        raise DataValidationError(
            f"{path}: line {line}: not UTF-8 text: byte 0x{body[err.start]:02x} at byte offset "
            f"{err.start + len(data) - len(body)} (byte {column} of the line): {err.reason}; save the file as UTF-8"
        ) from None
