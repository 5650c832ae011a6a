"""Likelihood-drift measurements on a fixed probe set of preference pairs.

For a probe pair (x, y_w, y_l) and a policy π_t at training step t:

- log-probs: ``log π_t(y|x) = Σ_k log π_t(y_k | x, y_<k)`` (summed) and its per-token mean;
  their change since step 0, ``Δ_t(y) = log π_t(y|x) − log π_0(y|x)``.
- implicit reward ``r_t(y) = β · Δ_t(y)`` (the DPO reward when the reference is the initial
  policy, which is the default reference of every trainer here), its margin and accuracy.
- displacement: the pair is displaced at t when ``Δ_t(y_w) < 0``; the rate is the fraction of
  displaced pairs and the mean fall is ``−mean Δ_t(y_w)`` over them.
- top-k signals over the chosen response's tokens: with p the next-token distribution at a
  position and p_(1) ≥ … ≥ p_(k) its k largest probabilities, the mass ``m = Σ_i p_(i)`` and the
  entropy of the renormalised top k, ``H_k = −Σ_i (p_(i)/m) log(p_(i)/m)``; per pair, their mean
  over the chosen tokens. Both falling is the over-optimisation signature.
- CHES (centered hidden embedding similarity, Razin et al. 2024): with ``h⁺ = Σ_k h(x, y_w,<k)``
  and ``h⁻ = Σ_k h(x, y_l,<k)`` the sums of the last-layer hidden states (the LM head's input)
  at the positions that predict each response token, ``CHES = ⟨h⁺, h⁻⟩ − ‖h⁺‖²``.
- gradient entanglement: ``cos(∇_θ log π(y_w|x), ∇_θ log π(y_l|x))`` over the trainable θ.

Everything here runs without gradients except :func:`gradient_cosine`, on the unwrapped model
(forward hooks of DeepSpeed ZeRO-3 gather the parameters), in a packed, padding-free batch.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, fields

import torch

from align.attention import uses_varlen_attention
from align.data import PreferenceCollator, carried
from align.logps import completion_logps, packed_completion_index  # the training forward and its index

__all__ = [
    "PairMeasurement",
    "ches",
    "drift_metrics",
    "gradient_cosine",
    "measure_pairs",
    "pearson",
]


@dataclass
class PairMeasurement:
    """Per probe pair (P,) float64 tensors (CPU)."""

    chosen_logps: torch.Tensor
    rejected_logps: torch.Tensor
    chosen_tokens: torch.Tensor
    rejected_tokens: torch.Tensor
    chosen_topk_entropy: torch.Tensor
    chosen_topk_mass: torch.Tensor
    ches: torch.Tensor

    def to_dict(self) -> dict[str, list[float]]:
        return {name: value.tolist() for name, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, list[float]]) -> PairMeasurement:
        return cls(**{f.name: torch.tensor(data[f.name], dtype=torch.float64) for f in fields(cls)})

    def __len__(self) -> int:
        return len(self.chosen_logps)


def ches(h_chosen: torch.Tensor, h_rejected: torch.Tensor) -> torch.Tensor:
    """CHES = ⟨h⁺, h⁻⟩ − ‖h⁺‖² per pair, for (P, d) summed hidden states of chosen and rejected."""
    return (h_chosen * h_rejected).sum(-1) - (h_chosen * h_chosen).sum(-1)


def pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    """Pearson correlation of two (P,) series; NaN when either is constant or P < 2."""
    x, y = x.double() - x.double().mean(), y.double() - y.double().mean()
    denominator = (x.square().sum() * y.square().sum()).sqrt()
    return float((x * y).sum() / denominator) if len(x) > 1 and denominator > 0 else float("nan")


def _pair_rows(rows) -> list[dict]:
    out = []
    for i, row in enumerate(rows):
        if len(row["completion_ids"]) != 2:
            raise ValueError(f"probe row {i}: a probe needs exactly 2 completions (chosen, rejected), got {len(row['completion_ids'])}")
        out.append({"prompt_ids": row["prompt_ids"], "completion_ids": row["completion_ids"], **carried(row)})
    return out


def _batches(rows, batch_size: int, pad_token_id: int, processor=None, share_prompt: bool = False):
    collator = PreferenceCollator(pad_token_id, padding_free=True, processor=processor, share_prompt=share_prompt)
    rows = _pair_rows(rows)
    for start in range(0, len(rows), batch_size):
        yield collator(rows[start : start + batch_size])


@torch.no_grad()
def measure_pairs(
    model: torch.nn.Module,
    rows,
    *,
    pad_token_id: int,
    batch_size: int = 8,
    top_k: int = 20,
    autocast=contextlib.nullcontext,
    processor=None,
) -> PairMeasurement:
    """Measure the probe pairs (tokenized rows: ``prompt_ids`` and ``completion_ids`` = [chosen,
    rejected]) under ``model`` in packed batches of ``batch_size`` pairs. See the module docstring.
    Rows with images need the vision-language model's ``processor`` (their image inputs)."""
    device = next(model.parameters()).device
    head = model.get_output_embeddings()
    captured = {}
    hook = head.register_forward_hook(lambda module, args, output: captured.update(hidden=args[0]))
    was_training = model.training
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in ("logps", "tokens", "entropy", "mass", "hidden")}
    try:
        # each prompt once, before both completions, where the model's attention reads that layout
        for batch in _batches(rows, batch_size, pad_token_id, processor, share_prompt=uses_varlen_attention(model)):
            input_ids = batch["input_ids"].to(device)
            vision = {k: v.to(device) for k, v in batch.pop("vision", {}).items()}
            keep, targets, seq, n = packed_completion_index({k: v.to(device) for k, v in batch.items()})
            with autocast():
                out = model(input_ids=input_ids, position_ids=batch["position_ids"].to(device), use_cache=False,
                            logits_to_keep=keep, **vision)  # fmt: skip
            logits = out.logits[0].float()
            hidden = captured.pop("hidden")[0].float()
            if hidden.shape[0] != len(keep):  # a head that saw every position: keep the completion ones
                hidden = hidden[keep]
            lse = logits.logsumexp(-1)
            logps = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - lse
            # top-k signals only over the chosen responses (even sequences): the rejected ones are not reported
            chosen = seq % 2 == 0
            top = (logits[chosen].topk(min(top_k, logits.shape[-1]), dim=-1).values - lse[chosen].unsqueeze(-1)).exp()
            mass = top.sum(-1)
            q = top / mass.unsqueeze(-1)
            entropy = -(q * q.clamp_min(1e-30).log()).sum(-1)

            def per_seq(values, index=seq):
                return values.new_zeros((n, *values.shape[1:])).index_add(0, index, values)

            parts["logps"].append(per_seq(logps.double()).cpu())
            parts["tokens"].append(torch.bincount(seq, minlength=n).double().cpu())
            parts["entropy"].append(per_seq(entropy.double(), seq[chosen]).cpu())
            parts["mass"].append(per_seq(mass.double(), seq[chosen]).cpu())
            parts["hidden"].append(per_seq(hidden.double()).cpu())
    finally:
        hook.remove()
        model.train(was_training)
    logps, tokens, entropy, mass, hidden = (torch.cat(parts[k]) for k in ("logps", "tokens", "entropy", "mass", "hidden"))
    # sequences are ordered (pair, completion): chosen at even, rejected at odd indices
    return PairMeasurement(
        chosen_logps=logps[0::2],
        rejected_logps=logps[1::2],
        chosen_tokens=tokens[0::2],
        rejected_tokens=tokens[1::2],
        chosen_topk_entropy=entropy[0::2] / tokens[0::2],
        chosen_topk_mass=mass[0::2] / tokens[0::2],
        ches=ches(hidden[0::2], hidden[1::2]),
    )


def gradient_cosine(
    model: torch.nn.Module, rows, *, pad_token_id: int, autocast=contextlib.nullcontext, processor=None
) -> torch.Tensor:
    """cos(∇θ log π(y_w|x), ∇θ log π(y_l|x)) per pair over the trainable parameters θ (P,).

    Uses ``torch.autograd.grad``: parameters' ``.grad`` and any DDP reducer are left untouched."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("gradient_cosine: the model has no trainable parameters")
    device = params[0].device
    collator = PreferenceCollator(pad_token_id, padding_free=True, processor=processor)
    was_training = model.training
    model.eval()
    cosines = []
    try:
        for row in _pair_rows(rows):
            grads = []
            for k, completion in enumerate(row["completion_ids"]):  # without masks every completion token is trained
                single = {"prompt_ids": row["prompt_ids"], "completion_ids": [completion], **carried(row, [k])}
                batch = collator([single])
                batch = {k: {n: t.to(device) for n, t in v.items()} if k == "vision" else v.to(device)
                         for k, v in batch.items()}  # fmt: skip
                with autocast():
                    logp = completion_logps(model, batch)["logps_sum"].sum()
                grads.append(torch.autograd.grad(logp.float(), params, allow_unused=True))
            dot = norm_w = norm_l = torch.zeros((), dtype=torch.float64, device=device)
            for g_w, g_l in zip(*grads):
                if g_w is None or g_l is None:
                    continue
                g_w, g_l = g_w.double(), g_l.double()
                dot, norm_w, norm_l = dot + (g_w * g_l).sum(), norm_w + g_w.square().sum(), norm_l + g_l.square().sum()
            cosines.append((dot / (norm_w.sqrt() * norm_l.sqrt()).clamp_min(1e-300)).cpu())
    finally:
        model.train(was_training)
    return torch.stack(cosines)


def drift_metrics(baseline: PairMeasurement, current: PairMeasurement, beta: float) -> dict[str, float]:
    """Scalar summaries of ``current`` against the step-0 ``baseline`` (see the module docstring).
    Keys have no prefix; a value that does not apply (no displaced pair, P < 2) is left out."""
    if len(baseline) != len(current):
        raise ValueError(f"baseline has {len(baseline)} probe pairs, current {len(current)}")
    d_chosen = current.chosen_logps - baseline.chosen_logps
    d_rejected = current.rejected_logps - baseline.rejected_logps
    chosen_mean = current.chosen_logps / current.chosen_tokens
    rejected_mean = current.rejected_logps / current.rejected_tokens
    margin = current.chosen_logps - current.rejected_logps
    metrics = {
        "chosen_logps": current.chosen_logps.mean(),
        "rejected_logps": current.rejected_logps.mean(),
        "chosen_logps_per_token": chosen_mean.mean(),
        "rejected_logps_per_token": rejected_mean.mean(),
        "chosen_change": d_chosen.mean(),
        "rejected_change": d_rejected.mean(),
        "chosen_change_per_token": (d_chosen / current.chosen_tokens).mean(),
        "rejected_change_per_token": (d_rejected / current.rejected_tokens).mean(),
        "margin": margin.mean(),
        "margin_change": (margin - (baseline.chosen_logps - baseline.rejected_logps)).mean(),
        "rewards/chosen": beta * d_chosen.mean(),
        "rewards/rejected": beta * d_rejected.mean(),
        "rewards/margins": beta * (d_chosen - d_rejected).mean(),
        "rewards/accuracies": (d_chosen > d_rejected).double().mean(),
        "displacement_rate": (d_chosen < 0).double().mean(),
        "topk_entropy": current.chosen_topk_entropy.mean(),
        "topk_mass": current.chosen_topk_mass.mean(),
        "ches": baseline.ches.mean(),
    }
    if (d_chosen < 0).any():
        metrics["displacement_mean_fall"] = -d_chosen[d_chosen < 0].mean()
    correlation = pearson(baseline.ches, d_chosen)
    if correlation == correlation:  # not NaN
        metrics["ches_corr"] = correlation
    return {name: float(value) for name, value in metrics.items()}
