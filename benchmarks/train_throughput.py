"""Training throughput and memory: align's trainers against TRL's DPOTrainer on the same tokens.

    python benchmarks/train_throughput.py                       # ~43M Llama-shaped model, CPU, ~13 min
    python benchmarks/train_throughput.py --shape lists --variants separate,lora    # HAEPO, lists of K = 4
    python benchmarks/train_throughput.py --shape singles --variants separate,lora  # SAFE-ALIGN, singles
    python benchmarks/train_throughput.py --model smollm2 --data gsm8k --variants lora --autocast
    python benchmarks/train_throughput.py --model qwen0.5b --dtype bf16 --max_length 1024   # on a GPU

``--shape`` is what align trains on: ``pairs`` (RPOTrainer with α = 0, i.e. DPO), ``lists`` (the
HAEPOTrainer on lists of K = 4 completions of a prompt, with its KL to the reference) or
``singles`` (the SafeAlignTrainer on labelled single completions, no reference). TRL's peer is
DPOTrainer on the same tokens arranged as pairs: a list of 4 as 2 pairs of its prompt, 2 singles
of a prompt as 1 pair; each step trains the same sequences in both. ``--autocast`` trains both
under bf16 autocast (``--bf16``, the recipes' setting) with fp32 weights; its peak is the bf16 one.

Both trainers get the same randomly initialised model (seeded), the same preference pairs, the
same batch size, optimizer and steps. Each trial runs in a fresh subprocess (so peak memory is
its own), alternating ours/TRL after one warm-up trial each; each trial times the steps after
its own warm-up steps. Reported: medians over trials of trained tokens/s (prompt + completion
tokens of every sequence trained, padding excluded; a prompt counts once per completion also
where align packs it once for all of them), seconds/step and peak
resident memory, the ratios ours/TRL, and the achieved FLOP/s as a fraction of this machine's
measured matmul throughput on the model's GEMM shapes.

Useful FLOPs, the same count for both trainers: per trained token 6·N_body for the policy
(forward + backward; LoRA: 4·N_body, no weight gradients) and 2·N_body for a reference forward
(0 when precomputed); the LM head (N_head = d·V) the same way but only per completion token,
the only positions whose logits the loss needs; plus causal attention, 2·L·d·s per token
forward (×3 with backward) in a sequence of s tokens. N_body counts the non-embedding
parameters of the decoder layers. align's shared prompts (one copy of a prompt for its K
completions) run fewer FLOPs than this count: its share of the peak is useful work per second,
comparable with TRL's, and can exceed what its matmuls reach.

Writes ``benchmarks/results/train_throughput.{json,md}`` (``--out``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    # ~43M parameters, Llama-shaped, SmolLM2's vocabulary (the default)
    "llama40m": dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=4),
    "smollm2": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3),
    "qwen0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2, vocab_size=151936),
}  # fmt: skip
VARIANTS = ("separate", "precomputed", "lora")
DATA_NAMES = {"long_tailed": "long-tailed lengths", "gsm8k": "GSM8K pairs"}
SHAPE_NAMES = {"pairs": "pairs (RPOTrainer, α = 0)", "lists": "lists of 4 (HAEPOTrainer)",
               "singles": "labelled singles (SafeAlignTrainer)"}  # fmt: skip


# -- data ----------------------------------------------------------------------------------------------


def word_vocabulary(tokenizer, size: int = 4000) -> list[str]:
    """Words that are single tokens with a leading space (byte-level BPE 'Ġword'), so text built
    from them tokenizes to exactly one token per word whether prompt and completion are
    tokenized together (TRL) or apart (align): both trainers then see identical token ids."""
    words = []
    for token, _ in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1]):
        if token.startswith("Ġ") and token[1:].isalpha() and len(token) > 2:
            word = " " + token[1:]
            if tokenizer(word, add_special_tokens=False)["input_ids"] == [tokenizer.convert_tokens_to_ids(token)]:
                words.append(word)
        if len(words) >= size:
            break
    return words


def long_tailed_pairs(tokenizer, n: int, seed: int, max_length: int, k: int = 2) -> list[dict]:
    """Pairs (``k`` = 2; else groups ``{"prompt", "completions"}`` of ``k``) with log-normal prompt
    and completion lengths (medians 48 and 96 tokens, long right tails), clipped so every
    sequence fits max_length."""
    import numpy as np

    rng = np.random.default_rng(seed)
    words = word_vocabulary(tokenizer)

    def text(length):
        return "".join(rng.choice(words, size=int(length)))

    rows = []
    for _ in range(n):
        prompt = int(np.clip(rng.lognormal(np.log(48), 0.7), 4, max_length // 3))
        room = max_length - prompt - 1  # one token for the eos both trainers append
        lengths = [int(np.clip(rng.lognormal(np.log(96), 0.8), 2, room)) for _ in range(k)]
        if k == 2:
            rows.append({"prompt": text(prompt), "chosen": text(lengths[0]), "rejected": text(lengths[1])})
        else:
            rows.append({"prompt": text(prompt), "completions": [text(length) for length in lengths]})
    return rows


def shaped_rows(args, tokenizer, steps: int) -> tuple[list[dict], list[dict]]:
    """(align's rows, TRL's pairs) holding the same sequences, ``args.batch_size`` pairs' worth a step."""
    if args.data == "gsm8k":
        from align.data.gsm8k import LOCAL_GSM8K_TRAIN, gsm8k_pairs, load_gsm8k

        pairs, _ = gsm8k_pairs(load_gsm8k(LOCAL_GSM8K_TRAIN), num_examples=steps * args.batch_size, seed=args.seed)
        return pairs, pairs
    if args.shape == "pairs":
        pairs = long_tailed_pairs(tokenizer, steps * args.batch_size, args.seed, args.max_length)
        return pairs, pairs
    if args.shape == "lists":
        groups = long_tailed_pairs(tokenizer, steps * max(1, args.batch_size // 2), args.seed, args.max_length, k=4)
        lists = [{**g, "returns": [1.0, 0.0, 0.5, 0.25]} for g in groups]
        pairs = [{"prompt": g["prompt"], "chosen": g["completions"][i], "rejected": g["completions"][i + 1]}
                 for g in groups for i in (0, 2)]  # fmt: skip
        return lists, pairs
    pairs = long_tailed_pairs(tokenizer, steps * args.batch_size, args.seed, args.max_length)
    singles = [{"prompt": p["prompt"], "completion": p[key], "label": label}
               for p in pairs for key, label in (("chosen", 1), ("rejected", 0))]  # fmt: skip
    return singles, pairs


# -- one trial (runs in its own process) -----------------------------------------------------------------


def flops_per_token(config, lora: bool, reference: bool) -> tuple[float, float]:
    """(FLOPs per trained token in the decoder layers, FLOPs per completion token in the LM head)."""
    h, layers = config.hidden_size, config.num_hidden_layers
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    body = layers * (2 * h * h + 2 * h * kv + 3 * h * config.intermediate_size)
    head = h * config.vocab_size
    passes = (4 if lora else 6) + (2 if reference else 0)
    return passes * body, passes * head


def run_trial(args) -> dict:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, TrainerCallback

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    from align.models import resolve_model_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("builtin:smollm2-135m-instruct"))
    shape = dict(MODELS[args.model])
    shape.setdefault("vocab_size", len(tokenizer))
    config = LlamaConfig(**shape, max_position_embeddings=4096, tie_word_embeddings=True,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    model = LlamaForCausalLM(config)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    model.to(dtype)
    from datasets import Dataset

    steps = args.warmup_steps + args.steps
    align_rows, trl_rows = shaped_rows(args, tokenizer, steps)
    data = Dataset.from_list(align_rows if args.trainer == "align" else trl_rows)
    peft_config = None
    if args.variant == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    common = dict(
        output_dir=str(Path(args.tmp) / f"{args.trainer}"), per_device_train_batch_size=args.batch_size,
        max_steps=steps, learning_rate=1e-5, logging_steps=10**6, save_strategy="no", report_to="none",
        disable_tqdm=True, seed=args.seed, max_length=args.max_length, bf16=args.autocast,
        dataloader_num_workers=0, use_cpu=not torch.cuda.is_available(),
    )  # fmt: skip
    precompute = args.variant == "precomputed"
    # The same frozen copy for both trainers (TRL cannot rebuild one from a config-built model);
    # LoRA needs none (the adapter is disabled) and precomputing uses it once.
    # align on singles (SAFE-ALIGN) needs no reference; on lists (HAEPO) it has one for its KL
    reference = not precompute and not (args.trainer == "align" and args.shape == "singles")
    ref_model = None if args.variant == "lora" or not reference else copy.deepcopy(model)
    times, tokens, completions, attention = [], [], [], []
    layers, hidden = config.num_hidden_layers, config.hidden_size
    attention_passes = 3 + (1 if reference else 0)  # policy forward + backward (2×), reference forward

    class Timer(TrainerCallback):
        def on_step_begin(self, *_, **__):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.start = time.perf_counter()

        def on_step_end(self, *_, **__):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.start)

    def count(inputs):
        mask = inputs.get("attention_mask")
        if mask is not None:
            lengths = mask.sum(1)
        else:  # packed; a sequence that shares its prompt (starts at position P > 0) trains P more tokens
            seq_lens = inputs["seq_lens"]
            starts = torch.cumsum(seq_lens, 0) - seq_lens
            lengths = seq_lens + inputs["position_ids"][0, starts]
        tokens.append(int(lengths.sum()))
        completions.append(int(inputs["completion_mask"].sum()))
        # causal attention of a sequence of s tokens: QKᵀ and AV, s²·d multiply-adds each per layer
        attention.append(attention_passes * 2 * layers * hidden * float((lengths.double() ** 2).sum()))

    if args.trainer == "align":
        from align import trainers

        trainer_cls, config_cls, extra = {
            "pairs": (trainers.RPOTrainer, trainers.RPOConfig, {"alpha": 0.0, "beta": 0.1}),
            "lists": (trainers.HAEPOTrainer, trainers.HAEPOConfig, {}),
            "singles": (trainers.SafeAlignTrainer, trainers.SafeAlignConfig, {}),
        }[args.shape]
        # the same sequences per step as TRL's batch_size pairs: 2·batch_size singles, batch_size/2 lists of 4
        # (at least one: with --batch_size 1 a list of 4 against one pair)
        per_step = {"pairs": args.batch_size, "lists": max(1, args.batch_size // 2), "singles": 2 * args.batch_size}[args.shape]

        class Counting(trainer_cls):
            def training_step(self, model, inputs, *rest, **kw):
                count(inputs)
                return super().training_step(model, inputs, *rest, **kw)

        cfg = config_cls(**{**common, "per_device_train_batch_size": per_step}, **extra, padding_free=args.padding_free,
                         reference="precomputed" if precompute else "auto")  # fmt: skip
        trainer = Counting(model, cfg, data, None, tokenizer, ref_model=ref_model, peft_config=peft_config, callbacks=[Timer()])
    else:
        from trl import DPOConfig, DPOTrainer

        class Counting(DPOTrainer):
            def training_step(self, model, inputs, *rest, **kw):
                count(inputs)
                return super().training_step(model, inputs, *rest, **kw)

        cfg = DPOConfig(**common, beta=0.1, loss_type=["sigmoid"], precompute_ref_log_probs=precompute)
        trainer = Counting(model=model, ref_model=ref_model, args=cfg, train_dataset=data, processing_class=tokenizer,
                           peft_config=peft_config, callbacks=[Timer()])  # fmt: skip
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    trainer.train()
    measured_t, measured_tok = times[args.warmup_steps :], tokens[args.warmup_steps :]
    body, head = flops_per_token(config, lora=args.variant == "lora", reference=reference)
    warm = args.warmup_steps
    flops = body * sum(measured_tok) + head * sum(completions[warm:]) + sum(attention[warm:])
    peak_gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {
        "trainer": args.trainer,
        "variant": args.variant,
        "seconds_per_step": statistics.median(measured_t),
        "tokens_per_second": sum(measured_tok) / sum(measured_t),
        "tokens_per_step": statistics.mean(measured_tok),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_train_mib": rss_before / 1024,
        "peak_gpu_mib": peak_gpu,
        "completion_tokens_per_step": statistics.mean(completions[warm:]),
        "flops_per_second": flops / sum(measured_t),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


# -- machine limit -----------------------------------------------------------------------------------


def matmul_peak(model: str, dtype: str, tokens: int = 2048, repeats: int = 20) -> dict:
    """FLOP/s of this machine's matmul on the model's GEMM shapes (tokens × in × out)."""
    import torch

    shape = MODELS[model]
    h, inter, vocab = shape["hidden_size"], shape["intermediate_size"], shape.get("vocab_size", 49152)
    dt = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    results, total_flops, total_time = {}, 0.0, 0.0
    for name, (k, n) in {"attn": (h, h), "mlp": (h, inter), "lm_head": (h, vocab)}.items():
        a = torch.randn(tokens, k, dtype=dt, device=device)
        b = torch.randn(k, n, dtype=dt, device=device)
        a @ b
        best = float("inf")
        for _ in range(repeats):
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            a @ b
            if device == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
        flops = 2 * tokens * k * n
        results[name] = flops / best
        # weight each shape by its share of a layer's FLOPs (the attention projections count 4×)
        weight = {"attn": 4 * shape["num_hidden_layers"], "mlp": 3 * shape["num_hidden_layers"], "lm_head": 1}[name]
        total_flops += weight * flops
        total_time += weight * best
    results["model_mix"] = total_flops / total_time
    return results


# -- driver ----------------------------------------------------------------------------------------------


def trial(args, trainer: str, variant: str) -> dict:
    cmd = [sys.executable, __file__, "--trial", "--trainer", trainer, "--variant", variant]
    for key in ("model", "data", "shape", "dtype", "batch_size", "max_length", "steps", "warmup_steps", "seed", "threads",
                "tmp"):  # fmt: skip
        value = getattr(args, key)
        if value is not None:
            cmd += [f"--{key}", str(value)]
    if not args.padding_free:
        cmd.append("--padded")
    if args.autocast:
        cmd.append("--autocast")
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if out.returncode != 0:
        raise RuntimeError(f"trial {trainer}/{variant} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def summarize(trials: list[dict], peak: dict) -> list[dict]:
    rows = []
    for variant in dict.fromkeys(t["variant"] for t in trials):
        med = {}
        for trainer in ("align", "trl"):
            mine = [t for t in trials if t["variant"] == variant and t["trainer"] == trainer]
            keys = ("tokens_per_second", "seconds_per_step", "peak_rss_mib", "flops_per_second")
            med[trainer] = {k: statistics.median(t[k] for t in mine) for k in keys}
            med[trainer]["mfu"] = med[trainer]["flops_per_second"] / peak["model_mix"]
        rows.append({
            "variant": variant,
            **{f"{tr}_{k}": v for tr in med for k, v in med[tr].items()},
            "speed_ratio": med["align"]["tokens_per_second"] / med["trl"]["tokens_per_second"],
            "memory_ratio": med["align"]["peak_rss_mib"] / med["trl"]["peak_rss_mib"],
        })  # fmt: skip
    return rows


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        f"Model `{meta['model']}` ({meta['parameters'] / 1e6:.1f}M parameters, {meta['dtype']}"
        f"{', bf16 autocast' if meta.get('autocast') else ''}), align trains {SHAPE_NAMES[meta.get('shape', 'pairs')]}, "
        f"TRL the same sequences as pairs, batch {meta['batch_size']} pairs' worth, {DATA_NAMES[meta['data']]} (max {meta['max_length']}), {meta['steps']} timed steps after {meta['warmup_steps']} "
        f"warm-up, median of {meta['reps']} alternating trials; {meta['machine']}; matmul peak on the model's GEMM mix "
        f"{meta['matmul_peak']['model_mix'] / 1e9:.0f} GFLOP/s.",
        "",
        "| reference | align tokens/s | TRL tokens/s | speed ×TRL | align s/step | TRL s/step | align peak RSS MiB | TRL peak RSS MiB | memory ×TRL | align % of matmul peak | TRL % of matmul peak |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['align_tokens_per_second']:.0f} | {r['trl_tokens_per_second']:.0f} | {r['speed_ratio']:.2f} | "
            f"{r['align_seconds_per_step']:.2f} | {r['trl_seconds_per_step']:.2f} | {r['align_peak_rss_mib']:.0f} | "
            f"{r['trl_peak_rss_mib']:.0f} | {r['memory_ratio']:.2f} | {100 * r['align_mfu']:.0f}% | {100 * r['trl_mfu']:.0f}% |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODELS), default="llama40m")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--data", choices=["long_tailed", "gsm8k"], default="long_tailed",
                        help="long-tailed synthetic lengths, or GSM8K pairs (chat template; ../shared/data or the hub)")
    parser.add_argument("--shape", choices=sorted(SHAPE_NAMES), default="pairs",
                        help="what align trains on (TRL trains the same sequences as pairs)")
    parser.add_argument("--autocast", action="store_true", help="train both under bf16 autocast (--bf16)")
    parser.add_argument("--batch_size", type=int, default=4, help="pairs per step (or the same sequences)")
    parser.add_argument("--max_length", type=int, default=512)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per trial")
    parser.add_argument("--warmup_steps", type=int, default=2)
    parser.add_argument("--reps", type=int, default=2, help="timed trials per trainer and variant")
    parser.add_argument("--peak_repeats", type=int, default=20, help="timed matmuls per GEMM shape for the matmul peak")
    parser.add_argument("--warmup_trials", type=int, default=0,
                        help="untimed rounds first (each trial already warms up for --warmup_steps)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--padded", dest="padding_free", action="store_false", help="align: padded layout")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train_throughput"))
    parser.add_argument("--tmp", default="/tmp/align-bench")
    parser.add_argument("--trial", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--trainer", choices=["align", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.trial and args.shape != "pairs" and (args.data != "long_tailed" or "precomputed" in args.variants.split(",")):
        parser.error("--shape lists/singles: long-tailed data and the separate or lora variants only")
    if args.trial:
        print(json.dumps(run_trial(args)))
        return

    peak_dtype = "bf16" if args.autocast else args.dtype
    peak = matmul_peak(args.model, peak_dtype, repeats=args.peak_repeats)
    trials = []
    for variant in args.variants.split(","):
        for rep in range(args.warmup_trials + args.reps):  # warm-up rounds are run, printed, not counted
            for trainer in ("align", "trl"):
                result = trial(args, trainer, variant)
                print(f"{variant:11s} {trainer:5s} rep {rep}: {result['tokens_per_second']:.0f} tok/s, "
                      f"{result['seconds_per_step']:.2f} s/step, {result['peak_rss_mib']:.0f} MiB", flush=True)  # fmt: skip
                if rep >= args.warmup_trials:
                    trials.append(result)
    # The machine's limit is the best throughput observed: measure again after the trials (a
    # background process during the first measurement would otherwise inflate every percentage).
    after = matmul_peak(args.model, peak_dtype, repeats=args.peak_repeats)
    if after["model_mix"] > peak["model_mix"]:
        peak = after
    import torch

    machine = f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}"
    if torch.cuda.is_available():
        machine = torch.cuda.get_device_name()
    meta = {**{k: getattr(args, k) for k in ("model", "data", "shape", "autocast", "dtype", "batch_size", "max_length", "steps",
                                             "warmup_steps", "reps")},
            "parameters": trials[0]["parameters"], "machine": machine, "matmul_peak": peak,
            "padding_free": args.padding_free, "command": " ".join(sys.argv)}  # fmt: skip
    rows = summarize(trials, peak)
    table = markdown(rows, meta)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows, "trials": trials}, indent=2))
    out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
