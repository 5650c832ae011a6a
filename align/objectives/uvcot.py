"""UV-CoT: score-aware DPO (sDPO) plus an SFT term on the preferred answer."""

from __future__ import annotations

from dataclasses import dataclass, field

from align.objectives.base import (
    CompletionGroups,
    GroupShape,
    Objective,
    ObjectiveOutput,
    Requirements,
    _check_non_negative,
    _check_positive,
    register_objective,
)
from align.objectives.dpo import pair_metrics, sigmoid_pair_loss

__all__ = ["UVCoT"]


@register_objective("uvcot")
@dataclass
class UVCoT(Objective):
    """Unsupervised Visual Chain-of-Thought (Zhao et al. 2025, arXiv:2504.18397; code:
    kesenzhao/UV-CoT). Pairs of answers (given model-proposed image regions) with evaluator
    scores s_w, s_l:

        ℓ = w_dpo · −log σ(β·(Δ(y_w) − Δ(y_l)) − (g(s_w) − g(s_l))) + w_sft · (−log π_θ(y_w|x))

    with g(s) = γ·s (``score_margin``; γ = 0 is plain DPO). The margin sits outside β. Defaults
    follow the official code: β = 0.1, w_dpo = 0.1, w_sft = 0.9, summed log-probs, margin off.
    A region's score may already include the next step's (s = s_cur + γ_next·s_next): that is
    done when the scores are built, not here. The images only matter to the forward pass.
    """

    beta: float = field(default=0.1, metadata={"help": "DPO temperature β."})
    dpo_weight: float = field(default=0.1, metadata={"help": "Weight w_dpo of the score-aware DPO term."})
    sft_weight: float = field(default=0.9, metadata={"help": "Weight w_sft of the NLL on the preferred answer."})
    score_margin: float = field(
        default=0.0, metadata={"help": "γ of the score margin g(s) = γ·s outside β (0: plain DPO)."}
    )

    def __post_init__(self) -> None:
        _check_positive(self, "beta")
        _check_non_negative(self, "dpo_weight", "sft_weight", "score_margin")

    @property
    def requirements(self) -> Requirements:
        fields = ("scores",) if self.score_margin else ()
        return Requirements(group=GroupShape.PAIR, reference=True, fields=fields)

    def compute(self, batch: CompletionGroups) -> ObjectiveOutput:
        margin = 0.0
        if self.score_margin:
            scores = batch.get("scores")
            margin = self.score_margin * (scores[:, 0] - scores[:, 1])
        dpo = sigmoid_pair_loss(batch, self.beta, margin)
        sft = -batch.get("policy_logps_sum")[:, 0]
        loss = self.dpo_weight * dpo + self.sft_weight * sft
        metrics = {**pair_metrics(batch, self.beta), "dpo": dpo, "sft": sft}
        if self.score_margin:
            metrics["uvcot/score_margin"] = margin
        return ObjectiveOutput(loss, metrics)
