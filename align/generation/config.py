"""Sampling settings and the deterministic chunking that makes sampling resumable and shardable.

Prompts are cut into fixed chunks of ``chunk_size`` (chunk i = prompts[i*cs:(i+1)*cs]); each chunk
is sampled under its own random seed derived from ``(seed, i)``. A chunk's samples therefore depend
only on the model, the chunk's prompts, the settings and its index: not on which chunks ran before
it, which process ran it, or whether the run was interrupted and resumed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

__all__ = ["PRECISIONS", "SamplingConfig", "chunk_bounds", "chunk_seed", "fast_bf16"]

PRECISIONS = ("model", "bf16")


@dataclass
class SamplingConfig:
    """How to sample K completions per prompt.

    ``temperature=0`` means greedy decoding (``top_p``/``top_k`` are then ignored). Greedy decoding
    has one answer per prompt, so it is computed once and repeated: all ``num_samples`` completions
    of a prompt are equal (use ``num_samples=1`` unless the caller needs the K-shaped output).

    ``batch_size`` counts sequences (prompt copies) per ``generate`` call; ``chunk_size`` counts
    prompts and is the unit of seeding, of work split across processes and of resumable progress.
    Samples are reproducible for the same settings, model and device; changing ``batch_size`` or
    ``chunk_size`` changes how sequences are batched and seeded, hence the samples.

    ``precision``: ``"model"`` samples in the model's own dtype; ``"bf16"`` under bfloat16 autocast
    (matmuls in bf16, as training with ``--bf16``; about 1.7× faster on a CPU with AVX512-BF16 or AMX
    and on GPUs, slower on a CPU without them). Samples differ between the two.
    """

    num_samples: int = 4
    max_new_tokens: int = 128
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    batch_size: int = 32
    chunk_size: int = 16
    precision: str = "model"

    def __post_init__(self) -> None:
        for name in ("num_samples", "max_new_tokens", "batch_size", "chunk_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"SamplingConfig.{name} must be a positive integer, got {value!r}")
        if self.temperature < 0:
            raise ValueError(f"SamplingConfig.temperature must be >= 0 (0 = greedy), got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingConfig.top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"SamplingConfig.top_k must be an integer >= 0 (0 = off), got {self.top_k!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"SamplingConfig.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not isinstance(self.seed, int):
            raise ValueError(f"SamplingConfig.seed must be an integer, got {self.seed!r}")

    @property
    def greedy(self) -> bool:
        """True when ``temperature == 0``: deterministic argmax decoding, one distinct answer per prompt."""
        return self.temperature == 0


def fast_bf16(device: Any) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices faster than float32: a CUDA device that
    supports bf16, or a CPU with AVX512-BF16 or AMX (on other CPUs bf16 matmuls are emulated and
    slower than float32)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return False


def chunk_bounds(num_prompts: int, chunk_size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` prompt ranges of every chunk, in order (the last one may be shorter)."""
    return [(start, min(start + chunk_size, num_prompts)) for start in range(0, num_prompts, chunk_size)]


def chunk_seed(seed: int, chunk_index: int) -> int:
    """The RNG seed of chunk ``chunk_index`` under ``seed``: a stable hash (not Python's salted
    ``hash``), so it is the same in every process and every run, and neighbouring (seed, chunk)
    pairs do not give correlated streams."""
    digest = hashlib.sha256(f"align.generation:{seed}:{chunk_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)
