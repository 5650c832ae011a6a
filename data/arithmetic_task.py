"""Write the arithmetic task (the on-policy loops' default prompts) as JSONL; optionally measure SmolLM2 on it.

    python data/arithmetic_task.py --n_train 256 --n_test 64 --seed 0
    python data/arithmetic_task.py --measure          # + the built-in model's test accuracy (~2 min on 2 CPU cores)

Writes ``<output_dir>/train.jsonl`` and ``<output_dir>/test.jsonl`` (atomically) with rows
``{"prompt": [{"role": "user", ...}], "answer": "56", "solution": "7 * 8 = 56\\n#### 56"}``;
the defaults reproduce ``builtin:arithmetic``. Logic: :mod:`align.data.tasks`.

``--measure`` loads ``builtin:smollm2-135m-instruct`` and answers every test prompt with the chat
template (left-padded batches, ``max_new_tokens`` 48): once greedily (the loops' evaluation) and
``--k`` times sampled at temperature 0.7, top-p 0.9 (the loops' training samples). It reports the
greedy accuracy, the fraction of correct samples, and the fraction of prompts with at least one
correct and one wrong sample (the prompts that give SPPO / iterative-RPO a pair), per form and in
all, and writes them to ``<output_dir>/measure.json``. An answer is the number after ``####``, else
the last number in the text, compared numerically.

Measured (defaults, seed 0; x86-64, 2 cores, torch 2.13 CPU; 110 s): greedy 41% (mul1 87%, mul12 27%),
samples 30% correct, 50% of prompts with a correct and a wrong sample, 19.7 tokens a sample. With
``--seed 1``: 38%, 31%, 36%.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from align.data import arithmetic_problems, write_jsonl
from align.data.tasks import ARITHMETIC_FORMS, ARITHMETIC_PROMPT, DEFAULT_FORMS, _check

MODEL = "builtin:smollm2-135m-instruct"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n_train", type=int, default=256, help="training problems")
    parser.add_argument("--n_test", type=int, default=64, help="held-out problems (disjoint from train by problem)")
    parser.add_argument("--seed", type=int, default=0, help="picks the problems and their order (not the split)")
    parser.add_argument(
        "--forms", default=",".join(DEFAULT_FORMS), help=f"comma-separated, of {', '.join(ARITHMETIC_FORMS)}"
    )
    parser.add_argument("--template", default=ARITHMETIC_PROMPT, help="prompt with {a}, {op}, {b}")
    parser.add_argument("--output_dir", type=Path, default=ROOT / "outputs" / "data" / "arithmetic")
    parser.add_argument("--measure", action="store_true", help="report the built-in model's accuracy on the test split")
    parser.add_argument("--model", default=MODEL, help="model to measure (builtin:<name>, folder or hub id)")
    parser.add_argument("--k", type=int, default=4, help="samples per prompt for --measure")
    parser.add_argument("--max_new_tokens", type=int, default=48)
    parser.add_argument("--batch_size", type=int, default=32, help="sequences per generate call")
    parser.add_argument("--show", type=int, default=0, help="print this many greedy answers")
    args = parser.parse_args(argv)
    args.forms = tuple(f.strip() for f in args.forms.split(",") if f.strip())
    if args.n_train < 1 or args.n_test < 1:
        parser.error("--n_train and --n_test must be >= 1")
    return args


def form_of(row: dict) -> str:
    """The first form (of all known) that holds the row's problem, read back from its solution."""
    a, op, b = row["solution"].split(" = ")[0].split(" ")
    problem = (int(a), op, int(b))
    for name, form in ARITHMETIC_FORMS.items():
        if problem in form.problems():
            return name
    return "other"


def generate(
    model, tokenizer, prompts: list, *, batch_size: int, max_new_tokens: int, **sampling
) -> tuple[list[str], int]:
    """Completions for chat ``prompts`` in left-padded batches; also the number of tokens generated."""
    import torch

    from align.data import prompt_ids

    ids = [prompt_ids(tokenizer, p) for p in prompts]  # the ids training puts before each completion
    completions, n_tokens = [], 0
    for start in range(0, len(ids), batch_size):
        batch = tokenizer.pad({"input_ids": ids[start : start + batch_size]}, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(
                **batch, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, **sampling
            )
        new = out[:, batch["input_ids"].shape[1] :]
        # Tokens up to and including the first end-of-sequence (the rest is padding after it stopped).
        done = (new == tokenizer.eos_token_id).int().cumsum(dim=1)
        n_tokens += int(((done == 0) | ((done == 1) & (new == tokenizer.eos_token_id))).sum())
        completions += tokenizer.batch_decode(new, skip_special_tokens=True)
    return completions, n_tokens


def summarize(rows: list[dict], greedy: list[bool], sampled: list[list[bool]]) -> dict:
    def stats(idx: list[int]) -> dict:
        n = len(idx)
        return {
            "prompts": n,
            "greedy_accuracy": sum(greedy[i] for i in idx) / n,
            "sample_accuracy": sum(sum(sampled[i]) for i in idx) / (n * len(sampled[0])),
            "mixed_fraction": sum(any(sampled[i]) and not all(sampled[i]) for i in idx) / n,
            "all_correct_fraction": sum(all(sampled[i]) for i in idx) / n,
            "none_correct_fraction": sum(not any(sampled[i]) for i in idx) / n,
        }

    forms = [form_of(r) for r in rows]
    result = {"all": stats(list(range(len(rows))))}
    for form in dict.fromkeys(forms):
        result[form] = stats([i for i, f in enumerate(forms) if f == form])
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

    greedy = [_check(t, r["answer"]) for t, r in zip(greedy_text, test)]
    sampled = [
        [_check(t, r["answer"]) for t in sampled_text[i * args.k : (i + 1) * args.k]] for i, r in enumerate(test)
    ]
    marked = sum("####" in t for t in greedy_text + sampled_text) / len(greedy_text + sampled_text)
    for row, text, ok in list(zip(test, greedy_text, greedy))[: args.show]:
        print(f"  [{'ok' if ok else 'xx'} {row['answer']:>4}] {row['prompt'][0]['content']!r} -> {text!r}")
    return {
        "model": args.model,
        "template": args.template,
        "forms": list(args.forms),
        "k": args.k,
        "max_new_tokens": args.max_new_tokens,
        "accuracy": summarize(test, greedy, sampled),
        "marked_fraction": marked,
        "greedy_seconds": greedy_time,
        "sampled_seconds": sampled_time,
        "greedy_tokens_per_second": greedy_tokens / greedy_time,
        "sampled_tokens_per_second": sampled_tokens / sampled_time,
        "mean_sampled_tokens": sampled_tokens / len(sampled_text),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "per_prompt": [
            {
                "problem": r["solution"].split(" = ")[0],
                "answer": r["answer"],
                "greedy": g,
                "greedy_correct": ok,
                "sampled": sampled_text[i * args.k : (i + 1) * args.k],
                "sampled_correct": s,
            }
            for i, (r, g, ok, s) in enumerate(zip(test, greedy_text, greedy, sampled))
        ],
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    common = {"seed": args.seed, "forms": args.forms, "template": args.template}
    train = arithmetic_problems(args.n_train, split="train", **common)
    test = arithmetic_problems(args.n_test, split="test", **common)
    for name, rows in (("train", train), ("test", test)):
        path = write_jsonl(rows, args.output_dir / f"{name}.jsonl")
        print(f"wrote {len(rows)} {name} problems to {path}")
    print(f"(seed {args.seed}, forms {', '.join(args.forms)})")
    if not args.measure:
        return
    start = time.perf_counter()
    result = measure(args, test)
    result["wall_seconds"] = time.perf_counter() - start
    path = args.output_dir / "measure.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.model} on {len(test)} test problems (max {args.max_new_tokens} new tokens; {result['machine']}):")
    print(
        f"| forms | prompts | greedy acc | sample acc (K={args.k}, T=0.7, top-p 0.9) | mixed | all right | none right |"
    )
    print("|---|---|---|---|---|---|---|")
    for form, s in result["accuracy"].items():
        print(
            f"| {form} | {s['prompts']} | {s['greedy_accuracy']:.0%} | {s['sample_accuracy']:.0%} | "
            f"{s['mixed_fraction']:.0%} | {s['all_correct_fraction']:.0%} | {s['none_correct_fraction']:.0%} |"
        )
    print(
        f"answers marked '####': {result['marked_fraction']:.0%}; tokens/s greedy {result['greedy_tokens_per_second']:.0f}, "
        f"sampled {result['sampled_tokens_per_second']:.0f} ({result['mean_sampled_tokens']:.1f} tokens a sample); "
        f"wall {result['wall_seconds']:.0f} s; details in {path}"
    )


if __name__ == "__main__":
    main()
