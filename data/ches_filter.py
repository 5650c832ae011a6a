"""Score preference pairs by CHES under a model and optionally drop the highest-CHES pairs.

    python data/ches_filter.py --model builtin:smollm2-135m-instruct --dataset builtin:gsm8k_pairs \\
        --output data/out.jsonl --drop_top 0.1

CHES (centered hidden embedding similarity, Razin et al. 2024, "Unintentional Unalignment"): with
h⁺ and h⁻ the sums of the model's last-layer hidden states over the chosen and the rejected
response, CHES = ⟨h⁺, h⁻⟩ − ‖h⁺‖² (:mod:`align.callbacks.measure`). Pairs with high CHES are the
ones whose preference training displaces the chosen response's likelihood most; the paper's
mitigation is to remove them. This script writes the input rows, unchanged, plus a ``ches`` column
to a JSONL file (atomically), leaving out the ``--drop_top`` fraction of scored pairs with the
highest CHES. A row whose prompt alone exceeds ``--max_length`` cannot be scored: it is reported
and kept with ``"ches": null`` (``--drop_unscored`` leaves it out instead).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

import torch
from datasets import Dataset

from align.callbacks import measure_pairs
from align.data import load_preference_dataset, prepare_preference_dataset, read_rows, write_jsonl
from align.models import checkpoint_kind, load_checkpoint, load_checkpoint_tokenizer, load_tokenizer, model_config

__all__ = ["main", "score_ches", "select_top"]

_INDEX = "_ches_row_index"


def score_ches(
    model: torch.nn.Module,
    tokenizer,
    dataset,
    *,
    max_length: int | None,
    batch_size: int = 8,
    split: str = "train",
    top_k: int = 20,
    autocast=contextlib.nullcontext,
) -> list[float]:
    """CHES of each preference pair of ``dataset`` under ``model``, in the dataset's row order.

    ``dataset``: anything :func:`align.data.load_preference_dataset` accepts (``split`` applies to
    hub ids and built-ins), a list of raw rows, or a tokenized pair dataset. The result has one
    value per input row; a row dropped by tokenization (its prompt leaves no room for a completion
    under ``max_length``) gets NaN, so the values stay aligned with the rows.
    """
    if isinstance(dataset, list):
        dataset = Dataset.from_list(dataset)
    if isinstance(dataset, Dataset) and {"prompt_ids", "completion_ids"} <= set(dataset.column_names):
        tokenized, _ = prepare_preference_dataset(dataset, tokenizer, kind="pair", max_length=max_length)
        n, kept = len(tokenized), list(range(len(tokenized)))
    else:
        # identical pairs kept, so that score i stays the score of input row i
        normalized = load_preference_dataset(dataset, split=split, kind="pair", identical_pairs="keep")
        n = len(normalized)
        # carried through tokenization, which keeps extra columns and drops overlong rows
        normalized = normalized.add_column(_INDEX, list(range(n)))
        tokenized, _ = prepare_preference_dataset(normalized, tokenizer, kind="pair", max_length=max_length)
        kept = tokenized[_INDEX]
    scores = [math.nan] * n
    if kept:
        pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        measured = measure_pairs(model, tokenized, pad_token_id=pad_token_id, batch_size=batch_size, top_k=top_k, autocast=autocast)
        for index, value in zip(kept, measured.ches.tolist(), strict=True):
            scores[index] = value
    return scores


def select_top(scores: list[float], fraction: float) -> tuple[list[int], float | None]:
    """Indices of the ``floor(fraction × scored)`` highest scores (NaN = unscored, never picked;
    ties broken by row order) and the lowest score picked (None when none is)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    scored = [i for i, s in enumerate(scores) if not math.isnan(s)]
    count = math.floor(fraction * len(scored) + 1e-9)
    top = sorted(scored, key=lambda i: (-scores[i], i))[:count]
    return sorted(top), (min(scores[i] for i in top) if top else None)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="builtin:smollm2-135m-instruct", help="builtin:<name>, model folder or LoRA adapter folder")
    parser.add_argument("--tokenizer", default=None, help="default: the model's")
    parser.add_argument("--dataset", default="builtin:gsm8k_pairs", help="pair dataset: file, folder, hub id or builtin:<name>")
    parser.add_argument("--split", default="train", help="split of a hub or built-in dataset")
    parser.add_argument("--limit", type=int, default=None, help="only the first N rows (default: all)")
    parser.add_argument("--output", type=Path, default=ROOT / "outputs" / "data" / "ches_filtered.jsonl", help="output JSONL")
    parser.add_argument("--drop_top", type=float, default=0.0, help="drop this fraction of the scored pairs, highest CHES first")
    parser.add_argument("--drop_unscored", action="store_true", help="leave out rows too long to score (default: keep them, ches null)")
    parser.add_argument("--max_length", type=int, default=512, help="max prompt + completion tokens (longer completions are truncated)")
    parser.add_argument("--batch_size", type=int, default=8, help="pairs per forward")
    parser.add_argument("--bf16", action="store_true", help="score under bf16 autocast")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    args = parser.parse_args(argv)
    if not 0.0 <= args.drop_top < 1.0:
        parser.error(f"--drop_top must lie in [0, 1), got {args.drop_top}")
    if args.batch_size < 1 or args.max_length < 2 or (args.limit is not None and args.limit < 1):
        parser.error("--batch_size and --limit must be >= 1 and --max_length >= 2")
    try:
        checkpoint_kind(args.model)
    except FileNotFoundError as err:
        parser.error(str(err))
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = load_tokenizer(model_config(args.tokenizer)) if args.tokenizer else load_checkpoint_tokenizer(args.model)
    model = load_checkpoint(args.model, device=device)
    autocast = (
        functools.partial(torch.autocast, device_type=torch.device(device).type, dtype=torch.bfloat16)
        if args.bf16
        else contextlib.nullcontext
    )
    raw = [row for _, rows in read_rows(args.dataset, args.split) for row in rows][: args.limit]
    scores = score_ches(model, tokenizer, raw, max_length=args.max_length, batch_size=args.batch_size, autocast=autocast)

    unscored = [i for i, s in enumerate(scores) if math.isnan(s)]
    if unscored:
        shown = ", ".join(map(str, unscored[:10])) + (", ..." if len(unscored) > 10 else "")
        fate = "left out" if args.drop_unscored else 'kept with "ches": null'
        print(f"{len(unscored)} of {len(raw)} rows not scored (prompt too long for --max_length {args.max_length}), {fate}: rows [{shown}]")
    dropped, threshold = select_top(scores, args.drop_top)
    dropped_set = set(dropped) | (set(unscored) if args.drop_unscored else set())
    out = [{**row, "ches": None if math.isnan(s) else s} for i, (row, s) in enumerate(zip(raw, scores)) if i not in dropped_set]
    scored = len(raw) - len(unscored)
    if dropped:
        kept_scores = [scores[i] for i in range(len(raw)) if i not in dropped_set and not math.isnan(scores[i])]
        print(
            f"dropped {len(dropped)} of {scored} scored pairs (top {args.drop_top:g} by CHES): CHES >= {threshold:.6g} "
            f"(mean CHES dropped {sum(scores[i] for i in dropped) / len(dropped):.6g}, "
            f"kept {sum(kept_scores) / max(len(kept_scores), 1):.6g})"
        )
    else:
        print(f"dropped 0 of {scored} scored pairs (--drop_top {args.drop_top:g})")
    write_jsonl(out, args.output)
    print(f"wrote {len(out)} rows with a ches column to {args.output}")
    return out


if __name__ == "__main__":
    main()
