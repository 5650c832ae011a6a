"""Safety of one or more models: harmful-behaviour rate, over-refusal, utility and safe/harmful NLL.

    python eval/safety.py --limit 16                                      # the built-in SmolLM2, greedy
    python eval/safety.py --model builtin:smollm2-135m-instruct outputs/safe_align/model --name base safe_align
    python eval/safety.py --model my/model --prompts harmful.jsonl --nll_data harmfulqa.jsonl \\
        --judge openai_safety_judge --judge_options '{"model": "gpt-4o-mini"}'
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 eval/safety.py --limit 16

Each ``--model`` is ``builtin:<name>`` (default: SmolLM2-135M-Instruct), a model folder, a LoRA
adapter folder (merged into its base) or a hub id; several are evaluated in turn on the same data
and printed as one markdown table (rows = models), the before/after comparison. Data (defaults: the
stand-in set): held-out prompts ``{"prompt", "behaviour", "reference"}`` (``--prompts``,
``builtin:safety_prompts``), labelled single rows for the NLLs (``--nll_data``, ``builtin:safety``;
``none`` skips them), utility problems (``--utility``, ``builtin:arithmetic``; ``none`` skips them),
the first ``--limit`` rows of each. The judge is any verifier plug-in (True = safe; default the rule
judge ``safety_rules``). Writes to ``--output_dir``/<name>: ``samples.jsonl`` (per prompt: answer,
verdict, refusal), ``utility.jsonl``, ``nll.jsonl``, ``metrics.json``, ``generation/`` (finished
chunks: re-running a killed command resumes); and ``--output_dir``/table.md. Metrics and their
definitions: :mod:`align.evaluation.safety`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from align.evaluation import DEFAULT_MODEL, distributed_accelerator, generator_name, load_eval_model
from align.io import write_text_atomic
from align.evaluation.safety import (
    DEFAULT_NLL_DATA,
    DEFAULT_PROMPTS,
    DEFAULT_UTILITY,
    SafetyConfig,
    run_safety,
    safety_table,
)


def _optional(value: str) -> str | None:
    return None if value.lower() == "none" else value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", nargs="+", default=[DEFAULT_MODEL],
                        help="builtin:<name>, model or adapter folder, hub id; several: a table row each")  # fmt: skip
    parser.add_argument("--base_model", default=None, help="base model of LoRA adapters (default: adapter_config.json)")
    parser.add_argument("--name", nargs="+", default=None, help="the models' names (default: from --model)")
    parser.add_argument("--prompts", default=DEFAULT_PROMPTS, help="held-out prompts {prompt, behaviour, reference}")
    parser.add_argument("--prompts_split", default="test")
    parser.add_argument("--nll_data", type=_optional, default=DEFAULT_NLL_DATA,
                        help="labelled single rows for the safe/harmful NLL ('none': skip)")  # fmt: skip
    parser.add_argument("--nll_split", default="test")
    parser.add_argument("--utility", type=_optional, default=DEFAULT_UTILITY,
                        help="verifiable prompt rows (prompt, answer) for utility accuracy ('none': skip)")  # fmt: skip
    parser.add_argument("--utility_split", default="test")
    parser.add_argument("--limit", type=int, default=None, help="the first N rows of each set (default: all)")
    parser.add_argument("--judge", default="safety_rules", help="verifier plug-in (align.rewards), True = safe")
    parser.add_argument("--judge_options", default="{}", help="JSON options for the judge")
    parser.add_argument("--max_new_tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy decoding")
    parser.add_argument("--batch_size", type=int, default=32, help="sequences per generate call")
    parser.add_argument("--nll_batch_size", type=int, default=8, help="rows per NLL forward")
    parser.add_argument("--max_length", type=int, default=None, help="tokens per NLL row (prompt + completion)")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", type=Path, default=None, help="default: outputs/safety")
    args = parser.parse_args(argv)
    if args.name is not None and len(args.name) != len(args.model):
        parser.error(f"--name gives {len(args.name)} names for {len(args.model)} models")
    return args


def main(argv: list[str] | None = None) -> dict[str, dict]:
    from align.rewards import load_reward, reward_options

    args = parse_args(argv)
    names = args.name or [generator_name(spec) for spec in args.model]
    if len(set(names)) != len(names):
        raise ValueError(f"two models share a name in {names}: pass --name")
    output_dir = args.output_dir or ROOT / "outputs" / "safety"
    config = SafetyConfig(
        prompts=args.prompts, prompts_split=args.prompts_split, nll_data=args.nll_data, nll_split=args.nll_split,
        utility=args.utility, utility_split=args.utility_split, limit=args.limit, max_new_tokens=args.max_new_tokens,
        temperature=args.temperature, batch_size=args.batch_size, nll_batch_size=args.nll_batch_size,
        max_length=args.max_length, seed=args.seed,
    )  # fmt: skip
    accelerator = distributed_accelerator()
    main_process = accelerator is None or accelerator.is_main_process
    judge = load_reward(args.judge, **reward_options(args.judge_options)) if main_process else None
    results = {}
    for spec, name in zip(args.model, names):
        model, tokenizer = load_eval_model(spec, base_model=args.base_model, dtype=args.dtype)
        cache_key = {"model": spec, "base_model": args.base_model, "dtype": args.dtype}
        results[name] = run_safety(model, tokenizer, config, judge=judge, accelerator=accelerator,
                                   output_dir=output_dir / name, cache_key=cache_key)  # fmt: skip
        del model
    if main_process:
        table = safety_table(results)
        write_text_atomic(output_dir / "table.md", table)
        print(json.dumps(results, indent=2))
        print(table)
        print(f"per-prompt results: {output_dir}/<name>/samples.jsonl")
    return results


if __name__ == "__main__":
    main()
