"""A local causal LM as a pairwise judge (``lm_judge``), read from its next-token probabilities.

The judge is shown the same instruction and wording as :mod:`align.rewards.openai_judge`
(:data:`~align.rewards.openai_judge.SYSTEM_PROMPT` as the system message, the instruction and the
two responses in :data:`~align.rewards.openai_judge.USER_TEMPLATE` as the user message), rendered
with the model's chat template and ``add_generation_prompt=True``. One forward pass gives the
distribution of the first answer token; with V_X the vocabulary tokens that decode to the letter X
with or without a leading space ("A" and " A"),

    p_X = Σ_{t ∈ V_X} softmax(logits)_t,        P(A ≻ B) = p_A / (p_A + p_B)
                                                         = σ(logsumexp(logits[V_A]) − logsumexp(logits[V_B]))

(the second form is the one computed: the softmax normaliser cancels, and it never divides 0 by 0
when both letters are very unlikely). With ``both_orders=True`` (the default) every pair is also
judged with the responses swapped and, as in ``openai_judge``,

    P(a ≻ b) = ½ · [ P_{a,b}(A ≻ B) + 1 − P_{b,a}(A ≻ B) ],

which cancels a constant preference for a position (small models have a strong one).

Each response is cut to its first ``max_response_tokens`` tokens before it is put in the prompt, so
two long responses still fit the judge's context. Prompts are batched ``batch_size`` at a time,
left-padded with explicit position ids and read at the last position, so a batch gives the same
probabilities as one-by-one forwards (up to float rounding).

**The default model is a weak judge.** ``builtin:smollm2-135m-instruct`` (SmolLM2-135M-Instruct)
is the default only because it ships with the project and runs offline on a CPU, so the whole
evaluation pipeline runs anywhere; its verdicts are close to chance on real instructions. For
numbers worth reporting use a strong local model (``model=<folder or hub id>``, on a GPU with
``device="cuda"``), or ``openai_judge``: an HTTP LLM judge on any OpenAI-compatible server (OpenAI,
vLLM, llama.cpp, ...), the recommended real judge.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from align.rewards.base import Prompt, RewardError
from align.rewards.openai_judge import SYSTEM_PROMPT, USER_TEMPLATE, render_prompt
from align.rewards.registry import register_reward

__all__ = ["DEFAULT_JUDGE_MODEL", "LMJudge", "letter_token_ids"]

DEFAULT_JUDGE_MODEL = "builtin:smollm2-135m-instruct"


def letter_token_ids(tokenizer: Any, letter: str) -> list[int]:
    """Ids of the (non-special) vocabulary tokens that decode to ``letter`` or to ``" " + letter``.

    Found by decoding every id once, so it covers byte-level BPE ("A", "ĠA"), SentencePiece ("▁A")
    and byte-fallback vocabularies alike."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    ids = [i for i in range(len(tokenizer)) if i not in special]
    texts = tokenizer.batch_decode([[i] for i in ids], skip_special_tokens=False)
    return [i for i, text in zip(ids, texts) if text in (letter, " " + letter)]


@register_reward("lm_judge")
class LMJudge:
    """Pairwise judge from a local causal LM's next-token probabilities of "A" and "B" (see the
    module docstring for the formula and why the default model is only a placeholder).

    Options: ``model`` (``builtin:<name>``, a model or LoRA adapter folder, or a hub id; default
    :data:`DEFAULT_JUDGE_MODEL`), ``device`` (default "cpu"), ``dtype`` (default "float32"),
    ``batch_size`` (prompts per forward), ``both_orders`` (default True), ``max_response_tokens``
    (each response is cut to this many tokens), ``system_prompt``. An already loaded model and
    tokenizer: :meth:`from_model`.
    """

    name = "lm_judge"

    def __init__(
        self,
        model: str = DEFAULT_JUDGE_MODEL,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        batch_size: int = 4,
        both_orders: bool = True,
        max_response_tokens: int = 768,
        system_prompt: str = SYSTEM_PROMPT,
    ) -> None:
        from align.models import load_eval_model

        _check_settings(batch_size, max_response_tokens)
        loaded, tokenizer = load_eval_model(model, dtype=dtype, device=device)
        self._setup(loaded, tokenizer, model, batch_size, both_orders, max_response_tokens, system_prompt)

    @classmethod
    def from_model(
        cls,
        model: Any,
        tokenizer: Any,
        *,
        batch_size: int = 4,
        both_orders: bool = True,
        max_response_tokens: int = 768,
        system_prompt: str = SYSTEM_PROMPT,
        model_name: str | None = None,
    ) -> LMJudge:
        """A judge on an already loaded causal LM and its tokenizer (the model is used as is: its
        device and dtype; it is put in eval mode). ``model_name`` names it in result files."""
        _check_settings(batch_size, max_response_tokens)
        judge = cls.__new__(cls)
        name = model_name or str(getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__)
        judge._setup(model, tokenizer, name, batch_size, both_orders, max_response_tokens, system_prompt)
        return judge

    def _setup(
        self,
        model: Any,
        tokenizer: Any,
        model_name: str,
        batch_size: int,
        both_orders: bool,
        max_response_tokens: int,
        system_prompt: str,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.batch_size, self.both_orders = batch_size, both_orders
        self.max_response_tokens, self.system_prompt = max_response_tokens, system_prompt
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"lm_judge: the tokenizer of {model_name!r} has no chat template to prompt the judge with")
        self.token_ids = {letter: letter_token_ids(tokenizer, letter) for letter in ("A", "B")}
        missing = [letter for letter, ids in self.token_ids.items() if not ids]
        if missing:
            raise ValueError(
                f"lm_judge: no token of {model_name!r}'s vocabulary decodes to {missing} (with or without a space)"
            )
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise ValueError(
                f"lm_judge: the tokenizer of {model_name!r} has neither a pad nor an eos token to pad batches with"
            )
        self.pad_token_id = int(pad)

    def __repr__(self) -> str:
        return (
            f"LMJudge(model={self.model_name!r}, both_orders={self.both_orders}, batch_size={self.batch_size}, "
            f"max_response_tokens={self.max_response_tokens})"
        )

    # -- the protocol ------------------------------------------------------------------------------

    def judge_pairs(
        self, prompts: Sequence[Prompt], completions_a: Sequence[str], completions_b: Sequence[str]
    ) -> list[float]:
        jobs = list(zip(prompts, completions_a, completions_b, strict=True))
        sequences = [self._encode(i, p, a, b) for i, (p, a, b) in enumerate(jobs)]
        if self.both_orders:
            sequences += [self._encode(i, p, b, a) for i, (p, a, b) in enumerate(jobs)]
        probs = self.prob_a_first(sequences)
        if not self.both_orders:
            return probs
        n = len(jobs)
        return [0.5 * (probs[i] + 1.0 - probs[n + i]) for i in range(n)]

    # -- prompting ---------------------------------------------------------------------------------

    def truncate(self, response: str) -> str:
        """``response`` cut to its first ``max_response_tokens`` tokens (unchanged when shorter)."""
        ids = self.tokenizer(response, add_special_tokens=False)["input_ids"]
        if len(ids) <= self.max_response_tokens:
            return response
        return self.tokenizer.decode(ids[: self.max_response_tokens], skip_special_tokens=True)

    def messages(self, prompt: Prompt, a: str, b: str) -> list[dict[str, str]]:
        """The conversation shown to the judge, response ``a`` as A and ``b`` as B."""
        user = USER_TEMPLATE.format(prompt=render_prompt(prompt), a=self.truncate(a), b=self.truncate(b))
        return [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": user}]

    def _encode(self, index: int, prompt: Prompt, a: str, b: str) -> list[int]:
        from jinja2 import TemplateError

        from align.data import prompt_ids

        try:
            messages = self.messages(prompt, a, b)
        except (TypeError, AttributeError, KeyError) as err:
            raise RewardError(
                self.name, f"cannot render the prompt: {type(err).__name__}: {err}", index=index, prompt=prompt
            ) from err
        try:
            return prompt_ids(self.tokenizer, messages, name="the judge prompt")
        except (TemplateError, ValueError, TypeError) as first:  # some templates (Gemma) refuse a system message
            merged = [{"role": "user", "content": messages[0]["content"] + "\n\n" + messages[1]["content"]}]
            try:
                return prompt_ids(self.tokenizer, merged, name="the judge prompt")
            except Exception as err:
                raise RewardError(
                    self.name, f"cannot render the judge prompt: {first}; {err}", index=index, prompt=prompt
                ) from err

    # -- scoring -----------------------------------------------------------------------------------

    def prob_a_first(self, sequences: Sequence[Sequence[int]]) -> list[float]:
        """P(A ≻ B) = σ(logsumexp(logits[V_A]) − logsumexp(logits[V_B])) of the next token after
        each token sequence (a rendered judge prompt), batched ``batch_size`` at a time in order of
        length (less padding); returned in the given order."""
        import torch

        device = next(self.model.parameters()).device
        ids_a = torch.tensor(self.token_ids["A"], device=device)
        ids_b = torch.tensor(self.token_ids["B"], device=device)
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        out = [0.0] * len(sequences)
        with torch.no_grad():
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                logits = self._last_logits([sequences[r] for r in rows], device)
                margin = torch.logsumexp(logits[:, ids_a], dim=-1) - torch.logsumexp(logits[:, ids_b], dim=-1)
                for row, p in zip(rows, torch.sigmoid(margin).tolist()):
                    out[row] = p
        return out

    def _last_logits(self, sequences: list[Sequence[int]], device: Any) -> Any:
        """float32 next-token logits after each left-padded sequence, (batch, vocab)."""
        import torch

        width = max(len(s) for s in sequences)
        input_ids = torch.full((len(sequences), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, seq in enumerate(sequences):
            input_ids[row, width - len(seq) :] = torch.tensor(list(seq), dtype=torch.long)
            mask[row, width - len(seq) :] = 1
        # Positions count real tokens only, so a padded row sees the positions it has alone.
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        output = self.model(
            input_ids=input_ids.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            use_cache=False,
            logits_to_keep=1,  # only the last position: the full (batch, length, vocab) logits are large
        )
        return output.logits[:, -1, :].float()


def _check_settings(batch_size: Any, max_response_tokens: Any) -> None:
    for name, value in (("batch_size", batch_size), ("max_response_tokens", max_response_tokens)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"lm_judge: {name} must be a positive integer, got {value!r}")
