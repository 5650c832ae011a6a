"""Preference objectives: pure math over per-completion log-probs.

Nothing here imports a model, a tokenizer, transformers or trl. Importing this package registers
every built-in objective; build one by name with :func:`get_objective`.
"""

from align.objectives.base import (
    CompletionGroups,
    GroupShape,
    Objective,
    ObjectiveInputError,
    ObjectiveOutput,
    Requirements,
    available_objectives,
    get_objective,
    objective_class,
    reduce_metrics,
    register_objective,
)
from align.objectives.dpo import DPO, RPO
from align.objectives.haepo import HAEPO
from align.objectives.implicit_prm import (
    ImplicitPRMCE,
    ImplicitPRMDPO,
    StepRewards,
    aggregate_step_rewards,
    process_rewards,
)
from align.objectives.npo import NPO
from align.objectives.safe_align import SafeAlign
from align.objectives.sft import SFT
from align.objectives.sppo import SPPO, SPPOHard, SPPOSingle
from align.objectives.uvcot import UVCoT

__all__ = [
    "DPO",
    "HAEPO",
    "NPO",
    "RPO",
    "SFT",
    "SPPO",
    "CompletionGroups",
    "GroupShape",
    "ImplicitPRMCE",
    "ImplicitPRMDPO",
    "Objective",
    "ObjectiveInputError",
    "ObjectiveOutput",
    "Requirements",
    "SPPOHard",
    "SPPOSingle",
    "SafeAlign",
    "StepRewards",
    "UVCoT",
    "aggregate_step_rewards",
    "available_objectives",
    "get_objective",
    "objective_class",
    "process_rewards",
    "reduce_metrics",
    "register_objective",
]
