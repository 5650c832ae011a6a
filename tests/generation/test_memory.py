"""The sampling batch fits the free memory: the per-sequence estimate against a real KV cache, the
arithmetic of lowering a batch, and a generator that lowers it samples exactly what the lower
batch_size samples, with a warning."""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from align.generation import memory, sample_completions
from align.generation.hf import encode_prompts
from align.generation.memory import MEMORY_SHARE, bytes_per_sequence, fitting_batch, free_memory_bytes
from tests.generation.common import sampling_config


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def test_the_estimate_is_the_kv_cache_a_forward_keeps_plus_the_logits(tiny):
    model, _ = tiny
    batch, length = 3, 11
    element_bytes = next(model.parameters()).element_size()
    logits = 3 * model.config.vocab_size * 4

    def cached(autocast: bool) -> int:
        cache = DynamicCache(config=model.config)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            model(input_ids=torch.ones(batch, length, dtype=torch.long), past_key_values=cache, use_cache=True)
        return sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))

    estimate = batch * (bytes_per_sequence(model.config, length, element_bytes) - logits)
    assert estimate == cached(False) > 0
    # under bf16 autocast the rotated keys stay in the residual stream's dtype (fp32 here): the
    # estimate in the weights' dtype is an upper bound
    assert 0 < cached(True) <= estimate


def test_a_batch_is_lowered_only_when_it_would_not_fit():
    assert fitting_batch(128, 1000, None) == 128  # free memory unknown: as configured
    assert fitting_batch(128, 1000, int(128 * 1000 / MEMORY_SHARE)) == 128  # exactly fits
    assert fitting_batch(128, 1000, 100_000) == 50  # half of 100 kB holds 50 sequences of 1 kB
    assert fitting_batch(128, 1000, 100_000, multiple=4) == 48  # whole prompts of 4 copies
    assert fitting_batch(128, 1000, 1000, multiple=4) == 4  # never below one prompt's copies
    assert free_memory_bytes(torch.device("cpu")) > 0


def test_a_lowered_batch_samples_what_that_batch_size_samples_and_warns(tiny, monkeypatch, caplog):
    model, tok = tiny
    prompts = ["What is 7 times 8?", "What is 9 plus 4?", "What is 6 minus 2?", "What is 5 times 3?"]
    config = sampling_config(batch_size=6)  # 2 prompts × 3 copies per batch
    lengths = [len(ids) + config.max_new_tokens for ids in encode_prompts(tok, prompts)]
    longest, shortest = (bytes_per_sequence(model.config, n, 4) for n in (max(lengths), min(lengths)))
    # free memory for 3 of the longest sequences (one prompt's copies); 6 of the shortest do not fit
    free = int(3 * longest / MEMORY_SHARE) + 1
    assert 6 * shortest > MEMORY_SHARE * free
    monkeypatch.setattr(memory, "free_memory_bytes", lambda device: free)
    monkeypatch.setattr("align.generation.hf.free_memory_bytes", memory.free_memory_bytes)
    with caplog.at_level(logging.WARNING, logger="align.generation.hf"):
        lowered = sample_completions(model, tok, prompts, config, show_progress=False)
    assert "sampling 3 sequences at a time instead of batch_size=6" in caplog.text
    monkeypatch.undo()
    assert lowered == sample_completions(model, tok, prompts, sampling_config(batch_size=3), show_progress=False)
    assert lowered != sample_completions(model, tok, prompts, config, show_progress=False)  # the batch matters
