"""Reward plug-ins: pairwise judges, reward models, process reward models and verifiers, chosen by a string.

``load_reward("gsm8k_verifier")``, ``load_reward("hf_reward_model:path/or/hub-id", batch_size=16)``,
``load_reward("openai_judge", model="gpt-4o-mini")``, ``load_reward("implicit_prm:path/to/prm", aggregate="min")``,
``load_reward("safety_rules")``, ``load_reward("openai_safety_judge", model="gpt-4o-mini")``,
``load_reward("visual_answer_checker")``, ``load_reward("openai_vision_judge", model="gpt-4o-mini")``,
``load_reward("my_pkg.judges:MyJudge")``.
Judge groups of completions with :func:`score_groups` (scores → preferences → win rates, shared
by SPPO, HAEPO, best-of-N and evaluation). Importing this package registers the built-ins; it
imports neither torch nor transformers (the HF reward model does, when built).
"""

from align.rewards.adapters import FunctionJudge, FunctionReward, FunctionVerifier, VerifierReward
from align.rewards.base import (
    Message,
    PairwiseJudge,
    ProcessRewardModel,
    Prompt,
    RewardError,
    RewardKind,
    SCORING_KINDS,
    RewardModel,
    StepScores,
    Verifier,
    checked_pair_probs,
    checked_scores,
    checked_step_scores,
    checked_verdicts,
    prompt_preview,
    reward_kind,
)
from align.rewards.gsm8k import GSM8KVerifier, extract_answer, normalize_number
from align.rewards.hf import HFRewardModel
from align.rewards.implicit_prm import ImplicitPRM, aggregate_steps, score_steps_sharded
from align.rewards.lm_judge import LMJudge
from align.rewards.openai_judge import OpenAIJudge
from align.rewards.openai_safety_judge import OpenAISafetyJudge
from align.rewards.preferences import (
    GroupJudgement,
    compare_answers,
    preference_matrix_from_judge,
    preference_matrix_from_scores,
    returns_from_scores,
    score_groups,
    win_rates,
)
from align.rewards.registry import available_rewards, check_reward_spec, load_reward, register_reward, reward_options
from align.rewards.safety import GCG_TEST_PREFIXES, SafetyRules, contains_insult, is_refusal, leaks_secret
from align.rewards.visual import OpenAIVisionJudge, VisualAnswerChecker

__all__ = [
    "FunctionJudge",
    "FunctionReward",
    "FunctionVerifier",
    "GCG_TEST_PREFIXES",
    "GSM8KVerifier",
    "GroupJudgement",
    "HFRewardModel",
    "ImplicitPRM",
    "LMJudge",
    "Message",
    "OpenAIJudge",
    "OpenAISafetyJudge",
    "OpenAIVisionJudge",
    "PairwiseJudge",
    "ProcessRewardModel",
    "Prompt",
    "RewardError",
    "RewardKind",
    "RewardModel",
    "SCORING_KINDS",
    "SafetyRules",
    "StepScores",
    "Verifier",
    "VerifierReward",
    "VisualAnswerChecker",
    "aggregate_steps",
    "available_rewards",
    "checked_pair_probs",
    "checked_scores",
    "checked_step_scores",
    "checked_verdicts",
    "compare_answers",
    "contains_insult",
    "extract_answer",
    "is_refusal",
    "leaks_secret",
    "check_reward_spec",
    "load_reward",
    "normalize_number",
    "preference_matrix_from_judge",
    "preference_matrix_from_scores",
    "prompt_preview",
    "register_reward",
    "reward_options",
    "returns_from_scores",
    "reward_kind",
    "score_groups",
    "score_steps_sharded",
    "win_rates",
]
