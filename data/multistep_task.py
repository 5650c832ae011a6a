"""Write the multi-step arithmetic task (the implicit PRM's default) as JSONL; optionally measure SmolLM2 on it.

    python data/multistep_task.py --n_train 512 --n_test 128 --seed 0
    python data/multistep_task.py --measure          # + the built-in model on the test split (~6 min on 2 CPU cores)

Writes ``<output_dir>/train.jsonl`` and ``<output_dir>/test.jsonl`` (atomically) with rows
``{"prompt": [...], "answer": "18", "solution": "7 * 3 = 21\\n21 + 2 = 23\\n23 - 5 = 18\\n#### 18",
"steps": [...]}``; the defaults reproduce ``builtin:multistep``. Logic and the step rules:
:mod:`align.data.multistep`.

``--measure`` loads ``builtin:smollm2-135m-instruct`` and answers every test prompt with the chat
template (left-padded batches, ``max_new_tokens`` 96): once greedily and ``--k`` times sampled at
temperature 0.7, top-p 0.9 (the samples an implicit PRM is trained on). It reports, per number of
operations and in all: the greedy accuracy, the fraction of correct samples, the fraction of prompts
with at least one correct and one wrong sample; for the wrong samples, how many have a known first
wrong step (:func:`align.data.multistep.check_solution`) and at which step, and why the others have
none; tokens per sample. Writes them to ``<output_dir>/measure.json``.

Measured with ``python data/multistep_task.py --measure`` (defaults: 128 test problems, seed 0, K = 4;
x86-64, 2 cores, torch 2.13 CPU; 367 s):

| problems | prompts | greedy acc | sample acc | mixed | all right | none right | wrong samples | step known |
|---|---|---|---|---|---|---|---|---|
| all | 128 | 30% | 27% | 20% | 19% | 62% | 372 | 87% |
| 2 ops | 86 | 45% | 40% | 26% | 28% | 47% | 207 | 85% |
| 3 ops | 21 | 0% | 1% | 5% | 0% | 95% | 83 | 92% |
| 4 ops | 21 | 0% | 2% | 10% | 0% | 90% | 82 | 88% |

(mixed: prompts with a right and a wrong sample; step known: wrong samples with a first wrong step.)
Of the 372 wrong samples the first wrong step is step 0 in 177, step 1 in 144, step 2 in 2; 43
stopped early with every written step right, 5 wrote a wrong ``#### N`` after right steps and 1
wrote no equation. 7 of the 140 right answers came through a wrong step (``5 - 3 = 0``,
``0 + 9 = 1``, ``#### 11``). 21.4 tokens a sample. With ``--seed 1``: greedy 34%, samples 29%,
mixed 29%, first wrong step known for 84% of the wrong samples.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from arithmetic_task import generate  # noqa: E402 (the sibling script's batched sampler)

from align.data import check_solution, multistep_problems, write_jsonl  # noqa: E402
from align.data.multistep import MAX_VALUE, N_OPS  # noqa: E402

MODEL = "builtin:smollm2-135m-instruct"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n_train", type=int, default=512, help="training problems")
    parser.add_argument("--n_test", type=int, default=128, help="held-out problems (disjoint from train by problem)")
    parser.add_argument("--seed", type=int, default=0, help="picks the problems and their order (not the split)")
    parser.add_argument(
        "--n_ops", default=",".join(map(str, N_OPS)), help="operations per problem, cycled (e.g. 2,2,3,4)"
    )
    parser.add_argument("--max_value", type=int, default=MAX_VALUE, help="largest intermediate value")
    parser.add_argument("--output_dir", type=Path, default=ROOT / "outputs" / "data" / "multistep")
    parser.add_argument("--measure", action="store_true", help="report the built-in model on the test split")
    parser.add_argument("--model", default=MODEL, help="model to measure (builtin:<name>, folder or hub id)")
    parser.add_argument("--k", type=int, default=4, help="samples per prompt for --measure")
    parser.add_argument("--max_new_tokens", type=int, default=96)
    parser.add_argument("--batch_size", type=int, default=32, help="sequences per generate call")
    parser.add_argument("--separator", default="\n", help="step separator for the step check")
    parser.add_argument("--show", type=int, default=0, help="print this many wrong samples with their steps")
    args = parser.parse_args(argv)
    try:
        args.n_ops = tuple(int(k) for k in args.n_ops.split(",") if k.strip())
    except ValueError:
        parser.error(f"--n_ops must be comma-separated integers, got {args.n_ops!r}")
    if args.n_train < 1 or args.n_test < 1 or args.k < 1:
        parser.error("--n_train, --n_test and --k must be >= 1")
    return args


def why_wrong(row: dict, check) -> str:
    """Where a wrong sample's error lies: ``step N`` (the first wrong step), or why no step is wrong."""
    if check.first_wrong is not None:
        return f"step {check.first_wrong}"
    if check.equations == 0:
        return "no equation"
    if check.equations < len(row["steps"]):
        return "stopped early"
    return "wrong number outside the equations"


def summarize(rows: list[dict], greedy: list, sampled: list[list]) -> dict:
    """Accuracy and first-wrong-step statistics over the prompts of ``rows`` (checks from check_solution)."""

    def stats(idx: list[int]) -> dict:
        n, k = len(idx), len(sampled[0])
        right = [[c.final_correct for c in sampled[i]] for i in idx]
        wrong = [(rows[i], c) for i in idx for c in sampled[i] if not c.final_correct]
        reasons = Counter(why_wrong(r, c) for r, c in wrong)
        return {
            "prompts": n,
            "greedy_accuracy": sum(greedy[i].final_correct for i in idx) / n,
            "sample_accuracy": sum(map(sum, right)) / (n * k),
            "mixed_fraction": sum(any(r) and not all(r) for r in right) / n,
            "all_correct_fraction": sum(all(r) for r in right) / n,
            "none_correct_fraction": sum(not any(r) for r in right) / n,
            "wrong_samples": len(wrong),
            "first_wrong_known_fraction": sum(c.first_wrong is not None for _, c in wrong) / max(len(wrong), 1),
            "wrong_samples_by_reason": dict(sorted(reasons.items())),
            # Right answers reached through a wrong step: the outcome label says "right" for a wrong chain.
            "correct_with_wrong_step": sum(
                c.final_correct and c.first_wrong is not None for i in idx for c in sampled[i]
            ),
        }

    sizes = [len(r["steps"]) for r in rows]
    result = {"all": stats(list(range(len(rows))))}
    for size in sorted(set(sizes)):
        result[f"{size} ops"] = stats([i for i, s in enumerate(sizes) if s == size])
    return result


def measure(args: argparse.Namespace, test: list[dict]) -> dict:
    import torch
    from trl import ModelConfig

    from align.models import load_model, load_tokenizer

    model_args = ModelConfig(model_name_or_path=args.model)
    tokenizer = load_tokenizer(model_args)
    tokenizer.padding_side = "left"
    model = load_model(model_args, for_training=False).eval()
    prompts = [r["prompt"] for r in test]
    opts = {"batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens}

    start = time.perf_counter()
    greedy_text, greedy_tokens = generate(model, tokenizer, prompts, do_sample=False, **opts)
    greedy_time = time.perf_counter() - start
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    sampled_text, sampled_tokens = generate(
        model,
        tokenizer,
        [p for p in prompts for _ in range(args.k)],
        do_sample=True,
        temperature=0.7,
        top_p=0.9,
        **opts,
    )
    sampled_time = time.perf_counter() - start

    k = args.k
    greedy = [check_solution(r, t, args.separator) for r, t in zip(test, greedy_text)]
    sampled = [
        [check_solution(r, t, args.separator) for t in sampled_text[i * k : (i + 1) * k]] for i, r in enumerate(test)
    ]
    shown = 0
    for i, row in enumerate(test):
        for text, check in zip(sampled_text[i * k : (i + 1) * k], sampled[i]):
            if shown < args.show and not check.final_correct:
                shown += 1
                print(f"--- {row['prompt'][-1]['content']} (answer {row['answer']}): {why_wrong(row, check)}")
                for step, ok in zip(check.steps, check.step_correct):
                    print(f"  {'ok' if ok else 'xx'} {step}")
    return {
        "model": args.model,
        "n_ops": list(args.n_ops),
        "max_value": args.max_value,
        "k": k,
        "max_new_tokens": args.max_new_tokens,
        "separator": args.separator,
        "accuracy": summarize(test, greedy, sampled),
        "greedy_seconds": greedy_time,
        "sampled_seconds": sampled_time,
        "mean_greedy_tokens": greedy_tokens / len(greedy_text),
        "mean_sampled_tokens": sampled_tokens / len(sampled_text),
        "machine": (
            f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
        ),
        "per_prompt": [
            {
                "question": r["prompt"][-1]["content"],
                "answer": r["answer"],
                "greedy": g,
                "greedy_first_wrong": gc.first_wrong,
                "greedy_correct": gc.final_correct,
                "sampled": sampled_text[i * k : (i + 1) * k],
                "sampled_first_wrong": [c.first_wrong for c in sampled[i]],
                "sampled_correct": [c.final_correct for c in sampled[i]],
            }
            for i, (r, g, gc) in enumerate(zip(test, greedy_text, greedy))
        ],
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    common = {"seed": args.seed, "n_ops": args.n_ops, "max_value": args.max_value}
    train = multistep_problems(args.n_train, split="train", **common)
    test = multistep_problems(args.n_test, split="test", **common)
    for name, rows in (("train", train), ("test", test)):
        path = write_jsonl(rows, args.output_dir / f"{name}.jsonl")
        print(f"wrote {len(rows)} {name} problems to {path}")
    print(f"(seed {args.seed}, operations {','.join(map(str, args.n_ops))}, values up to {args.max_value})")
    if not args.measure:
        return
    start = time.perf_counter()
    result = measure(args, test)
    result["wall_seconds"] = time.perf_counter() - start
    path = args.output_dir / "measure.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.model} on {len(test)} test problems (max {args.max_new_tokens} new tokens; {result['machine']}):")
    print(
        f"| problems | prompts | greedy acc | sample acc (K={args.k}, T=0.7, top-p 0.9) | mixed | all right "
        "| none right | wrong samples | first wrong step known |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, s in result["accuracy"].items():
        print(
            f"| {name} | {s['prompts']} | {s['greedy_accuracy']:.0%} | {s['sample_accuracy']:.0%} | "
            f"{s['mixed_fraction']:.0%} | {s['all_correct_fraction']:.0%} | {s['none_correct_fraction']:.0%} | "
            f"{s['wrong_samples']} | {s['first_wrong_known_fraction']:.0%} |"
        )
    overall = result["accuracy"]["all"]
    print(f"wrong samples by where the error is: {overall['wrong_samples_by_reason']}")
    print(f"right answers reached through a wrong step: {overall['correct_with_wrong_step']}")
    print(
        f"{result['mean_sampled_tokens']:.1f} tokens a sample ({result['mean_greedy_tokens']:.1f} greedy); "
        f"wall {result['wall_seconds']:.0f} s; details in {path}"
    )


if __name__ == "__main__":
    main()
