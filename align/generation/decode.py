"""align's own decoding loop for text causal LMs: what ``generate`` computes, without its waste.

Sampling K completions per prompt with batched ``generate`` spends most of its time on work whose
result is thrown away (profiled on SmolLM2-135M, K = 4, 48 new tokens, 2 CPU cores):

* every finished sequence keeps being decoded until the longest one stops (on the default task
  60% of the decoded tokens were after an EOS);
* nucleus sampling sorts the whole vocabulary (49,152 logits) for every row at every step, and
  ``torch.multinomial`` draws an exponential for every logit: 30% of the time;
* the K copies of a prompt each run their own prefill.

:func:`decode` runs the same model calls as ``generate`` (a left-padded prefill with positions
``cumsum(mask) − 1``, then one token per step with the KV cache and the 2-D mask grown by one),
but prefills each prompt once and copies its cache K times, drops finished rows from the batch
(and from the cache) as they finish, and samples with :func:`sample_tokens`, which finds the
nucleus among the top candidates instead of sorting the vocabulary. Greedy decoding takes the
argmax like ``generate`` (equal outputs in the same dtype, tested); sampling draws from the same
distribution as ``generate``'s temperature → top-k → top-p warpers (tested against them), from a
different random stream.

:func:`unsupported` names what would make ``generate`` do more than this (a vision-language model,
an encoder-decoder, logits processors from the model's generation config such as a repetition
penalty); the generator then calls ``generate`` instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["decode", "left_pad", "sample_tokens", "sampling_weights", "unsupported"]

# GenerationConfig fields that make ``generate`` process logits beyond temperature/top-k/top-p, or
# decode other than one sampled/greedy token per step. Any of them set off its default sends the
# model to ``generate``.
_GENERATE_ONLY = (
    "repetition_penalty", "encoder_repetition_penalty", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size",
    "bad_words_ids", "min_length", "min_new_tokens", "forced_bos_token_id", "forced_eos_token_id",
    "remove_invalid_values", "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens",
    "sequence_bias", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff", "guidance_scale", "watermarking_config",
    "renormalize_logits", "top_h", "num_beams", "penalty_alpha", "dola_layers", "prompt_lookup_num_tokens",
)  # fmt: skip


def unsupported(model: Any) -> str | None:
    """Why :func:`decode` cannot stand in for ``model.generate`` (``None`` when it can)."""
    from transformers import GenerationConfig

    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return "an encoder-decoder model"
    from align.models import is_vision_config

    if is_vision_config(config):
        return "a vision-language model"
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None:
        defaults = GenerationConfig()
        changed = [
            name
            for name in _GENERATE_ONLY
            if getattr(generation_config, name, None) not in (None, getattr(defaults, name, None))
        ]
        if changed:
            return f"its generation config sets {', '.join(changed)}"
    return None


def sample_tokens(
    logits: torch.Tensor, *, temperature: float, top_k: int = 0, top_p: float = 1.0, generator: Any = None
) -> torch.Tensor:
    """One token per row of ``logits`` (n, V): the argmax when ``temperature == 0``, else a draw from
    :func:`sampling_weights` by inversion (u ~ U[0, Σ w), the first candidate whose cumulative weight
    exceeds u). Returns an (n,) long tensor."""
    if temperature == 0:
        return logits.argmax(-1)
    weights, index = sampling_weights(logits, temperature=temperature, top_k=top_k, top_p=top_p)
    return index.gather(-1, _draw(weights, generator)[:, None])[:, 0]


def sampling_weights(
    logits: torch.Tensor, *, temperature: float, top_k: int = 0, top_p: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(weights, index)``, both (n, m): the candidate tokens of each row and their unnormalised
    probabilities under ``generate``'s sampling warpers, in their order:

    * temperature: s = logits / T (in float32);
    * top-k (k > 0): tokens scoring below the k-th highest score are removed (ties at the k-th kept);
    * top-p (p < 1): with π = softmax(s) in descending order π_(1) ≥ π_(2) ≥ …, token (j) is kept
      iff the mass above it, Σ_{i<j} π_(i), is < p (transformers keeps it iff its ascending
      cumulative probability, 1 − Σ_{i<j} π_(i), is > 1 − p: the same set); the most likely token is
      always kept;
    * the draw is from π restricted to the kept tokens (weight 0 elsewhere), renormalised.

    Without top-p the candidates are the whole vocabulary. With it they are the top m = 64
    probabilities (then 256, … up to the whole vocabulary) once, for every row, the nucleus ends
    inside them: the first token left out has Σ_{i≤m} π_(i) ≥ p above it, so it is not kept. This
    replaces ``generate``'s sort of the whole vocabulary at every step."""
    scores = logits.float() / temperature
    vocab = scores.shape[-1]
    if 0 < top_k < vocab:
        kth = scores.topk(top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    probs = scores.softmax(-1)
    if top_p >= 1:
        return probs, torch.arange(vocab, device=probs.device).expand_as(probs)
    m = min(64, vocab)
    while True:
        top, index = probs.topk(m, dim=-1)  # sorted, descending
        if m == vocab or bool((top.sum(-1) >= top_p).all()):
            break
        m = min(vocab, m * 4)
    above = top.cumsum(-1) - top
    weights = torch.where(above < top_p, top, torch.zeros_like(top))
    weights[..., 0] = top[..., 0]  # min_tokens_to_keep = 1
    return weights, index


def _draw(weights: torch.Tensor, generator: Any) -> torch.Tensor:
    """Index i of each row with probability weights[i] / Σ weights (by inverting the cumulative sum)."""
    cdf = weights.cumsum(-1)
    u = torch.rand(cdf.shape[0], 1, generator=generator, device=cdf.device, dtype=cdf.dtype) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True)[:, 0].clamp_(max=cdf.shape[-1] - 1)


def left_pad(sequences: Sequence[Sequence[int]], pad_token_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Left-padded ``input_ids`` and ``attention_mask``, so every prompt ends where generation starts.

    Padding here rather than with the tokenizer leaves the tokenizer's ``padding_side`` untouched."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, width - len(seq) :] = torch.tensor(list(seq), dtype=torch.long)
        attention_mask[row, width - len(seq) :] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}


def decode(
    model: Any,
    prompts: Sequence[Sequence[int]],
    *,
    copies: int,
    max_new_tokens: int,
    eos: Sequence[int],
    pad_token_id: int,
    temperature: float,
    top_k: int = 0,
    top_p: float = 1.0,
) -> list[list[int]]:
    """The new tokens of ``copies`` completions of each prompt (``len(prompts) * copies`` lists, the
    copies of a prompt together), each cut before its first EOS and at most ``max_new_tokens`` long.

    ``model`` is a decoder-only causal LM (plain or PEFT) in eval mode; the caller holds ``no_grad``
    and seeds the RNG. Prefill: the prompts left-padded, positions ``cumsum(mask) − 1`` (0 on
    padding), only the last position's logits; the cache and mask are then repeated ``copies``
    times. Each step feeds the last token of every unfinished row with position +1 and the mask
    grown by a column of ones, exactly as ``generate``; rows that produced an EOS (or filled their
    budget) leave the batch and the cache."""
    from transformers import DynamicCache

    device = next(model.parameters()).device
    batch = left_pad(prompts, pad_token_id, device)
    input_ids, mask = batch["input_ids"], batch["attention_mask"]
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    cache = DynamicCache(config=getattr(model, "config", None))
    out = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                use_cache=True, logits_to_keep=1)  # fmt: skip
    cache = out.past_key_values
    logits = out.logits[:, -1]
    if copies > 1:
        cache.batch_repeat_interleave(copies)
        logits = logits.repeat_interleave(copies, dim=0)
        mask = mask.repeat_interleave(copies, dim=0)
        positions = positions.repeat_interleave(copies, dim=0)
    position = positions[:, -1]
    rows = torch.arange(len(prompts) * copies, device=device)  # which sequence each batch row is
    stop = torch.tensor(sorted(set(eos)), device=device)
    tokens: list[list[int]] = [[] for _ in range(len(rows))]
    for step in range(max_new_tokens):
        token = sample_tokens(logits, temperature=temperature, top_k=top_k, top_p=top_p)
        finished = torch.isin(token, stop)
        for row, value, done in zip(rows.tolist(), token.tolist(), finished.tolist()):
            if not done:
                tokens[row].append(value)
        if step == max_new_tokens - 1:
            break
        if bool(finished.any()):
            keep = (~finished).nonzero()[:, 0]
            if len(keep) == 0:
                break
            cache.batch_select_indices(keep)
            rows, token, mask, position = rows[keep], token[keep], mask[keep], position[keep]
        mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=-1)
        position = position + 1
        out = model(input_ids=token[:, None], attention_mask=mask, position_ids=position[:, None],
                    past_key_values=cache, use_cache=True)  # fmt: skip
        cache = out.past_key_values
        logits = out.logits[:, -1]
    return tokens
