"""Batched sampling with Hugging Face ``generate``: K completions per prompt, deterministic per chunk,
resumable, and split across processes under accelerate (DDP or DeepSpeed ZeRO).

How a call runs:

1. The prompts are cut into chunks of ``config.chunk_size`` (see :mod:`align.generation.config`).
   Chunks listed in ``done_chunks`` are taken as they are; the others are pending.
2. Pending chunks are dealt round-robin to the processes, one round at a time: in round r, process
   p samples pending chunk ``r * world_size + p``. After each round the results are gathered on
   every process (``accelerate.utils.gather_object``) and the main process calls ``on_chunk`` for
   each finished chunk, in chunk order. Every process runs the same number of rounds, so the
   gathers always pair up. Dealing the *pending* chunks (rather than chunk i to rank i % world)
   keeps a resumed run balanced; which rank samples a chunk never changes its samples.
3. A chunk is sampled under its own seed (``chunk_seed(config.seed, i)``) inside
   ``torch.random.fork_rng``, so the caller's RNG state is the same afterwards as before.
4. Every process returns the full list, in prompt order.

The model: a DDP- or DeepSpeed-wrapped model is unwrapped (``accelerator.unwrap_model``). Under
ZeRO-3 the engine's parameters are gathered once for the whole call
(``deepspeed.zero.GatheredParameters``, every process enters and leaves it together) and ZeRO's
fetch/release hooks are lifted meanwhile (TRL's ``remove_hooks``/``add_hooks``, as in TRL's
``unwrap_model_for_generation``), so each process then generates on its own with a full copy of
the weights: no collective runs inside ``generate``, and processes may run different numbers of
``generate`` calls and stop at different lengths. The price is one full copy of the weights per
process during sampling (as in TRL's online trainers); sampling with partitioned parameters (every
rank stepping in lockstep, ``synced_gpus``) is not supported.

We do not use TRL's ``unwrap_model_for_generation`` itself: it switches gradient checkpointing off
and back on, and switching it back on drops the checkpointing arguments the trainer set (e.g.
``use_reentrant=False``). Instead the model is put in eval mode, where transformers' checkpointed
layers run plainly, and ``use_cache=True`` is passed to ``generate``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import torch

from align.data import prompt_ids
from align.data.images import is_processor, load_image, message_images, text_tokenizer, vision_inputs
from align.generation.base import ChunkCallback, Prompt, register_generator
from align.generation.config import SamplingConfig, chunk_bounds, chunk_seed
from align.generation.decode import decode, left_pad, unsupported
from align.generation.memory import bytes_per_sequence, fitting_batch, free_memory_bytes

__all__ = ["HFGenerator", "encode_prompts", "eos_token_ids", "prompt_images", "sample_completions"]

logger = logging.getLogger(__name__)


# -- prompts and tokens ---------------------------------------------------------------------------


def encode_prompts(tokenizer: Any, prompts: Sequence[Prompt]) -> list[list[int]]:
    """Token ids of each prompt, exactly as fed to the model (before padding): :func:`align.data.prompt_ids`,
    the renderer training uses too (a conversation through the chat template with the generation
    prompt; a string as is, with the tokenizer's BOS once if it adds one, never an EOS). ``tokenizer``
    may be a processor: image parts then expand to the model's image tokens."""
    return [prompt_ids(tokenizer, prompt, name=f"prompt {index}") for index, prompt in enumerate(prompts)]


def prompt_images(processing_class: Any, prompts: Sequence[Prompt]) -> list[list[Any]]:
    """The image values of each prompt's image parts, in order (``[]`` for a string or a text-only
    conversation): what fills that prompt's image tokens.

    Refused, naming the prompt: an image part without its image (render it with
    ``align.data.fill_images(prompt, images)``), the processor's image token written as text (it
    would be expanded like a placeholder with no image behind it), and images with a plain tokenizer
    (a VLM samples through its processor; a tokenizer would drop the images silently)."""
    image_token = getattr(processing_class, "image_token", None) if is_processor(processing_class) else None
    out = []
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, (str, list)):  # prompt_ids refuses it, naming the prompt
            out.append([])
            continue
        parts = _parts(prompt)
        texts = [part["text"] for part in parts if isinstance(part.get("text"), str)]
        placeholders = sum(_is_image_part(part) for part in parts)
        images = [] if isinstance(prompt, str) else message_images(prompt)
        if image_token and any(image_token in text for text in texts):
            raise ValueError(
                f"prompt {index} has the image token {image_token!r} in its text; images go in image parts "
                '({"type": "image", "image": path}), not as text'
            )
        if len(images) != placeholders:
            raise ValueError(
                f"prompt {index} has {placeholders} image parts but {len(images)} images; every image part must carry "
                'its image ({"type": "image", "image": path}): fill them with align.data.fill_images(prompt, images)'
            )
        if images and not is_processor(processing_class):
            raise ValueError(
                f"prompt {index} has {len(images)} image(s) but the generator was given a "
                f"{type(processing_class).__name__}, not a processor: pass the vision-language model's processor "
                "(align.models.load_processing_class / AutoProcessor) as the tokenizer"
            )
        out.append(images)
    return out


def _parts(prompt: Prompt) -> list[Mapping]:
    """Every content part of ``prompt`` in order, string contents (and a string prompt) as text parts."""
    contents = [prompt] if isinstance(prompt, str) else [m.get("content") for m in prompt if isinstance(m, Mapping)]
    parts = [part for content in contents for part in (content if isinstance(content, list) else [{"text": content}])]
    return [part for part in parts if isinstance(part, Mapping)]


def _is_image_part(part: Any) -> bool:
    return isinstance(part, Mapping) and part.get("type") == "image"


def _with_images(prompt: Prompt, images: list[Any]) -> Prompt:
    """``prompt`` with its image parts holding ``images`` (opened), in order: the chat template renders
    from opened images whatever the values were (bytes, dicts), and no file is read twice."""
    if not images:
        return prompt
    remaining = iter(images)
    filled = []
    for message in prompt:
        if isinstance(message.get("content"), list):
            content = [{**x, "image": next(remaining)} if _is_image_part(x) else x for x in message["content"]]
            message = {**message, "content": content}
        filled.append(message)
    return filled


def eos_token_ids(tokenizer: Any, model: Any) -> list[int]:
    """Every token that ends a completion: the tokenizer's EOS and the model's generation-config EOS
    (often a list, e.g. Llama 3's ``<|eot_id|>`` and ``<|end_of_text|>``), without repeats."""
    ids: list[int] = []
    config = getattr(model, "generation_config", None)
    for value in (tokenizer.eos_token_id, getattr(config, "eos_token_id", None)):
        for token in [value] if isinstance(value, int) else list(value or []):
            if token not in ids:
                ids.append(int(token))
    if not ids:
        raise ValueError("neither the tokenizer nor the model's generation config defines an EOS token")
    return ids


def _cut_at_eos(tokens: list[int], eos: set[int]) -> list[int]:
    """The tokens before the first EOS (generate pads finished rows; that padding goes too)."""
    for position, token in enumerate(tokens):
        if token in eos:
            return tokens[:position]
    return tokens


# -- model and RNG context ------------------------------------------------------------------------


@contextmanager
def _seeded_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Run the body under ``seed`` on the CPU and ``device``; restore both RNG states afterwards."""
    if device.type == "cpu":
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            yield
        return
    module = torch.get_device_module(device.type)
    index = device.index if device.index is not None else module.current_device()
    with torch.random.fork_rng(devices=[index], device_type=device.type):
        torch.default_generator.manual_seed(seed)
        with module.device(index) if hasattr(module, "device") else nullcontext():
            module.manual_seed(seed)  # the current device's generator only
        yield


def _zero3_engine(model: Any, accelerator: Any) -> Any | None:
    """The DeepSpeed ZeRO-3 engine holding ``model``'s parameters, or None when they are not partitioned."""
    try:
        from deepspeed import DeepSpeedEngine
    except ImportError:
        return None
    if isinstance(model, DeepSpeedEngine):
        return model if model.zero_optimization_stage() == 3 else None
    if not any(hasattr(p, "ds_id") for p in model.parameters()):
        return None
    for candidate in getattr(accelerator, "_models", []) if accelerator is not None else []:
        if isinstance(candidate, DeepSpeedEngine) and candidate.module is model:
            return candidate
    raise ValueError(
        "the model's parameters are partitioned by DeepSpeed ZeRO-3 but its engine is unknown: pass the engine "
        "(what accelerator.prepare returned, or trainer.model_wrapped) together with the accelerator"
    )


def _refuse_fsdp(accelerator: Any) -> None:
    """FSDP shards parameters like ZeRO-3 but is not handled here; fail clearly instead of hanging."""
    from accelerate.utils import DistributedType

    if accelerator is not None and accelerator.distributed_type == DistributedType.FSDP:
        raise NotImplementedError(
            "sampling from an FSDP-sharded model is not supported; use DDP or DeepSpeed (ZeRO-1/2/3) for on-policy runs"
        )


@contextmanager
def _generation_model(model: Any, accelerator: Any) -> Iterator[Any]:
    """The plain model to call ``generate`` on, in eval mode (its training mode restored afterwards).

    DDP/DeepSpeed wrappers are unwrapped; ZeRO-3 parameters are gathered for the whole block (a
    collective: every process must enter it), see the module docstring."""
    _refuse_fsdp(accelerator)
    engine = _zero3_engine(model, accelerator)
    unwrapped = accelerator.unwrap_model(model) if accelerator is not None else model
    if engine is None:
        with _eval_mode(unwrapped):
            yield unwrapped
        return
    import deepspeed
    from trl.models.utils import add_hooks, remove_hooks

    with deepspeed.zero.GatheredParameters(list(engine.parameters())):
        remove_hooks(engine)
        try:
            with _eval_mode(unwrapped):
                yield unwrapped
        finally:
            add_hooks(engine)


@contextmanager
def _precision(precision: str, device: torch.device, model: torch.nn.Module) -> Iterator[None]:
    """bfloat16 autocast for ``precision == "bf16"``; nothing for ``"model"``.

    Autocast casts each weight once per context only if it is a leaf that requires grad; frozen
    weights (a LoRA base, a model with merged adapters) would be cast again at every decoding step,
    which made sampling 1.6× slower. So frozen floating-point weights are marked as requiring grad
    for the duration (the body runs under ``no_grad``: no graph is built) and unmarked afterwards."""
    if precision != "bf16":
        yield
        return
    frozen = [p for p in model.parameters() if not p.requires_grad and p.is_floating_point()]
    for param in frozen:
        param.requires_grad_(True)
    try:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    finally:
        for param in frozen:
            param.requires_grad_(False)


@contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


# -- the generator --------------------------------------------------------------------------------


@register_generator("hf")
class HFGenerator:
    """Samples K completions per prompt with batched Hugging Face ``generate``.

    ``model`` may be a plain or PEFT causal LM or vision-language model, or what ``accelerator.prepare``
    returned (DDP module, DeepSpeed engine); pass the ``accelerator`` in multi-process runs so chunks
    are split across processes and results gathered. Without an accelerator the call is
    single-process: run under several processes it would sample every chunk in each.
    ``show_progress`` shows a tqdm bar (main process only).

    ``tokenizer`` is the model's processing class: a tokenizer, or for a vision-language model its
    processor (``self.processing_class``; ``self.tokenizer`` is then the processor's tokenizer, which
    pads and decodes). With a processor, prompts may carry images (see :data:`align.generation.Prompt`):
    each sequence gets its prompt's images through :func:`align.data.images.vision_inputs`, in batch
    order, and the completions are text.
    """

    def __init__(
        self, model: Any, tokenizer: Any, accelerator: Any = None, *, show_progress: bool = True,
        use_generate: bool = False,
    ) -> None:  # fmt: skip
        self.model = model
        self.use_generate = use_generate
        self.processing_class = tokenizer
        self.tokenizer = text_tokenizer(tokenizer)
        self.accelerator = accelerator
        self.show_progress = show_progress

    # -- process layout --

    @property
    def world_size(self) -> int:
        return self.accelerator.num_processes if self.accelerator is not None else 1

    @property
    def rank(self) -> int:
        return self.accelerator.process_index if self.accelerator is not None else 0

    @property
    def is_main_process(self) -> bool:
        return self.accelerator is None or self.accelerator.is_main_process

    # -- public --

    def generate(
        self,
        prompts: Sequence[Prompt],
        config: SamplingConfig,
        *,
        on_chunk: ChunkCallback | None = None,
        done_chunks: Mapping[int, list[list[str]]] | None = None,
    ) -> list[list[str]]:
        """``len(prompts)`` lists of ``config.num_samples`` completion texts, in prompt order.

        Completions exclude the prompt, stop at the first EOS and are decoded with
        ``skip_special_tokens=True``. Chunks in ``done_chunks`` are not generated again;
        ``on_chunk(i, results)`` runs on the main process after each newly sampled chunk. In a
        multi-process run every process must pass the same prompts, config and ``done_chunks``
        (checked), and every process returns the full result.
        """
        prompts = list(prompts)
        bounds = chunk_bounds(len(prompts), config.chunk_size)
        results = _validated_done_chunks(done_chunks, bounds, config.num_samples)
        pending = [index for index in range(len(bounds)) if index not in results]
        self._check_same_work(len(prompts), config, pending)
        if pending:
            self._sample_pending(prompts, bounds, pending, results, config, on_chunk)
        return [completions for index in range(len(bounds)) for completions in results[index]]

    # -- internals --

    def _sample_pending(
        self,
        prompts: list[Prompt],
        bounds: list[tuple[int, int]],
        pending: list[int],
        results: dict[int, list[list[str]]],
        config: SamplingConfig,
        on_chunk: ChunkCallback | None,
    ) -> None:
        """Sample the pending chunks round by round, gathering each round on every process."""
        from tqdm.auto import tqdm

        done = sum(bounds[i][1] - bounds[i][0] for i in results)
        bar = tqdm(total=len(prompts), initial=done, desc="sampling", unit="prompt", dynamic_ncols=True,
                   disable=not (self.show_progress and self.is_main_process))  # fmt: skip
        with bar, _generation_model(self.model, self.accelerator) as model:
            eos = eos_token_ids(self.tokenizer, model)
            for start in range(0, len(pending), self.world_size):
                this_round = pending[start : start + self.world_size]
                local = []
                if self.rank < len(this_round):
                    index = this_round[self.rank]
                    chunk = prompts[bounds[index][0] : bounds[index][1]]
                    local.append((index, self._sample_chunk(model, chunk, index, config, eos)))
                for index, chunk_results in sorted(self._gather(local)):
                    results[index] = chunk_results
                    if on_chunk is not None and self.is_main_process:
                        on_chunk(index, chunk_results)
                    bar.update(len(chunk_results))

    def _sample_chunk(
        self, model: Any, chunk: list[Prompt], index: int, config: SamplingConfig, eos: list[int]
    ) -> list[list[str]]:
        """K completions for each prompt of chunk ``index``, under the chunk's own seed.

        Sequences (prompt copies) are batched in order of prompt length, which wastes less padding
        and depends only on the chunk, so it keeps the chunk's samples reproducible. A prompt's images
        are opened once per chunk and travel with each of its copies."""
        images = [[load_image(value) for value in values] for values in prompt_images(self.processing_class, chunk)]
        prompt_ids = encode_prompts(self.processing_class, [_with_images(*pair) for pair in zip(chunk, images)])
        copies = 1 if config.greedy else config.num_samples
        device = _model_device(model)
        with _seeded_rng(chunk_seed(config.seed, index), device), _precision(config.precision, device, model):
            if self.use_generate or any(images) or unsupported(model) is not None:
                texts = self._sample_with_generate(model, prompt_ids, images, copies, config, eos, device)
            else:
                texts = self._decode(model, prompt_ids, copies, config, eos)
        if config.greedy:
            return [[text] * config.num_samples for text in texts]
        return [texts[i * copies : (i + 1) * copies] for i in range(len(prompt_ids))]

    def _decode(
        self, model: Any, prompt_ids: list[list[int]], copies: int, config: SamplingConfig, eos: list[int]
    ) -> list[str]:
        """The ``copies`` completions of each prompt (copies of a prompt together) with align's
        decoding loop (:func:`align.generation.decode.decode`): prompts batched ``batch_size //
        copies`` at a time, in order of length."""
        order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
        per_batch = max(1, self._fitting_batch(model, prompt_ids, copies, config) // copies)
        texts: list[str] = [""] * (len(prompt_ids) * copies)
        for start in range(0, len(order), per_batch):
            prompts = order[start : start + per_batch]
            with torch.no_grad():
                new_tokens = decode(
                    model, [prompt_ids[i] for i in prompts], copies=copies, max_new_tokens=config.max_new_tokens,
                    eos=eos, pad_token_id=self._pad_token_id(model, eos), temperature=config.temperature,
                    top_k=config.top_k, top_p=config.top_p,
                )  # fmt: skip
            decoded = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            for n, prompt in enumerate(prompts):
                texts[prompt * copies : (prompt + 1) * copies] = decoded[n * copies : (n + 1) * copies]
        return texts

    def _sample_with_generate(
        self,
        model: Any,
        prompt_ids: list[list[int]],
        images: list[list[Any]],
        copies: int,
        config: SamplingConfig,
        eos: list[int],
        device: torch.device,
    ) -> list[str]:
        """The ``copies`` completions of each prompt (copies of a prompt together) with ``generate``:
        for vision-language models and models whose generation config asks for more than
        temperature/top-k/top-p. Sequences (prompt copies) are batched in order of length."""
        sequences = [ids for ids in prompt_ids for _ in range(copies)]
        sequence_images = [values for values in images for _ in range(copies)]
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        texts: list[str] = [""] * len(sequences)
        batch_size = self._fitting_batch(model, prompt_ids, 1, config)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            decoded = self._generate_batch(
                model, [sequences[r] for r in rows], [sequence_images[r] for r in rows], config, eos, device
            )
            for row, text in zip(rows, decoded):
                texts[row] = text
        return texts

    def _fitting_batch(self, model: Any, prompt_ids: list[list[int]], copies: int, config: SamplingConfig) -> int:
        """``config.batch_size`` sequences, or fewer where their KV cache and logits would not fit
        in half the free memory (:mod:`align.generation.memory`), with a warning: a smaller batch
        changes the samples, so it is only taken where the configured one would run out of memory."""
        parameter = next(model.parameters())
        # in the weights' dtype also under bf16 autocast: Llama-style models keep the rotated keys in
        # the residual stream's dtype there, so this is an upper bound
        element_bytes = parameter.element_size()
        longest = max(map(len, prompt_ids)) + config.max_new_tokens
        per_sequence = bytes_per_sequence(model.config, longest, element_bytes)
        free = free_memory_bytes(parameter.device)
        batch = fitting_batch(config.batch_size, per_sequence, free, multiple=copies)
        if batch < config.batch_size:
            logger.warning(
                "sampling %d sequences at a time instead of batch_size=%d: %d sequences of up to %d tokens would need "
                "%.1f GiB for their KV cache and logits, more than half of the %.1f GiB free on %s (samples differ "
                "from those of the full batch)", batch, config.batch_size, config.batch_size, longest,
                config.batch_size * per_sequence / 2**30, free / 2**30, parameter.device,
            )  # fmt: skip
        return batch

    def _pad_token_id(self, model: Any, eos: list[int]) -> int:
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = getattr(getattr(model, "generation_config", None), "pad_token_id", None)
        return eos[0] if pad is None else pad

    def _generate_batch(
        self,
        model: Any,
        sequences: list[list[int]],
        images: list[list[Any]],
        config: SamplingConfig,
        eos: list[int],
        device: torch.device,
    ) -> list[str]:
        """One ``generate`` call on left-padded sequences (with row r's ``images[r]``, if any); the
        decoded new tokens of each row.

        The image inputs are built from the padded ids, so inputs aligned with the tokens (e.g.
        Qwen2-VL's ``mm_token_type_ids``) are padded exactly like them."""
        pad = self._pad_token_id(model, eos)
        batch = left_pad(sequences, pad, device)
        if any(images):
            vision = vision_inputs(self.processing_class, images, batch["input_ids"].cpu())
            batch.update({key: value.to(device) for key, value in vision.items()})
        with torch.no_grad():
            output = model.generate(**batch, **_generate_kwargs(config, eos, pad))
        new_tokens = output[:, batch["input_ids"].shape[1] :].tolist()
        stop = set(eos)
        return self.tokenizer.batch_decode([_cut_at_eos(row, stop) for row in new_tokens], skip_special_tokens=True)

    def _gather(self, local: list[tuple[int, list[list[str]]]]) -> list[tuple[int, list[list[str]]]]:
        if self.world_size == 1:
            return local
        from accelerate.utils import gather_object

        return gather_object(local)

    def _check_same_work(self, num_prompts: int, config: SamplingConfig, pending: list[int]) -> None:
        """Fail on every process (rather than hang) if the processes disagree on the work to do."""
        if self.world_size == 1:
            return
        from accelerate.utils import gather_object

        views = gather_object([(num_prompts, repr(config), pending)])
        if any(view != views[0] for view in views):
            raise ValueError(
                "processes disagree on (number of prompts, sampling config, pending chunks): "
                f"{views}; every process must pass the same prompts, config and done_chunks"
            )


def _generate_kwargs(config: SamplingConfig, eos: list[int], pad_token_id: int) -> dict[str, Any]:
    """``generate`` arguments for ``config``.

    ``use_cache=True`` even where the model config turned it off (gradient checkpointing does), since
    decoding without the KV cache is quadratic. ``synced_gpus=False``: transformers turns it on by
    itself under ZeRO-3, making every process step until all are done, which deadlocks processes
    that sample different chunks; here the weights are always whole on each process."""
    kwargs: dict[str, Any] = dict(max_new_tokens=config.max_new_tokens, eos_token_id=eos, pad_token_id=pad_token_id,
                                  use_cache=True, synced_gpus=False)  # fmt: skip
    if config.greedy:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    else:
        kwargs.update(do_sample=True, temperature=config.temperature, top_p=config.top_p, top_k=config.top_k)
    return kwargs


def _model_device(model: Any) -> torch.device:
    device = getattr(model, "device", None)
    return device if isinstance(device, torch.device) else next(model.parameters()).device


def _validated_done_chunks(
    done_chunks: Mapping[int, list[list[str]]] | None, bounds: list[tuple[int, int]], num_samples: int
) -> dict[int, list[list[str]]]:
    """A copy of ``done_chunks`` after checking that every entry fits this call's chunking."""
    checked: dict[int, list[list[str]]] = {}
    for index, chunk_results in (done_chunks or {}).items():
        if not isinstance(index, int) or not 0 <= index < len(bounds):
            raise ValueError(
                f"done_chunks has chunk {index!r}, but the prompts make {len(bounds)} chunks (indices 0..{len(bounds) - 1}); "
                "were the prompts or chunk_size changed since it was saved?"
            )
        size = bounds[index][1] - bounds[index][0]
        if len(chunk_results) != size or any(len(samples) != num_samples for samples in chunk_results):
            raise ValueError(
                f"done_chunks[{index}] must hold {size} prompts × {num_samples} completions, got "
                f"{[len(samples) for samples in chunk_results]}; were chunk_size or num_samples changed?"
            )
        checked[index] = [list(samples) for samples in chunk_results]
    return checked


def sample_completions(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    config: SamplingConfig,
    accelerator: Any = None,
    *,
    on_chunk: ChunkCallback | None = None,
    done_chunks: Mapping[int, list[list[str]]] | None = None,
    show_progress: bool = True,
    use_generate: bool = False,
) -> list[list[str]]:
    """K completions per prompt with the Hugging Face backend: ``HFGenerator(...).generate(...)`` in one call."""
    generator = HFGenerator(model, tokenizer, accelerator, show_progress=show_progress, use_generate=use_generate)
    return generator.generate(prompts, config, on_chunk=on_chunk, done_chunks=done_chunks)
