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

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path

from align.io import atomic_write_json, fingerprint, read_json

__all__ = [
    "ConfigChangedError",
    "IterationFolder",
    "RunFolder",
    "atomic_write_json",
    "changed_keys",
    "check_output_dir",
    "fingerprint",
    "read_json",
    "run_config",
]


# TrainingArguments fields that do not change what a run computes (safe to change on resume)
VOLATILE_TRAINING_FIELDS = {
    "logging_steps", "logging_dir", "report_to", "disable_tqdm", "dataloader_num_workers", "logging_first_step",
    "save_total_limit", "resume_from_checkpoint", "overwrite_output_dir", "run_name", "push_to_hub", "hub_token",
    "local_rank", "logging_strategy", "log_level", "log_level_replica", "accelerator_config", "deepspeed",
    "output_dir",  # a run folder may be moved or copied and resumed there
    "use_cpu",  # derived from bf16 and the machine (PreferenceConfig), not chosen
}  # fmt: skip


def run_config(method: str, training_args, model_args, drift_args=None, **sections) -> dict:
    """The JSON-able config a run folder records: everything that shapes the results, and nothing
    that only changes how they are reported (:data:`VOLATILE_TRAINING_FIELDS`, the benchmark)."""
    training = {k: v for k, v in training_args.to_dict().items() if k not in VOLATILE_TRAINING_FIELDS}
    config = {"method": method, "training": training, "model": dataclasses.asdict(model_args)}
    config["drift"] = dataclasses.asdict(drift_args) if drift_args is not None else None
    return config | {name: dataclasses.asdict(value) for name, value in sections.items()}


def check_output_dir(output_dir: str | os.PathLike) -> None:
    """Fail before anything is written when ``output_dir`` cannot be created or written to."""
    path = Path(output_dir).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise FileNotFoundError(f"output_dir: {output_dir} is a file, not a folder")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise FileNotFoundError(f"output_dir: cannot write to {output_dir} ({existing} is not writable)")


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
        self._started: dict[str, float] = {}

    def begin(self, stage: str) -> None:
        """Note that ``stage`` starts now: :meth:`finish` then records its wall-clock ``seconds``."""
        self._started[stage] = time.perf_counter()

    def manifest(self) -> dict:
        return read_json(self.manifest_path) if self.manifest_path.exists() else {"stages": {}}

    def done(self, stage: str) -> bool:
        return stage in self.manifest()["stages"]

    def summary(self, stage: str) -> dict:
        return self.manifest()["stages"][stage]

    def finish(self, stage: str, summary: dict | None = None) -> None:
        """Mark ``stage`` finished (call after its files are in place; main process only).

        When :meth:`begin` was called for it, the entry holds ``seconds``: the wall-clock time from
        :meth:`begin` to now in this process (a resumed stage counts only the run that finished it)."""
        manifest = self.manifest()
        entry = {**(summary or {}), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if stage in self._started:
            entry["seconds"] = round(time.perf_counter() - self._started.pop(stage), 2)
        manifest["stages"][stage] = entry
        atomic_write_json(self.manifest_path, manifest)


class RunFolder:
    """The run folder for ``config`` (a JSON-able dict of everything that shapes the results).

    A new folder records the config; an existing one must have been made by the same config
    (same fingerprint), else :class:`ConfigChangedError` lists the changed keys (nested keys as
    ``training.learning_rate``, with the old and new values), unless ``start_over`` is set, which
    deletes the old run (whatever config made it) when the folder is created. With
    ``create=False`` the folder is only checked: :meth:`create` writes it once everything else has
    been validated, so a failed start leaves no ``run.json`` behind. :meth:`mark_finished`
    records a finished run; ``finished`` then holds its summary, so a re-run can say where the
    results are and do nothing."""

    def __init__(
        self, root: str | os.PathLike, config: dict, *, start_over: bool = False, main_process: bool = True,
        create: bool = True,
    ):  # fmt: skip
        self.root = Path(root)
        self.config = config
        self.fingerprint = fingerprint(config)
        self.main_process = main_process
        self.record = self.root / "run.json"
        saved = read_json(self.record) if self.record.exists() else None
        changed = saved is not None and saved["fingerprint"] != self.fingerprint
        self._stale = saved is not None and (changed or start_over)  # start_over: whatever made it
        if changed and not start_over:
            keys = changed_keys(saved["config"], _jsonable(config))
            raise ConfigChangedError(
                f"{self.root} was made by a different config (changed: {'; '.join(keys) or 'unknown'}); "
                "re-run with the original config to resume, or pass --start_over true to delete it and start again"
            )
        self.finished: dict | None = saved.get("finished") if saved is not None and not self._stale else None
        if create:
            self.create()

    def create(self) -> None:
        """Write ``run.json`` (main process), deleting first a run made by another config."""
        if not self.main_process:
            return
        if self._stale and self.root.exists():
            shutil.rmtree(self.root)
            self._stale = False
        if not self.record.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.record, {"fingerprint": self.fingerprint, "config": self.config})

    def mark_finished(self, summary: dict) -> None:
        """Record that the run finished (main process), with ``summary``: where its results are."""
        self.finished = {**summary, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if self.main_process:
            atomic_write_json(self.record, {**read_json(self.record), "finished": self.finished})

    def iteration(self, index: int) -> IterationFolder:
        return IterationFolder(self.root, index)


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """``["training.learning_rate: 0.0002 → 0.0001", ...]``: the leaves where two configs differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            change
            for key in sorted(set(old) | set(new), key=str)
            for change in changed_keys(old.get(key), new.get(key), f"{prefix}{key}.")
        ]
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} → {new!r}"]


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))
