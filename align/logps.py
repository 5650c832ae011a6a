"""Completion log-probabilities: the one kernel behind training, the drift probes and PRM scoring.

For a collated batch (:class:`align.data.PreferenceCollator`, padded or packed) of N prompt +
completion sequences, the log-probability of completion token y_t is

    log π(y_t | x, y_<t) = logits_{t−1}[y_t] − logsumexp(logits_{t−1})

read at the position before it; log π(y|x) = Σ_t log π(y_t | x, y_<t) over completion tokens only.
Packed batches (one row, ``position_ids`` restarting per sequence) run the LM head only at the
positions that predict a completion token (:func:`packed_completion_index`), and the log-softmax
is done in fp32 chunk by chunk (:func:`selective_logps`), so no (T, V) fp32 logits ever exist.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.utils.checkpoint import checkpoint

__all__ = ["LOGPS_CHUNK", "PackedIndex", "completion_logps", "packed_completion_index", "selective_logps"]

LOGPS_CHUNK = 1024  # rows of (chunk × vocab) fp32 logits alive at once in the log-softmax


def _chunk_logps(logits: torch.Tensor, targets: torch.Tensor, entropy: bool) -> torch.Tensor:
    logits = logits.float()
    logsumexp = logits.logsumexp(-1)
    logps = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logsumexp
    if not entropy:
        return logps
    probs = (logits - logsumexp.unsqueeze(-1)).exp()
    return torch.stack([logps, logsumexp - (probs * logits).sum(-1)], dim=-1)


def selective_logps(logits: torch.Tensor, targets: torch.Tensor, *, entropy: bool = False) -> torch.Tensor:
    """log softmax(logits)[target] per row (and the row's entropy when asked, as a trailing
    dimension of 2), in fp32 but chunk by chunk: each chunk is checkpointed, so the backward keeps
    only the (M, V) logits in their own dtype, never an fp32 (M, V) softmax."""
    outputs = []
    for chunk, chunk_targets in zip(logits.split(LOGPS_CHUNK), targets.split(LOGPS_CHUNK)):
        if torch.is_grad_enabled() and chunk.requires_grad:
            outputs.append(checkpoint(_chunk_logps, chunk, chunk_targets, entropy, use_reentrant=False))
        else:
            outputs.append(_chunk_logps(chunk, chunk_targets, entropy))
    return torch.cat(outputs)


class PackedIndex(NamedTuple):
    """Where the completion tokens of a packed batch are predicted.

    ``keep`` (M,): the positions of row 0 that predict a completion token (the LM head runs only
    there): the position before it, or for the first token of a sequence that shares a prompt, the
    prompt's last token; ``targets`` (M,): those completion tokens; ``seq`` (M,): the packed
    sequence each belongs to, in 0..``num_seqs``−1.
    """

    keep: torch.Tensor
    targets: torch.Tensor
    seq: torch.Tensor
    num_seqs: int


def packed_completion_index(inputs: dict[str, torch.Tensor]) -> PackedIndex:
    """The :class:`PackedIndex` of a packed batch (``input_ids``, ``position_ids`` and
    ``completion_mask`` (1, T), ``seq_lens``). Position t − 1 predicts token t within a sequence; a
    sequence that starts at position P > 0 continues the first P tokens of the latest sequence
    starting at 0 (a shared prompt, see :class:`align.data.PreferenceCollator`), so its first token
    is predicted at that sequence's start + P − 1. A sequence that starts at 0 starts with a prompt
    token, never a target, so no prediction crosses into another sequence."""
    input_ids, seq_lens = inputs["input_ids"], inputs["seq_lens"].to(inputs["input_ids"].device)
    device = input_ids.device
    positions = inputs["position_ids"][0].to(device)
    index = torch.arange(positions.numel(), device=device)
    starts = torch.ones_like(positions, dtype=torch.bool)
    starts[1:] = positions[1:] != positions[:-1] + 1
    root = torch.where(positions == 0, index, 0).cummax(0).values  # the latest sequence starting at 0
    previous = torch.where(starts, root + positions - 1, index - 1)
    target = inputs["completion_mask"][0].bool().nonzero().squeeze(1)
    token_seq = torch.repeat_interleave(torch.arange(len(seq_lens), device=device), seq_lens)
    return PackedIndex(previous[target], input_ids[0, target], token_seq[target], len(seq_lens))


def completion_logps(model: torch.nn.Module, inputs: dict[str, torch.Tensor], *, entropy: bool = False) -> dict:
    """Per-completion log-probs from one forward pass over a collated batch (padded or packed).

    Packed (one row, ``position_ids`` restarting per sequence, no attention mask: transformers
    builds the block-diagonal mask): the LM head runs only at the positions whose next token is a
    completion token (``logits_to_keep`` with their indices), and the log-softmax is chunked
    (:func:`selective_logps`). Padded: TRL's fused LM head (``add_fused_lm_head``) projects in
    chunks without materialising the logits; this is the reference path the packed one is tested
    against. A vision-language model also gets the batch's image inputs (``vision``: pixel values
    and whatever else the processor made, for the images of all N sequences in order), in both
    layouts; image tokens are never completion tokens, so every count is of text tokens. Returns,
    for the N sequences of the batch in row-major (b, k) order: ``logps_sum``
    (N,), per completion token ``token_logps`` and ``token_mask`` (N, C) (C = the longest
    completion; column c is the c-th trained completion token: ``completion_mask`` may have holes, the
    user turns of a multi-turn completion), ``token_counts`` (N,), and
    ``token_entropy`` (N, C) when asked.
    """
    input_ids, completion_mask = inputs["input_ids"], inputs["completion_mask"]
    vision = inputs.get("vision", {})
    if "position_ids" in inputs:
        index = packed_completion_index(inputs)
        seq, num_seqs = index.seq, index.num_seqs
        out = model(input_ids=input_ids, position_ids=inputs["position_ids"], use_cache=False, logits_to_keep=index.keep,
                    **vision)  # fmt: skip
        stats = selective_logps(out.logits[0], index.targets, entropy=entropy)
        logps, token_entropy = (stats[:, 0], stats[:, 1]) if entropy else (stats, None)
    else:
        target_mask = completion_mask[:, 1:].bool()
        num_seqs = input_ids.shape[0]
        seq = torch.arange(num_seqs, device=input_ids.device).unsqueeze(1).expand_as(target_mask)[target_mask]
        labels = input_ids.masked_fill(completion_mask == 0, -100)
        out = model(input_ids=input_ids, attention_mask=inputs["attention_mask"], use_cache=False, labels=labels,
                    fused_lm_head=True, **vision)  # fmt: skip
        logps = out.log_probs[:, -target_mask.shape[1] :][target_mask]
        token_entropy = out.entropy[:, -target_mask.shape[1] :][target_mask] if entropy else None
    counts = torch.bincount(seq, minlength=num_seqs)
    starts = torch.cumsum(counts, 0) - counts
    pos = torch.arange(len(seq), device=seq.device) - starts[seq]
    width = int(counts.max().item()) if num_seqs else 0

    def per_token(values: torch.Tensor) -> torch.Tensor:
        return values.new_zeros(num_seqs, width).index_put((seq, pos), values)

    result = {
        "logps_sum": logps.new_zeros(num_seqs).index_add(0, seq, logps),
        "token_logps": per_token(logps),
        "token_mask": torch.arange(width, device=seq.device) < counts.unsqueeze(1),
        "token_counts": counts,
    }
    if entropy:
        result["token_entropy"] = per_token(token_entropy)
    return result
