"""GSM8K accuracy of a model: zero-shot chain of thought (default) or lm-eval's few-shot prompt.

    python eval/gsm8k.py --limit 50                                   # the built-in SmolLM2, greedy
    python eval/gsm8k.py --model outputs/rpo-smollm2 --limit 200 --num_fewshot 5
    python eval/gsm8k.py --model runs/sppo/iteration-02/model --num_samples 8 --temperature 0.7 --pass_k 1 4 8
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 eval/gsm8k.py --limit 50
    accelerate launch --num_processes 8 eval/gsm8k.py --model my/hub-model --dtype bfloat16   # GPUs

The model is ``builtin:<name>`` (default: SmolLM2-135M-Instruct, converted from the GGUF shipped on
PyPI), a model folder, a LoRA adapter folder (merged into its base) or a hub id. The problems come
from ``../shared/data/gsm8k`` when present, else the hub's ``openai/gsm8k``. Under ``accelerate
launch`` the problems are sharded across the processes. Writes to ``--output_dir``:
``samples.jsonl`` (per problem: prompt, outputs, gold answer, and per metric the extractions and
verdicts), ``metrics.json`` and ``generation/`` (finished chunks: re-running a killed command
resumes). Metrics: ``strict-match`` and ``flexible-extract`` exactly as lm-evaluation-harness's
``gsm8k`` task computes them, ``verifier`` (align's GSM8K verifier: a lenient ``####`` reading, then
math-verify), ``maj@n`` and ``pass@k`` (from the verifier). Prompts, extraction and metrics:
:mod:`align.evaluation.gsm8k`.
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
from align.evaluation.gsm8k import GSM8KConfig, run_gsm8k


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help="builtin:<name>, model folder, LoRA adapter folder or hub id"
    )
    parser.add_argument(
        "--base_model", default=None, help="base model of a LoRA adapter (default: from adapter_config.json)"
    )
    parser.add_argument("--name", default=None, help="the model's name in the results (default: from --model)")
    parser.add_argument("--limit", type=int, default=None, help="the first N test problems (default: all 1,319)")
    parser.add_argument("--split", default="test", choices=("test", "train"))
    parser.add_argument("--data_file", default=None, help="a GSM8K-format JSONL file instead of the split")
    parser.add_argument(
        "--num_fewshot", type=int, default=0, help="0: zero-shot chain of thought; N: lm-eval's prompt with N exemplars"
    )
    parser.add_argument(
        "--num_samples", type=int, default=1, help="samples per problem (maj@n, pass@k); >1 needs --temperature > 0"
    )
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy decoding")
    parser.add_argument("--top_p", type=float, default=1.0)
    parser.add_argument(
        "--pass_k", type=int, nargs="+", default=None, help="k values of pass@k (default: 1 and num_samples)"
    )
    parser.add_argument("--max_new_tokens", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=32, help="sequences per generate call")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", type=Path, default=None, help="default: outputs/gsm8k/<name>")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    name = args.name or generator_name(args.model)
    output_dir = args.output_dir or ROOT / "outputs" / "gsm8k" / name
    pass_k = tuple(sorted(set(args.pass_k or (1, args.num_samples))))
    config = GSM8KConfig(
        limit=args.limit, num_fewshot=args.num_fewshot, num_samples=args.num_samples, temperature=args.temperature,
        top_p=args.top_p, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, seed=args.seed,
        pass_k=pass_k, split=args.split, data_file=args.data_file,
    )  # fmt: skip
    accelerator = distributed_accelerator()
    model, tokenizer = load_eval_model(args.model, base_model=args.base_model, dtype=args.dtype)
    cache_key = {"model": args.model, "base_model": args.base_model, "dtype": args.dtype}
    metrics = run_gsm8k(model, tokenizer, config, output_dir=output_dir, accelerator=accelerator, cache_key=cache_key)
    if accelerator is None or accelerator.is_main_process:
        print(json.dumps({"model": name, **metrics}, indent=2))
        print(f"per-problem results: {Path(output_dir) / 'samples.jsonl'}")
    return metrics


if __name__ == "__main__":
    main()
