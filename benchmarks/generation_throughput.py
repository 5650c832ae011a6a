"""Sampling throughput for on-policy methods: K completions per prompt, batched vs one at a time.

    python benchmarks/generation_throughput.py                 # SmolLM2-135M-Instruct, GSM8K prompts, ~3 min on CPU

SPPO, iterative RPO and HAEPO sample K completions for every prompt each iteration. This measures
Hugging Face ``generate`` on the built-in SmolLM2-135M-Instruct with the chat template applied:
all prompts × K sequences in one left-padded batch, against one sequence at a time. Both sample
(temperature 0.7, top-p 0.9) exactly ``--max_new_tokens`` tokens (end-of-sequence suppressed
until then), so tokens/s compares decoding speed, not how early samples stop.

Writes ``benchmarks/results/generation_throughput.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def gsm8k_questions(n: int) -> list[str]:
    from align.data import load_gsm8k
    from align.data.gsm8k import LOCAL_GSM8K_TRAIN

    test_file = LOCAL_GSM8K_TRAIN.with_name("test.jsonl")  # ../shared/data/gsm8k, else the hub
    return [row["question"] for row in load_gsm8k(test_file, split="test")][:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="builtin:smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--k", type=int, default=4, help="samples per prompt")
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--sequential", type=int, default=6, help="sequences timed one at a time")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "generation_throughput"))
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from align.models import resolve_model_path

    path = resolve_model_path(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    prompts = [
        tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False)
        for q in gsm8k_questions(args.prompts)
    ]
    settings = dict(do_sample=True, temperature=0.7, top_p=0.9, max_new_tokens=args.max_new_tokens,
                    min_new_tokens=args.max_new_tokens, pad_token_id=tokenizer.pad_token_id)  # fmt: skip

    def generate(texts: list[str]) -> float:
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        start = time.perf_counter()
        with torch.no_grad():
            out = model.generate(**batch, **settings)
        assert out.shape[1] - batch["input_ids"].shape[1] == args.max_new_tokens
        return time.perf_counter() - start

    torch.manual_seed(0)
    generate(prompts[:1])  # warm-up
    batched = [p for p in prompts for _ in range(args.k)]
    batched_time = generate(batched)
    sequential = batched[: args.sequential]
    sequential_time = sum(generate([p]) for p in sequential)
    rows = {
        "batched_tokens_per_second": len(batched) * args.max_new_tokens / batched_time,
        "sequential_tokens_per_second": len(sequential) * args.max_new_tokens / sequential_time,
    }
    rows["speedup"] = rows["batched_tokens_per_second"] / rows["sequential_tokens_per_second"]
    meta = {**vars(args), "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}",
            "threads": torch.get_num_threads()}  # fmt: skip
    table = (
        f"{args.model}, {args.prompts} GSM8K prompts × K = {args.k} samples, {args.max_new_tokens} new tokens each; "
        f"{meta['machine']}.\n\n"
        "| batched tokens/s | one-at-a-time tokens/s | speed-up |\n|---|---|---|\n"
        f"| {rows['batched_tokens_per_second']:.0f} | {rows['sequential_tokens_per_second']:.1f} | {rows['speedup']:.1f}× |\n"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
