"""Which Trainer checkpoint a resumed run may trust.

transformers writes a checkpoint folder file by file (model, optimizer, scheduler, RNG states,
then ``trainer_state.json`` last) with no atomic rename, and ``get_last_checkpoint`` returns the
highest-numbered folder whatever it holds. A run killed while saving therefore leaves a folder
without its optimizer state, and resuming from it silently restarts Adam's moments. A checkpoint
counts here only once its ``trainer_state.json`` exists.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["last_complete_checkpoint"]

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_COMPLETE_MARKER = "trainer_state.json"  # the Trainer's last write into a checkpoint folder


def last_complete_checkpoint(output_dir: str | Path, *, remove_partial: bool = False) -> str | None:
    """The highest-step checkpoint folder in ``output_dir`` that was written to the end, or None.
    With ``remove_partial``, delete the unfinished ones (main process only), so that checkpoint
    rotation and the next save do not mistake them for real ones."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    complete, partial = [], []
    for path in output_dir.iterdir():
        match = _CHECKPOINT.match(path.name)
        if match and path.is_dir():
            (complete if (path / _COMPLETE_MARKER).is_file() else partial).append((int(match.group(1)), path))
    for _, path in partial:
        logger.warning("ignoring %s: the run stopped while saving it (no %s)", path, _COMPLETE_MARKER)
        if remove_partial:
            shutil.rmtree(path, ignore_errors=True)
    return str(max(complete)[1]) if complete else None
