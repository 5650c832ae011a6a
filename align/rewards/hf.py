"""A Hugging Face sequence-classification model as a reward model (``hf_reward_model:<path>``).

score(x, y) = logits[0] of ``AutoModelForSequenceClassification`` on the text of the prompt x
followed by the assistant completion y. When the tokenizer has a chat template the text is the
templated conversation ``x + [{"role": "assistant", "content": y}]`` (a string prompt becomes
one user message); otherwise it is ``x + y``. The model reads the score at the last non-padding
token, so batches are right-padded and give the same scores as one-by-one forwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from align.rewards.base import Prompt, RewardError
from align.rewards.registry import register_reward

__all__ = ["HFRewardModel"]


@register_reward("hf_reward_model", argument="path")
class HFRewardModel:
    """Reward model from a local folder or hub id. Options: ``device`` ("cpu", "cuda", ...),
    ``batch_size`` (completions per forward), ``dtype`` (e.g. "bfloat16"; default: as saved)."""

    def __init__(self, path: str, *, device: str = "cpu", batch_size: int = 8, dtype: str | None = None) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if not (isinstance(batch_size, int) and batch_size > 0):
            raise ValueError(f"hf_reward_model: batch_size must be a positive int, got {batch_size!r}")
        self.name = f"hf_reward_model:{path}"
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        kwargs: dict[str, Any] = {} if dtype is None else {"dtype": dtype}
        self.model = AutoModelForSequenceClassification.from_pretrained(path, **kwargs).to(self.device).eval()
        self._setup_padding()

    def _setup_padding(self) -> None:
        tokenizer, config = self.tokenizer, self.model.config
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise ValueError(f"{self.name}: the tokenizer has neither a pad nor an eos token to pad batches with")
            tokenizer.pad_token = tokenizer.eos_token
        # Right padding keeps positions (hence the logits) of the real tokens as in an unpadded
        # forward; the model finds each row's last real token through config.pad_token_id.
        tokenizer.padding_side = "right"
        if config.pad_token_id is None:
            config.pad_token_id = tokenizer.pad_token_id

    @property
    def _has_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    @property
    def _add_special_tokens(self) -> bool:
        # A chat template already writes the BOS/special tokens the model expects; raw text does not.
        return not self._has_template

    def text(self, prompt: Prompt, completion: str) -> str:
        """The exact text scored for (prompt, completion) (tokenised with special tokens added only
        when there is no chat template)."""
        if self._has_template:
            messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
            return self.tokenizer.apply_chat_template(
                [*messages, {"role": "assistant", "content": completion}], tokenize=False
            )
        if not isinstance(prompt, str):
            raise TypeError("the tokenizer has no chat template, so a conversational prompt cannot be rendered")
        return prompt + completion

    def score(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> list[float]:
        import torch

        texts = []
        for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
            try:
                texts.append(self.text(prompt, completion))
            except Exception as err:
                raise RewardError(self.name, f"{type(err).__name__}: {err}", index=i, prompt=prompt) from err
        scores: list[float] = []
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(
                    texts[start : start + self.batch_size],
                    add_special_tokens=self._add_special_tokens,
                    padding=True,
                    return_tensors="pt",
                ).to(self.device)
                logits = self.model(**batch).logits
                scores.extend(logits[:, 0].float().cpu().tolist())
        return scores

    def __repr__(self) -> str:
        return f"HFRewardModel({self.name!r}, device={str(self.device)!r}, batch_size={self.batch_size})"
