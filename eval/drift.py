"""Likelihood drift between checkpoints: the same probe pairs measured under each checkpoint in turn.

    python eval/drift.py --checkpoints builtin:smollm2-135m-instruct outputs/rpo-smollm2 \\
        --dataset builtin:gsm8k_pairs --split test --num_probes 32 --max_length 512 --beta 0.1 \\
        --output_dir outputs/drift

The first checkpoint is the baseline: every later one is compared with it (log-prob change of the
chosen and rejected responses, margin, displacement rate, implicit rewards with ``--beta``), and
its CHES per pair is what ``ches`` / ``ches_corr`` report (the formulas: :mod:`align.callbacks.measure`).
A checkpoint is ``builtin:<name>``, a Hugging Face model folder, or a PEFT/LoRA adapter folder
(``adapter_config.json``: its base model is loaded, the adapter applied and merged). Writes, each
atomically, ``drift.json`` (records + meta), ``drift.md`` (one table row per checkpoint) and
``drift.png`` (the drift panels over the checkpoint index).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import logging
import math
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

import torch

from align.callbacks import drift_metrics, gradient_cosine, measure_pairs, plot_drift
from align.data import carried, json_safe, load_preference_dataset, prepare_preference_dataset, write_text_atomic
from align.models import (
    BUILTIN_PREFIX,
    checkpoint_kind,
    load_checkpoint,
    load_checkpoint_tokenizer,
    load_tokenizer,
    model_config,
)

logger = logging.getLogger(__name__)

__all__ = [
    "checkpoint_kind",
    "drift_over_checkpoints",
    "drift_table",
    "load_checkpoint",
    "load_checkpoint_tokenizer",
    "main",
]

# (drift_metrics key, column title) of drift.md, in order; "grad_cosine" is added by this script
TABLE_COLUMNS = (
    ("chosen_logps_per_token", "chosen logp/tok"),
    ("rejected_logps_per_token", "rejected logp/tok"),
    ("chosen_change_per_token", "Δ chosen/tok"),
    ("rejected_change_per_token", "Δ rejected/tok"),
    ("margin", "margin"),
    ("margin_change", "Δ margin"),
    ("displacement_rate", "displaced"),
    ("topk_entropy", "top-k entropy"),
    ("topk_mass", "top-k mass"),
    ("ches_corr", "corr(CHES, Δ chosen)"),
    ("grad_cosine", "grad cosine"),
)


def default_label(checkpoint: str) -> str:
    return checkpoint if checkpoint.startswith(BUILTIN_PREFIX) else (Path(checkpoint).resolve().name or checkpoint)


# -- measuring -----------------------------------------------------------------------------------


def _probe_rows(probes, tokenizer, max_length: int | None) -> list[dict]:
    if isinstance(probes, (list, tuple)) and probes and isinstance(probes[0], dict) and "prompt_ids" in probes[0]:
        return [_pair_fields(r) for r in probes]
    rows, stats = prepare_preference_dataset(probes, tokenizer, kind="pair", max_length=max_length, name="probes")
    if stats["rows_dropped"]:
        logger.warning("%d of %d probe pairs dropped (prompt too long for max_length=%s)", stats["rows_dropped"], stats["rows_in"], max_length)
    return [_pair_fields(r) for r in rows]


def _pair_fields(row: dict) -> dict:
    """What a measurement reads of a tokenized pair: its ids, and its assistant masks and images if it has them."""
    return {"prompt_ids": row["prompt_ids"], "completion_ids": row["completion_ids"], **carried(row)}


def drift_over_checkpoints(
    checkpoints: list[str],
    probe_rows_or_dataset,
    tokenizer=None,
    *,
    beta: float = 0.1,
    top_k: int = 20,
    batch_size: int = 8,
    entanglement_pairs: int = 0,
    labels: list[str] | None = None,
    max_length: int | None = None,
    base_model: str | None = None,
    device: str | torch.device | None = None,
    autocast=contextlib.nullcontext,
) -> list[dict]:
    """Measure the same probe pairs under each checkpoint, in order; the first is the baseline.

    ``probe_rows_or_dataset``: tokenized rows (``prompt_ids``, ``completion_ids`` = [chosen,
    rejected]) or any pair dataset :func:`align.data.prepare_preference_dataset` accepts (tokenized
    here with ``tokenizer`` and ``max_length``). ``tokenizer`` defaults to the first checkpoint's.
    Returns one record per checkpoint: ``{"checkpoint", "label", "index", **drift_metrics(baseline,
    current, beta)}``, plus ``grad_cosine`` (mean over the first ``entanglement_pairs`` probes,
    over all the merged model's parameters) when ``entanglement_pairs > 0``. One model is loaded
    at a time.
    """
    if not checkpoints:
        raise ValueError("no checkpoints given")
    if labels is None:
        labels = [default_label(c) for c in checkpoints]
    if len(labels) != len(checkpoints):
        raise ValueError(f"{len(labels)} labels for {len(checkpoints)} checkpoints")
    if min(top_k, batch_size) < 1 or entanglement_pairs < 0:
        raise ValueError("top_k and batch_size must be at least 1 and entanglement_pairs at least 0")
    for checkpoint in checkpoints:  # fail before spending minutes on the first ones
        checkpoint_kind(checkpoint)
    if tokenizer is None:
        tokenizer = load_checkpoint_tokenizer(checkpoints[0], base_model=base_model)
    rows = _probe_rows(probe_rows_or_dataset, tokenizer, max_length)
    if not rows:
        raise ValueError("no probe pairs left to measure")
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")

    records, baseline = [], None
    for index, (checkpoint, label) in enumerate(zip(checkpoints, labels)):
        logger.info("measuring %d probe pairs under %s", len(rows), checkpoint)
        model = load_checkpoint(checkpoint, base_model=base_model, device=device)
        current = measure_pairs(model, rows, pad_token_id=pad_token_id, batch_size=batch_size, top_k=top_k, autocast=autocast)
        if baseline is None:
            baseline = current
        record = {"checkpoint": checkpoint, "label": label, "index": index, **drift_metrics(baseline, current, beta)}
        if entanglement_pairs > 0:
            model.requires_grad_(True)  # a merged adapter comes back frozen; compare over every parameter
            cosine = gradient_cosine(model, rows[:entanglement_pairs], pad_token_id=pad_token_id, autocast=autocast)
            record["grad_cosine"] = float(cosine.mean())
        records.append(record)
        del model
        gc.collect()
    return records


# -- outputs -------------------------------------------------------------------------------------


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def drift_table(records: list[dict]) -> str:
    """A Markdown table: one row per checkpoint, the :data:`TABLE_COLUMNS` that any record has."""
    columns = [(key, title) for key, title in TABLE_COLUMNS if any(key in r for r in records)]
    lines = [
        "| # | checkpoint | " + " | ".join(title for _, title in columns) + " |",
        "|---|---|" + "---:|" * len(columns),
    ]
    for r in records:
        cells = [str(r["index"]), str(r["label"]).replace("|", "\\|")] + [_fmt(r.get(key)) for key, _ in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_outputs(records: list[dict], meta: dict, output_dir: str | Path) -> dict[str, Path]:
    """``drift.json`` (records + meta), ``drift.md`` and ``drift.png`` in ``output_dir``, each atomically."""
    output_dir = Path(output_dir)
    paths = {"json": output_dir / "drift.json", "md": output_dir / "drift.md", "png": output_dir / "drift.png"}
    write_text_atomic(paths["json"], json.dumps(json_safe({"records": records, "meta": meta}), indent=2, ensure_ascii=False) + "\n")
    baseline = records[0]["label"]
    header = f"# Likelihood drift against `{baseline}`\n\n{meta.get('probes', '?')} probe pairs, β = {meta.get('beta')}; Δ = change since the baseline.\n\n"
    write_text_atomic(paths["md"], header + drift_table(records))
    plot_drift({"checkpoints": records}, paths["png"], x_label="checkpoint", x_key="index")
    return paths


# -- command line --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", nargs="+", required=True, help="baseline first: builtin:<name>, model folders, LoRA adapter folders")
    parser.add_argument("--labels", nargs="+", default=None, help="one name per checkpoint (default: folder names)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer (default: the first checkpoint's)")
    parser.add_argument("--base_model", default=None, help="base model of adapter checkpoints (default: from adapter_config.json)")
    parser.add_argument("--dataset", default="builtin:gsm8k_pairs", help="pair dataset: file, folder, hub id or builtin:<name>")
    parser.add_argument("--split", default="test", help="split of a hub or built-in dataset")
    parser.add_argument("--num_probes", type=int, default=32, help="the first N pairs of the split")
    parser.add_argument("--max_length", type=int, default=512, help="max prompt + completion tokens (longer completions are truncated)")
    parser.add_argument("--beta", type=float, default=0.1, help="β of the implicit rewards")
    parser.add_argument("--top_k", type=int, default=20, help="k of the top-k entropy and mass")
    parser.add_argument("--batch_size", type=int, default=8, help="probe pairs per forward")
    parser.add_argument("--entanglement_pairs", type=int, default=0, help="gradient cosine on the first N probes (0: off)")
    parser.add_argument("--bf16", action="store_true", help="measure under bf16 autocast")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--output_dir", type=Path, default=ROOT / "outputs" / "drift")
    args = parser.parse_args(argv)
    if args.num_probes < 1 or args.batch_size < 1 or args.top_k < 1 or args.entanglement_pairs < 0:
        parser.error("--num_probes, --batch_size and --top_k must be >= 1 and --entanglement_pairs >= 0")
    if args.labels is not None and len(args.labels) != len(args.checkpoints):
        parser.error(f"--labels has {len(args.labels)} names for {len(args.checkpoints)} checkpoints")
    for checkpoint in args.checkpoints:
        try:
            checkpoint_kind(checkpoint)
        except FileNotFoundError as err:
            parser.error(str(err))
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    tokenizer = (
        load_tokenizer(model_config(args.tokenizer))
        if args.tokenizer
        else load_checkpoint_tokenizer(args.checkpoints[0], base_model=args.base_model)
    )
    dataset = load_preference_dataset(args.dataset, split=args.split, kind="pair")
    dataset = dataset.select(range(min(args.num_probes, len(dataset))))
    rows, stats = prepare_preference_dataset(dataset, tokenizer, kind="pair", max_length=args.max_length, name=args.dataset)
    if stats["rows_dropped"]:
        print(f"{stats['rows_dropped']} of {stats['rows_in']} probe pairs dropped: prompt longer than --max_length {args.max_length}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    autocast = (
        functools.partial(torch.autocast, device_type=torch.device(device).type, dtype=torch.bfloat16)
        if args.bf16
        else contextlib.nullcontext
    )
    records = drift_over_checkpoints(
        args.checkpoints, rows, tokenizer, beta=args.beta, top_k=args.top_k, batch_size=args.batch_size,
        entanglement_pairs=args.entanglement_pairs, labels=args.labels, base_model=args.base_model,
        device=device, autocast=autocast,
    )  # fmt: skip
    meta = {
        "probes": len(rows),
        "probe_stats": stats,
        "dataset": args.dataset,
        "split": args.split,
        "max_length": args.max_length,
        "beta": args.beta,
        "top_k": args.top_k,
        "entanglement_pairs": args.entanglement_pairs,
        "bf16": args.bf16,
        "tokenizer": args.tokenizer or args.checkpoints[0],
        "command": shlex.join([sys.argv[0] if argv is None else "eval/drift.py", *(sys.argv[1:] if argv is None else argv)]),
    }
    paths = write_outputs(records, meta, args.output_dir)
    print(drift_table(records), end="")
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return records


if __name__ == "__main__":
    main()
