"""Sampling throughput for on-policy methods on the default loop's settings: align's generator
against plain batched ``generate`` and against one sequence at a time.

    python benchmarks/generation_throughput.py          # SmolLM2-135M-Instruct, ~5 min on 2 CPU cores

The default SPPO/RPO loop samples K = 4 completions for each of 64 prompts of the built-in
arithmetic task (temperature 0.7, top-p 0.9, at most 48 new tokens). Each row samples those same
256 completions (EOS ends a completion, as in the loop):

* ``generate``, batched: ``HFGenerator(use_generate=True)``, what the loop did before align's
  decoding loop: left-padded batches of 32 sequences (its default then, in chunks of 16 prompts)
  through transformers' ``generate``;
* ``generate``, one at a time: the first ``--sequential`` sequences alone;
* align, in the model's dtype (float32, the loop's default) and under bf16 autocast
  (``--sampling_precision bf16``), at each of ``--batch_sizes`` sequences per batch (the loop's
  default: 128);
* with ``--compile``, align in bf16 at the first of ``--batch_sizes`` with the model's forward under
  ``torch.compile(dynamic=True)``: the first call (which compiles) and a second one.

tokens/s counts completion tokens (to the EOS, not padding). "% of peak" is the share of the
machine's matmul peak at 2·N FLOPs per completion token (N = the model's parameters, the prompt's
prefill not counted), the peak being the fastest of a few transformer-shaped matmuls timed in the
same run, in the row's dtype. The accuracy (gsm8k_verifier against each prompt's answer) and mean
length of the 256 samples check that the faster rows sample the same distribution: a row's
difference from ``generate``'s is within noise when it is within about two standard errors.

Writes ``benchmarks/results/generation_throughput.{json,md}``. Run it alone: another torch process
on the same cores slows both many-fold.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def matmul_peak(dtype, hidden: int, intermediate: int) -> float:
    """FLOP/s of the fastest of a few (M × hidden) · (hidden × intermediate) matmuls in ``dtype``."""
    import torch

    best = 0.0
    for m in (64, 256, 1024):
        a, w = torch.randn(m, hidden, dtype=dtype), torch.randn(intermediate, hidden, dtype=dtype)
        for _ in range(3):
            torch.nn.functional.linear(a, w)
        reps = max(3, int(2e10 / (2 * m * hidden * intermediate)))
        start = time.perf_counter()
        for _ in range(reps):
            torch.nn.functional.linear(a, w)
        best = max(best, 2 * m * hidden * intermediate * reps / (time.perf_counter() - start))
    return best


def stats(judge, rows, samples, tokenizer) -> dict:
    """Accuracy and mean length (tokens) of the samples, each with its standard error over prompts."""
    import numpy as np

    from align.rewards import checked_verdicts

    prompts = [r["prompt"] for r in rows for _ in samples[0]]
    flat = [s for group in samples for s in group]
    refs = [r["answer"] for r in rows for _ in samples[0]]
    correct = np.asarray(checked_verdicts(judge, prompts, flat, refs), dtype=float).reshape(len(rows), -1)
    lengths = np.asarray([len(tokenizer(s, add_special_tokens=False)["input_ids"]) for s in flat], dtype=float)
    lengths = lengths.reshape(len(rows), -1)
    per_prompt_acc, per_prompt_len = correct.mean(1), lengths.mean(1)
    n = len(rows)
    return {
        "tokens": int(lengths.sum()),
        "accuracy": float(per_prompt_acc.mean()),
        "accuracy_se": float(per_prompt_acc.std(ddof=1) / math.sqrt(n)),
        "mean_length": float(per_prompt_len.mean()),
        "mean_length_se": float(per_prompt_len.std(ddof=1) / math.sqrt(n)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="builtin:smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--k", type=int, default=4, help="samples per prompt")
    parser.add_argument("--max_new_tokens", type=int, default=48)
    parser.add_argument("--batch_size", type=int, default=32,
                        help="sequences per batch of the generate rows (the loop's default before its own decoder)")
    parser.add_argument("--batch_sizes", default="32,64,128,256",
                        help="align's rows, each dtype: sequences per batch (chunks of max(16, batch / K) prompts)")
    parser.add_argument("--sequential", type=int, default=8, help="sequences sampled one at a time")
    parser.add_argument("--compile", action="store_true",
                        help="also the first bf16 batch size with the model's forward under torch.compile(dynamic=True): "
                        "its first call (which compiles) and a second one")  # fmt: skip
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "generation_throughput"))
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from align.generation import SamplingConfig, encode_prompts, sample_completions
    from align.loops.onpolicy import load_prompt_rows
    from align.models import resolve_model_path
    from align.rewards import load_reward

    path = resolve_model_path(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    params = sum(p.numel() for p in model.parameters())
    rows = load_prompt_rows("builtin:arithmetic", "train")[: args.prompts]
    prompts = [r["prompt"] for r in rows]
    judge = load_reward("gsm8k_verifier")
    hidden, intermediate = model.config.hidden_size, model.config.intermediate_size
    peaks = {"float32": matmul_peak(torch.float32, hidden, intermediate),
             "bf16": matmul_peak(torch.bfloat16, hidden, intermediate)}  # fmt: skip

    def config(batch_size: int, precision: str = "model") -> SamplingConfig:
        return SamplingConfig(num_samples=args.k, max_new_tokens=args.max_new_tokens, temperature=0.7, top_p=0.9,
                              batch_size=batch_size, chunk_size=max(16, batch_size // args.k), precision=precision,
                              seed=0)  # fmt: skip

    sample_completions(model, tokenizer, prompts[:2], config(8), show_progress=False)  # warm-up
    results = []

    def row(name: str, dtype: str, batch_size: int, seconds: float, samples, rows_used) -> None:
        s = stats(judge, rows_used, samples, tokenizer)
        tps = s["tokens"] / seconds
        results.append({"sampler": name, "dtype": dtype, "batch_size": batch_size, "seconds": seconds,
                        "tokens_per_second": tps, "peak_share": tps * 2 * params / peaks[dtype], **s})  # fmt: skip
        print(json.dumps(results[-1]), flush=True)

    def timed(**kwargs):
        start = time.perf_counter()
        out = sample_completions(model, tokenizer, prompts, show_progress=False, **kwargs)
        return out, time.perf_counter() - start

    out, seconds = timed(config=config(args.batch_size), use_generate=True)
    row("generate, batched", "float32", args.batch_size, seconds, out, rows)
    # one at a time: the first prompts' K copies, each its own generate call (batch of one)
    count = math.ceil(args.sequential / args.k)
    start = time.perf_counter()
    alone = sample_completions(model, tokenizer, prompts[:count], config(1), show_progress=False, use_generate=True)
    row("generate, one at a time", "float32", 1, time.perf_counter() - start, alone, rows[:count])
    for precision, dtype in (("model", "float32"), ("bf16", "bf16")):
        for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
            out, seconds = timed(config=config(batch_size, precision))
            row("align", dtype, batch_size, seconds, out, rows)
    if args.compile:
        # dynamic shapes: the batch shrinks as rows finish and the KV cache grows every step
        batch_size = int(args.batch_sizes.split(",")[0])
        model.forward = torch.compile(model.forward, dynamic=True)
        for name in ("align, torch.compile, first call", "align, torch.compile"):
            out, seconds = timed(config=config(batch_size, "bf16"))
            row(name, "bf16", batch_size, seconds, out, rows)

    base = results[0]["tokens_per_second"]
    meta = {**vars(args), "parameters": params, "peak_flops": peaks, "threads": torch.get_num_threads(),
            "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}",
            "prompt_tokens_mean": sum(map(len, encode_prompts(tokenizer, prompts))) / len(prompts)}  # fmt: skip
    lines = [
        f"{args.model} ({params / 1e6:.0f} M parameters), {args.prompts} arithmetic prompts × K = {args.k}, "
        f"temperature 0.7, top-p 0.9, ≤ {args.max_new_tokens} new tokens; {meta['machine']}; matmul peak "
        f"{peaks['float32'] / 1e9:.0f} GFLOP/s float32, {peaks['bf16'] / 1e9:.0f} GFLOP/s bf16.",
        "",
        "| sampler | dtype | batch | tokens/s | × generate | % of peak | accuracy | mean length |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['sampler']} | {r['dtype']} | {r['batch_size']} | {r['tokens_per_second']:.0f} | "
            f"{r['tokens_per_second'] / base:.2f}× | {100 * r['peak_share']:.0f}% | "
            f"{r['accuracy']:.3f} ± {r['accuracy_se']:.3f} | {r['mean_length']:.1f} ± {r['mean_length_se']:.1f} |"
        )
    table = "\n".join(lines) + "\n"
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    out_path.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
