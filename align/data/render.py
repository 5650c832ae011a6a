"""The one prompt renderer: the token ids a completion follows, for sampling and for training alike.

:func:`prompt_ids` is what :mod:`align.generation` feeds to ``generate`` and what
:func:`align.data.tokenize_row` puts in front of every completion, so the tokens a completion is
trained after are exactly the tokens it was sampled after. (Two renderers drift, and a drifted one
silently trains on a context the model never saw, e.g. a doubled BOS.)

- A conversation (a non-empty list of ``{"role", "content"}`` messages) is rendered by the
  tokenizer's chat template with the generation prompt and tokenized without adding special
  tokens, as ``apply_chat_template(tokenize=True)`` does: the template writes every special token
  the model expects (Llama 3's ``<|begin_of_text|>`` included), and the tokenizer's own BOS on top
  would double it. :func:`chat_ids` renders a whole conversation (prompt + answer) the same way,
  which is what makes ``chat_ids(prompt + completion)[:len(prompt_ids(prompt))] == prompt_ids(prompt)``
  a meaningful check.
- A string is tokenized without special tokens; the tokenizer's BOS goes in front if the tokenizer
  adds one by default (Llama, Mistral; not GPT-2, Qwen, SmolLM2) and the text does not already
  start with it (a prompt stored pre-rendered by a chat template carries its own). Never an EOS,
  which some tokenizers append with ``add_special_tokens=True``: a prompt ending in EOS tells the
  model its turn is over.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["adds_bos", "chat_ids", "prompt_ids"]


def prompt_ids(tokenizer: Any, prompt: str | list[dict[str, Any]], *, name: str = "prompt") -> list[int]:
    """The token ids of ``prompt`` that a completion follows (module docstring); errors start with ``name``."""
    if isinstance(prompt, str):
        ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        bos = tokenizer.bos_token_id
        if ids[:1] != [bos] and adds_bos(tokenizer):
            ids.insert(0, bos)
    elif isinstance(prompt, list) and prompt and all(isinstance(m, Mapping) for m in prompt):
        ids = chat_ids(tokenizer, prompt, add_generation_prompt=True, name=name)
    else:
        raise TypeError(
            f"{name} must be a string or a non-empty list of chat messages (dicts), got {type(prompt).__name__}"
        )
    if not ids:
        raise ValueError(f"{name} is empty after tokenization; a completion needs at least one token to follow")
    return ids


def chat_ids(
    tokenizer: Any, messages: list[dict[str, Any]], *, add_generation_prompt: bool = False, name: str = "prompt"
) -> list[int]:
    """``messages`` rendered by the chat template and tokenized without added special tokens.

    Keys whose value is None (Arrow gives every message every key) are dropped by transformers."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"{name} is a conversation but the tokenizer has no chat template")
    # transformers 5 returns a BatchEncoding from apply_chat_template(tokenize=True).
    encoded = tokenizer.apply_chat_template(
        messages, add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=True
    )
    return list(encoded["input_ids"])


def adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer puts its BOS token in front by default (Llama, Mistral do; GPT-2, Qwen do not)."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a", add_special_tokens=True)["input_ids"][:1] == [bos]
