"""Command-line plumbing shared by the recipes: YAML config + command-line overrides."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from trl import ModelConfig, TrlParser

from align.checkpoints import last_complete_checkpoint

__all__ = ["DataArguments", "DriftArguments", "last_checkpoint", "parse_recipe_args"]


@dataclass
class DataArguments:
    """Where a recipe's data comes from."""

    dataset: str = field(
        default="builtin:gsm8k_pairs",
        metadata={"help": "Hub id, local JSONL/JSON/Parquet file or folder, or a builtin:<name> dataset."},
    )
    dataset_split: str = field(default="train", metadata={"help": "Split of a hub dataset."})
    eval_dataset: str | None = field(default=None, metadata={"help": "Evaluation data (same forms as dataset)."})
    eval_split: str = field(default="test", metadata={"help": "Split of a hub evaluation dataset."})
    num_eval: int = field(
        default=0, metadata={"help": "Without eval_dataset: hold back this many training rows for evaluation."}
    )
    max_train_examples: int | None = field(default=None, metadata={"help": "Use only the first N training rows."})


@dataclass
class DriftArguments:
    """The likelihood-drift probes every recipe runs by default (align.callbacks.LikelihoodDriftCallback)."""

    drift: bool = field(default=True, metadata={"help": "Track chosen/rejected log-likelihood drift on probe pairs."})
    drift_num_probes: int = field(
        default=16, metadata={"help": "Probe pairs: from the eval set, else held back from training."}
    )
    drift_eval_steps: float | None = field(
        default=None, metadata={"help": "Measure every N steps (default: eval_steps, else logging_steps)."}
    )
    drift_top_k: int = field(default=20, metadata={"help": "k of the top-k entropy and mass."})
    drift_entanglement_every: int = field(
        default=4, metadata={"help": "Gradient cosine every N measurements (0: never)."}
    )
    drift_entanglement_pairs: int = field(default=2, metadata={"help": "Probe pairs in the gradient cosine."})
    drift_warn_threshold: float = field(
        default=0.1,
        metadata={"help": "Warn when the chosen log-prob per token fell by more (nats) while the margin grew."},
    )

    def callbacks(self) -> list:
        if not self.drift:
            return []
        from align.callbacks import LikelihoodDriftCallback

        return [
            LikelihoodDriftCallback(
                num_probes=self.drift_num_probes, eval_steps=self.drift_eval_steps, top_k=self.drift_top_k,
                entanglement_every=self.drift_entanglement_every, entanglement_pairs=self.drift_entanglement_pairs,
                warn_threshold=self.drift_warn_threshold,
            )
        ]  # fmt: skip


def parse_recipe_args(
    config_cls, default_config: str | Path, argv: list[str] | None = None, *, data_classes: tuple = (DataArguments,)
):
    """Parse ``(data, config_cls, ModelConfig, DriftArguments, BenchmarkArguments, *more)`` from a
    YAML file and the command line, where ``data_classes = (data class, *more classes)`` (default:
    DataArguments).

    Without ``--config`` the recipe's own YAML is used, so ``accelerate launch recipes/rpo.py`` runs
    the documented default; every field can still be overridden (``--max_steps 5``). ``--config``
    with another file replaces the default file.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" not in argv:
        argv = ["--config", str(default_config), *argv]
    first, *more = data_classes
    from align.evaluation.hook import BenchmarkArguments

    parser = TrlParser((first, config_cls, ModelConfig, DriftArguments, BenchmarkArguments, *more))
    return parser.parse_args_and_config(argv)


def last_checkpoint(output_dir: str, resume: str | bool | None) -> str | None:
    """The checkpoint to resume from: an explicit path, or the newest complete one in ``output_dir``
    (unless ``resume`` is False), so re-running a killed command continues where it stopped."""
    if isinstance(resume, str) and resume not in ("", "true", "True", "false", "False"):
        return resume
    if resume in (False, "false", "False") or not Path(output_dir).is_dir():
        return None
    return last_complete_checkpoint(output_dir)
