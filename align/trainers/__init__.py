"""Trainers: ``PreferenceTrainer`` owns the forward pass; one thin subclass per method."""

from align.trainers.base import PreferenceConfig, PreferenceTrainer, completion_logps
from align.trainers.rpo import RPOConfig, RPOTrainer
from align.trainers.sppo import SPPOConfig, SPPOTrainer

__all__ = ["PreferenceConfig", "PreferenceTrainer", "RPOConfig", "RPOTrainer", "SPPOConfig", "SPPOTrainer", "completion_logps"]
