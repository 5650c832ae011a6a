"""Build a small GSM8K preference set: gold solution (chosen) vs the same solution with a wrong answer.

    python data/gsm8k_pairs.py --num_examples 256 --num_eval 64 --seed 0

Reads ``../shared/data/gsm8k/train.jsonl`` (relative to the project root) when present, otherwise
downloads ``openai/gsm8k`` (main, train) from the Hub. Checks the conversational pairs
(``prompt``/``chosen``/``rejected``) with the validation the trainers use, then writes them as JSONL,
atomically. Logic: :mod:`align.data.gsm8k`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from align.data import gsm8k_pairs, load_gsm8k, normalize_rows, write_jsonl
from align.data.gsm8k import LOCAL_GSM8K_TRAIN


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--input",
        type=Path,
        default=LOCAL_GSM8K_TRAIN,
        help="local GSM8K train JSONL ({question, answer} rows); the Hub is used if it is absent",
    )
    parser.add_argument("--num_examples", type=int, default=256, help="number of training pairs")
    parser.add_argument("--num_eval", type=int, default=64, help="number of eval pairs (other questions); 0 for none")
    parser.add_argument("--seed", type=int, default=0, help="seeds the question order and the wrong answers")
    parser.add_argument(
        "--output", type=Path, default=ROOT / "outputs" / "data" / "gsm8k_pairs.jsonl", help="training pairs (JSONL)"
    )
    parser.add_argument(
        "--eval_output",
        type=Path,
        default=None,
        help="eval pairs (JSONL); default: <output stem>_eval.jsonl next to --output",
    )
    args = parser.parse_args(argv)
    if args.num_examples < 1 or args.num_eval < 0:
        parser.error("--num_examples must be >= 1 and --num_eval >= 0")
    if args.eval_output is None:
        args.eval_output = args.output.with_name(f"{args.output.stem}_eval.jsonl")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    source = args.input if args.input.is_file() else "openai/gsm8k (Hugging Face Hub)"
    rows = load_gsm8k(args.input)
    train, evaluation = gsm8k_pairs(rows, num_examples=args.num_examples, num_eval=args.num_eval, seed=args.seed)
    outputs = [(args.output, train)] + ([(args.eval_output, evaluation)] if evaluation else [])
    for path, pairs in outputs:
        normalize_rows([(str(path), pairs)], kind="pair")  # the trainers' validation, before anything is written
        write_jsonl(pairs, path)
        print(f"wrote {len(pairs)} pairs to {path}")
    print(f"(from {source}, seed {args.seed})")


if __name__ == "__main__":
    main()
