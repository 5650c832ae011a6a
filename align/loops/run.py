"""The run folder of an on-policy loop: one subfolder per iteration, a manifest of finished stages,
every file written atomically, and the config that made the run.

    <run_dir>/
      run.json                    the config and its fingerprint: a changed config is refused
      iteration-00/
        manifest.json             {"stages": {"generate": {...summary}, "judge": {...}, ...}}
        samples.jsonl             K completions per prompt          (stage "generate")
        samples.chunks/           finished generation chunks while "generate" runs
        judged.jsonl              scores / win rates / correctness   (stage "judge")
        dataset.jsonl             the preference pairs trained on    (stage "dataset")
        train/                    the Trainer's output_dir: checkpoints, likelihood_drift.{jsonl,png}
        model/                    the trained model or LoRA adapter  (stage "train")
        eval.json                 held-out evaluation of the trained model (stage "evaluate")
        benchmark_start/          --benchmark on the starting model (iteration 0, stage "benchmark_start")
        benchmark/                --benchmark on the trained model (stage "benchmark")

A stage counts as finished only once its summary is in the manifest, and the manifest is written
after the stage's files, so a process killed at any point leaves either a finished stage or one
that is redone from scratch (generation: from its last finished chunk; training: from its last
checkpoint).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from align.io import atomic_write_json, fingerprint, read_json

__all__ = ["ConfigChangedError", "IterationFolder", "RunFolder", "atomic_write_json", "fingerprint", "read_json"]


class ConfigChangedError(RuntimeError):
    """The run folder was made by a different config; resuming it would mix two experiments."""


class IterationFolder:
    """One iteration's files and its manifest of finished stages."""

    def __init__(self, root: Path, index: int):
        self.index = index
        self.path = root / f"iteration-{index:02d}"
        self.samples = self.path / "samples.jsonl"
        self.chunks = self.path / "samples.chunks"
        self.judged = self.path / "judged.jsonl"
        self.dataset = self.path / "dataset.jsonl"
        self.train_dir = self.path / "train"
        self.model_dir = self.path / "model"
        self.eval = self.path / "eval.json"
        self.manifest_path = self.path / "manifest.json"

    def manifest(self) -> dict:
        return read_json(self.manifest_path) if self.manifest_path.exists() else {"stages": {}}

    def done(self, stage: str) -> bool:
        return stage in self.manifest()["stages"]

    def summary(self, stage: str) -> dict:
        return self.manifest()["stages"][stage]

    def finish(self, stage: str, summary: dict | None = None) -> None:
        """Mark ``stage`` finished (call after its files are in place; main process only)."""
        manifest = self.manifest()
        manifest["stages"][stage] = {**(summary or {}), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        atomic_write_json(self.manifest_path, manifest)


class RunFolder:
    """The run folder for ``config`` (a JSON-able dict of everything that shapes the results).

    A new folder records the config; an existing one must have been made by the same config
    (same fingerprint), else :class:`ConfigChangedError` lists the changed keys, unless
    ``start_over`` is set, which deletes the old run first."""

    def __init__(self, root: str | os.PathLike, config: dict, *, start_over: bool = False, main_process: bool = True):
        self.root = Path(root)
        self.config = config
        self.fingerprint = fingerprint(config)
        record = self.root / "run.json"
        if record.exists():
            saved = read_json(record)
            if saved["fingerprint"] != self.fingerprint:
                if not start_over:
                    changed = sorted(
                        key
                        for key in set(saved["config"]) | set(config)
                        if saved["config"].get(key) != _jsonable(config.get(key))
                    )
                    raise ConfigChangedError(
                        f"{self.root} was made by a different config (changed: {', '.join(changed) or 'unknown'}); "
                        "re-run with the original config to resume, or pass --start_over true to delete it and start again"
                    )
                if main_process:
                    shutil.rmtree(self.root)
        if main_process and not record.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_write_json(record, {"fingerprint": self.fingerprint, "config": config})

    def iteration(self, index: int) -> IterationFolder:
        return IterationFolder(self.root, index)


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))
