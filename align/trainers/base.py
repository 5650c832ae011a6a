"""PreferenceTrainer: one forward over every completion of a batch, into any registered objective."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import os
import typing
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from accelerate.state import AcceleratorState
from accelerate.utils import broadcast_object_list
from datasets import Dataset
from datasets.fingerprint import Hasher
from torch.utils.data import DataLoader
from transformers import AutoTokenizer, PreTrainedModel, Trainer, TrainingArguments, set_seed
from trl.models import prepare_deepspeed
from trl.trainer.utils import add_fused_lm_head, disable_dropout_in_model, hash_module, use_adapter

from align.attention import use_varlen_attention
from align.checkpoints import last_complete_checkpoint
from align.data import PER_COMPLETION_FIELDS, PER_EXAMPLE_FIELDS, PreferenceCollator, prepare_preference_dataset
from align.data.images import is_processor, text_tokenizer
from align.distributed import configure_cpu_distributed, configure_cpu_threads, env_flag
from align.logps import completion_logps
from align.models import is_vision_config, load_pretrained, load_processing_class, model_config, packing_blocker
from align.objectives import CompletionGroups, Objective, get_objective, objective_class

logger = logging.getLogger(__name__)

# completion_logps: re-exported from align.logps
__all__ = ["PreferenceConfig", "PreferenceTrainer", "completion_logps", "objective_fields", "tokenize_for_training"]

REFERENCE_STRATEGIES = ("auto", "model", "adapter", "precomputed", "none")
# Per-completion and per-example columns the collator passes through to the objective's record
# (reference log-probs are handled by the reference strategy, not passed as a field).
# Logs made by callbacks (align.callbacks.drift, align.evaluation.hook) under these prefixes
CALLBACK_LOG_PREFIXES = ("drift/", "benchmark/")
# trainer_state.json → stateful_callbacks[_LOSS_RECORD]: the run's summed training loss at a checkpoint
_LOSS_RECORD = "align_train_loss"
_FIELDS = tuple(f for f in (*PER_COMPLETION_FIELDS, *PER_EXAMPLE_FIELDS) if f != "ref_logps")


@dataclass
class PreferenceConfig(TrainingArguments):
    """Training arguments shared by every preference method.

    Method configs (e.g. ``RPOConfig``) get the objective's hyperparameters as fields named like the
    objective's own (``beta``, ``alpha``, ...) from :func:`objective_fields`; the trainer passes
    every such field to the objective. A field of another objective the config covers, set away
    from its default, is refused (it would be ignored).
    """

    # name → default of every field objective_fields added (set on each decorated config class)
    objective_field_defaults: ClassVar[dict[str, Any]] = {}

    objective: str = field(default="dpo", metadata={"help": "Registered objective name (align.objectives)."})
    max_length: int | None = field(default=1024, metadata={"help": "Max prompt + completion tokens."})
    max_prompt_length: int | None = field(default=None, metadata={"help": "Keep the end of longer prompts."})
    overlong: str = field(
        default="drop",
        metadata={"help": "Rows whose prompt leaves no room for a completion: 'drop' (logged with a count) or 'error'."},
    )
    identical_pairs: str = field(
        default="drop",
        metadata={"help": "Pairs whose chosen equals rejected (no preference): 'drop' (logged with a count) or 'error'."},
    )
    padding_free: bool = field(
        default=True,
        metadata={"help": "Pack the batch's sequences into one row (no padding) with restarting position_ids."},
    )
    share_prompt: bool = field(
        default=True,
        metadata={
            "help": "Packed batches: a prompt's completions attend to one copy of it (prefix sharing), where align's "
            "varlen attention runs (sdpa models); otherwise each completion gets its own copy."
        },
    )
    reference: str = field(
        default="auto",
        metadata={
            "help": "Reference log-probs from: 'model' (a frozen copy), 'adapter' (the policy with its LoRA adapter "
            "disabled), 'precomputed' (computed once before training), 'none', or 'auto' (adapter with PEFT, else model)."
        },
    )
    ref_model_name_or_path: str | None = field(
        default=None, metadata={"help": "A different reference model; default: a copy of the initial policy."}
    )
    precompute_ref_batch_size: int | None = field(default=None, metadata={"help": "Batch size for precomputing."})
    disable_dropout: bool = field(default=True, metadata={"help": "Dropout off in policy and reference."})
    dataset_num_proc: int | None = field(default=None, metadata={"help": "Processes for tokenization."})
    remove_unused_columns: bool = False  # the collator needs the tokenized columns
    logging_steps: float = 10

    def __post_init__(self) -> None:
        if self.reference not in REFERENCE_STRATEGIES:
            raise ValueError(f"reference must be one of {REFERENCE_STRATEGIES}, got {self.reference!r}")
        if self.overlong not in ("drop", "error"):
            raise ValueError(f"overlong must be 'drop' or 'error', got {self.overlong!r}")
        if self.identical_pairs not in ("drop", "error"):
            raise ValueError(f"identical_pairs must be 'drop' or 'error', got {self.identical_pairs!r}")
        if not self.learning_rate >= 0:  # also NaN; transformers takes any float and diverges later
            raise ValueError(f"learning_rate must be >= 0, got {self.learning_rate!r}")
        # Build the objective once here: an unknown name or a bad hyperparameter (beta <= 0, ...)
        # fails while the arguments are parsed, before any data or model is loaded.
        self.build_objective()
        if self.bf16 and not torch.cuda.is_available():
            if env_flag("ACCELERATE_USE_DEEPSPEED"):
                # transformers refuses bf16 without a GPU unless use_cpu, which DeepSpeed's CPU
                # accelerator cannot take (see align.distributed): train in fp32 rather than fail.
                logger.warning("bf16 under DeepSpeed on a machine without CUDA: training in fp32 instead")
                self.bf16 = False
            else:
                # transformers accepts bf16 autocast on CPU only with use_cpu; set it here so one
                # YAML serves GPUs (where use_cpu would be wrong) and CPU-only machines alike.
                self.use_cpu = True
        threads = configure_cpu_threads()
        if threads:
            logger.info("single CPU process under accelerate launch: using %d threads, not 1", threads)
        if configure_cpu_distributed():
            # Without use_configured_state, transformers resets the AcceleratorState for every new
            # TrainingArguments; do the same (keeping the gloo process group), or a second trainer in
            # one process (a loop's next iteration) cannot build its DeepSpeed Accelerator.
            AcceleratorState._reset_state(reset_partial_state=False)
            accelerator_config = self.accelerator_config
            if accelerator_config is None:
                accelerator_config = {}
            if isinstance(accelerator_config, dict):
                self.accelerator_config = {**accelerator_config, "use_configured_state": True}
            else:
                accelerator_config.use_configured_state = True
        super().__post_init__()

    def objective_hyperparameters(self, objective_cls: type[Objective]) -> dict[str, Any]:
        names = {f.name for f in fields(objective_cls)}
        ignored = {
            name: getattr(self, name)
            for name, default in self.objective_field_defaults.items()
            if name not in names and getattr(self, name) != default
        }
        if ignored:
            raise ValueError(
                f"{', '.join(f'{k}={v!r}' for k, v in ignored.items())}: not a hyperparameter of objective "
                f"{self.objective!r} (it takes {sorted(names)})"
            )
        return {name: getattr(self, name) for name in names if hasattr(self, name)}

    def build_objective(self) -> Objective:
        """The objective these arguments name, with the hyperparameters they carry."""
        return get_objective(self.objective, **self.objective_hyperparameters(objective_class(self.objective)))


C = TypeVar("C", bound=type)


def objective_fields(*objective_classes: type[Objective]) -> Callable[[C], C]:
    """Class decorator for a method config, applied before ``@dataclass``: one config field per
    hyperparameter of ``objective_classes``, with the objective's own name, type, default and help,
    so each default lives in one place (the objective)::

        @dataclass
        @objective_fields(RPO)
        class RPOConfig(PreferenceConfig):
            objective: str = "rpo"

    A field the config declares itself is kept (a deliberate override). Two objectives that share a
    field must agree on its type and default; a field that clashes with a ``TrainingArguments`` or
    ``PreferenceConfig`` field, or has no default, fails here, at import.
    """

    def decorator(cls: C) -> C:
        own = dict(cls.__dict__.get("__annotations__", {}))
        inherited = {f.name for base in cls.__mro__[1:] if dataclasses.is_dataclass(base) for f in fields(base)}
        known = dict(getattr(cls, "objective_field_defaults", {}))
        added: dict[str, tuple[Any, Any, dict]] = {}
        for objective_cls in objective_classes:
            hints = typing.get_type_hints(objective_cls)
            for f in fields(objective_cls):
                if not f.init:
                    continue
                if f.name in own:  # the config's own default; still checked when another objective is chosen
                    value = cls.__dict__.get(f.name, dataclasses.MISSING)
                    known[f.name] = value.default if isinstance(value, dataclasses.Field) else value
                    continue
                where = f"{cls.__name__}: {objective_cls.__name__}.{f.name}"
                if f.name in inherited and f.name not in known:
                    raise TypeError(f"{where} clashes with the inherited config field {f.name!r}")
                if f.default is dataclasses.MISSING:
                    raise TypeError(f"{where} has no plain default; a config field needs one")
                spec = (hints[f.name], f.default, dict(f.metadata))
                if f.name in added and added[f.name][:2] != spec[:2]:
                    raise TypeError(f"{where}: {spec[:2]} disagrees with another objective's {added[f.name][:2]}")
                added.setdefault(f.name, spec)
        annotations = {**own, **{name: spec[0] for name, spec in added.items()}}
        for name, (_, default, metadata) in added.items():
            setattr(cls, name, field(default=default, metadata=metadata))
        cls.__annotations__ = annotations
        cls.objective_field_defaults = {**known, **{name: spec[1] for name, spec in added.items()}}
        return cls

    return decorator


def _to_groups(values: torch.Tensor, group_mask: torch.Tensor) -> torch.Tensor:
    """Scatter per-sequence values (N, ...) into (B, K, ...) at the valid entries of ``group_mask``."""
    shape = (*group_mask.shape, *values.shape[1:])
    mask = group_mask.reshape(*group_mask.shape, *([1] * (values.dim() - 1))).expand(shape)
    return values.new_zeros(shape).masked_scatter(mask, values)


class PreferenceTrainer(Trainer):
    """A ``transformers.Trainer`` that trains any registered objective on grouped completions.

    Per batch: one concatenated forward over every completion (packed without padding by default),
    log-probs gathered only at completion tokens, reference log-probs from the chosen strategy,
    then ``objective(CompletionGroups) -> per-example loss``; the batch loss is their mean, divided
    by the gradient-accumulation steps by the Trainer, so 8 micro-batches of 1 equal 1 batch of 8.
    Metrics are per-example sums reduced across processes at logging time.

    Subclasses set ``config_class`` and the default ``objective``; datasets may be raw (any format
    :func:`align.data.prepare_preference_dataset` accepts) or already tokenized.

    Vision-language models train the same way with their processor as ``processing_class``: the
    collator adds each batch's image inputs, and log-probs count completion text tokens only.
    Packing (``padding_free``) needs 1-D positions restarting per sequence; a model that has other
    positions or token types (:func:`align.models.packing_blocker`) trains padded, with a warning.
    """

    config_class: ClassVar[type[PreferenceConfig]] = PreferenceConfig

    def __init__(
        self,
        model: PreTrainedModel | str,
        args: PreferenceConfig | None = None,
        train_dataset: Dataset | None = None,
        eval_dataset: Dataset | dict[str, Dataset] | None = None,
        processing_class=None,
        ref_model: PreTrainedModel | None = None,
        peft_config=None,
        callbacks=None,
        optimizers=(None, None),
    ):
        args = args or self.config_class(output_dir="outputs/" + type(self).__name__.lower())
        if isinstance(model, str):
            model = load_pretrained(model)
        vision = is_vision_config(model.config)
        if processing_class is None:
            name = model.config._name_or_path
            processing_class = (
                load_processing_class(model_config(name)) if vision else AutoTokenizer.from_pretrained(name)
            )
        tokenizer = text_tokenizer(processing_class)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if vision and args.ddp_find_unused_parameters is None:
            # A batch with no image leaves the vision tower and projector without gradients, which
            # DDP would wait for (TRL sets the same for vision-language models).
            args.ddp_find_unused_parameters = True
        self.padding_free = args.padding_free
        blocker = packing_blocker(model) if args.padding_free else None
        if blocker is not None:
            logger.warning("padding_free=True: training on padded rows instead, because %s", blocker)
            self.padding_free = False

        self.objective = args.build_objective()
        req = self.objective.requirements
        self._needs_entropy = "token_entropies" in req.token_values
        self._needs_tokens = bool(set(req.token_values) & {"policy_token_logps", "ref_token_logps"})

        self.reference = self._resolve_reference(args, peft_config is not None or _is_peft(model), ref_model)
        # A precomputed reference is computed from ref_model_name_or_path too, when one is named.
        named = self.reference == "precomputed" and args.ref_model_name_or_path
        if ref_model is None and (self.reference == "model" or named):
            ref_model = (
                load_pretrained(args.ref_model_name_or_path, dtype=model.dtype)
                if args.ref_model_name_or_path
                else copy.deepcopy(model)
            )
        self.ref_model = ref_model if self.reference in ("model", "precomputed") else None
        if self.ref_model is not None:
            self.ref_model.eval().requires_grad_(False)

        if args.disable_dropout:
            disable_dropout_in_model(model)
            if self.ref_model is not None:
                disable_dropout_in_model(self.ref_model)
        self.share_prompt = False
        if self.padding_free:
            # Attend within each packed sequence (Σ n_i² work) instead of over the whole row (T²).
            switched = [use_varlen_attention(m) for m in (model, self.ref_model) if m is not None]
            # One copy of each prompt per batch: only the varlen attention reads that layout
            # (flash-attention's packing would run the completions as one sequence).
            self.share_prompt = args.share_prompt and all(switched)
        outputs = ("log_probs", "entropy") if self._needs_entropy else ("log_probs",)
        add_fused_lm_head(model.get_base_model() if _is_peft(model) else model, outputs=outputs)
        if self.ref_model is not None:
            add_fused_lm_head(self.ref_model)
        if peft_config is not None:
            from peft import get_peft_model, prepare_model_for_kbit_training

            if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
                model = prepare_model_for_kbit_training(model, args.gradient_checkpointing)
            elif args.gradient_checkpointing:
                model.enable_input_require_grads()
            # The adapter's random init must not depend on what the process did before (a resumed
            # loop skips stages that a fresh one runs): seed it like the Trainer seeds model_init.
            set_seed(args.seed)
            model = get_peft_model(model, peft_config)

        with args.main_process_first(desc="preparing datasets"):
            train_dataset = self.prepare_dataset(train_dataset, processing_class, args, name="train")
            if isinstance(eval_dataset, dict):
                eval_dataset = {
                    k: self.prepare_dataset(v, processing_class, args, name=f"eval/{k}") for k, v in eval_dataset.items()
                }
            else:
                eval_dataset = self.prepare_dataset(eval_dataset, processing_class, args, name="eval")

        self._metrics: dict[str, dict[str, list[torch.Tensor]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        super().__init__(
            model=model,
            args=args,
            data_collator=self._collator(processing_class),
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            optimizers=optimizers,
        )
        # Our loss is a per-example mean; let the Trainer divide it by the accumulation steps.
        self.model_accepts_loss_kwargs = False
        self.loss_is_scaled_for_ga = False

        if self.reference == "precomputed":
            # One model (one DeepSpeed engine) and one weight hash serve every dataset.
            source = self.ref_model if self.ref_model is not None else self.model
            model_hash = hash_module(source)
            if self.is_deepspeed_enabled:
                engine = prepare_deepspeed(source, self.accelerator)
            else:
                engine = source.to(self.accelerator.device)

            def precompute(dataset, name):
                return self._precompute_reference(dataset, name, engine, model_hash)

            self.train_dataset = precompute(self.train_dataset, "train")
            if isinstance(self.eval_dataset, dict):
                self.eval_dataset = {k: precompute(v, f"eval/{k}") for k, v in self.eval_dataset.items()}
            elif self.eval_dataset is not None:
                self.eval_dataset = precompute(self.eval_dataset, "eval")
            self.ref_model = None  # nothing but the columns is needed any more
        elif self.ref_model is not None:
            if self.is_deepspeed_enabled:
                self.ref_model = prepare_deepspeed(self.ref_model, self.accelerator)
            else:
                self.ref_model = self.accelerator.prepare_model(self.ref_model, evaluation_mode=True)
        self._callbacks_bindable = True
        self._bind_callbacks()

    def _collator(self, processing_class) -> PreferenceCollator:
        pad = text_tokenizer(processing_class).pad_token_id
        if is_processor(processing_class):  # rows with images never share their prompt (per-sequence image inputs)
            return PreferenceCollator(pad, padding_free=self.padding_free, processor=processing_class, share_prompt=self.share_prompt)
        return PreferenceCollator(pad, padding_free=self.padding_free, share_prompt=self.share_prompt)

    def _bind_callbacks(self) -> None:
        """Give callbacks that need the trainer (e.g. LikelihoodDriftCallback: the datasets, the
        model, the logger) a reference to it, once the datasets are final."""
        for callback in self.callback_handler.callbacks:
            if hasattr(callback, "bind") and getattr(callback, "trainer", None) is not self:
                callback.bind(self)

    def add_callback(self, callback) -> None:
        super().add_callback(callback)
        if getattr(self, "_callbacks_bindable", False):  # not during __init__: the datasets are not final yet
            self._bind_callbacks()

    # -- resuming ------------------------------------------------------------------------------------

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs):
        """``Trainer.train`` that resumes exactly: a run resumed from its final checkpoint trains no
        step past ``max_steps`` (the Trainer runs one more optimizer step before it checks), does
        not evaluate "on start" again, and reports the whole run's ``train_loss``, the mean of every
        step's loss, as an uninterrupted run does (the Trainer averages only the steps of the
        resumed call). The loss summed so far is kept in each checkpoint's ``trainer_state.json``."""
        if resume_from_checkpoint is True:
            resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir)
        self._loss_before = 0.0
        eval_on_start = self.args.eval_on_start
        if resume_from_checkpoint:
            state = json.loads((Path(resume_from_checkpoint) / "trainer_state.json").read_text())
            self._loss_before = state.get("stateful_callbacks", {}).get(_LOSS_RECORD, {}).get("loss_sum", float("nan"))
            self.args.eval_on_start = False  # the interrupted run evaluated at its start
        try:
            output = super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
        finally:
            self.args.eval_on_start = eval_on_start
        return output._replace(training_loss=output.metrics.get("train_loss", output.training_loss))

    def _run_epoch(self, *args, **kwargs):
        if self.state.max_steps > 0 and self.state.global_step >= self.state.max_steps:
            self.control.should_training_stop = True  # resumed from the last checkpoint: nothing left
            return None
        return super()._run_epoch(*args, **kwargs)

    def _save_checkpoint(self, model, trial) -> None:
        # Every loss of this run so far: the resumed-from part, what the Trainer has drained at
        # logging steps, and what it still holds since the last log.
        loss_sum = self._loss_before + self._total_loss_scalar + self._tr_loss.item()
        self.state.stateful_callbacks[_LOSS_RECORD] = {"loss_sum": loss_sum, "global_step": self.state.global_step}
        super()._save_checkpoint(model, trial)

    # -- setup ---------------------------------------------------------------------------------------

    def _resolve_reference(self, args: PreferenceConfig, peft: bool, ref_model) -> str:
        needs = self.objective.requirements.reference
        choice = args.reference
        if not needs:
            if choice not in ("auto", "none"):
                logger.warning("objective %r uses no reference; ignoring reference=%r", self.objective.name, choice)
            return "none"
        if choice == "none":
            raise ValueError(f"objective {self.objective.name!r} needs reference log-probs; reference='none' gives none")
        if choice == "auto":
            return "adapter" if peft and ref_model is None and not args.ref_model_name_or_path else "model"
        if choice == "adapter" and not peft:
            raise ValueError("reference='adapter' needs a PEFT (LoRA) policy: pass peft_config or use reference='model'")
        if choice == "precomputed" and "ref_token_logps" in self.objective.requirements.token_values:
            raise ValueError(f"objective {self.objective.name!r} needs per-token reference log-probs; use reference='model'")
        return choice

    @classmethod
    def prepare_dataset(cls, dataset, tokenizer, args: PreferenceConfig, name: str = "train") -> Dataset | None:
        """Validate and tokenize ``dataset`` for ``args``' objective exactly as the trainer will, but
        without a model: a recipe calls this before loading weights, so every data error (a bad
        row, a chat-template mismatch, an overlong prompt) comes first; the trainer then only
        checks the tokenized result. The trainer prepares its own datasets with it too, so a
        method that reshapes its data (e.g. pairs built from labelled completions) overrides this."""
        objective = args.build_objective()
        required = [f for f in objective.requirements.fields if f in _FIELDS]
        return tokenize_for_training(dataset, name, objective.requirements.group.value, required, tokenizer, args)

    @classmethod
    def data_kind(cls, args: PreferenceConfig) -> str:
        """The dataset kind (``"pair"``, ``"list"``, ``"single"``) that ``args``' objective trains on."""
        return args.build_objective().requirements.group.value

    def _precompute_reference(self, dataset: Dataset, name: str, model, model_hash: str) -> Dataset:
        """Add a ``ref_logps`` column, computed once with the reference (the initial policy with the
        adapter disabled, a given reference model, or the initial policy itself). Every process
        computes its shard; the results are gathered so all processes hold the whole column.

        ``model`` is the prepared reference (an inference engine under DeepSpeed) and ``model_hash``
        the hash of its weights, both made once for all datasets. The column is cached under
        ``output_dir/ref_logps/`` by the dataset's fingerprint and that hash, so a resumed or
        repeated run does not recompute it."""
        if "ref_logps" in dataset.column_names:
            return dataset
        key = [Hasher.hash((dataset._fingerprint, model_hash))]
        broadcast_object_list(key, from_process=0)  # ZeRO-3 shards differ per rank; use rank 0's key
        cache = Path(self.args.output_dir) / "ref_logps" / f"{key[0]}.json"
        if cache.exists():
            logger.info("reusing precomputed reference log-probs for %s from %s", name, cache)
            return dataset.add_column("ref_logps", json.loads(cache.read_text()))
        loader = DataLoader(
            dataset,
            batch_size=self.args.precompute_ref_batch_size or self.args.per_device_eval_batch_size,
            collate_fn=self.data_collator,
            shuffle=False,
        )
        loader = self.accelerator.prepare(loader)
        was_training = model.training
        model.eval()
        values = []
        with torch.no_grad():
            for batch in loader:
                logps = self._reference_forward(model, batch, adapter_off=_is_peft(self.model) and self.ref_model is None)
                flat = _to_groups(logps["logps_sum"], batch["group_mask"])
                values.append(self.accelerator.gather_for_metrics(flat).float().cpu())
        model.train(was_training)
        column = torch.cat(values).tolist()
        logger.info("precomputed reference log-probs for %d %s rows", len(column), name)
        if self.accelerator.is_main_process:
            cache.parent.mkdir(parents=True, exist_ok=True)
            partial = cache.with_suffix(".tmp")
            partial.write_text(json.dumps(column))
            os.replace(partial, cache)  # never a half-written cache
        return dataset.add_column("ref_logps", column)

    # -- forward and loss ----------------------------------------------------------------------------

    def _reference_forward(self, model, inputs, *, adapter_off: bool) -> dict:
        context = contextlib.nullcontext()
        if adapter_off:
            context = use_adapter(self.accelerator.unwrap_model(self.model), adapter_name=None)
        with torch.no_grad(), context, self.accelerator.autocast():
            return completion_logps(model, inputs)

    def completion_groups(self, model, inputs: dict[str, torch.Tensor]) -> CompletionGroups:
        """Run the policy (and the reference) on a collated batch and build the objective's record."""
        group_mask = inputs["group_mask"]
        policy = completion_logps(model, inputs, entropy=self._needs_entropy)
        record: dict[str, Any] = {
            "policy_logps_sum": _to_groups(policy["logps_sum"], group_mask),
            "token_counts": inputs["completion_token_counts"],
            "mask": group_mask,
        }
        ref = None
        if self.reference == "precomputed":
            record["ref_logps_sum"] = inputs["ref_logps"].to(record["policy_logps_sum"].dtype)
        elif self.reference == "model":
            ref = self._reference_forward(self.ref_model, inputs, adapter_off=False)
        elif self.reference == "adapter":
            ref = self._reference_forward(self.model, inputs, adapter_off=True)
        if ref is not None:
            record["ref_logps_sum"] = _to_groups(ref["logps_sum"], group_mask)
        if self._needs_tokens or self._needs_entropy:
            record["token_mask"] = _to_groups(policy["token_mask"], group_mask)
            record["policy_token_logps"] = _to_groups(policy["token_logps"], group_mask)
            if ref is not None:
                record["ref_token_logps"] = _to_groups(ref["token_logps"], group_mask)
            if self._needs_entropy:
                record["token_entropies"] = _to_groups(policy["token_entropy"], group_mask)
        for name in _FIELDS:
            if name in inputs:
                record[name] = inputs[name]
        return CompletionGroups(**record)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        groups = self.completion_groups(model, inputs)
        out = self.objective(groups)
        loss = out.loss.mean()
        mode = "train" if self.model.training else "eval"
        for name, values in out.metrics.items():
            self._metrics[mode][name].append(values.float())
        self._metrics[mode]["loss/objective"].append(out.loss.detach().float())
        return (loss, out) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "train_loss" in logs and self.state.global_step > 0:
            # the Trainer's mean covers only this call's steps; ours the whole run (see train())
            logs["train_loss"] = (self._loss_before + self._total_loss_scalar) / self.state.global_step
        if logs and all(key.startswith(CALLBACK_LOG_PREFIXES) for key in logs):
            # a callback's own measurement (drift probes, a benchmark): the training metrics
            # buffered since the last loss log stay for that log
            return super().log(logs, start_time)
        mode = "eval" if any(key.startswith("eval_") for key in logs) else "train"
        metrics = self._reduce_metrics(self._metrics[mode])
        self._metrics[mode].clear()
        prefix = "eval_" if mode == "eval" else ""
        logs.update({f"{prefix}{key}": value for key, value in metrics.items()})
        super().log(logs, start_time)

    def _reduce_metrics(self, buffers: dict[str, list[torch.Tensor]]) -> dict[str, float]:
        """Mean of every per-example metric over all processes, NaN entries (not applicable) skipped."""
        names = sorted(buffers)
        if not names:
            return {}
        values = [torch.cat(buffers[name]) for name in names]
        sums = torch.stack([v.nansum() for v in values])
        counts = torch.stack([(~v.isnan()).sum().float() for v in values])
        totals = self.accelerator.reduce(torch.cat([sums, counts]).to(self.accelerator.device), reduction="sum")
        sums, counts = totals.cpu().chunk(2)
        return {name: (s / c).item() for name, s, c in zip(names, sums, counts) if c > 0}


def tokenize_for_training(
    dataset, name: str, kind: str | None, required: Sequence[str], tokenizer, args: PreferenceConfig
) -> Dataset | None:
    """:func:`align.data.prepare_preference_dataset` with ``args``' lengths and data policies
    (``kind``: "pair" | "list" | "single", None for whatever the columns say; ``required``: the
    per-completion fields the rows must carry). None stays None."""
    if dataset is None:
        return None
    dataset, stats = prepare_preference_dataset(
        dataset,
        tokenizer,
        kind=kind,
        required_fields=required,
        max_length=args.max_length,
        max_prompt_length=args.max_prompt_length,
        overlong=args.overlong,
        identical_pairs=args.identical_pairs,
        num_proc=args.dataset_num_proc,
        name=name,
    )
    logger.info("%s dataset: %s", name, stats)
    return dataset


def _is_peft(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)
