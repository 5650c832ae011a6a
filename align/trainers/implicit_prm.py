"""The implicit PRM's trainer: an outcome reward r = β·Δ(y) trained from 0/1 labels (CE) or from
(correct, incorrect) pairs (DPO), saved with what a process-reward scorer needs to read it back."""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset

from align.data import CARRIED_COLUMNS, PER_COMPLETION_FIELDS, DataValidationError, dataset_kind
from align.io import atomic_write_json
from align.objectives import GroupShape, ImplicitPRMCE, ImplicitPRMDPO
from align.trainers.base import PreferenceConfig, PreferenceTrainer, _is_peft, objective_fields, tokenize_for_training

logger = logging.getLogger(__name__)

__all__ = ["IMPLICIT_PRM_FILE", "IMPLICIT_PRM_OBJECTIVES", "ImplicitPRMConfig", "ImplicitPRMTrainer", "labelled_pairs"]

IMPLICIT_PRM_OBJECTIVES = ("implicit_prm_ce", "implicit_prm_dpo")
IMPLICIT_PRM_FILE = "implicit_prm.json"  # written next to the saved model, read by align.rewards.implicit_prm


@dataclass
@objective_fields(ImplicitPRMCE, ImplicitPRMDPO)
class ImplicitPRMConfig(PreferenceConfig):
    """``PreferenceConfig`` for the implicit PRM (Yuan et al. 2024, arXiv:2412.01981), outcome
    reward r_θ(y) = β·Δ(y), Δ = log π_θ(y|x) − log π_ref(y|x); ``beta`` (0.05) and ``nll_weight``
    (0, CE only) and their defaults come from the objectives:

    - ``implicit_prm_ce``: −[l·log σ(r) + (1 − l)·log(1 − σ(r))] (+ w·l·NLL(y)/|y|) on single
      completions with a 0/1 ``label``; works with one completion per prompt;
    - ``implicit_prm_dpo``: −log σ(r(y_c) − r(y_i)) on (correct, incorrect) pairs, given as pairs
      or built from labelled completions (every correct × incorrect pair of a prompt).
    """

    objective: str = field(default="implicit_prm_ce", metadata={"help": f"One of {IMPLICIT_PRM_OBJECTIVES}."})

    def __post_init__(self) -> None:
        if self.objective not in IMPLICIT_PRM_OBJECTIVES:
            raise ValueError(
                f"ImplicitPRMConfig.objective must be one of {IMPLICIT_PRM_OBJECTIVES}, got {self.objective!r}"
            )
        super().__post_init__()


class ImplicitPRMTrainer(PreferenceTrainer):
    """Train an implicit process reward model: an ordinary outcome model whose reward
    r = β·log(π_θ(y)/π_ref(y)) gives step rewards for free (:func:`align.objectives.process_rewards`).

    Data: labelled completions (``prompt``, ``completion``, ``label`` ∈ {0, 1}) for both variants;
    the DPO variant pairs them itself (:func:`labelled_pairs`: prompts whose completions are all
    correct or all wrong give no pair and are counted in the log) or takes (chosen, rejected) pairs
    as given. Logged: ``rewards/accuracies`` (CE: r > 0 for correct and r < 0 for incorrect
    completions; DPO: r(correct) > r(incorrect)), the rewards of each kind, the loss terms.

    :meth:`save_model` also writes :data:`IMPLICIT_PRM_FILE` into the folder: the objective, β and
    the reference the rewards are measured against (see :meth:`implicit_prm_info`).
    """

    config_class = ImplicitPRMConfig

    def __init__(
        self, model, args: ImplicitPRMConfig | None = None, train_dataset=None, eval_dataset=None,
        processing_class=None, ref_model=None, peft_config=None, callbacks=None, optimizers=(None, None),
    ):  # fmt: skip
        # what the reference is, for implicit_prm.json: the names before anything is copied or wrapped
        self._initial_policy = _name_or_path(model)
        self._given_reference = _name_or_path(ref_model) if ref_model is not None else None
        super().__init__(
            model, args, train_dataset, eval_dataset, processing_class, ref_model, peft_config, callbacks, optimizers
        )

    @classmethod
    def data_kind(cls, args: PreferenceConfig) -> str | None:
        """``"single"`` (labelled completions) for CE; None for DPO, which takes pairs or labelled completions."""
        return "single" if args.build_objective().requirements.group is GroupShape.SINGLE else None

    @classmethod
    def prepare_dataset(cls, dataset, tokenizer, args: PreferenceConfig, name: str = "train") -> Dataset | None:
        """CE: labelled single completions, as :class:`PreferenceTrainer` prepares them. DPO: pairs as
        given, or labelled completions turned into every (correct, incorrect) pair of each prompt."""
        if dataset is None or args.build_objective().requirements.group is GroupShape.SINGLE:
            return super().prepare_dataset(dataset, tokenizer, args, name)
        data = tokenize_for_training(dataset, name, None, (), tokenizer, args)
        kind = _tokenized_kind(data)
        if kind == "pair":
            return data
        if kind != "single":
            raise DataValidationError(
                f"{name}: implicit_prm_dpo needs (chosen, rejected) pairs or labelled single completions "
                f"(prompt/completion/label), got {kind or 'rows of mixed group sizes'}"
            )
        if "labels" not in data.column_names:
            raise DataValidationError(
                f"{name}: implicit_prm_dpo pairs single completions by their correctness, but the rows have no 'label' "
                f"(columns: {', '.join(data.column_names)})"
            )
        pairs, stats = labelled_pairs(data, name=name)
        logger.info(
            "%s: %d (correct, incorrect) pairs from %d prompts; skipped %d all-correct and %d all-wrong prompts",
            name, stats["pairs"], stats["prompts"], stats["all_correct"], stats["all_wrong"],
        )  # fmt: skip
        if not len(pairs):
            raise DataValidationError(
                f"{name}: no prompt has both a correct and an incorrect completion ({stats['prompts']} prompts: "
                f"{stats['all_correct']} all correct, {stats['all_wrong']} all wrong), so implicit_prm_dpo has no pair "
                "to train on; implicit_prm_ce trains on single labelled completions"
            )
        return pairs

    def implicit_prm_info(self) -> dict[str, Any]:
        """What a scorer needs besides the weights: ``{"objective", "beta", "reference",
        "reference_is_adapter_off"}``. ``reference`` names the reference model (the given reference
        model's or ``ref_model_name_or_path``, else the initial policy's name or path; an existing
        local path is written absolute); with ``reference_is_adapter_off`` the reference is that
        (base) model with the saved LoRA adapter disabled."""
        adapter_off = self.reference == "adapter" or (
            self.reference == "precomputed" and _is_peft(self.model) and self._given_reference is None
            and not self.args.ref_model_name_or_path
        )  # fmt: skip
        reference = None if adapter_off else self._given_reference or self.args.ref_model_name_or_path
        return {
            "objective": self.objective.name,
            "beta": self.objective.beta,
            "reference": _absolute(reference or self._initial_policy),
            "reference_is_adapter_off": adapter_off,
        }

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call)
        if self.is_world_process_zero():
            atomic_write_json(Path(output_dir or self.args.output_dir) / IMPLICIT_PRM_FILE, self.implicit_prm_info())


def labelled_pairs(
    dataset: Dataset, *, pairs_per_prompt: int | None = None, name: str = "dataset"
) -> tuple[Dataset, dict[str, int]]:
    """(correct, incorrect) pairs from tokenized labelled completions.

    ``dataset`` rows hold ``prompt_ids``, ``completion_ids`` (K ≥ 1) and ``labels`` (K values, 1
    correct, 0 incorrect); the completions of one prompt may be spread over rows (single
    completions) or sit in one row. For each prompt, in order of first appearance: every distinct
    correct × distinct incorrect completion, correct-major in row order (``pairs_per_prompt``
    keeps the first that many), as rows ``prompt_ids`` + ``completion_ids`` = [correct, incorrect]
    (+ the other per-completion fields of both, ``assistant_masks`` and completion images included; the prompt's
    ``images`` from the correct completion's row). A completion labelled both ways is never paired
    with itself. Stats: ``prompts``, ``pairs``, ``all_correct`` and ``all_wrong`` (prompts without
    a pair). A label other than 0 or 1 raises :class:`DataValidationError` naming the row.
    """
    extra = [f for f in (*PER_COMPLETION_FIELDS, *CARRIED_COLUMNS) if f != "labels" and f in dataset.column_names]
    columns = {f: dataset[f] for f in ("prompt_ids", "completion_ids", "labels", *extra)}
    groups: dict[tuple[int, ...], tuple[dict, dict]] = {}  # prompt → ({completion: (row, k)} correct, incorrect)
    rows = zip(columns["prompt_ids"], columns["completion_ids"], columns["labels"])
    for i, (prompt, completions, labels) in enumerate(rows):
        correct, incorrect = groups.setdefault(tuple(prompt), ({}, {}))
        for k, (completion, label) in enumerate(zip(completions, labels)):
            if label not in (0, 1):
                raise DataValidationError(
                    f"{name}: row {i}: field 'labels': a (correct, incorrect) pair needs labels 1 or 0, got {label}"
                )
            (correct if label == 1 else incorrect).setdefault(tuple(completion), (i, k))
    out: dict[str, list] = {"prompt_ids": [], "completion_ids": [], **{f: [] for f in extra}}
    stats = {"prompts": len(groups), "pairs": 0, "all_correct": 0, "all_wrong": 0}
    for prompt, (correct, incorrect) in groups.items():
        stats["all_correct"] += not incorrect
        stats["all_wrong"] += not correct
        candidates = ((c, r) for c in correct for r in incorrect if c != r)
        for c, r in itertools.islice(candidates, pairs_per_prompt):
            (i, k), (j, m) = correct[c], incorrect[r]
            out["prompt_ids"].append(list(prompt))
            out["completion_ids"].append([list(c), list(r)])
            for f in extra:
                out[f].append(columns[f][i] if f == "images" else [columns[f][i][k], columns[f][j][m]])
    stats["pairs"] = len(out["prompt_ids"])
    return Dataset.from_dict(out), stats


def _tokenized_kind(data: Dataset) -> str | None:
    """The kind a tokenized dataset was made from, or, tokenized elsewhere, what its group sizes say."""
    kind = dataset_kind(data)
    if kind is not None:
        return kind
    sizes = {len(ids) for ids in data["completion_ids"]}
    return {frozenset({1}): "single", frozenset({2}): "pair"}.get(frozenset(sizes))


def _name_or_path(model) -> str | None:
    return model if isinstance(model, str) else getattr(getattr(model, "config", None), "_name_or_path", None)


def _absolute(name: str | None) -> str | None:
    """A local folder as an absolute path (the scorer may run elsewhere), a hub id as it is, an
    empty name (a model built in memory) as None."""
    return str(Path(name).resolve()) if name and Path(name).exists() else name or None
