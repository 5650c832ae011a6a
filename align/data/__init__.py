"""Preference data: load and validate, normalise to one form, tokenize, collate.

Flow: :func:`load_preference_dataset` (file / folder / ``datasets.Dataset`` / hub id → validated
internal rows; images: :mod:`align.data.images`) → :func:`tokenize_dataset` (→ ``prompt_ids`` + K
``completion_ids``; the prompt by :func:`prompt_ids`, the renderer sampling uses too) →
:class:`PreferenceCollator` (→ one padded or packed batch of every completion).
:func:`prepare_preference_dataset` does the first two in one call, checking the objective's kind
and fields. Schemas and error messages: :mod:`align.data.formats`.
"""

from align.data.collator import PreferenceCollator
from align.data.formats import (
    IMAGE_COLUMNS,
    KINDS,
    PER_COMPLETION_FIELDS,
    PER_EXAMPLE_FIELDS,
    DataValidationError,
    check_chat_template,
    check_kind,
    detect_kind,
    normalize_rows,
)
from align.data.gsm8k import corrupt_solution, final_answer, gsm8k_pairs, load_gsm8k
from align.data.loading import dataset_kind, load_preference_dataset, read_rows
from align.data.multistep import StepCheck, builtin_multistep, check_solution, multistep_problems, step_spans
from align.data.prepare import prepare_preference_dataset
from align.data.render import chat_ids, prompt_ids
from align.data.safety import (
    builtin_safety,
    builtin_safety_prompts,
    harmfulqa_to_single,
    messages_to_single,
    safety_conversations,
    safety_prompts,
    split_conversation,
)
from align.data.split import split_held_out
from align.data.tasks import arithmetic_problems, builtin_arithmetic, load_prompt_dataset
from align.data.tokenize import ASSISTANT_MASKS, CARRIED_COLUMNS, carried, tokenize_dataset, tokenize_row
from align.io import json_safe, write_jsonl, write_text_atomic

__all__ = [
    "ASSISTANT_MASKS",
    "CARRIED_COLUMNS",
    "IMAGE_COLUMNS",
    "KINDS",
    "PER_COMPLETION_FIELDS",
    "PER_EXAMPLE_FIELDS",
    "DataValidationError",
    "PreferenceCollator",
    "StepCheck",
    "arithmetic_problems",
    "builtin_arithmetic",
    "builtin_multistep",
    "builtin_safety",
    "builtin_safety_prompts",
    "carried",
    "chat_ids",
    "check_chat_template",
    "check_kind",
    "check_solution",
    "corrupt_solution",
    "dataset_kind",
    "detect_kind",
    "final_answer",
    "gsm8k_pairs",
    "harmfulqa_to_single",
    "json_safe",
    "load_gsm8k",
    "load_preference_dataset",
    "load_prompt_dataset",
    "messages_to_single",
    "multistep_problems",
    "normalize_rows",
    "prepare_preference_dataset",
    "prompt_ids",
    "read_rows",
    "safety_conversations",
    "safety_prompts",
    "split_conversation",
    "split_held_out",
    "step_spans",
    "tokenize_dataset",
    "tokenize_row",
    "write_jsonl",
    "write_text_atomic",
]
