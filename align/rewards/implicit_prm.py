"""A trained implicit PRM as a per-step reward plug-in (``implicit_prm:<path>``).

Yuan et al. 2024, "Free Process Rewards without Process Labels" (https://arxiv.org/abs/2412.01981):
a model π_θ trained as an outcome model with reward r_θ(y) = β·log(π_θ(y|x)/π_ref(y|x)) (the CE or
DPO objective of :mod:`align.objectives.implicit_prm`) gives step rewards for free. With y_i the
completion tokens, s(i) the step of token i (below) and T the number of steps,

    r_t = β · Σ_{i: s(i) = t} (log π_θ(y_i | x, y_<i) − log π_ref(y_i | x, y_<i))     step reward
    q_t = Σ_{u ≤ t} r_u                                                            running Q-value
    outcome = β · Σ_{every completion token i} (log π_θ(y_i | ·) − log π_ref(y_i | ·)) = β·Δ(y)

and the score is an aggregate of r_1..r_T (:data:`~align.objectives.implicit_prm.STEP_AGGREGATIONS`):
``min`` (the default, as in the official evaluation), ``sum``, ``mean``, ``last`` (= q_T, the
outcome over the steps), ``min_q``. A completion with no step at all is scored by its outcome.

**Tokens.** A (prompt, completion) pair is tokenized by :func:`align.data.tokenize_row`, the function
training uses, so the log-ratios read are those the PRM was trained on: a conversation prompt with the
completion as an assistant message through the chat template (completion tokens = everything after
the generation prompt, the end-of-turn tokens included); a string prompt as plain text with the
completion followed by EOS. Log-probs come from :func:`align.logps.completion_logps` on packed batches.

**Steps** (:func:`split_steps`). The completion text is cut at every match of the separator (option
``split``): ``"blank_line"`` (the default: one or more blank lines, ``\\n\\s*\\n``; the official
evaluation joins steps with ``"\\n\\n"``), ``"newline"`` (``\\n``: one step a line) or
``"regex:<pattern>"`` (e.g. ``regex:(?=Step \\d+:)``: a zero-width match cuts before each marker, so
every step starts with its own). Each piece is stripped of surrounding whitespace; an empty piece is
not a step. With ``final_answer=<pattern>``, a last piece that matches it (``re.match`` on the stripped
text, e.g. ``"####"``) is the answer line, not a step. ``StepScores.steps`` are the stripped pieces:
``split="newline", final_answer="####"`` is exactly the rule of the multistep arithmetic task's checker
(:func:`align.data.multistep.step_spans` with separator ``"\\n"``). ``blank_line`` is the default
because it is the official rule, the one the paper's numbers were measured with, and chat models
write a worked step as a paragraph; solutions written one step a line (the multistep task, GSM8K)
want ``newline``: under ``blank_line`` such a solution is a single step and every aggregation
reduces to the outcome reward.

**Token → step** (:func:`token_steps`). Step t owns the characters from the end of the previous
separator through the end of its own, so a separator belongs to the step it ends (the official code
reads the cumulative sum at each step's last separator token); the characters of an empty piece go to
the step before it (to the first step at the very start). A token belongs to the step owning its last
character, so a token that straddles a boundary belongs to the later step and q_t depends on no text
after step t. Tokens before the first character of the completion (template text after the generation
prompt) belong to the first step; tokens after its last character (the end-of-turn token, EOS, the
template's newline) to the last step, so Σ_t r_t = outcome and ``last`` = outcome, as in the official
code, whose last step ends at the end-of-turn token. The answer line of ``final_answer`` and every token
after it are in no step: they count in the outcome only. A completion with no separator is one step.

**Loading.** ``path`` is a model folder or a PEFT (LoRA) adapter folder. The reference is, in order:
the option ``ref`` (any model spec: ``builtin:<name>``, a model or adapter folder, a hub id); for an
adapter folder, the base with the adapter disabled (one model in memory), unless ``implicit_prm.json``
says ``"reference_is_adapter_off": false``; the ``reference`` of ``<path>/implicit_prm.json``, written by
:class:`~align.trainers.implicit_prm.ImplicitPRMTrainer` (``{"objective", "beta", "reference",
"reference_is_adapter_off"}``). β is the option ``beta``, else that file's ``beta``, else 0.05. β only
rescales every reward, so the order of completions under any aggregation is the same for every β > 0;
it matters where rewards are read as log-odds (σ(score)-weighted votes). The official evaluation uses a
fixed 0.001.

**Processes.** ``score_steps`` scores its inputs on the calling process. The on-policy loop calls its
judge on the main process only; to shard one batch of completions over the processes of an
``accelerate`` run, every process calls :func:`score_steps_sharded` with the same lists.
"""

from __future__ import annotations

import bisect
import contextlib
import inspect
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from align.rewards.base import Prompt, RewardError, StepScores, checked_step_scores
from align.rewards.registry import register_reward

__all__ = [
    "DEFAULT_BETA",
    "INFO_FILE",
    "SPLITS",
    "ImplicitPRM",
    "StepSplit",
    "StepTokens",
    "aggregate_steps",
    "score_steps_sharded",
    "split_steps",
    "step_tokens",
    "token_steps",
]

INFO_FILE = "implicit_prm.json"
DEFAULT_BETA = 0.05
SPLITS = {"blank_line": r"\n\s*\n", "newline": r"\n"}
_DTYPES = ("float32", "bfloat16", "float16", "float64", "auto")


# -- steps: characters, then tokens -----------------------------------------------------------------


class StepSplit(NamedTuple):
    """The steps of one completion text: ``steps`` (stripped texts), ``ends[t]`` the end (exclusive)
    of the characters step t owns (step t owns ``ends[t-1]:ends[t]``, step 0 from 0), and
    ``answer_start``: where the final-answer line's characters start (None without one)."""

    steps: list[str]
    ends: list[int]
    answer_start: int | None


def split_steps(text: str, separator: re.Pattern, final_answer: re.Pattern | None = None) -> StepSplit:
    """The steps of ``text`` under the module docstring's rule.

    Example (separator ``\\n``, final answer ``####``): "1 + 2 = 3\\n\\n3 * 4 = 12\\n#### 12" →
    steps ["1 + 2 = 3", "3 * 4 = 12"], ends [11, 22] (the first step owns both newlines), answer_start 22.
    """
    steps: list[str] = []
    ends: list[int] = []
    start = 0
    for match in separator.finditer(text):
        piece = text[start : match.start()].strip()
        if piece:
            steps.append(piece)
            ends.append(match.end())
        elif ends:  # an empty piece: its characters go to the step before it
            ends[-1] = match.end()
        start = match.end()
    piece = text[start:].strip()
    if piece:
        steps.append(piece)
        ends.append(len(text))
    elif ends:
        ends[-1] = len(text)
    answer_start = None
    if final_answer is not None and steps and final_answer.match(steps[-1]):
        steps.pop()
        ends.pop()
        answer_start = ends[-1] if ends else 0
    return StepSplit(steps, ends, answer_start)


def token_steps(split: StepSplit, token_ends: Sequence[int]) -> list[int]:
    """The step of each token (−1: in no step) from the end (exclusive) of its characters in the
    completion text: the step owning its last character, ``token_end − 1``; a token ending at or
    before 0 is in the first step, one ending past the last step in the last step, one in the
    final-answer line or after it in no step."""
    if not split.steps:
        return [-1] * len(token_ends)
    out = []
    for end in token_ends:
        last = end - 1
        if split.answer_start is not None and last >= split.answer_start:
            out.append(-1)
        else:
            out.append(min(bisect.bisect_right(split.ends, last), len(split.ends) - 1))
    return out


class StepTokens(NamedTuple):
    """One (prompt, completion) as training tokenizes it, with the step of each completion token."""

    prompt_ids: list[int]
    completion_ids: list[int]
    step_ids: list[int]  # per completion token: its step (0, 1, ...), −1 in no step
    steps: list[str]


def _offsets(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    try:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError as err:  # slow (Python) tokenizers have no offset mapping
        raise ValueError(f"assigning tokens to steps needs a fast tokenizer with offsets: {err}") from None
    return list(encoded["input_ids"]), [tuple(span) for span in encoded["offset_mapping"]]


def _completion_token_ends(
    tokenizer: Any, prompt: Prompt, completion: str, prompt_ids: list[int], completion_ids: list[int]
) -> list[int]:
    """The end of each completion token's characters, in positions of ``completion`` (before 0 or
    past its length for template text around it), from the tokenizer's offset mapping."""
    if isinstance(prompt, str):  # tokenize_row: tokenizer(completion) + [eos] unless it ends with eos
        ids, spans = _offsets(tokenizer, completion)
        ends = [end for _, end in spans] + [len(completion) + 1] * (len(completion_ids) - len(ids))
        if completion_ids[: len(ids)] != ids or len(ends) != len(completion_ids):
            raise ValueError("tokenizing the completion with offsets gives other ids than training")
        return ends
    messages = [*prompt, {"role": "assistant", "content": completion}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    ids, spans = _offsets(tokenizer, text)
    if ids != prompt_ids + completion_ids:
        raise ValueError("the chat template's text, tokenized, gives other ids than the chat template's tokens")
    prompt_text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    search_from = len(prompt_text) if text.startswith(prompt_text) else 0
    # Where the completion starts in the rendered text; some templates strip the message content.
    core = completion.strip()
    start = text.find(completion, search_from)
    if start < 0:
        found = text.find(core, search_from)
        if found < 0:
            raise ValueError("the chat template alters the completion's text, so its steps cannot be located")
        start = found - (len(completion) - len(completion.lstrip()))
    return [end - start for _, end in spans[len(prompt_ids) :]]


def step_tokens(
    tokenizer: Any, prompt: Prompt, completion: str, separator: re.Pattern, final_answer: re.Pattern | None = None
) -> StepTokens:
    """Tokenize (prompt, completion) exactly as training does (:func:`align.data.tokenize_row`) and
    assign every completion token to a step (module docstring). Raises ValueError when the
    template or tokenizer does not allow it."""
    from align.data import tokenize_row

    answer = [{"role": "assistant", "content": completion}] if isinstance(prompt, list) else completion
    prompt_ids, (completion_ids,) = tokenize_row({"prompt": prompt, "completions": [answer]}, tokenizer)
    split = split_steps(completion, separator, final_answer)
    ends = _completion_token_ends(tokenizer, prompt, completion, prompt_ids, completion_ids)
    return StepTokens(prompt_ids, completion_ids, token_steps(split, ends), split.steps)


def aggregate_steps(scores: Sequence[StepScores], how: str = "min") -> list[float]:
    """Each completion's step rewards aggregated by ``how`` (one of
    :data:`~align.objectives.implicit_prm.STEP_AGGREGATIONS`, computed by
    :func:`~align.objectives.implicit_prm.aggregate_step_rewards`); a completion with no step gets
    its outcome reward."""
    import torch

    from align.objectives.implicit_prm import StepRewards, aggregate_step_rewards

    out = [float(s.outcome) for s in scores]
    rows = [i for i, s in enumerate(scores) if s.rewards]
    if not rows:
        return out
    width = max(len(scores[i].rewards) for i in rows)
    rewards = torch.zeros(len(rows), width, dtype=torch.float64)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for row, i in enumerate(rows):
        rewards[row, : len(scores[i].rewards)] = torch.tensor(scores[i].rewards, dtype=torch.float64)
        mask[row, : len(scores[i].rewards)] = True
    values = aggregate_step_rewards(StepRewards(rewards, rewards.cumsum(dim=1), mask), how)
    for row, i in enumerate(rows):
        out[i] = float(values[row])
    return out


# -- options ------------------------------------------------------------------------------------------


def _pattern(text: str, option: str) -> re.Pattern:
    try:
        return re.compile(text)
    except re.error as err:
        raise ValueError(f"implicit_prm: option {option}: {text!r} is not a valid regular expression ({err})") from None


def _check_options(
    *,
    ref: Any,
    beta: Any,
    split: Any,
    aggregate: Any,
    final_answer: Any,
    batch_size: Any,
    device: Any,
    dtype: Any,
    **_: Any,
) -> tuple[re.Pattern, re.Pattern | None]:
    """Check every option's value (nothing is loaded); return the compiled separator and final-answer patterns."""
    from align.objectives.implicit_prm import STEP_AGGREGATIONS

    if ref is not None and not (isinstance(ref, str) and ref):
        raise ValueError(f"implicit_prm: option ref must be a model path or name, got {ref!r}")
    if beta is not None and not (isinstance(beta, (int, float)) and not isinstance(beta, bool) and 0 < beta < math.inf):
        raise ValueError(f"implicit_prm: option beta must be a positive finite number, got {beta!r}")
    if not isinstance(split, str) or (split not in SPLITS and not split.startswith("regex:")):
        raise ValueError(
            f"implicit_prm: option split must be one of {sorted(SPLITS)} or 'regex:<pattern>', got {split!r}"
        )
    separator = _pattern(SPLITS.get(split) or split.removeprefix("regex:"), "split")
    if aggregate not in STEP_AGGREGATIONS:
        raise ValueError(f"implicit_prm: option aggregate must be one of {list(STEP_AGGREGATIONS)}, got {aggregate!r}")
    if final_answer is not None and not (isinstance(final_answer, str) and final_answer):
        raise ValueError(f"implicit_prm: option final_answer must be a regular expression, got {final_answer!r}")
    answer = None if final_answer is None else _pattern(final_answer, "final_answer")
    if not (isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size > 0):
        raise ValueError(f"implicit_prm: option batch_size must be a positive int, got {batch_size!r}")
    if device is not None and not isinstance(device, str):
        raise ValueError(f"implicit_prm: option device must be a string such as 'cpu' or 'cuda', got {device!r}")
    if dtype not in _DTYPES:
        raise ValueError(f"implicit_prm: option dtype must be one of {list(_DTYPES)}, got {dtype!r}")
    return separator, answer


def _read_info(path: str) -> dict:
    """``<path>/implicit_prm.json`` checked ({} when there is none); errors name the file and field."""
    file = Path(path) / INFO_FILE
    if not file.is_file():
        return {}
    try:
        info = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{file}: not valid JSON ({err})") from None
    if not isinstance(info, dict):
        raise ValueError(f"{file}: expected a JSON object, got {type(info).__name__}")
    beta = info.get("beta")
    if beta is not None and not (isinstance(beta, (int, float)) and not isinstance(beta, bool) and 0 < beta < math.inf):
        raise ValueError(f"{file}: field 'beta': expected a positive finite number, got {beta!r}")
    reference = info.get("reference")
    if reference is not None and not (isinstance(reference, str) and reference):
        raise ValueError(f"{file}: field 'reference': expected a model path or name, got {reference!r}")
    adapter_off = info.get("reference_is_adapter_off", False)
    if not isinstance(adapter_off, bool):
        raise ValueError(f"{file}: field 'reference_is_adapter_off': expected true or false, got {adapter_off!r}")
    return info


# -- the plug-in ----------------------------------------------------------------------------------------


@register_reward("implicit_prm", argument="path")
class ImplicitPRM:
    """An implicit PRM and its reference as a process reward model (module docstring).

    Options: ``ref`` (the reference model; default: see Loading), ``beta`` (default: β of
    ``implicit_prm.json``, else 0.05), ``split`` (``"blank_line"``, ``"newline"`` or
    ``"regex:<pattern>"``), ``aggregate`` (``"min"``, ``"sum"``, ``"mean"``, ``"last"``, ``"min_q"``,
    ``"last_q"``), ``final_answer`` (a regex: a last step matching it is the answer line, not a step),
    ``batch_size`` (sequences per packed forward), ``device`` (default: this process's accelerate
    device), ``dtype`` (default ``"float32"``).
    """

    def __init__(
        self,
        path: str,
        *,
        ref: str | None = None,
        beta: float | None = None,
        split: str = "blank_line",
        aggregate: str = "min",
        final_answer: str | None = None,
        batch_size: int = 8,
        device: str | None = None,
        dtype: str = "float32",
    ) -> None:
        import torch
        from accelerate import PartialState

        from align.attention import use_varlen_attention
        from align.models import (
            BUILTIN_PREFIX,
            _adapter_base,
            check_model_source,
            checkpoint_kind,
            load_checkpoint_tokenizer,
            load_eval_model,
        )

        self.separator, self.final_answer = _check_options(
            ref=ref, beta=beta, split=split, aggregate=aggregate, final_answer=final_answer, batch_size=batch_size,
            device=device, dtype=dtype,
        )  # fmt: skip
        self.name = f"implicit_prm:{path}"
        self.path, self.split, self.aggregate, self.batch_size = path, split, aggregate, batch_size
        local = path.startswith(BUILTIN_PREFIX) or Path(path).exists()
        self.info = _read_info(path) if local and not path.startswith(BUILTIN_PREFIX) else {}
        self.beta = float(beta if beta is not None else self.info.get("beta", DEFAULT_BETA))
        self.device = torch.device(device) if device is not None else PartialState().device
        adapter = local and checkpoint_kind(path) == "adapter"
        # A LoRA folder's reference is its base (the adapter off) unless its file says otherwise.
        adapter_off = adapter and self.info.get("reference_is_adapter_off", True)
        if ref is None and not adapter_off:
            ref = self.info.get("reference")
            if ref is None:
                raise ValueError(
                    f"{self.name}: no reference model: {Path(path) / INFO_FILE} is missing or names none, and "
                    "the folder is not a LoRA adapter (whose reference is its base); pass the option ref"
                )
            check_model_source(ref, what=f"{Path(path) / INFO_FILE}: field 'reference'")
        elif ref is not None:
            check_model_source(ref, what=f"{self.name}: option ref")
        if adapter:
            from peft import PeftModel

            base, _ = load_eval_model(_adapter_base(path, None), dtype=dtype, device=self.device)
            self.model = PeftModel.from_pretrained(base, path).to(self.device).eval()
            if ref is not None:  # the adapter is never switched off: merge it for plain forwards
                self.model = self.model.merge_and_unload()
            self.tokenizer = load_checkpoint_tokenizer(path)
        else:
            self.model, self.tokenizer = load_eval_model(path, dtype=dtype, device=self.device)
        self.reference = ref if ref is not None else "adapter disabled"
        self.ref_model = None if ref is None else load_eval_model(ref, dtype=dtype, device=self.device)[0]
        for model in (self.model, self.ref_model):
            if model is not None:
                model.requires_grad_(False)
                use_varlen_attention(model)  # packed batches: attention within each sequence only
        if self.ref_model is not None:
            ours, theirs = (m.get_output_embeddings().weight.shape[0] for m in (self.model, self.ref_model))
            if ours != theirs:
                raise ValueError(f"{self.name}: the reference {ref!r} has {theirs} output tokens, the model {ours}")
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        self.pad_token_id = int(pad if pad is not None else 0)  # packed batches never pad; the collator wants one

    def __repr__(self) -> str:
        return (
            f"ImplicitPRM({self.path!r}, reference={self.reference!r}, beta={self.beta}, split={self.split!r}, "
            f"aggregate={self.aggregate!r}, batch_size={self.batch_size})"
        )

    def tokenize(self, prompt: Prompt, completion: str) -> StepTokens:
        """``prompt`` + ``completion`` as training tokenizes them, each completion token with its step."""
        return step_tokens(self.tokenizer, prompt, completion, self.separator, self.final_answer)

    def _reference(self) -> Any:
        return contextlib.nullcontext() if self.ref_model is not None else self.model.disable_adapter()

    def score_steps(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> list[StepScores]:
        import torch

        from align.data import PreferenceCollator
        from align.logps import completion_logps
        from align.objectives.implicit_prm import process_rewards

        items = []
        for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
            try:
                items.append(self.tokenize(prompt, completion))
            except Exception as err:
                raise RewardError(self.name, f"{type(err).__name__}: {err}", index=i, prompt=prompt) from err
        collator = PreferenceCollator(self.pad_token_id, padding_free=True)
        out: list[StepScores] = []
        with torch.no_grad():
            for start in range(0, len(items), self.batch_size):
                chunk = items[start : start + self.batch_size]
                batch = collator([{"prompt_ids": t.prompt_ids, "completion_ids": [t.completion_ids]} for t in chunk])
                batch = {key: value.to(self.device) for key, value in batch.items()}
                policy = completion_logps(self.model, batch)
                with self._reference():
                    ref = completion_logps(self.ref_model if self.ref_model is not None else self.model, batch)
                policy_logps, ref_logps = policy["token_logps"].double().cpu(), ref["token_logps"].double().cpu()
                step_ids = torch.full(policy_logps.shape, -1, dtype=torch.long)
                for row, t in enumerate(chunk):
                    step_ids[row, : len(t.step_ids)] = torch.tensor(t.step_ids, dtype=torch.long)
                steps = process_rewards(policy_logps, ref_logps, step_ids, beta=self.beta)
                mask = policy["token_mask"].cpu()
                outcomes = self.beta * torch.where(mask, policy_logps - ref_logps, 0.0).sum(dim=1)
                for row, t in enumerate(chunk):
                    rewards = steps.rewards[row, : len(t.steps)].tolist()
                    out.append(StepScores(list(t.steps), rewards, float(outcomes[row]), 0.0))
        scores = aggregate_steps(out, self.aggregate)
        return [s._replace(score=score) for s, score in zip(out, scores, strict=True)]

    def score(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> list[float]:
        return [s.score for s in self.score_steps(prompts, completions)]


class _CheckedSignature(inspect.Signature):
    """check_reward_spec (and load_reward, first) bind a spec's options to the plug-in's signature
    without building it; binding to this one also checks their values, so a recipe refuses
    ``aggregate="bogus"`` or a bad regex while it parses its config, before any model loads."""

    def bind(self, *args: Any, **kwargs: Any) -> inspect.BoundArguments:
        bound = super().bind(*args, **kwargs)
        full = super().bind(*args, **kwargs)
        full.apply_defaults()
        _check_options(**full.arguments)
        return bound


ImplicitPRM.__signature__ = _CheckedSignature.from_callable(ImplicitPRM)


# -- several processes ----------------------------------------------------------------------------


def score_steps_sharded(
    plugin: Any, prompts: Sequence[Prompt], completions: Sequence[str], *, accelerator: Any = None
) -> list[StepScores]:
    """:func:`~align.rewards.checked_step_scores` of any process reward model, sharded: with an
    ``accelerate`` accelerator of P > 1 processes, process p scores the p-th contiguous share of the
    items and every process returns all of them, in order (each holds its own copy of the plug-in;
    all must call this with the same lists). A :class:`RewardError` on any process is raised on
    every process, naming the item by its index in ``prompts``, so none waits for the others."""
    if len(prompts) != len(completions):
        raise ValueError(f"score_steps_sharded: got {len(prompts)} prompts but {len(completions)} completions")
    if accelerator is None or accelerator.num_processes == 1:
        return checked_step_scores(plugin, prompts, completions)
    from accelerate.utils import gather_object

    rank, world, n = accelerator.process_index, accelerator.num_processes, len(prompts)
    lo, hi = rank * n // world, (rank + 1) * n // world
    local: list[StepScores] = []
    error = None
    if hi > lo:
        try:
            local = checked_step_scores(plugin, prompts[lo:hi], completions[lo:hi], prompt_ids=range(lo, hi))
        except RewardError as err:
            error = err
    views = sorted(gather_object([(rank, local, error)]), key=lambda view: view[0])
    for _, _, err in views:
        if err is not None:
            raise err
    return [scores for _, part, _ in views for scores in part]
