"""SAFE-ALIGN's trainer: NLL on safe responses, bounded ascent (or NPO) on harmful ones."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from datasets import Dataset

from align.objectives import NPO, SafeAlign
from align.trainers.base import PreferenceConfig, PreferenceTrainer, objective_fields

__all__ = ["SAFETY_OBJECTIVES", "SafeAlignConfig", "SafeAlignTrainer"]

logger = logging.getLogger(__name__)

SAFETY_OBJECTIVES = ("safe_align", "npo")


@dataclass
@objective_fields(SafeAlign, NPO)
class SafeAlignConfig(PreferenceConfig):
    """``PreferenceConfig`` for single completions labelled safe (1) or harmful (0); NLL = per-token
    mean over the assistant turns of a (possibly multi-turn) completion:

    - ``safe_align`` (Bhardwaj & Poria 2023): λ_blue·NLL(safe) and −λ_red·(bounded NLL(harmful)), the
      ascent stopping per token (``threshold_mode: token``) or per sample once the NLL reaches τ
      (``threshold``); ``red_weight: 0`` is safe-only SFT (the harmful rows are then not trained on);
    - ``npo`` (Zhang et al. 2024): λ_safe·NLL(safe) and (2/β)·log(1 + (π_θ/π_ref)^β) on harmful
      responses, against the starting model (with LoRA: the adapter switched off).

    The hyperparameters and their defaults come from the objectives."""

    objective: str = field(default="safe_align", metadata={"help": f"One of {SAFETY_OBJECTIVES}."})

    def __post_init__(self) -> None:
        if self.objective not in SAFETY_OBJECTIVES:
            raise ValueError(f"SafeAlignConfig.objective must be one of {SAFETY_OBJECTIVES}, got {self.objective!r}")
        super().__post_init__()

    @property
    def safe_only(self) -> bool:
        """SAFE-ALIGN with λ_red = 0: plain SFT on the safe responses (the paper's "Starling-Blue")."""
        return self.objective == "safe_align" and self.red_weight == 0


class SafeAlignTrainer(PreferenceTrainer):
    """SAFE-ALIGN (arXiv:2308.09662) and NPO (arXiv:2404.05868) on conversations labelled safe or
    harmful. Logged: ``nll/safe`` and ``nll/harmful`` (per-token NLL of each kind), and the ascent
    still at work: ``safe_align/ascent_fraction`` (harmful tokens, or samples, below τ) or
    ``npo/ascent_weight`` (2σ(βΔ): 1 = full ascent, 0 = none left).

    With ``red_weight: 0`` the harmful training rows are dropped (their loss would be 0 but they
    would dilute every batch mean), so the run is exactly SFT on the safe rows; evaluation sets keep
    them, so ``nll/harmful`` is still measured."""

    config_class = SafeAlignConfig

    @classmethod
    def prepare_dataset(cls, dataset, tokenizer, args: SafeAlignConfig, name: str = "train") -> Dataset | None:
        data = super().prepare_dataset(dataset, tokenizer, args, name)
        if data is None or name != "train" or not args.safe_only:
            return data
        safe = [i for i, labels in enumerate(data["labels"]) if labels[0] == 1]
        logger.info("%s: safe-only SFT (red_weight 0): %d safe rows trained, %d harmful rows dropped",
                    name, len(safe), len(data) - len(safe))  # fmt: skip
        return data.select(safe)
