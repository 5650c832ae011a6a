"""The generator interface and the backend registry.

A backend turns prompts into K completion texts per prompt. Only the Hugging Face backend ("hf")
ships; a vLLM backend can be added later by registering a class with the same ``generate``
signature, without callers (the on-policy loops) changing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

from align.generation.config import SamplingConfig

__all__ = [
    "ChunkCallback",
    "Generator",
    "Prompt",
    "available_generators",
    "get_generator",
    "register_generator",
]

Prompt = str | list[dict[str, Any]]
"""A plain-text prompt (used as is) or a conversation (rendered with the chat template).

A message's ``content`` is a string or a list of parts: ``{"type": "text", "text": ...}`` and, for a
vision-language model sampled through its processor, ``{"type": "image", "image": value}`` (a path,
bytes, a PIL image or a ``{"bytes", "path"}`` dict; :func:`align.data.fill_images` fills bare
``{"type": "image"}`` placeholders from a row's image list). Sampling never writes prompts, but a
caller that persists them (the on-policy loops) should use path strings, which are JSON-safe."""

ChunkCallback = Callable[[int, list[list[str]]], None]
"""``on_chunk(chunk_index, results)``: called once per finished chunk with its K completions per prompt."""


@runtime_checkable
class Generator(Protocol):
    """Samples ``config.num_samples`` completions for every prompt.

    Returns ``len(prompts)`` lists of K completion texts, in prompt order. ``done_chunks`` maps
    chunk index → that chunk's results from an earlier, interrupted run; those chunks are not
    generated again. ``on_chunk`` is called (on the main process) after each newly finished chunk,
    so the caller can persist progress.
    """

    def generate(
        self,
        prompts: Sequence[Prompt],
        config: SamplingConfig,
        *,
        on_chunk: ChunkCallback | None = None,
        done_chunks: Mapping[int, list[list[str]]] | None = None,
    ) -> list[list[str]]: ...


_REGISTRY: dict[str, Callable[..., Generator]] = {}
G = TypeVar("G", bound=Callable[..., Generator])


def register_generator(name: str) -> Callable[[G], G]:
    """Class decorator: make a backend buildable as ``get_generator(name, ...)``."""

    def decorator(cls: G) -> G:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"generation backend {name!r} is already registered by {_REGISTRY[name]!r}")
        _REGISTRY[name] = cls
        return cls

    return decorator


def available_generators() -> list[str]:
    """Names of the registered generation backends."""
    return sorted(_REGISTRY)


def get_generator(backend: str, *args: Any, **kwargs: Any) -> Generator:
    """Build the generation backend registered as ``backend`` (e.g. ``get_generator("hf", model,
    tokenizer, accelerator)``); an unknown name fails with the list of known ones."""
    try:
        cls = _REGISTRY[backend]
    except KeyError:
        raise ValueError(
            f"unknown generation backend {backend!r}; known backends: {', '.join(available_generators())}"
        ) from None
    return cls(*args, **kwargs)
