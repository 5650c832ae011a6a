"""``LikelihoodDriftCallback``: watch what preference training does to the chosen and rejected
log-likelihoods of a fixed probe set (the measurements and their formulas: :mod:`align.callbacks.measure`)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from datasets import Dataset
from transformers import TrainerCallback

from align.callbacks.measure import PairMeasurement, drift_metrics, gradient_cosine, measure_pairs
from align.callbacks.plot import plot_drift
from align.data import CARRIED_COLUMNS, PER_COMPLETION_FIELDS, DataValidationError, carried, dataset_kind, write_jsonl, write_text_atomic
from align.trainers.base import tokenize_for_training
from align.trainers.implicit_prm import labelled_pairs

logger = logging.getLogger(__name__)

__all__ = ["DRIFT_PREFIX", "LikelihoodDriftCallback", "list_probe_pairs"]

DRIFT_PREFIX = "drift/"


class LikelihoodDriftCallback(TrainerCallback):
    """Measure the probe pairs at step 0, every ``eval_steps`` and at the end of training.

    Probes: ``probe_dataset`` (raw or tokenized, any kind below), else the first ``num_probes``
    pairs of the trainer's eval dataset, else ``num_probes`` pairs held back from the training set
    (removed from it before training starts). Each kind of data gives (chosen, rejected) pairs:

    - pairs, as they are; held back from training: the last ``num_probes`` pairs;
    - single completions with 0/1 ``labels`` (the implicit PRM's CE data): per prompt, its first
      correct completion as "chosen" and its first incorrect one as "rejected"; held back from
      training, every row of a probe's prompt leaves the training set (at least one row stays);
    - lists of K ≥ 2 completions (K may differ between rows) with ``returns``, else ``scores``: one
      pair per row, its best completion as "chosen" and its worst as "rejected"
      (:func:`list_probe_pairs`; a row whose values are all equal prefers nothing and gives none);
      held back from training: the last ``num_probes`` rows that give a pair (at least one row stays).

    When the data gives no pair (no prompt with both a correct and an incorrect completion, lists
    without ``returns`` or ``scores``, or with all-equal values on every row), a warning says so and
    nothing is measured (the runner and the loop add this callback by default); a given
    ``probe_dataset`` of another kind (unlabelled completions) is an error. Each measurement is

    - logged through the Trainer as ``drift/<metric>`` (so every ``report_to`` integration gets it),
    - appended to ``<output_dir>/likelihood_drift.jsonl`` (rewritten atomically each time),

    and at the end of training drawn into ``<output_dir>/likelihood_drift.png``. The step-0
    per-pair values (the baseline, CHES included) are kept in ``likelihood_drift_probe.json``, so
    a resumed run measures its changes against the original step 0.

    Every ``entanglement_every``-th measurement also computes the gradient cosine on the first
    ``entanglement_pairs`` probes (not under DeepSpeed ZeRO-3, whose partitioned parameters have no
    full gradient to compare). A warning is logged when the chosen log-prob per token has fallen by
    more than ``warn_threshold`` nats since step 0 while the margin grew.

    All processes measure the same probes (ZeRO-3 needs every rank in each forward); the main
    process writes the files.
    """

    def __init__(
        self,
        probe_dataset=None,
        *,
        num_probes: int = 32,
        eval_steps: int | float | None = None,
        beta: float | None = None,
        top_k: int = 20,
        batch_size: int = 8,
        entanglement_every: int = 4,
        entanglement_pairs: int = 2,
        warn_threshold: float = 0.1,
        filename: str = "likelihood_drift",
    ):
        if num_probes < 1 or batch_size < 1 or top_k < 1:
            raise ValueError("num_probes, batch_size and top_k must be at least 1")
        self.probe_dataset = probe_dataset
        self.num_probes = num_probes
        self.eval_steps = eval_steps
        self.beta = beta
        self.top_k = top_k
        self.batch_size = batch_size
        self.entanglement_every = entanglement_every
        self.entanglement_pairs = entanglement_pairs
        self.warn_threshold = warn_threshold
        self.filename = filename
        self.trainer = None
        self.records: list[dict] = []
        self.baseline: PairMeasurement | None = None
        self._measurements = 0
        self._warned = False

    # -- wiring --------------------------------------------------------------------------------

    def bind(self, trainer) -> None:
        """Attach to a PreferenceTrainer (called by the trainer when the callback is added) and
        pick the probe set now, before any training data is consumed."""
        self.trainer = trainer
        self.probes = None
        evaluation = trainer.eval_dataset if not isinstance(trainer.eval_dataset, dict) else None
        given = self.probe_dataset is not None
        data = trainer.train_dataset  # where the probes come from, for the warning when there are none
        try:
            if given:
                tokenizer = trainer.processing_class
                data = tokenize_for_training(self.probe_dataset, "probe", None, (), tokenizer, trainer.args)
                probes, source = _probe_pairs(data), "the given probe dataset"
                if probes is None:
                    raise ValueError(
                        "LikelihoodDriftCallback: the probe dataset holds neither (chosen, rejected) pairs, lists of "
                        f"completions, nor single completions with 0/1 labels (columns: {', '.join(data.column_names)})"
                    )
            elif probes := _probe_pairs(evaluation):
                source = "the eval dataset"
            elif data is not None and _is_pair(data):
                if len(data) <= self.num_probes:
                    raise ValueError(
                        f"LikelihoodDriftCallback: cannot hold {self.num_probes} probe pairs back from a training set "
                        f"of {len(data)}"
                    )
                held = len(data) - self.num_probes
                probes, trainer.train_dataset = data.select(range(held, len(data))), data.select(range(held))
                source = "pairs held back from the training set"
            elif data is not None and _is_labelled_single(data):
                probes, trainer.train_dataset = self._hold_back_labelled(data)
                source = "correct/incorrect completions of prompts held back from the training set"
            elif data is not None and _is_list(data):
                probes, trainer.train_dataset = self._hold_back_lists(data)
                source = "the best and worst completions of lists held back from the training set"
            else:
                raise ValueError(
                    "LikelihoodDriftCallback needs preference pairs to probe: pass probe_dataset=..., or give the "
                    "trainer a pair eval dataset or pair training data (or single completions with 0/1 labels, or "
                    "lists with returns or scores)"
                )
        except DataValidationError as err:  # e.g. a fractional label: no pair to build, but training can go on
            if given:
                raise
            logger.warning("likelihood drift: not measured: %s", err)
            return
        if not probes:
            # Not an error: the runner and the loop add this callback by default, and a run whose
            # samples are all right (or all wrong, or all equally rewarded) for every prompt still trains.
            logger.warning(
                "likelihood drift: not measured: %s, so there is no (chosen, rejected) probe pair; give probe pairs "
                "with --eval_dataset or LikelihoodDriftCallback(probe_dataset=...), or --drift false",
                _no_pair_reason(data, "the probe dataset" if given else "the eval or training data"),
            )
            return
        self.probes = probes.select(range(min(self.num_probes, len(probes))))
        logger.info("likelihood drift: %d probe pairs from %s", len(self.probes), source)

    def _hold_back_labelled(self, train):
        """(probe pairs, training rows left): one (correct, incorrect) pair from each of the last
        ``num_probes`` prompts that have both, all of those prompts' rows removed from training;
        fewer prompts when that would leave no training row. (None, train) when no prompt has both."""
        pairs, _ = labelled_pairs(train, pairs_per_prompt=1, name="train")
        prompts = [tuple(p) for p in train["prompt_ids"]]
        for n in range(min(self.num_probes, len(pairs)), 0, -1):
            probes = pairs.select(range(len(pairs) - n, len(pairs)))
            held = {tuple(p) for p in probes["prompt_ids"]}
            keep = [i for i, p in enumerate(prompts) if p not in held]
            if keep:
                if n < self.num_probes:
                    logger.info("likelihood drift: %d probe prompts, not %d, so that training rows remain",
                                n, self.num_probes)  # fmt: skip
                return probes, train.select(keep)
        return None, train

    def _hold_back_lists(self, train):
        """(probe pairs, training rows left): the pairs of the last ``num_probes`` list rows that
        give one (:func:`list_probe_pairs`), those rows removed from training; fewer when that
        would leave no training row. (None, train) when no row gives a pair."""
        pairs, rows = list_probe_pairs(train)
        n = min(self.num_probes, len(pairs), len(train) - 1)
        if n < 1:
            return None, train
        if n < min(self.num_probes, len(pairs)):
            logger.info("likelihood drift: %d probe lists, not %d, so that a training row remains",
                        n, min(self.num_probes, len(pairs)))  # fmt: skip
        held = set(rows[len(rows) - n :])
        keep = [i for i in range(len(train)) if i not in held]
        return pairs.select(range(len(pairs) - n, len(pairs))), train.select(keep)

    @property
    def paths(self) -> dict[str, Path]:
        out = Path(self.trainer.args.output_dir)
        return {"jsonl": out / f"{self.filename}.jsonl", "png": out / f"{self.filename}.png", "probe": out / f"{self.filename}_probe.json"}

    def interval(self, args, state) -> int:
        steps = self.eval_steps or args.eval_steps or args.logging_steps
        if steps < 1:  # a ratio of the run, as the Trainer's own *_steps accept
            steps = math.ceil(steps * state.max_steps)
        return max(1, int(steps))

    # -- events ----------------------------------------------------------------------------------

    def on_train_begin(self, args, state, control, **kwargs):
        if self.trainer is None:
            raise RuntimeError("LikelihoodDriftCallback is not bound: add it with PreferenceTrainer(callbacks=[...]) or trainer.add_callback")
        if self.probes is None:  # no probe pair (warned when bound)
            return
        paths = self.paths
        if state.global_step > 0 and paths["probe"].exists():  # resumed: keep the original step 0
            saved = json.loads(paths["probe"].read_text())
            self.baseline = PairMeasurement.from_dict(saved["baseline"])
            self._measurements = saved.get("measurements", 0)
            if paths["jsonl"].exists():
                lines = paths["jsonl"].read_text().splitlines()
                self.records = [r for r in (json.loads(line) for line in lines if line.strip()) if r["step"] <= state.global_step]
            logger.info("likelihood drift: resumed at step %d with the step-0 baseline of %s", state.global_step, paths["probe"])
            return
        self.records, self._measurements, self.baseline = [], 0, None
        self.measure(state)

    def on_step_end(self, args, state, control, **kwargs):
        # The last step is measured here (DefaultFlowCallback, always first, has set
        # should_training_stop): in on_train_end the report_to integrations have already closed
        # their runs (TensorBoard reopens a writer, MLflow starts a new run, Trackio a new init).
        if self.probes is None:
            return
        if state.global_step % self.interval(args, state) == 0 or control.should_training_stop:
            self.measure(state)

    def on_train_end(self, args, state, control, **kwargs):
        if self.probes is None:
            return
        # a fallback, for a stop decided after the step's callbacks (early stopping at an evaluation)
        if not self.records or self.records[-1]["step"] != state.global_step:
            self.measure(state)
        if self.trainer.is_world_process_zero():
            plot_drift({"run": self.records}, self.paths["png"])
            logger.info("likelihood drift: figure written to %s", self.paths["png"])

    # -- measuring ---------------------------------------------------------------------------------

    def measure(self, state) -> dict[str, float]:
        from align.data.images import is_processor, text_tokenizer

        trainer = self.trainer
        model = trainer.model
        pad = text_tokenizer(trainer.processing_class).pad_token_id
        processor = trainer.processing_class if is_processor(trainer.processing_class) else None
        autocast = trainer.autocast_smart_context_manager
        current = measure_pairs(model, self.probes, pad_token_id=pad, batch_size=self.batch_size, top_k=self.top_k,
                                autocast=autocast, processor=processor)  # fmt: skip
        first = self.baseline is None
        if first:
            self.baseline = current
        beta = self.beta if self.beta is not None else getattr(trainer.args, "beta", 0.1)
        metrics = drift_metrics(self.baseline, current, beta)
        if self.entanglement_every and self._measurements % self.entanglement_every == 0:
            if trainer.is_deepspeed_enabled and trainer.accelerator.state.deepspeed_plugin.zero_stage == 3:
                if first:
                    logger.warning("likelihood drift: gradient entanglement is not measured under ZeRO-3")
            else:
                pairs = self.probes.select(range(min(self.entanglement_pairs, len(self.probes))))
                metrics["grad_cosine"] = float(
                    gradient_cosine(model, pairs, pad_token_id=pad, autocast=autocast, processor=processor).mean()
                )
        self._measurements += 1

        record = {"step": state.global_step, "epoch": state.epoch or 0.0, **metrics}
        self.records.append(record)
        self._warn(metrics)
        if trainer.is_world_process_zero():
            state = {"baseline": self.baseline.to_dict(), "measurements": self._measurements}
            write_text_atomic(self.paths["probe"], json.dumps(state))
            write_jsonl(self.records, self.paths["jsonl"])
        # Logging resets the Trainer's should_log flag (DefaultFlowCallback.on_log); keep the
        # Trainer's own pending loss log of this step.
        should_log = trainer.control.should_log
        trainer.log({DRIFT_PREFIX + name: value for name, value in metrics.items()})
        trainer.control.should_log = should_log
        return metrics

    def _warn(self, metrics: dict[str, float]) -> None:
        fall = -metrics["chosen_change_per_token"]
        if fall > self.warn_threshold and metrics["margin_change"] > 0 and not self._warned:
            self._warned = True
            logger.warning(
                "likelihood displacement: the chosen responses' log-prob per token fell by %.3f nats since step 0 "
                "(threshold %.3f) while the margin grew by %.3f; %.0f%% of probe pairs are displaced. An NLL term on "
                "the chosen response (e.g. RPO's alpha) counters it.",
                fall, self.warn_threshold, metrics["margin_change"], 100 * metrics["displacement_rate"],
            )  # fmt: skip


def _group_sizes(dataset) -> set[int]:
    return {len(c) for c in dataset[: min(len(dataset), 64)]["completion_ids"]}


def _is_list(dataset) -> bool:
    """Tokenized lists: recorded as such (a list of two is no pair), or groups of other sizes than 2."""
    if "completion_ids" not in dataset.column_names or not len(dataset):
        return False
    sizes = _group_sizes(dataset)
    return dataset_kind(dataset) == "list" or (min(sizes) >= 2 and sizes != {2})


def _is_pair(dataset) -> bool:
    return "completion_ids" in dataset.column_names and not _is_list(dataset) and _group_sizes(dataset) == {2}


def _is_labelled_single(dataset) -> bool:
    if not {"completion_ids", "labels"} <= set(dataset.column_names):
        return False
    return _group_sizes(dataset) == {1}


def _list_values(dataset) -> str | None:
    """The field that ranks a list's completions: ``returns``, else ``scores``, else None."""
    return next((name for name in ("returns", "scores") if name in dataset.column_names), None)


def list_probe_pairs(dataset: Dataset) -> tuple[Dataset, list[int]]:
    """One (best, worst) probe pair per tokenized list row that prefers something.

    Each row holds ``prompt_ids``, ``completion_ids`` (K ≥ 2, K may differ between rows) and K
    values v: its ``returns``, else its ``scores``. The pair is

        chosen = y_b,    b = min argmax_k v_k    (the first best completion)
        rejected = y_w,  w = max argmin_k v_k    (the last worst completion)

    so ties break by a fixed rule and the probes depend on the data alone. A row whose values are
    all equal (max v = min v) prefers nothing and gives no pair; nor does one whose best and worst
    completions are the same tokens (a repeated sample judged twice). Returns the pairs in the
    layout the measurements read (``prompt_ids``, ``completion_ids`` = [chosen, rejected], and
    each per-completion field of the two, ``assistant_masks`` and images included) with, for each pair, the index of its row. A dataset
    without ``returns`` or ``scores`` gives no pair.
    """
    values = _list_values(dataset)
    extra = [f for f in PER_COMPLETION_FIELDS if f in dataset.column_names]
    carry = [f for f in CARRIED_COLUMNS if f in dataset.column_names]
    out: dict[str, list] = {"prompt_ids": [], "completion_ids": [], **{f: [] for f in (*extra, *carry)}}
    rows: list[int] = []
    if values is not None:
        columns = {f: dataset[f] for f in ("prompt_ids", "completion_ids", *extra, *carry)}
        for i, (prompt, completions) in enumerate(zip(columns["prompt_ids"], columns["completion_ids"])):
            v = columns[values][i]
            best, worst = v.index(max(v)), len(v) - 1 - v[::-1].index(min(v))
            if v[best] == v[worst] or completions[best] == completions[worst]:
                continue
            out["prompt_ids"].append(prompt)
            out["completion_ids"].append([completions[best], completions[worst]])
            for f in extra:
                out[f].append([columns[f][i][best], columns[f][i][worst]])
            for f, value in carried({f: columns[f][i] for f in carry}, [best, worst]).items():
                out[f].append(value)
            rows.append(i)
    return Dataset.from_dict(out), rows


def _probe_pairs(dataset):
    """Tokenized pairs as they are; labelled single completions as one (correct, incorrect) pair
    per prompt that has both; lists as one (best, worst) pair per row that prefers something
    (both possibly none); None for anything else (no dataset, unlabelled completions)."""
    if dataset is None:
        return None
    if _is_list(dataset):
        return list_probe_pairs(dataset)[0]
    if _is_pair(dataset):
        return dataset
    if _is_labelled_single(dataset):
        return labelled_pairs(dataset, pairs_per_prompt=1, name="probe")[0]
    return None


def _no_pair_reason(dataset, what: str) -> str:
    """Why ``dataset`` (named ``what``) gave no probe pair."""
    if not _is_list(dataset):
        return f"no prompt of {what} has both a correct and an incorrect completion (one completion per prompt?)"
    values = _list_values(dataset)
    if values is None:
        return f"the lists of {what} carry neither 'returns' nor 'scores', so no completion is preferred to another"
    if len(dataset) == 1 and list_probe_pairs(dataset)[1]:
        return f"the only list of {what} is needed for training"
    return f"no list of {what} has completions with different {values} (all equal: no preference)"
