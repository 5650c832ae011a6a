"""SFT: the negative log-likelihood of a given completion, as a preference-free objective."""

from __future__ import annotations

from dataclasses import dataclass, field

from align.objectives.base import CompletionGroups, GroupShape, Objective, ObjectiveOutput, Requirements, register_objective

__all__ = ["SFT"]


@register_objective("sft")
@dataclass
class SFT(Objective):
    """Supervised fine-tuning on single completions (a demonstration per prompt):

        ℓ = −log π_θ(y|x) / |y|     (``length_normalize``, the default: per-token mean NLL)
        ℓ = −log π_θ(y|x)           (summed: UV-CoT's official SFT term; long answers weigh more)

    over the tokens the model wrote (the assistant turns of a multi-turn completion). The batch loss
    is the mean over examples, so every example weighs the same whatever its length (TRL's SFT
    trainer instead averages over all tokens of the batch). Used for warm-up stages (UV-CoT's
    10%-labelled variant) and as a baseline; no reference model.
    """

    length_normalize: bool = field(
        default=True, metadata={"help": "Per-token mean NLL (True) or the summed NLL of the completion (False)."}
    )

    @property
    def requirements(self) -> Requirements:
        return Requirements(group=GroupShape.SINGLE, reference=False)

    def compute(self, batch: CompletionGroups) -> ObjectiveOutput:
        logps = batch.policy_logps_mean() if self.length_normalize else batch.get("policy_logps_sum")
        nll = -logps[:, 0]
        return ObjectiveOutput(nll, {"nll": -batch.policy_logps_mean()[:, 0]})
