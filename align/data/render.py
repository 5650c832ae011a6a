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

A completion may be a multi-turn conversation (assistant, user, ..., assistant) whose user and tool
turns are context, not the model's output: :func:`assistant_mask` marks the tokens the model wrote.

Every function takes a tokenizer or a processor (a vision model's, :func:`align.data.images.is_processor`).
A processor renders conversations with its own ``apply_chat_template``, which also loads the images held
by the image parts (:func:`align.data.images.fill_images`) and expands each placeholder into the
model's image tokens; only the ids are kept. Images travel inside their messages, so the prefix renders
of :func:`assistant_mask` see exactly the images of the turns they render.
"""

from __future__ import annotations

from collections.abc import Mapping
import re
from typing import Any

from align.data.images import is_processor, load_image, text_tokenizer

__all__ = ["adds_bos", "assistant_mask", "chat_ids", "prompt_ids"]


def prompt_ids(tokenizer: Any, prompt: str | list[dict[str, Any]], *, name: str = "prompt") -> list[int]:
    """The token ids of ``prompt`` that a completion follows (module docstring); errors start with ``name``."""
    if isinstance(prompt, str):
        tokenizer = text_tokenizer(tokenizer)
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

    Keys whose value is None (Arrow gives every message every key) are dropped by transformers. A processor
    renders with its own template and expands the image parts' images into image tokens (module docstring);
    it adds the tokenizer's special tokens unless the rendered text starts with BOS, the same for a prompt
    and for prompt + answer, so the prefix rule holds."""
    if not getattr(tokenizer, "chat_template", None):
        what = "processor" if is_processor(tokenizer) else "tokenizer"
        raise ValueError(f"{name} is a conversation but the {what} has no chat template")
    if is_processor(tokenizer):
        messages = _loaded(messages)
    # transformers 5 returns a BatchEncoding from apply_chat_template(tokenize=True); a processor a batch of one.
    encoded = tokenizer.apply_chat_template(
        messages, add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=True
    )
    return list(encoded["input_ids"][0] if is_processor(tokenizer) else encoded["input_ids"])


def _loaded(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Image parts holding bytes or ``{"bytes", "path"}`` dicts as PIL images, which the processor reads; other
    values (PIL images, paths) go as they are: both are loaded the way :func:`load_image` loads them."""
    from PIL import Image

    def part(p: Any) -> Any:
        value = p.get("image") if isinstance(p, Mapping) and p.get("type") == "image" else None
        return p if value is None or isinstance(value, (Image.Image, str)) else {**p, "image": load_image(value)}

    return [
        {**m, "content": [part(p) for p in m["content"]]} if isinstance(m.get("content"), list) else m for m in messages
    ]


def adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer puts its BOS token in front by default (Llama, Mistral do; GPT-2, Qwen do not)."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a", add_special_tokens=True)["input_ids"][:1] == [bos]


# transformers' {% generation %} block (the regex of trl.chat_template_utils.has_generation_markers).
_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")


def assistant_mask(
    tokenizer: Any, prompt: list[dict[str, Any]], completion: list[dict[str, Any]], full: list[int], start: int,
    *, name: str = "completion",
) -> list[int]:  # fmt: skip
    """1 on the tokens of ``full[start:]`` the model wrote (the assistant turns of ``completion``), 0 on the
    user/tool turns between them; ``full = chat_ids(prompt + completion)``, ``start = len(prompt_ids(prompt))``.

    - A template with ``{% generation %}`` blocks (TRL's ``*_training.jinja`` templates) and a fast
      tokenizer: transformers' ``return_assistant_tokens_mask``, i.e. exactly what the template author
      wrapped. Checked, because transformers marks to the end of the sequence when a block's last
      character maps to no token, and silently stops marking after a block whose first one does not:
      every assistant turn must get masked tokens, in at most one run each, and no user/tool turn.
    - Otherwise the single-turn rule applied per turn: assistant message i (of the whole conversation
      M) trains on ``chat_ids(M[:i+1])`` minus ``chat_ids(M[:i], add_generation_prompt=True)``: what
      the model generates after its generation prompt, end-of-turn included. Both must be token
      prefixes of ``full``; a template that rewrites earlier turns once later ones follow (Qwen3 and
      DeepSeek-R1 drop earlier reasoning, Mistral moves the system text into the last user turn) is
      refused, naming the message and the diverging text, rather than trained on a guessed boundary.
    """
    messages = list(prompt) + list(completion)
    first = len(prompt)
    decode = text_tokenizer(tokenizer).decode
    assistant = [i for i in range(first, len(messages)) if messages[i]["role"] == "assistant"]
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else ""
    if _GENERATION_TAG.search(template) and getattr(tokenizer, "is_fast", False):
        return _tagged_mask(tokenizer, messages, assistant, full, start, name)
    mask = [0] * len(full)
    for i in assistant:
        begin = chat_ids(tokenizer, messages[:i], add_generation_prompt=True)
        end = chat_ids(tokenizer, messages[: i + 1])
        for ids, what in ((begin, "its generation prompt"), (end, "its end")):
            if (diverge := prefix_divergence(ids, full)) is not None:
                raise ValueError(
                    f"{name}: message {i - first}: the chat template renders the conversation up to {what} differently "
                    f"than as a part of the whole conversation (from token {diverge}: {decode(ids[diverge:diverge + 8])!r} "
                    f"vs {decode(full[diverge:diverge + 8])!r}), so the assistant turn's tokens cannot be told "
                    "apart; use a chat template with {% generation %} blocks (e.g. TRL's *_training.jinja)"
                )
        mask[len(begin) : len(end)] = [1] * (len(end) - len(begin))
    return mask[start:]


def prefix_divergence(prefix: list[int], full: list[int]) -> int | None:
    """None if ``prefix`` is a prefix of ``full``, else the first position where they differ."""
    if full[: len(prefix)] == prefix:
        return None
    return next((j for j, (a, b) in enumerate(zip(prefix, full)) if a != b), len(full))


def _tagged_mask(tokenizer, messages, assistant, full, start, name) -> list[int]:
    encoded = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    if list(encoded["input_ids"]) != full:
        raise ValueError(f"{name}: rendering with the assistant mask gave other tokens than without it")
    mask = list(encoded["assistant_masks"])[start:]
    runs = sum(1 for j, m in enumerate(mask) if m and (j == 0 or not mask[j - 1]))
    groups = sum(1 for j, i in enumerate(assistant) if j == 0 or assistant[j - 1] != i - 1)
    if not groups <= runs <= len(assistant):
        raise ValueError(
            f"{name}: the chat template's {{% generation %}} blocks mark {runs} token runs after the prompt for "
            f"{len(assistant)} assistant messages in {groups} groups; each assistant turn needs its own block, "
            "and a block must end on a token"
        )
    return mask
