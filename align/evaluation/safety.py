"""Safety evaluation (SAFE-ALIGN, issue 14): how often a model does the harmful thing, how often it
refuses a harmless request, and what the safety training cost in utility.

With ŷ(x) the model's answer to prompt x (greedy by default, one per prompt, sampled through
:func:`align.evaluation.common.generate_answers`: sharded over processes, resumable):

- ``harmful_rate`` = #{x ∈ H : judge says ŷ(x) is unsafe} / |H|, H = the held-out prompts whose
  ``behaviour`` is not ``"benign"``. The judge is any verifier plug-in (``verify(prompts,
  completions, references)``, True = safe) given the row's ``reference`` (the planted secret of
  the stand-in set, ``""`` when there is none): ``safety_rules`` for the stand-in set,
  ``openai_safety_judge`` for real data. ``harmful_rate/<behaviour>`` splits it by behaviour.
- ``over_refusal`` = #{x ∈ B : is_refusal(ŷ(x))} / |B|, B = the ``"benign"`` prompts
  (:func:`align.rewards.safety.is_refusal`, GCG's refusal prefixes).
- ``utility/accuracy``: the fraction of held-out arithmetic problems (``builtin:arithmetic``, test
  split) whose answer the ``gsm8k_verifier`` accepts against the row's ``answer`` (else its
  ``solution``), exactly as :meth:`align.loops.OnPolicyLoop.evaluate` computes held-out accuracy.
- ``safe_nll`` / ``harmful_nll``: on held-out labelled single rows (``builtin:safety``, test
  split; label 1 = safe, 0 = harmful), the per-token negative log-likelihood of the completion,

      NLL(y | x) = −(1/|y|) Σ_{t ∈ y} log π(y_t | x, y_<t),

  averaged over the safe rows and over the harmful rows. The sum and |y| run over the tokens
  training counts: :func:`align.data.tokenize_dataset` + :class:`align.data.PreferenceCollator` +
  :func:`align.logps.completion_logps`, the training forward, so in a multi-turn completion only
  the assistant turns count. It is the per-row NLL the ``safe_align`` and ``npo`` objectives log
  as ``nll/safe`` / ``nll/harmful``. Lower safe NLL: the safe answers became likelier; higher
  harmful NLL: the harmful ones became unlikelier.

A metric whose set is empty (no benign prompt, no utility rows, no harmful NLL row) is left out.

Processes: answers are sampled sharded and gathered on every process; the NLL rows are measured
on every process (the same forwards everywhere, so ZeRO-3's parameter gathers line up); only the
main process judges (it alone needs the judge: an HTTP judge calls out once) and writes files,
then sends the metrics to the others. Files in ``output_dir``: ``samples.jsonl`` (per prompt: the
prompt, behaviour, reference, answer, the judge's verdict ``safe`` (None for benign prompts) and
``refusal``), ``utility.jsonl``, ``nll.jsonl`` (per row: label, NLL, token count),
``metrics.json`` and the answer caches in ``generation/``. :func:`safety_table` lays out the
metrics of several models side by side (markdown).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from align.generation import SamplingConfig

__all__ = [
    "BENIGN",
    "DEFAULT_NLL_DATA",
    "DEFAULT_PROMPTS",
    "DEFAULT_UTILITY",
    "TABLE_COLUMNS",
    "SafetyConfig",
    "completion_nll",
    "evaluate_safety",
    "load_nll_rows",
    "load_safety_prompts",
    "load_utility_rows",
    "run_safety",
    "safety_table",
    "score_answers",
]

BENIGN = "benign"
DEFAULT_PROMPTS = "builtin:safety_prompts"
DEFAULT_NLL_DATA = "builtin:safety"
DEFAULT_UTILITY = "builtin:arithmetic"
# (metric, column header, format): rates in percent, NLLs in nats per token; arrows say which way is better.
TABLE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("harmful_rate", "harmful rate ↓", "{:.1%}"),
    ("over_refusal", "over-refusal ↓", "{:.1%}"),
    ("utility/accuracy", "utility accuracy ↑", "{:.1%}"),
    ("safe_nll", "safe NLL ↓", "{:.3f}"),
    ("harmful_nll", "harmful NLL ↑", "{:.3f}"),
)


@dataclass
class SafetyConfig:
    """Which held-out data and how to sample (defaults: the stand-in set, greedy, 128 new tokens).

    ``limit`` takes the first N rows of each set (prompts, utility problems, NLL rows); ``utility``
    or ``nll_data`` None skips that part. ``max_length`` bounds prompt + completion of an NLL row
    (longer completions are cut, as in training)."""

    prompts: str = DEFAULT_PROMPTS
    prompts_split: str = "test"
    nll_data: str | None = DEFAULT_NLL_DATA
    nll_split: str = "test"
    utility: str | None = DEFAULT_UTILITY
    utility_split: str = "test"
    limit: int | None = None
    max_new_tokens: int = 128
    temperature: float = 0.0
    batch_size: int = 32
    nll_batch_size: int = 8
    max_length: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be at least 1 (or None for every row), got {self.limit}")
        if self.nll_batch_size < 1:
            raise ValueError(f"nll_batch_size must be at least 1, got {self.nll_batch_size}")
        self.sampling()  # a bad token budget, batch size or temperature fails here

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(num_samples=1, max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                              seed=self.seed, batch_size=self.batch_size, chunk_size=self.batch_size)  # fmt: skip


# -- data ----------------------------------------------------------------------------------------


def load_safety_prompts(source: str = DEFAULT_PROMPTS, split: str = "test", limit: int | None = None) -> list[dict]:
    """Held-out prompt rows ``{"prompt", "behaviour", "reference"}`` (the first ``limit``), each
    checked: a non-empty prompt (text or messages), a non-empty string ``behaviour``, a string
    ``reference`` (absent or null reads ``""``). A bad row fails naming the source, row and field."""
    from align.data import read_rows

    rows = []
    for name, part in read_rows(source, split):
        for i, row in enumerate(part):
            prompt, behaviour, reference = row.get("prompt"), row.get("behaviour"), row.get("reference") or ""
            if not (isinstance(prompt, str) and prompt.strip()) and not (isinstance(prompt, list) and prompt):
                raise ValueError(f"{name}: row {i}: field 'prompt' must be a non-empty string or list of messages")
            if not isinstance(behaviour, str) or not behaviour:
                raise ValueError(f"{name}: row {i}: field 'behaviour' must be a non-empty string, got {behaviour!r}")
            if not isinstance(reference, str):
                raise ValueError(f"{name}: row {i}: field 'reference' must be a string, got {reference!r}")
            rows.append({"prompt": prompt, "behaviour": behaviour, "reference": reference})
    if not rows:
        raise ValueError(f"{source} [{split}]: no prompts")
    return rows[:limit]


def load_utility_rows(source: str = DEFAULT_UTILITY, split: str = "test", limit: int | None = None) -> list[dict]:
    """Prompt rows ``{"prompt", "answer"?, "solution"?}`` (:func:`align.data.load_prompt_dataset`),
    the first ``limit``; each needs an ``answer`` or a ``solution`` for the verifier."""
    from align.data import load_prompt_dataset

    rows = load_prompt_dataset(source, split).to_list()[:limit]
    for i, row in enumerate(rows):
        if row.get("answer") is None and row.get("solution") is None:
            raise ValueError(f"{source} [{split}]: row {i}: no field 'answer' or 'solution' to check an answer against")
    return rows


def load_nll_rows(source: str = DEFAULT_NLL_DATA, split: str = "test", limit: int | None = None):
    """Labelled single rows (:func:`align.data.load_preference_dataset`, kind ``single``), the first
    ``limit``; every row needs ``labels`` of exactly [1] (safe) or [0] (harmful)."""
    from align.data import load_preference_dataset

    dataset = load_preference_dataset(source, split, kind="single", name=str(source))
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    labels = dataset["labels"] if "labels" in dataset.column_names else None
    if labels is None:
        raise ValueError(f"{source} [{split}]: field 'label' missing: the NLLs need label 1 (safe) or 0 (harmful)")
    for i, value in enumerate(labels):
        if value not in ([1.0], [0.0]):
            raise ValueError(f"{source} [{split}]: row {i}: field 'label' must be 1 (safe) or 0 (harmful), got {value}")
    return dataset


# -- measurements --------------------------------------------------------------------------------


def completion_nll(model: Any, tokenizer: Any, dataset: Any, *, batch_size: int = 8, max_length: int | None = None,
                   accelerator: Any = None) -> list[dict]:  # fmt: skip
    """Per row of ``dataset`` (internal single rows), ``{"index", "label", "nll", "tokens"}``: the
    per-token NLL of its completion under ``model`` over the tokens training counts (module
    docstring), from packed batches of ``batch_size`` rows, without gradients, in eval mode. Rows
    whose prompt leaves no room under ``max_length`` are dropped (logged by tokenize_dataset)."""
    import torch

    from align.data import PreferenceCollator, tokenize_dataset
    from align.logps import completion_logps

    dataset = dataset.add_column("index", list(range(len(dataset))))
    tokenized, _ = tokenize_dataset(dataset, tokenizer, max_length=max_length, name="safety NLL rows")
    rows = tokenized.to_list()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0  # packed batches never pad
    collator = PreferenceCollator(pad, padding_free=True)
    module = accelerator.unwrap_model(model) if accelerator is not None else model
    device = next(module.parameters()).device
    was_training = module.training
    module.eval()
    out = []
    try:
        with torch.no_grad():
            for start in range(0, len(rows), batch_size):
                part = rows[start : start + batch_size]
                batch = collator([{k: v for k, v in row.items() if k != "index"} for row in part])
                batch = {key: value.to(device) for key, value in batch.items()}
                logps = completion_logps(module, batch)
                sums, counts = logps["logps_sum"].double().cpu(), logps["token_counts"].cpu()
                for row, total, count in zip(part, sums.tolist(), counts.tolist(), strict=True):
                    out.append({"index": row["index"], "label": row["labels"][0], "nll": -total / count,
                                "tokens": count})  # fmt: skip
    finally:
        module.train(was_training)
    return out


def evaluate_safety(
    model: Any,
    tokenizer: Any,
    prompt_rows: Sequence[dict],
    *,
    judge: Any,
    utility_rows: Sequence[dict] | None = None,
    nll_rows: Any = None,
    sampling: SamplingConfig | None = None,
    is_refusal: Callable[[str], bool] | None = None,
    nll_batch_size: int = 8,
    max_length: int | None = None,
    accelerator: Any = None,
    output_dir: str | Path | None = None,
    cache_key: dict | None = None,
    show_progress: bool = True,
) -> dict[str, float]:
    """The safety metrics of ``model`` (module docstring), on every process.

    ``prompt_rows``: ``{"prompt", "behaviour", "reference"}`` (:func:`load_safety_prompts`);
    ``judge``: a verifier plug-in (True = safe), needed on the main process only (others may pass
    None); ``utility_rows``: prompt rows with ``answer``/``solution`` (:func:`load_utility_rows`);
    ``nll_rows``: a dataset of labelled single rows (:func:`load_nll_rows`); ``sampling``: one
    answer per prompt (default: greedy, 128 new tokens); ``is_refusal``: text → bool (default
    :func:`align.rewards.safety.is_refusal`). ``output_dir`` gets the files of the module
    docstring; ``cache_key`` names the model in the answer caches' keys.
    """
    from align.evaluation.common import generate_answers
    from align.io import atomic_write_json, write_jsonl
    from align.rewards import GSM8KVerifier, checked_verdicts

    sampling = sampling or SafetyConfig().sampling()
    if sampling.num_samples != 1:
        raise ValueError(f"the safety evaluation judges one answer per prompt, got num_samples={sampling.num_samples}")
    if not prompt_rows:
        raise ValueError("no safety prompts to evaluate")
    main = accelerator is None or accelerator.is_main_process
    if main:
        _check_judge(judge)  # before sampling for minutes

    def answers(rows: Sequence[dict], part: str) -> list[str]:
        cache = None if output_dir is None else Path(output_dir) / "generation" / part
        prompts = [row["prompt"] for row in rows]
        out = generate_answers(model, tokenizer, prompts, sampling, accelerator=accelerator, cache_dir=cache,
                               cache_key=cache_key, show_progress=show_progress)  # fmt: skip
        return [group[0] for group in out]

    safety_answers = answers(prompt_rows, "safety")
    utility_answers = answers(utility_rows, "utility") if utility_rows else []
    nll = []
    if nll_rows is not None and len(nll_rows):
        nll = completion_nll(model, tokenizer, nll_rows, batch_size=nll_batch_size, max_length=max_length,
                             accelerator=accelerator)  # fmt: skip
    metrics: dict[str, float] = {}
    if main:
        samples, metrics = score_answers(prompt_rows, safety_answers, judge=judge, is_refusal=is_refusal)
        utility = []
        if utility_rows:
            prompts = [row["prompt"] for row in utility_rows]
            golds = [row["answer"] if row.get("answer") is not None else row.get("solution") for row in utility_rows]
            correct = checked_verdicts(GSM8KVerifier(), prompts, utility_answers, golds)
            utility = [{"index": i, "prompt": p, "answer": g, "output": o, "correct": bool(c)}
                       for i, (p, g, o, c) in enumerate(zip(prompts, golds, utility_answers, correct))]  # fmt: skip
            metrics["utility/accuracy"] = float(correct.mean())
            metrics["num_utility"] = len(utility)
        for name, label in (("safe", 1.0), ("harmful", 0.0)):
            values = [r["nll"] for r in nll if r["label"] == label]
            if values:
                metrics[f"{name}_nll"] = sum(values) / len(values)
                metrics[f"num_{name}_rows"] = len(values)
        if output_dir is not None:
            out = Path(output_dir)
            write_jsonl(samples, out / "samples.jsonl")
            write_jsonl(utility, out / "utility.jsonl")
            write_jsonl(nll, out / "nll.jsonl")
            judge_name = str(getattr(judge, "name", type(judge).__name__))
            record = {"metrics": metrics, "sampling": asdict(sampling), "judge": judge_name}
            atomic_write_json(out / "metrics.json", record)
    if accelerator is not None and accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        metrics = broadcast_object_list([metrics], from_process=0)[0]
    return metrics


def _check_judge(judge: Any) -> None:
    from align.rewards import reward_kind

    if reward_kind(judge) != "verifier":
        raise TypeError(f"the safety judge must be a verifier (verify(prompts, completions, references) -> "
                        f"True = safe), got {getattr(judge, 'name', judge)!r}")  # fmt: skip


def score_answers(
    rows: Sequence[dict], answers: Sequence[str], *, judge: Any, is_refusal: Callable[[str], bool] | None = None
) -> tuple[list[dict], dict[str, float]]:
    """Judge one answer per prompt row: per-prompt records (``index``, ``behaviour``, ``prompt``,
    ``reference``, ``answer``, ``safe``: the judge's verdict, None on benign prompts, ``refusal``)
    and the metrics ``harmful_rate``, ``harmful_rate/<behaviour>``, ``over_refusal`` and the counts
    ``num_harmful_prompts``, ``num_benign_prompts`` (module docstring). The judge sees the
    non-benign prompts in one checked call (:func:`align.rewards.checked_verdicts`), so a failure or
    a malformed verdict names the prompt by its index in ``rows``."""
    from align.rewards import checked_verdicts

    if len(rows) != len(answers):
        raise ValueError(f"got {len(rows)} prompt rows but {len(answers)} answers")
    _check_judge(judge)
    if is_refusal is None:
        from align.rewards.safety import is_refusal
    harmful = [i for i, row in enumerate(rows) if row["behaviour"] != BENIGN]
    verdicts = {}
    if harmful:
        safe = checked_verdicts(judge, [rows[i]["prompt"] for i in harmful], [answers[i] for i in harmful],
                                [rows[i]["reference"] for i in harmful], prompt_ids=harmful)  # fmt: skip
        verdicts = dict(zip(harmful, safe.tolist()))
    records = [
        {"index": i, "behaviour": row["behaviour"], "prompt": row["prompt"], "reference": row["reference"],
         "answer": answer, "safe": verdicts.get(i), "refusal": bool(is_refusal(answer))}  # fmt: skip
        for i, (row, answer) in enumerate(zip(rows, answers))
    ]
    benign = [r for r in records if r["behaviour"] == BENIGN]
    metrics: dict[str, float] = {"num_harmful_prompts": len(harmful), "num_benign_prompts": len(benign)}
    if harmful:
        metrics["harmful_rate"] = sum(not verdicts[i] for i in harmful) / len(harmful)
        for behaviour in sorted({rows[i]["behaviour"] for i in harmful}):
            group = [verdicts[i] for i in harmful if rows[i]["behaviour"] == behaviour]
            metrics[f"harmful_rate/{behaviour}"] = sum(not safe for safe in group) / len(group)
    if benign:
        metrics["over_refusal"] = sum(r["refusal"] for r in benign) / len(benign)
    return records, metrics


def run_safety(
    model: Any,
    tokenizer: Any,
    config: SafetyConfig | None = None,
    *,
    judge: Any,
    accelerator: Any = None,
    output_dir: str | Path | None = None,
    cache_key: dict | None = None,
    show_progress: bool = True,
) -> dict[str, float]:
    """:func:`evaluate_safety` on the data ``config`` names (loaded here, the first ``limit`` rows of each)."""
    config = config or SafetyConfig()
    prompts = load_safety_prompts(config.prompts, config.prompts_split, config.limit)
    utility = load_utility_rows(config.utility, config.utility_split, config.limit) if config.utility else None
    nll = load_nll_rows(config.nll_data, config.nll_split, config.limit) if config.nll_data else None
    return evaluate_safety(
        model, tokenizer, prompts, judge=judge, utility_rows=utility, nll_rows=nll, sampling=config.sampling(),
        nll_batch_size=config.nll_batch_size, max_length=config.max_length, accelerator=accelerator,
        output_dir=output_dir, cache_key=cache_key, show_progress=show_progress,
    )  # fmt: skip


def safety_table(results: Mapping[str, Mapping[str, float]], *, columns=TABLE_COLUMNS) -> str:
    """A markdown table, one row per variant (``results``: name → metrics, in order), one column per
    metric of ``columns`` (``(metric, header, format)``); a metric a variant lacks reads ``–``."""
    header = ["variant", *(title for _, title, _ in columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * len(columns)) + "|"]
    for name, metrics in results.items():
        cells = [fmt.format(metrics[key]) if key in metrics else "–" for key, _, fmt in columns]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return "\n".join(lines) + "\n"
