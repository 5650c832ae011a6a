"""Variable-length ("varlen") SDPA for padding-free packed batches.

A packed batch is one row holding N sequences, with ``position_ids`` restarting at 0 for each and
no attention mask. transformers' ``sdpa`` path handles it by building a dense (T, T) block-diagonal
mask and running one attention over the whole row: T² work and a T² mask, although only
Σ_i n_i² of it is unmasked. ``varlen_sdpa`` instead runs causal SDPA on each sequence's slice
(``is_causal=True``, the memory-efficient kernel, no mask), which is what flash-attention's varlen
kernel does on GPU:

    out[s_i : e_i] = softmax(q_i k_iᵀ · scale + causal) v_i      for each packed sequence i

A sequence whose positions start at P > 0 instead of 0 continues the first P tokens of the latest
sequence that starts at 0 (a prompt shared by several completions, see
:class:`align.data.PreferenceCollator`): its queries attend to those P keys and causally to its own,

    out[s_i : e_i] = softmax(q_i [k_r[:P]; k_i]ᵀ · scale + causal offset by P) [v_r[:P]; v_i]

which is what it would compute packed after its own copy of the prompt.

Anything else (a padding mask, a KV cache, a batch of several rows, cross-attention shapes) is
handed to transformers' own ``sdpa`` unchanged, so generation and padded evaluation behave exactly
as before. The implementation is registered with transformers' attention and mask interfaces under
:data:`VARLEN_SDPA`; the name lives only in memory (transformers does not save
``_attn_implementation`` into ``config.json``), so saved checkpoints load anywhere.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

__all__ = [
    "VARLEN_SDPA",
    "packed_segments",
    "use_varlen_attention",
    "uses_varlen_attention",
    "varlen_sdpa_attention_forward",
]

VARLEN_SDPA = "align_varlen_sdpa"


def packed_segments(position_ids: torch.Tensor) -> list[tuple[int, int]]:
    """[(start, end)] of the sequences in one packed row: a new one starts wherever the position
    does not continue the previous one (transformers' own packing rule)."""
    positions = position_ids.reshape(-1)
    breaks = torch.ones_like(positions, dtype=torch.bool)
    breaks[1:] = positions[1:] != positions[:-1] + 1
    starts = breaks.nonzero().squeeze(1).tolist()
    return list(zip(starts, starts[1:] + [positions.numel()]))


def _segment_attention(query, key, value, scaling, dropout, sliding_window, prefix: int = 0):
    """Causal SDPA of one packed sequence: its n queries at positions prefix..prefix+n−1 over keys at
    0..prefix+n−1 (with ``prefix`` > 0 the first ``prefix`` keys are a shared prompt's), within the
    sliding window when there is one."""
    if query.device.type == "cpu" and query.dtype in (torch.bfloat16, torch.float16):
        # On CPU the fused SDPA kernel is 2-4× slower in bf16 than in fp32 for the short sequences
        # of preference data (forward + backward per sequence of 9 heads × 64: 2.0 ms against 0.7 ms
        # at 70 tokens, 4.1 against 1.7 at 150; torch 2.13): attend in fp32, return the input dtype.
        out = _segment_attention(query.float(), key.float(), value.float(), scaling, dropout, sliding_window, prefix)
        return out.to(query.dtype)
    n, m = query.shape[2], key.shape[2]
    if prefix == 0 and (sliding_window is None or n <= sliding_window):
        return F.scaled_dot_product_attention(query, key, value, is_causal=n > 1, dropout_p=dropout, scale=scaling)
    # Key j is visible from query i iff 0 <= (prefix + i) - j (< window).
    distance = (torch.arange(n, device=query.device) + prefix)[:, None] - torch.arange(m, device=query.device)[None, :]
    mask = distance >= 0
    if sliding_window is not None:
        mask &= distance < sliding_window
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout, scale=scaling)


def varlen_sdpa_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Causal SDPA per packed sequence for (1, H, T, D) queries with restarting ``position_ids``;
    otherwise transformers' ``sdpa_attention_forward``. Returns (B, T, H, D) like it."""
    position_ids = kwargs.get("position_ids")
    packed = (
        attention_mask is None
        and position_ids is not None
        and query.shape[0] == 1
        and query.shape[2] == key.shape[2] == position_ids.shape[-1]
        and getattr(module, "is_causal", True)
    )
    if not packed:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    sliding_window = kwargs.get("sliding_window", getattr(module, "sliding_window", None))
    segments = packed_segments(position_ids)
    firsts = position_ids.reshape(-1)[[s for s, _ in segments]].tolist()
    outputs, root = [], None
    for (s, e), first in zip(segments, firsts):
        if first > 0 and root is not None and root[1] - root[0] >= first:  # continues root's first `first` tokens
            shared = slice(root[0], root[0] + first)
            outputs.append(_segment_attention(
                query[:, :, s:e], torch.cat([key[:, :, shared], key[:, :, s:e]], dim=2),
                torch.cat([value[:, :, shared], value[:, :, s:e]], dim=2), scaling, dropout, sliding_window, first,
            ))  # fmt: skip
            continue
        if first == 0:
            root = (s, e)
        outputs.append(_segment_attention(query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], scaling, dropout, sliding_window))
    return torch.cat(outputs, dim=2).transpose(1, 2).contiguous(), None


def uses_varlen_attention(model: torch.nn.Module) -> bool:
    """Whether ``model`` (or a model inside it: a PEFT or DDP wrapper) attends with :data:`VARLEN_SDPA`,
    the only attention that reads packed sequences sharing a prompt (see the module docstring)."""
    return any(
        isinstance(m, PreTrainedModel) and m.config._attn_implementation == VARLEN_SDPA for m in model.modules()
    )


def varlen_sdpa_mask(*, attention_mask: torch.Tensor | None = None, **kwargs):
    """No mask without padding and without a cache offset (the attention splits a packed row
    itself); sdpa's mask otherwise."""
    if attention_mask is None and kwargs.get("q_offset", 0) == 0 and kwargs["q_length"] == kwargs["kv_length"]:
        return None
    return sdpa_mask(attention_mask=attention_mask, **kwargs)


AttentionInterface.register(VARLEN_SDPA, varlen_sdpa_attention_forward)
ALL_MASK_ATTENTION_FUNCTIONS.register(VARLEN_SDPA, varlen_sdpa_mask)


def use_varlen_attention(model: torch.nn.Module) -> bool:
    """Switch every text-only transformers model inside ``model`` (a PEFT wrapper included) from
    ``sdpa`` to :data:`VARLEN_SDPA`; other implementations (flash-attention, which packs natively;
    eager, chosen on purpose) and multimodal configs are left alone. Returns whether it switched."""
    switched = False
    for module in model.modules():
        if not isinstance(module, PreTrainedModel):
            continue
        config = module.config
        if config._attn_implementation == "sdpa" and not config.sub_configs:
            config._attn_implementation = VARLEN_SDPA
            switched = True
        switched = switched or config._attn_implementation == VARLEN_SDPA
    return switched
