"""How many sequences one decoding batch can hold in the memory this process has free.

Decoding ``B`` sequences of up to ``L`` tokens (prompt + new tokens) keeps a key and a value per
layer, KV head and position,

    KV cache = B · 2 · layers · kv_heads · head_dim · L · bytes per element,

plus one step's logits over the vocabulary (fp32, with the softmax and the sampling candidates
about 3 · V · 4 bytes a sequence). :func:`fitting_batch` lowers a requested batch so that this
stays within half the free memory (the rest is left to the weights' activations, the allocator's
slack and the other processes), and leaves it alone whenever it fits: the configured batch
decides the samples, so a batch is only changed where keeping it would run out of memory.
"""

from __future__ import annotations

import torch

__all__ = ["MEMORY_SHARE", "bytes_per_sequence", "fitting_batch", "free_memory_bytes"]

MEMORY_SHARE = 0.5  # of the free memory, for the KV cache and the logits of one batch


def free_memory_bytes(device: torch.device) -> int | None:
    """Free memory of ``device`` (a CUDA GPU's free memory, or the machine's available RAM for the
    CPU); None where it cannot be read."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        import psutil

        return psutil.virtual_memory().available
    return None


def bytes_per_sequence(config, length: int, element_bytes: int) -> int:
    """Bytes one sequence of ``length`` tokens needs while decoding with a model of ``config``: its
    KV cache (``element_bytes`` per value: the weights' dtype, an upper bound under autocast) and
    one step's fp32 logits, softmax and sampling candidates."""
    text = config.get_text_config()
    heads = text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    kv_cache = 2 * text.num_hidden_layers * kv_heads * head_dim * length * element_bytes
    return kv_cache + 3 * text.vocab_size * 4


def fitting_batch(requested: int, per_sequence: int, free: int | None, *, multiple: int = 1) -> int:
    """``requested`` sequences, or fewer (a multiple of ``multiple``, at least ``multiple``: the K
    copies of a prompt stay together) when ``requested`` · ``per_sequence`` exceeds
    :data:`MEMORY_SHARE` of ``free`` bytes; unchanged when ``free`` is unknown."""
    if free is None or requested * per_sequence <= MEMORY_SHARE * free:
        return requested
    fits = int(MEMORY_SHARE * free // per_sequence)
    return max(multiple, fits // multiple * multiple)
