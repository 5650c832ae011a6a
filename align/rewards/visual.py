"""Judges for visual question answering (UV-CoT): the synthetic task's checker and a vision LLM judge.

- ``visual_answer_checker`` (:class:`VisualAnswerChecker`): a verifier for the synthetic
  visual-patterns task (:mod:`align.data.visual_task`): True when the answer's first word, lowercased
  and without punctuation, is the row's reference answer.
- ``openai_vision_judge`` (:class:`OpenAIVisionJudge`): a reward model over any OpenAI-compatible
  chat-completions server with image input. It asks UV-CoT's direct check (Zhao et al. 2025, official
  code ``omnilmm/omnilmm_direct.py``, ``change_question``)::

      'Question:' + question + 'Answer:' + answer + 'Is the answer right? Please answer yes or no.'

  joined with no spaces as there, with the prompt's **original** image as a ``data:image/png;base64``
  ``image_url`` part before the text. The score is UV-CoT's evaluator score with the answer as one
  claim, s = (number of claims judged true) − (number of claims) = −(false claims): "yes" → 0.0,
  "no" → −1.0. The question is the text of the prompt's first user message with the box request
  (:data:`~align.data.boxes.BOX_PROMPT`) removed from its end; the image is the prompt's first image
  part, which must carry its value (``{"type": "image", "image": path | bytes | PIL image}``, as
  :func:`align.data.images.fill_images` makes it). The verdict is the reply's first word without case,
  markdown or punctuation; any other word, a reply without ``choices[0].message`` or a prompt without
  an image is a :class:`~align.rewards.base.RewardError` naming the prompt. HTTP, retries and the
  key: :mod:`align.rewards.openai_judge`'s client, as ``openai_safety_judge`` uses it.
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Sequence
from typing import Any

from align.rewards.base import Prompt, RewardError
from align.rewards.openai_judge import JudgeFailure, YesNoJudge
from align.rewards.registry import register_reward

__all__ = ["DIRECT_CHECK", "OpenAIVisionJudge", "VisualAnswerChecker"]

# omnilmm/omnilmm_direct.py, change_question: the parts are joined with no separator.
DIRECT_CHECK = "Question:{question}Answer:{answer}Is the answer right? Please answer yes or no."
_FIRST_WORD = re.compile(r"[^A-Za-z]*([A-Za-z]+)")


@register_reward("visual_answer_checker")
class VisualAnswerChecker:
    """Verifier for the visual-patterns task: the answer's first word is ``references[i]`` (module docstring)."""

    name = "visual_answer_checker"

    def __init__(self) -> None:
        # align.data sits below align.rewards; imported here so `import align.rewards` stays light.
        from align.data.visual_task import check_answer

        self._check = check_answer

    def verify(self, prompts: Sequence[Prompt], completions: Sequence[str], references: Sequence[str]) -> list[bool]:
        out = []
        for i, (prompt, completion, reference) in enumerate(zip(prompts, completions, references, strict=True)):
            if not isinstance(reference, str) or not reference.strip():
                raise RewardError(self.name, f"the reference must be the answer word, got {reference!r}",
                                  index=i, prompt=prompt)  # fmt: skip
            out.append(self._check(completion, reference))
        return out


def _png_data_url(value: Any) -> str:
    from align.data.images import load_image

    buffer = io.BytesIO()
    load_image(value).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


@register_reward("openai_vision_judge")
class OpenAIVisionJudge(YesNoJudge):
    """Reward model over an OpenAI-compatible vision server: 0.0 when the judge says the answer is
    right about the image, −1.0 when it says not (module docstring).

    Options: ``model`` (required), ``base_url`` (default ``$OPENAI_BASE_URL``, else OpenAI's),
    ``api_key_env`` (the environment variable holding the key), ``temperature``, ``timeout``
    (seconds per request), ``max_retries``, ``backoff`` (seconds), ``max_tokens`` (room for the
    answer word), ``max_workers`` (concurrent requests), ``template`` (the check, with
    ``{question}`` and ``{answer}``).
    """

    name = "openai_vision_judge"

    def __init__(
        self,
        model: str | None = None,
        *,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        temperature: float = 0.0,
        timeout: float = 60.0,
        max_retries: int = 3,
        backoff: float = 1.0,
        max_tokens: int = 8,
        max_workers: int = 4,
        template: str = DIRECT_CHECK,
    ) -> None:
        super().__init__(model, base_url=base_url, api_key_env=api_key_env, temperature=temperature, timeout=timeout,
                         max_retries=max_retries, backoff=backoff, max_tokens=max_tokens, max_workers=max_workers)  # fmt: skip
        if "{question}" not in template or "{answer}" not in template:
            raise ValueError(f"{self.name}: template must hold {{question}} and {{answer}}, got {template!r}")
        self.template = template

    def score(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> list[float]:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts, {len(completions)} completions")
        return self._judge_each(_score, prompts, completions)

    def request(self, prompt: Prompt, completion: str) -> dict[str, Any]:
        """The chat-completions request body that checks one answer against the prompt's image."""
        # here, not at module level: importing align.data loads datasets and torch, and align.rewards stays light
        from align.data.boxes import box_question
        from align.data.images import message_images

        images = message_images(prompt) if isinstance(prompt, list) else []
        if not images:
            raise JudgeFailure(
                "the prompt carries no image: its image parts need their values "
                "({'type': 'image', 'image': path}, as align.data.images.fill_images makes them)"
            )
        text = self.template.format(question=box_question(prompt), answer=completion)
        image = {"type": "image_url", "image_url": {"url": _png_data_url(images[0])}}
        return {
            "model": self.model,
            "messages": [{"role": "user", "content": [image, {"type": "text", "text": text}]}],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }


def _score(reply: dict[str, Any]) -> float:
    """0.0 for an answer whose first word is "yes", −1.0 for "no" (module docstring)."""
    try:
        content = reply["choices"][0]["message"].get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError):
        raise JudgeFailure(f"malformed reply (no choices[0].message): {json.dumps(reply)[:200]}") from None
    match = _FIRST_WORD.match(content)
    word = match.group(1).lower() if match else ""
    if word not in ("yes", "no"):
        raise JudgeFailure(f"the judge's answer {content[:80]!r} is neither 'yes' (right) nor 'no' (wrong)")
    return 0.0 if word == "yes" else -1.0
