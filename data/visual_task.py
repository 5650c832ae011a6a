"""Write the synthetic visual-patterns task (UV-CoT's default prompts) as JSONL files with their images.

    python data/visual_task.py --n_train 512 --n_test 256 --seed 0

Writes (atomically) into ``--output_dir``:

- ``images/<layout hash>.png``: one 128 × 128 image per layout;
- ``train.jsonl`` / ``test.jsonl``: prompt rows ``{"prompt", "images", "question", "answer", "box"}``
  (image paths absolute), the on-policy loop's ``--prompts`` / ``--eval_prompts``;
- with ``--n_warmup N``: ``warmup.jsonl``, the first N train rows as labelled single rows for the
  supervised warm-up (the true box, the true crop saved under ``images/``, the answer).

The defaults reproduce ``builtin:visual_patterns``. Logic: :mod:`align.data.visual_task`.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from align.data.visual_task import visual_patterns, warmup_row
from align.io import write_jsonl


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n_train", type=int, default=512, help="training prompts")
    parser.add_argument("--n_test", type=int, default=256, help="held-out prompts (no image shared with train)")
    parser.add_argument("--n_warmup", type=int, default=0, help="labelled warm-up rows from the first train prompts")
    parser.add_argument("--min_half", type=int, default=16, help="the warm-up crops' minimum half-side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="draws layouts and questions (not the split)")
    parser.add_argument("--output_dir", type=Path, default=ROOT / "outputs" / "data" / "visual_patterns")
    args = parser.parse_args(argv)
    if min(args.n_train, args.n_test) < 1 or not 0 <= args.n_warmup <= args.n_train:
        parser.error("--n_train and --n_test must be >= 1, --n_warmup between 0 and --n_train")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    images = args.output_dir / "images"
    for split, n in (("train", args.n_train), ("test", args.n_test)):
        rows = visual_patterns(n, seed=args.seed, split=split, image_dir=images)
        path = write_jsonl(rows, args.output_dir / f"{split}.jsonl")
        counts = collections.Counter(r["answer"] for r in rows)
        print(f"wrote {len(rows)} {split} prompts ({', '.join(f'{v} {k}' for k, v in counts.items())}) to {path}")
        if split == "train" and args.n_warmup:
            warmup = [warmup_row(row, min_half=args.min_half) for row in rows[: args.n_warmup]]
            path = write_jsonl(warmup, args.output_dir / "warmup.jsonl")
            print(f"wrote {len(warmup)} labelled warm-up rows to {path}")
    print(f"(seed {args.seed}, images in {images})")


if __name__ == "__main__":
    main()
