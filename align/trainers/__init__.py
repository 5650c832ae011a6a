"""Trainers: ``PreferenceTrainer`` owns the forward pass; one thin subclass per method."""

from align.trainers.base import PreferenceConfig, PreferenceTrainer, completion_logps, objective_fields
from align.trainers.haepo import HAEPOConfig, HAEPOTrainer
from align.trainers.implicit_prm import ImplicitPRMConfig, ImplicitPRMTrainer, labelled_pairs
from align.trainers.rpo import RPOConfig, RPOTrainer
from align.trainers.safe_align import SAFETY_OBJECTIVES, SafeAlignConfig, SafeAlignTrainer
from align.trainers.sft import SFTConfig, SFTTrainer
from align.trainers.sppo import SPPOConfig, SPPOTrainer
from align.trainers.uvcot import UVCoTConfig, UVCoTTrainer

__all__ = [
    "HAEPOConfig",
    "HAEPOTrainer",
    "ImplicitPRMConfig",
    "ImplicitPRMTrainer",
    "PreferenceConfig",
    "PreferenceTrainer",
    "RPOConfig",
    "RPOTrainer",
    "SAFETY_OBJECTIVES",
    "SFTConfig",
    "SFTTrainer",
    "SPPOConfig",
    "SPPOTrainer",
    "SafeAlignConfig",
    "SafeAlignTrainer",
    "UVCoTConfig",
    "UVCoTTrainer",
    "completion_logps",
    "labelled_pairs",
    "objective_fields",
]
