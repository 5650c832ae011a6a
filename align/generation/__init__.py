"""Sampling K completions per prompt for on-policy loops (SPPO, iterative RPO, HAEPO).

    from align.generation import SamplingConfig, get_generator

    generator = get_generator("hf", model, tokenizer, accelerator)
    samples = generator.generate(prompts, SamplingConfig(num_samples=4), on_chunk=save, done_chunks=saved)

Prompts are strings (used as is) or chat conversations (rendered with the chat template); with a
vision-language model and its processor in place of the tokenizer, a conversation's image parts
carry images (``{"type": "image", "image": path}``) and completions stay text. Sampling
is deterministic per chunk of prompts, resumable chunk by chunk, and split across processes under
accelerate; see :mod:`align.generation.hf`. Text models decode with align's own loop
(:mod:`align.generation.decode`: one prefill per prompt for its K samples, finished rows leave the
batch, nucleus sampling without sorting the vocabulary), optionally under bf16 autocast
(``SamplingConfig.precision``). Only the Hugging Face backend ("hf") exists; the
:class:`Generator` protocol and :func:`get_generator` leave room for a vLLM one.
"""

from align.generation.base import (
    ChunkCallback,
    Generator,
    Prompt,
    available_generators,
    get_generator,
    register_generator,
)
from align.generation.config import PRECISIONS, SamplingConfig, chunk_bounds, chunk_seed, fast_bf16
from align.generation.hf import HFGenerator, encode_prompts, eos_token_ids, prompt_images, sample_completions

__all__ = [
    "PRECISIONS",
    "ChunkCallback",
    "Generator",
    "HFGenerator",
    "Prompt",
    "SamplingConfig",
    "available_generators",
    "chunk_bounds",
    "chunk_seed",
    "encode_prompts",
    "eos_token_ids",
    "fast_bf16",
    "get_generator",
    "prompt_images",
    "register_generator",
    "sample_completions",
]
