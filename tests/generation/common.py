"""Prompts and settings shared by the in-process tests and the multi-process script."""

from __future__ import annotations

from align.generation import SamplingConfig

PROMPTS = [
    [{"role": "user", "content": "What is 7 times 8?"}],
    "Natalia sold 48 clips in April and half as many in May.",
    [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "What is 9 plus 4?"}],
    "Weng earns $12 an hour for babysitting.",
    [{"role": "user", "content": "How many clips did Natalia sell altogether in April and May?"}],
    "The quick brown fox",
    [{"role": "user", "content": "What is 100 minus 1?"}],
]  # 7 prompts: with chunk_size 2, chunks of 2, 2, 2, 1


def sampling_config(**overrides) -> SamplingConfig:
    """Small settings for the tiny model: 3 samples, 10 new tokens, chunks of 2 prompts, batches of 4
    sequences (so a chunk's 6 sequences take two generate calls)."""
    base = dict(
        num_samples=3, max_new_tokens=10, temperature=1.0, top_p=0.95, top_k=50, seed=0, batch_size=4, chunk_size=2
    )
    return SamplingConfig(**{**base, **overrides})
