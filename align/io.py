"""Files written atomically and read back: JSONL, text, JSON, and the fingerprint of a config.

Standard library only, so every layer (data, loops, evaluation, callbacks) can write its files the
same way without importing another layer. A writer goes through :func:`_atomic_file`: a killed
process leaves the previous file (or none), never a truncated one that a resumed run would trust.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write_json", "fingerprint", "json_safe", "read_json", "read_jsonl", "write_jsonl", "write_text_atomic"]


def write_jsonl(rows: Iterable[dict], path: str | os.PathLike) -> Path:
    """Write rows as JSON lines atomically (temp file in the same folder + ``os.replace``).

    A killed writer leaves the previous file (or none), never a truncated one that a resumed run
    would trust. Rows are streamed to the file, never joined in memory.
    """
    with _atomic_file(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return Path(path)


@contextlib.contextmanager
def _atomic_file(path: str | os.PathLike) -> Iterator[IO[str]]:
    """A text file open for writing at a temporary name beside ``path``; on a clean exit it is
    flushed, fsynced and renamed onto ``path`` (``os.replace``), on an error deleted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; the result should read like any other file
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, ±inf) replaced by None, in nested dicts and
    lists: strict JSON has no NaN, and readers other than Python's reject it."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temp file in the same folder, fsync, ``os.replace``)."""
    with _atomic_file(path) as f:
        f.write(text)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write JSON atomically (:func:`write_text_atomic`)."""
    return write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, default=str))


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The rows of a JSONL file written by :func:`write_jsonl` (blank lines skipped)."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def fingerprint(config: dict) -> str:
    """sha256 of the canonical JSON of ``config`` (sorted keys)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]
