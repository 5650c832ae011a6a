"""What every benchmark shares: the model under evaluation, resumable sharded sampling, and files.

- :func:`load_eval_model` (from :mod:`align.models`, re-exported): ``builtin:<name>``, a model
  folder, a LoRA adapter folder (merged into its base) or a hub id → ``(model, tokenizer)`` in
  eval mode on this process's device.
- :func:`generate_answers`: K completions per prompt through :class:`align.generation.HFGenerator`.
  Under ``accelerate launch`` with several processes the prompt chunks are dealt to the processes
  and the answers gathered on every one (each process holds a full copy of the model). With a
  ``cache_dir`` each finished chunk is written there atomically, so a killed evaluation resumes
  from its last finished chunk; the folder is keyed by a fingerprint of everything that shapes the
  samples (model, prompts, sampling settings), and a different key starts it afresh.
- :func:`generator_name`: the model's name in result files (``--name`` overrides it).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from align.generation import HFGenerator, SamplingConfig
from align.io import atomic_write_json, fingerprint, read_json
from align.models import load_eval_model

__all__ = [
    "DEFAULT_MODEL",
    "distributed_accelerator",
    "generate_answers",
    "generator_name",
    "load_eval_model",
    "prompts_digest",
]

DEFAULT_MODEL = "builtin:smollm2-135m-instruct"


def generator_name(spec: str) -> str:
    """A short model name for result files: ``builtin:smollm2-135m-instruct`` →
    ``smollm2-135m-instruct``; ``runs/rpo/iteration-02/model`` → ``rpo-iteration-02-model``
    (a folder named only ``model`` or ``checkpoint-N`` keeps its parents for context); a hub id
    ``org/name`` → ``name``."""
    from align.models import BUILTIN_PREFIX

    if spec.startswith(BUILTIN_PREFIX):
        return spec[len(BUILTIN_PREFIX) :]
    parts = [p for p in Path(spec).parts if p not in ("/", ".", "..")]
    if not parts:
        return "model"
    if not Path(spec).exists():  # hub id
        return parts[-1]
    keep = parts[-3:] if parts[-1] == "model" or parts[-1].startswith("checkpoint-") else parts[-1:]
    return "-".join(keep)


def distributed_accelerator() -> Any:
    """An ``accelerate.Accelerator`` when this script runs on several processes (so sampling is
    sharded), else None. Evaluation never trains: the model is not wrapped, each process keeps a
    full copy. Call it before anything else touches accelerate's state: ``Accelerator`` reads
    ``ACCELERATE_USE_CPU`` (a bare ``PartialState()`` would not, and would see one process)."""
    from accelerate import Accelerator

    from align.distributed import configure_cpu_threads

    configure_cpu_threads()  # a lone CPU process under `accelerate launch` gets every core back
    accelerator = Accelerator()
    return accelerator if accelerator.num_processes > 1 else None


def prompts_digest(prompts: Sequence[Any]) -> str:
    """sha256 (16 hex) of the prompts, for cache keys."""
    return hashlib.sha256(json.dumps(list(prompts), sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def generate_answers(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Any],
    sampling: SamplingConfig,
    *,
    accelerator: Any = None,
    cache_dir: str | Path | None = None,
    cache_key: dict | None = None,
    show_progress: bool = True,
) -> list[list[str]]:
    """``sampling.num_samples`` completions for each prompt (see the module docstring).

    ``cache_key`` must describe the model (e.g. its path); the prompts and ``sampling`` are added
    to it here. Every process returns all answers, in prompt order.
    """
    main = accelerator is None or accelerator.is_main_process
    done: dict[int, list[list[str]]] = {}
    on_chunk = None
    if cache_dir is not None:
        folder = Path(cache_dir)
        key = {**(cache_key or {}), "prompts": prompts_digest(prompts), "sampling": vars(sampling)}
        stamp = fingerprint(key)
        record = folder / "key.json"
        if main and record.exists() and read_json(record).get("fingerprint") != stamp:
            shutil.rmtree(folder)
        if accelerator is not None:
            accelerator.wait_for_everyone()  # nobody reads chunks the main process is deleting
        if main and not record.exists():
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_json(record, {"fingerprint": stamp, "key": key})
        if folder.exists():
            done = {int(p.stem.split("-")[1]): read_json(p) for p in sorted(folder.glob("chunk-*.json"))}

        def on_chunk(index: int, results: list[list[str]]) -> None:
            if main:
                atomic_write_json(folder / f"chunk-{index:05d}.json", results)

    generator = HFGenerator(model, tokenizer, accelerator, show_progress=show_progress and main)
    return generator.generate(list(prompts), sampling, on_chunk=on_chunk, done_chunks=done)
