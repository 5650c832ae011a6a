"""The input record shared by every objective, the objective base class and the registry.

Every preference method in this toolkit is a loss over per-completion log-probabilities of
*groups* of completions for one prompt: one completion (single), a (chosen, rejected) pair, or a
list of K. The trainer produces one :class:`CompletionGroups` record per micro-batch and hands it
to whichever objective the config names; objectives never see a model, a tokenizer or a Trainer.

Conventions (shared by every objective):

- ``*_logps_sum`` are log π(y|x) = Σ_t log π(y_t | x, y_<t), summed over completion tokens only.
  Objectives that need a per-token mean divide by ``token_counts`` themselves, so sum-vs-mean is
  always explicit.
- Group axis ``K``: for pairs index 0 is the chosen (preferred) completion, index 1 the rejected.
- ``mask`` (B, K) marks the valid completions of lists shorter than K. Masked entries may hold any
  value (even NaN): they are zeroed before any arithmetic, so they affect neither the loss nor its
  gradient.
"""

from __future__ import annotations

import enum
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from typing import Callable, ClassVar, TypeVar

import torch

__all__ = [
    "CompletionGroups",
    "GroupShape",
    "Objective",
    "ObjectiveInputError",
    "ObjectiveOutput",
    "Requirements",
    "available_objectives",
    "get_objective",
    "objective_class",
    "reduce_metrics",
    "register_objective",
]


class ObjectiveInputError(ValueError):
    """A :class:`CompletionGroups` record does not fit the objective (shape, group, missing field, NaN)."""


class GroupShape(enum.Enum):
    SINGLE = "single"  # K == 1
    PAIR = "pair"  # K == 2: (chosen, rejected)
    LIST = "list"  # K >= 2, entries may be masked


# Per-completion (B, K) fields an objective may require, and the one per-example (B,) field.
_PER_COMPLETION_FIELDS = ("ref_logps_sum", "labels", "scores", "win_rates", "returns")
_PER_EXAMPLE_FIELDS = ("pair_prob",)
_PER_TOKEN_FIELDS = ("policy_token_logps", "ref_token_logps", "token_entropies")


@dataclass(frozen=True)
class CompletionGroups:
    """Log-probs and per-completion fields for a batch of B prompts with K completions each.

    Required:
        policy_logps_sum: (B, K) summed completion log-probs under the policy being trained.
        token_counts: (B, K) number of completion tokens |y| (> 0 for valid entries).

    Optional (objectives declare which they need):
        ref_logps_sum: (B, K) summed log-probs under the reference π_ref.
        mask: (B, K) bool, True for valid completions (default: all valid).
        policy_token_logps, ref_token_logps, token_entropies: (B, K, T) per-token values,
            zero-padded; ``token_mask`` (B, K, T) marks completion tokens and is required with them.
        labels: (B, K) in {0, 1} (correct / safe = 1).
        scores: (B, K) judge or evaluator scores.
        win_rates: (B, K) estimated P̂(y_k ≻ π_t) in [0, 1].
        returns: (B, K) scalar returns R_k.
        pair_prob: (B,) P(y_0 ≻ y_1) for pairs, in [0, 1].
    """

    policy_logps_sum: torch.Tensor
    token_counts: torch.Tensor
    ref_logps_sum: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    policy_token_logps: torch.Tensor | None = None
    ref_token_logps: torch.Tensor | None = None
    token_entropies: torch.Tensor | None = None
    token_mask: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    win_rates: torch.Tensor | None = None
    returns: torch.Tensor | None = None
    pair_prob: torch.Tensor | None = None
    _valid: torch.Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        logps = self.policy_logps_sum
        if not isinstance(logps, torch.Tensor) or logps.dim() != 2:
            raise ObjectiveInputError(
                f"policy_logps_sum must be a (B, K) tensor, got "
                f"{tuple(logps.shape) if isinstance(logps, torch.Tensor) else type(logps).__name__}"
            )
        shape = tuple(logps.shape)
        valid = torch.ones(shape, dtype=torch.bool, device=logps.device) if self.mask is None else self.mask
        if valid.dtype != torch.bool:
            raise ObjectiveInputError(f"mask must be a bool tensor, got dtype {valid.dtype}")
        object.__setattr__(self, "_valid", valid)
        for name in ("token_counts", "mask", *_PER_COMPLETION_FIELDS):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != shape:
                raise ObjectiveInputError(
                    f"{name} has shape {tuple(value.shape)} but policy_logps_sum has shape {shape}"
                )
        if self.pair_prob is not None and tuple(self.pair_prob.shape) != shape[:1]:
            raise ObjectiveInputError(f"pair_prob has shape {tuple(self.pair_prob.shape)}, expected ({shape[0]},)")
        self._check_token_fields(shape)
        for name in ("policy_logps_sum", "token_counts", *_PER_COMPLETION_FIELDS):
            value = getattr(self, name)
            if value is not None and not torch.isfinite(value[valid]).all():
                rows = sorted({int(r) for r in (~torch.isfinite(value) & valid).nonzero()[:, 0]})
                raise ObjectiveInputError(f"{name} has NaN or inf at valid entries of batch rows {rows}")
        if self.pair_prob is not None and not torch.isfinite(self.pair_prob).all():
            raise ObjectiveInputError("pair_prob has NaN or inf")
        if not (self.token_counts[valid] > 0).all():
            raise ObjectiveInputError("token_counts must be > 0 for every valid completion (empty completion?)")
        if not valid.any(dim=1).all():
            raise ObjectiveInputError("every prompt needs at least one valid completion (mask row is all False)")
        for name, lo, hi in (("win_rates", 0, 1), ("pair_prob", 0, 1), ("labels", 0, 1)):
            value = getattr(self, name)
            if value is not None:
                checked = value if name == "pair_prob" else value[valid]
                if ((checked < lo) | (checked > hi)).any():
                    raise ObjectiveInputError(f"{name} must lie in [{lo}, {hi}]")

    def _check_token_fields(self, shape: tuple[int, ...]) -> None:
        given = [name for name in _PER_TOKEN_FIELDS if getattr(self, name) is not None]
        if not given:
            return
        if self.token_mask is None:
            raise ObjectiveInputError(f"{', '.join(given)} given without token_mask")
        tshape = tuple(self.token_mask.shape)
        if len(tshape) != 3 or tshape[:2] != shape:
            raise ObjectiveInputError(f"token_mask has shape {tshape}, expected ({shape[0]}, {shape[1]}, T)")
        for name in given:
            value = getattr(self, name)
            if tuple(value.shape) != tshape:
                raise ObjectiveInputError(f"{name} has shape {tuple(value.shape)} but token_mask has shape {tshape}")
            if not torch.isfinite(value[self.token_mask.bool() & self._valid.unsqueeze(-1)]).all():
                raise ObjectiveInputError(f"{name} has NaN or inf at completion tokens")
        counted = self.token_mask.sum(-1).to(self.token_counts.dtype)
        if not torch.equal(counted[self._valid], self.token_counts[self._valid]):
            raise ObjectiveInputError("token_mask.sum(-1) disagrees with token_counts")

    # -- accessors that objectives use; masked entries come back as 0 ---------------------------

    @property
    def batch_size(self) -> int:
        return self.policy_logps_sum.shape[0]

    @property
    def group_size(self) -> int:
        return self.policy_logps_sum.shape[1]

    @property
    def valid(self) -> torch.Tensor:
        """(B, K) bool: True for the completions that count."""
        return self._valid

    def get(self, name: str) -> torch.Tensor:
        """A field with masked entries replaced by 0, so NaN/garbage in padding cannot leak into
        the loss or its gradient (``torch.where`` zeroes the gradient of the unused branch only if
        that branch's forward value is finite)."""
        value = getattr(self, name)
        if value is None:
            raise ObjectiveInputError(f"field {name!r} is missing")
        if name in _PER_EXAMPLE_FIELDS:
            return value
        valid = self._valid if value.dim() == 2 else self._valid.unsqueeze(-1) & self.token_mask.bool()
        return torch.where(valid, value, torch.zeros((), dtype=value.dtype, device=value.device))

    def logratios(self) -> torch.Tensor:
        """(B, K) Δ(y) = log π_θ(y|x) − log π_ref(y|x), summed over tokens."""
        return self.get("policy_logps_sum") - self.get("ref_logps_sum")

    def group_token_mean(self, values: torch.Tensor) -> torch.Tensor:
        """(B,) mean of per-token ``values`` (B, K, T) over every completion token of each group.

        ``values`` must already be zero outside completion tokens of valid entries (see :meth:`get`).
        """
        counts = (self.token_mask.bool() & self._valid.unsqueeze(-1)).sum(dim=(1, 2)).clamp(min=1)
        return values.sum(dim=(1, 2)) / counts.to(values.dtype)

    def policy_logps_mean(self) -> torch.Tensor:
        """(B, K) per-token mean log-prob log π_θ(y|x) / |y| (0 for masked entries)."""
        counts = torch.where(self._valid, self.token_counts, 1).clamp(min=1)
        return self.get("policy_logps_sum") / counts.to(self.policy_logps_sum.dtype)


@dataclass(frozen=True)
class Requirements:
    """What an objective needs from a :class:`CompletionGroups` record."""

    group: GroupShape
    reference: bool
    fields: tuple[str, ...] = ()  # per-completion / per-example fields, e.g. ("win_rates",)
    token_values: tuple[str, ...] = ()  # per-token fields, e.g. ("token_entropies",)


@dataclass(frozen=True)
class ObjectiveOutput:
    """Unreduced per-example loss (B,) and per-example, detached metrics (B,) by name.

    Metrics stay per example so the trainer can average them correctly across micro-batches and
    processes (a mean of means is wrong when batches differ in size). A NaN metric means "does not
    apply to this example" (e.g. the NLL of harmful responses on a safe example); reduce with
    :func:`reduce_metrics`, which ignores them.
    """

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]


def reduce_metrics(metrics: dict[str, torch.Tensor]) -> dict[str, float]:
    """Mean of each per-example metric over the examples it applies to (NaN entries skipped)."""
    return {name: float(values.float().nanmean()) for name, values in metrics.items()}


class Objective(ABC):
    """Base class of every objective: validate the record against :attr:`requirements`, then compute.

    Subclasses are dataclasses holding their hyperparameters and implement :meth:`compute`.
    """

    name: ClassVar[str] = ""

    @property
    @abstractmethod
    def requirements(self) -> Requirements: ...

    @abstractmethod
    def compute(self, batch: CompletionGroups) -> ObjectiveOutput: ...

    def __call__(self, batch: CompletionGroups) -> ObjectiveOutput:
        self.check(batch)
        out = self.compute(batch)
        return ObjectiveOutput(out.loss, {k: v.detach() for k, v in out.metrics.items()})

    def check(self, batch: CompletionGroups) -> None:
        req = self.requirements
        k = batch.group_size
        where = f"objective {self.name!r}"
        if req.group is GroupShape.SINGLE and k != 1:
            raise ObjectiveInputError(f"{where} takes single completions (K = 1), got K = {k}")
        if req.group is GroupShape.PAIR:
            if k != 2:
                raise ObjectiveInputError(f"{where} takes (chosen, rejected) pairs (K = 2), got K = {k}")
            if not batch.valid.all():
                raise ObjectiveInputError(f"{where} takes complete pairs; the mask hides part of a pair")
        if req.group is GroupShape.LIST and k < 2:
            raise ObjectiveInputError(f"{where} takes lists of K >= 2 completions, got K = {k}")
        if req.reference and batch.ref_logps_sum is None:
            raise ObjectiveInputError(f"{where} needs reference log-probs (ref_logps_sum) but none were given")
        for name in (*req.fields, *req.token_values):
            if getattr(batch, name) is None:
                raise ObjectiveInputError(f"{where} needs the field {name!r} but it is missing")


def _check_positive(obj: object, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{type(obj).__name__}.{name} must be a positive number, got {value!r}")


def _check_safety_labels(objective: Objective, batch: CompletionGroups) -> None:
    """Safety objectives (SAFE-ALIGN, NPO) take labels of exactly 1 (safe) or 0 (harmful)."""
    labels = batch.labels
    if not ((labels == 0) | (labels == 1)).all():
        raise ObjectiveInputError(f"objective {objective.name!r} needs labels of exactly 1 (safe) or 0 (harmful)")


def _check_non_negative(obj: object, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{type(obj).__name__}.{name} must be a non-negative number, got {value!r}")


# -- registry -------------------------------------------------------------------------------------

_REGISTRY: dict[str, type[Objective]] = {}
O = TypeVar("O", bound=type[Objective])


def register_objective(name: str) -> Callable[[O], O]:
    """Class decorator: register an :class:`Objective` subclass under ``name``."""

    def decorator(cls: O) -> O:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"objective {name!r} is already registered by {_REGISTRY[name].__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def available_objectives() -> list[str]:
    return sorted(_REGISTRY)


def objective_class(name: str) -> type[Objective]:
    """The class registered as ``name``; an unknown name fails with the list of known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown objective {name!r}; known objectives: {', '.join(available_objectives())}") from None


def get_objective(name: str, **hyperparameters: object) -> Objective:
    """Build the objective registered as ``name`` with the given hyperparameters.

    Unknown names and unknown hyperparameters fail with the list of valid ones.
    """
    cls = objective_class(name)
    known = [f.name for f in fields(cls)] if hasattr(cls, "__dataclass_fields__") else []
    unknown = sorted(set(hyperparameters) - set(known))
    if unknown:
        raise TypeError(f"objective {name!r} has no hyperparameter(s) {unknown}; it takes {known}")
    return cls(**hyperparameters)
