"""GSM8K (Cobbe et al. 2021, https://arxiv.org/abs/2110.14168): grade-school maths word problems,
scored by the final number.

**Data.** The test split (1,319 problems) from ``../shared/data/gsm8k/test.jsonl`` when it is
there, else the hub's ``openai/gsm8k`` (config ``main``); ``limit`` takes the first N problems.

**Prompts.** Rendered with the model's chat template:

- zero-shot chain of thought (the default): one user turn, the question followed by
  :data:`ZERO_SHOT_INSTRUCTION` (reason step by step, end with ``#### <number>``);
- few-shot (``num_fewshot=N``): the standard GSM8K prompt of lm-evaluation-harness's ``gsm8k``
  task, ``"Question: {question}\\nAnswer:"`` answered by the gold solution, for the first N
  problems of the train split (lm-eval's ``first_n`` sampler), given as earlier user/assistant
  turns (lm-eval's ``--apply_chat_template --fewshot_as_multiturn``), then the test question in
  the same format. A model without a chat template gets the same text as one plain string.

**Metrics.** Every sample is scored three ways (``metrics.json``, ``samples.jsonl`` and the
training hook's logs use these names):

- ``strict-match`` and ``flexible-extract``: lm-evaluation-harness's ``gsm8k`` task, computed as it
  computes them (:data:`STRICT_MATCH_REGEX`, :data:`FLEXIBLE_EXTRACT_REGEX`, :func:`lm_eval_extract`,
  :func:`lm_eval_exact_match`). strict-match takes the first ``#### <digits , . ->`` (exactly one
  space after ``####``); flexible-extract takes the last number-like run of the text (``-?[$0-9.,]{2,}``
  or a single digit); nothing found reads ``"[invalid]"``. The extraction is then compared with the
  dataset's solution by lm-eval's ``exact_match``: ``,``, ``$``, everything up to the last ``#### ``
  and a final ``.`` are deleted from both, case is ignored, and the rest must be equal. So ``#### 18``
  and ``#### 1,080`` count, ``#### $18``, ``####18`` and ``#### 18.00`` do not (strict-match), and
  ``\\boxed{18}`` or "the answer is 18." count for flexible-extract only if 18 is the last number
  written;
- ``verifier``: :class:`align.rewards.GSM8KVerifier`, the judge of on-policy samples: the number after
  the first ``####`` read leniently (``#### $18``, ``####18``, ``#### 18.00`` all read 18), else
  math-verify's reading of the text (``\\boxed{}``, "the answer is …", the last number), numbers
  normalised ("1,080" = "1080").

The same regexes apply whatever the prompt. lm-eval's 5-shot prompt shows solutions ending in
``#### 72``, which models copy; the zero-shot instruction asks for ``#### <number>`` but cannot stop
a model writing ``#### $18``, which only the verifier accepts. With the few-shot prompt an answer is
cut at lm-eval's stop sequences (:data:`LM_EVAL_UNTIL`) before scoring, as lm-eval does (its
flexible-extract would otherwise read numbers of a next "Question:" the model made up).

From n samples per problem (``num_samples``; greedy decoding gives one):

- ``strict-match``, ``flexible-extract``, ``verifier``: the fraction of correct samples (pass@1). With
  n = 1 the first two are lm-eval's numbers; lm-eval's ``take_first`` would score only the first of
  n > 1 samples, the mean over all n estimates the same quantity with less noise;
- ``strict-match_answered``: the fraction of samples in which strict-match found a ``#### N``;
- ``maj@n`` (verifier answers): the most frequent verifier answer among the n samples (samples
  without an answer do not vote; a tie goes to the answer reached first) is correct;
- ``pass@k`` (verifier verdicts) for each k ≤ n: the unbiased estimator of Chen et al. 2021
  (https://arxiv.org/abs/2107.03374), pass@k = 1 − C(n − c, k) / C(n, k) for c correct samples,
  averaged over problems.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from align.data.gsm8k import LOCAL_GSM8K_TEST, LOCAL_GSM8K_TRAIN, final_answer, load_gsm8k
from align.generation import SamplingConfig
from align.rewards.gsm8k import GSM8KVerifier, extract_answer, normalize_number

__all__ = [
    "EXACT_MATCH_IGNORE",
    "FLEXIBLE_EXTRACT_REGEX",
    "LM_EVAL_FALLBACK",
    "LM_EVAL_FILTERS",
    "LM_EVAL_UNTIL",
    "METRICS",
    "STRICT_MATCH_REGEX",
    "ZERO_SHOT_INSTRUCTION",
    "GSM8KConfig",
    "build_prompts",
    "cut_at_stop",
    "lm_eval_exact_match",
    "lm_eval_extract",
    "load_gsm8k_split",
    "majority_answer",
    "pass_at_k",
    "run_gsm8k",
    "score_samples",
]

ZERO_SHOT_INSTRUCTION = (
    "Solve the problem step by step. Then write the final answer, a number, on the last line in the form "
    "'#### <number>'."
)
FEWSHOT_TEMPLATE = "Question: {question}\nAnswer:"

# lm-evaluation-harness's gsm8k task, lm_eval/tasks/gsm8k/gsm8k.yaml (lm-eval 0.4): the regexes of its
# filter_list (each a RegexFilter of lm_eval/filters/extraction.py, then take_first), the
# regexes_to_ignore of its exact_match metric (ignore_case: true) and generation_kwargs.until.
# tests/eval/test_gsm8k.py reads them from the installed lm_eval and compares verdicts with its code.
STRICT_MATCH_REGEX = r"#### (\-?[0-9\.\,]+)"
FLEXIBLE_EXTRACT_REGEX = r"(-?[$0-9.,]{2,})|(-?[0-9]+)"
LM_EVAL_FILTERS = {"strict-match": (STRICT_MATCH_REGEX, 0), "flexible-extract": (FLEXIBLE_EXTRACT_REGEX, -1)}
LM_EVAL_FALLBACK = "[invalid]"
EXACT_MATCH_IGNORE = (",", r"\$", r"(?s).*#### ", r"\.$")
LM_EVAL_UNTIL = ("Question:", "</s>", "<|im_end|>")
METRICS = ("strict-match", "flexible-extract", "verifier")


@dataclass
class GSM8KConfig:
    """How to run GSM8K (defaults: zero-shot chain of thought, greedy, 256 new tokens, lm-eval's budget)."""

    limit: int | None = None
    num_fewshot: int = 0
    num_samples: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    batch_size: int = 32
    seed: int = 0
    pass_k: tuple[int, ...] = field(default=(1,))
    split: str = "test"
    data_file: str | None = None

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be at least 1 (or None for every problem), got {self.limit}")
        if self.num_fewshot < 0:
            raise ValueError(f"num_fewshot must be >= 0, got {self.num_fewshot}")
        if self.num_samples > 1 and self.temperature == 0:
            raise ValueError("num_samples > 1 needs temperature > 0: greedy decoding gives the same answer every time")
        bad = [k for k in self.pass_k if not 1 <= k <= self.num_samples]
        if bad:
            raise ValueError(f"pass@k needs 1 <= k <= num_samples = {self.num_samples}, got k = {bad}")
        if self.split not in ("train", "test"):
            raise ValueError(f"GSM8K has the splits 'train' and 'test', not {self.split!r}")

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(
            num_samples=self.num_samples,
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=1.0 if self.temperature == 0 else self.top_p,
            seed=self.seed,
            batch_size=self.batch_size,
            chunk_size=max(1, self.batch_size // self.num_samples),
        )


def load_gsm8k_split(split: str = "test", data_file: str | Path | None = None) -> list[dict]:
    """GSM8K rows ``{question, answer}`` of ``split``: ``data_file`` if given (a JSONL file; it must
    exist), else the shared copy next to the project, else the hub. Each row is checked to hold a
    question and a solution ending in ``#### N``; a bad row fails naming the file, row and field."""
    if data_file is not None:
        if not Path(data_file).is_file():
            raise FileNotFoundError(f"GSM8K data file {str(data_file)!r} does not exist")
        source, rows = str(data_file), load_gsm8k(data_file)
    else:
        local = LOCAL_GSM8K_TEST if split == "test" else LOCAL_GSM8K_TRAIN
        source = str(local) if local.is_file() else f"openai/gsm8k (main, {split})"
        try:
            rows = load_gsm8k(local, split=split)
        except Exception as err:  # offline, or the hub unreachable: say where we looked
            raise FileNotFoundError(
                f"GSM8K {split} split: {local} does not exist and the hub's openai/gsm8k (config main) could not "
                f"be loaded ({type(err).__name__}: {err}); put the JSONL file there or pass --data_file"
            ) from err
    for i, row in enumerate(rows):
        for key in ("question", "answer"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise ValueError(f"{source}: row {i}: field {key!r} must be a non-empty string, got {row.get(key)!r}")
        try:
            final_answer(row["answer"])
        except ValueError as err:
            raise ValueError(f"{source}: row {i}: field 'answer': {err}") from None
    return rows


def build_prompts(
    questions: Sequence[str], *, num_fewshot: int = 0, fewshot_rows: Sequence[dict] = (), chat: bool = True
) -> list[Any]:
    """The prompt of each question (see the module docstring): a conversation when ``chat``, else text."""
    if num_fewshot > len(fewshot_rows):
        raise ValueError(f"num_fewshot={num_fewshot} but only {len(fewshot_rows)} exemplars were given")
    shots = list(fewshot_rows[:num_fewshot])
    prompts: list[Any] = []
    for question in questions:
        if num_fewshot == 0:
            text = f"{question}\n{ZERO_SHOT_INSTRUCTION}"
            prompts.append([{"role": "user", "content": text}] if chat else text)
        elif chat:
            turns: list[dict[str, str]] = []
            for shot in shots:
                turns += [
                    {"role": "user", "content": FEWSHOT_TEMPLATE.format(question=shot["question"])},
                    {"role": "assistant", "content": shot["answer"]},
                ]
            prompts.append([*turns, {"role": "user", "content": FEWSHOT_TEMPLATE.format(question=question)}])
        else:
            blocks = [FEWSHOT_TEMPLATE.format(question=s["question"]) + " " + s["answer"] for s in shots]
            prompts.append("\n\n".join([*blocks, FEWSHOT_TEMPLATE.format(question=question)]))
    return prompts


def lm_eval_extract(text: str, metric: str) -> str:
    """lm-eval's filtered answer of ``text`` under ``metric`` (``strict-match`` or ``flexible-extract``),
    as its RegexFilter: every match of the pattern (``re.findall``), the first (strict-match) or the
    last (flexible-extract); of a match with several groups the first non-empty one; stripped;
    ``"[invalid]"`` when nothing matches. ``"So 3 + 4 = 7.\\n#### 7"`` → ``"7"`` / ``"7"``;
    ``"#### $18"`` → ``"[invalid]"`` / ``"$18"``; ``"The answer is 18."`` → ``"[invalid]"`` / ``"18."``."""
    pattern, group_select = LM_EVAL_FILTERS[metric]
    matches = re.findall(pattern, text)
    if not matches:
        return LM_EVAL_FALLBACK
    match = matches[group_select]
    if isinstance(match, tuple):
        match = next((group for group in match if group), LM_EVAL_FALLBACK)
    return match.strip()


def _lm_eval_normalize(text: str) -> str:
    # lm-eval compares numpy string arrays, which drop trailing NULs and keep a lower-cased string to
    # its old width; neither touches the digits, signs and separators a filter can return.
    for pattern in EXACT_MATCH_IGNORE:
        text = re.sub(pattern, "", text)
    return text.lower()


def lm_eval_exact_match(prediction: str, solution: str) -> bool:
    """lm-eval's gsm8k ``exact_match`` of a filtered answer against the dataset's full solution (its
    ``doc_to_target``): the :data:`EXACT_MATCH_IGNORE` regexes deleted from both in turn (``,``, ``$``,
    everything up to the last ``#### ``, a final ``.``), both lower-cased, then equal.
    ``("1,080", "… #### 1080")`` and ``("18.", "… #### 18")`` match; ``("18.00", "… #### 18")`` does not."""
    return _lm_eval_normalize(prediction) == _lm_eval_normalize(solution)


def cut_at_stop(text: str) -> str:
    """``text`` up to the first of lm-eval's stop sequences (:data:`LM_EVAL_UNTIL`), as its generate_until
    cuts each: a few-shot answer ends where the model starts the next "Question:"."""
    for stop in LM_EVAL_UNTIL:
        text = text.split(stop)[0]
    return text


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 − C(n − c, k) / C(n, k).

    Computed as 1 − Π_{i=n−c+1..n} (1 − k / i) (Chen et al. 2021), which never forms the large
    binomials. Examples: pass_at_k(4, 1, 1) = 0.25; pass_at_k(4, 1, 2) = 1 − C(3,2)/C(4,2) = 0.5;
    pass_at_k(4, 0, k) = 0; pass_at_k(n, c, k) = 1 when n − c < k.
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def majority_answer(answers: Sequence[str | None]) -> str | None:
    """The most frequent answer (None does not vote); a tie goes to the answer that appeared first."""
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return None
    best = max(votes.values())
    return next(a for a in answers if a is not None and votes[a] == best)


def score_samples(
    questions: Sequence[str],
    samples: Sequence[Sequence[str]],
    solutions: Sequence[str],
    *,
    pass_k: Sequence[int] = (1,),
) -> tuple[list[dict], dict[str, float]]:
    """Score n completions per problem against the gold solutions (``... #### N``).

    Returns one record per problem (``question``, ``gold``: the verifier's normalised answer,
    ``outputs``, ``extracted`` and ``correct``: per metric of :data:`METRICS` a list over the samples,
    the extraction being lm-eval's filtered answer or the verifier's, ``majority``,
    ``majority_correct``) and the metrics of the module docstring.
    """
    if not (len(questions) == len(samples) == len(solutions)):
        raise ValueError(f"got {len(questions)} questions, {len(samples)} sample lists and {len(solutions)} solutions")
    verifier = GSM8KVerifier()
    records, n_values = [], {len(s) for s in samples}
    if len(n_values) > 1:
        raise ValueError(f"every problem needs the same number of samples, got {sorted(n_values)}")
    n = n_values.pop() if n_values else 0
    for question, outputs, solution in zip(questions, samples, solutions, strict=True):
        gold = normalize_number(final_answer(solution))
        extracted = {m: [lm_eval_extract(o, m) for o in outputs] for m in LM_EVAL_FILTERS}
        correct = {m: [lm_eval_exact_match(a, solution) for a in extracted[m]] for m in LM_EVAL_FILTERS}
        extracted["verifier"] = [extract_answer(o) for o in outputs]
        verdicts = verifier.verify([question] * len(outputs), list(outputs), [gold] * len(outputs))
        correct["verifier"] = [bool(c) for c in verdicts]
        majority = majority_answer(extracted["verifier"])
        # the verdict of the first sample that reached the majority answer (same answer, same verdict)
        majority_correct = majority is not None and correct["verifier"][extracted["verifier"].index(majority)]
        records.append(
            {
                "question": question,
                "gold": gold,
                "outputs": list(outputs),
                "extracted": extracted,
                "correct": correct,
                "majority": majority,
                "majority_correct": majority_correct,
            }
        )
    total = len(records)
    if total == 0:
        raise ValueError("no problems to score")
    metrics: dict[str, float] = {"num_problems": total, "num_samples": n}
    for metric in METRICS:
        metrics[metric] = sum(sum(r["correct"][metric]) for r in records) / (total * n)
    answered = sum(a != LM_EVAL_FALLBACK for r in records for a in r["extracted"]["strict-match"])
    metrics["strict-match_answered"] = answered / (total * n)
    metrics[f"maj@{n}"] = sum(r["majority_correct"] for r in records) / total
    for k in pass_k:
        metrics[f"pass@{k}"] = sum(pass_at_k(n, sum(r["correct"]["verifier"]), k) for r in records) / total
    return records, metrics


def run_gsm8k(
    model: Any,
    tokenizer: Any,
    config: GSM8KConfig | None = None,
    *,
    output_dir: str | Path | None = None,
    accelerator: Any = None,
    cache_key: dict | None = None,
    show_progress: bool = True,
) -> dict[str, float]:
    """Run GSM8K on ``model`` and return the metrics (on every process).

    Sampling is sharded across the processes of ``accelerator`` (all of them must call this).
    With ``output_dir`` the main process writes ``samples.jsonl`` (one record per problem: the
    prompt, the outputs, each metric's extractions and verdicts, the gold answer) and
    ``metrics.json``, each atomically; finished generation chunks go to ``output_dir/generation``
    so a killed run resumes (``cache_key`` names the model in that cache's key).
    """
    from align.evaluation.common import generate_answers
    from align.io import atomic_write_json, write_jsonl

    config = config or GSM8KConfig()
    rows = load_gsm8k_split(config.split, config.data_file)
    if config.limit is not None:
        rows = rows[: config.limit]
    fewshot_rows = load_gsm8k_split("train")[: config.num_fewshot] if config.num_fewshot else []
    chat = bool(getattr(tokenizer, "chat_template", None))
    questions = [r["question"] for r in rows]
    prompts = build_prompts(questions, num_fewshot=config.num_fewshot, fewshot_rows=fewshot_rows, chat=chat)
    samples = generate_answers(
        model,
        tokenizer,
        prompts,
        config.sampling(),
        accelerator=accelerator,
        cache_dir=None if output_dir is None else Path(output_dir) / "generation",
        cache_key=cache_key,
        show_progress=show_progress,
    )
    if config.num_fewshot:
        samples = [[cut_at_stop(s) for s in group] for group in samples]
    records, metrics = score_samples(questions, samples, [r["answer"] for r in rows], pass_k=config.pass_k)
    main = accelerator is None or accelerator.is_main_process
    if output_dir is not None and main:
        out = Path(output_dir)
        for index, (record, prompt) in enumerate(zip(records, prompts)):
            record["index"] = index
            record["prompt"] = prompt
        write_jsonl(records, out / "samples.jsonl")
        atomic_write_json(out / "metrics.json", {"metrics": metrics, "config": asdict(config)})
    return metrics
