"""Write the safety stand-in set (HarmfulQA-layout conversations and evaluation prompts) as files.

    python data/safety_task.py --n_train 96 --n_test 32 --seed 0

Writes (atomically) into ``--output_dir``:

- ``train.json`` / ``test.json``: questions in the HarmfulQA layout (a JSON list, like
  ``declare-lab/HarmfulQA``'s ``data_for_hub.json``) plus a ``system`` and a ``secret`` column; load
  with ``load_preference_dataset(".../train.json", kind="single")`` (one labelled row per conversation);
- ``prompts/train.jsonl`` / ``prompts/test.jsonl``: evaluation prompts
  ``{"prompt": [system, ..., user], "behaviour": "secret" | "insult" | "benign", "reference": secret}``.

The defaults reproduce ``builtin:safety`` and ``builtin:safety_prompts``. The "harmful" behaviour is
harmless to ship: revealing a planted fake secret, insulting the user. Logic: :mod:`align.data.safety`.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from align.data.safety import safety_conversations, safety_prompts
from align.io import atomic_write_json, write_jsonl


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n_train", type=int, default=96, help="training questions (secret, insult, benign 3 : 3 : 2)")
    parser.add_argument("--n_test", type=int, default=32, help="held-out questions (no user turns shared with train)")
    parser.add_argument(
        "--n_harmful_prompts", type=int, default=32, help="evaluation prompts per split, half secret, half insult"
    )
    parser.add_argument("--n_benign_prompts", type=int, default=32, help="benign evaluation prompts per split")
    parser.add_argument("--seed", type=int, default=0, help="draws secrets, wordings and order (not the split)")
    parser.add_argument("--output_dir", type=Path, default=ROOT / "outputs" / "data" / "safety")
    args = parser.parse_args(argv)
    if min(args.n_train, args.n_test) < 1 or min(args.n_harmful_prompts, args.n_benign_prompts) < 0:
        parser.error("--n_train and --n_test must be >= 1, the prompt counts >= 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    for split, n in (("train", args.n_train), ("test", args.n_test)):
        rows = safety_conversations(n, seed=args.seed, split=split)
        path = atomic_write_json(args.output_dir / f"{split}.json", rows)
        counts = collections.Counter(r["topic"] for r in rows)
        print(f"wrote {len(rows)} {split} questions ({', '.join(f'{v} {k}' for k, v in counts.items())}) to {path}")
        prompts = safety_prompts(args.n_harmful_prompts, args.n_benign_prompts, seed=args.seed, split=split)
        path = write_jsonl(prompts, args.output_dir / "prompts" / f"{split}.jsonl")
        print(f"wrote {len(prompts)} {split} evaluation prompts to {path}")
    print(f"(seed {args.seed})")


if __name__ == "__main__":
    main()
