"""AlpacaEval 2.0, offline: a model's answers to the 805 instructions judged against GPT-4 Turbo's.

    python eval/alpaca_eval.py --model builtin:smollm2-135m-instruct --limit 50
    accelerate launch --num_processes 4 eval/alpaca_eval.py --model outputs/sppo-smollm2/iteration-02/model \\
        --judge openai_judge --judge_options '{"model": "gpt-4o-mini"}'
    python eval/alpaca_eval.py --model_outputs path/to/model_outputs.json --name my-model   # judge only

The model (``--model``: ``builtin:<name>``, a model folder, a LoRA adapter folder, or a hub id)
answers each instruction as a one-turn chat (greedy, ``--max_new_tokens`` 512 by default); under
``accelerate launch`` the instructions are sharded over the processes and a killed run resumes
from the answers cached in ``<output_dir>/generation``. The main process then judges every answer
against the reference output (``--reference``, default the shared GPT-4 Turbo outputs
``../shared/data/alpaca_eval/gpt4_1106_preview.model_outputs.json``, else the hub's
``tatsu-lab/alpaca_eval``) with ``--judge`` (any pairwise judge or reward model plug-in of
:mod:`align.rewards`, options as JSON in ``--judge_options``), the model's answer shown first or
second by a seeded coin flip, and writes to ``--output_dir`` (default ``outputs/alpaca_eval/<name>``):
``model_outputs.json``, ``annotations.json``, ``metrics.json``, ``leaderboard.csv`` and
``leaderboard.md`` (formulas: :mod:`align.evaluation.alpaca_eval`).

The default judge, ``lm_judge`` on SmolLM2-135M-Instruct, runs offline anywhere but is a weak
judge (near chance): use it to check the pipeline. For real numbers use ``openai_judge`` against
any OpenAI-compatible server, or a strong local model (``--judge_options '{"model": "<folder>",
"device": "cuda"}'``). The length-controlled win rate is a simplified offline version of the
official one (no instruction-difficulty term, no regularisation toward the gamed baselines, an
almost unpenalised fit instead of an L1-penalised cross-validated one): comparable in spirit, not
identical to the leaderboard. When the judge's verdicts leave the length model without a finite fit
(e.g. a judge that always prefers the longer answer) a warning says so and what was reported.

For official leaderboard numbers, hand the ``model_outputs.json`` written here (alpaca_eval's own
format) to the official command with its API-backed annotators (``pip install alpaca-eval``,
``OPENAI_API_KEY`` set; AlpacaEval 2.0's default annotator and reference are GPT-4 Turbo's):

    alpaca_eval --model_outputs outputs/alpaca_eval/<name>/model_outputs.json \\
        --annotators_config weighted_alpaca_eval_gpt4_turbo
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from align.evaluation.alpaca_eval import (
    evaluate_outputs,
    leaderboard_markdown,
    load_reference,
    read_model_outputs,
    reference_name,
    run_alpaca_eval,
)
from align.evaluation.common import DEFAULT_MODEL, distributed_accelerator, generator_name, load_eval_model
from align.rewards import load_reward, reward_kind

logger = logging.getLogger(__name__)

__all__ = ["main", "parse_args"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help="builtin:<name>, a model folder, a LoRA adapter folder or a hub id"
    )
    parser.add_argument(
        "--base_model", default=None, help="base model of a LoRA adapter (default: from adapter_config.json)"
    )
    parser.add_argument(
        "--name", default=None, help="generator name in result files (default: from --model or the outputs file)"
    )
    parser.add_argument("--model_outputs", default=None, help="judge this model_outputs.json instead of generating")
    parser.add_argument(
        "--reference", default=None, help="reference model_outputs.json (default: the shared GPT-4 Turbo outputs)"
    )
    parser.add_argument("--judge", default="lm_judge", help="a pairwise judge or reward model plug-in (align.rewards)")
    parser.add_argument(
        "--judge_options", default="{}", help='the judge\'s options as JSON, e.g. \'{"model": "gpt-4o-mini"}\''
    )
    parser.add_argument("--limit", type=int, default=None, help="only the first N instructions")
    parser.add_argument("--max_new_tokens", type=int, default=512)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--top_p", type=float, default=1.0)
    parser.add_argument("--batch_size", type=int, default=8, help="sequences per generate call")
    parser.add_argument("--dtype", default="float32", help="the evaluated model's dtype (float32, bfloat16, float16)")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of sampling and of the order the judge sees the outputs in"
    )
    parser.add_argument("--output_dir", type=Path, default=None, help="default: outputs/alpaca_eval/<name>")
    args = parser.parse_args(argv)
    try:
        args.judge_options = json.loads(args.judge_options)
    except json.JSONDecodeError as err:
        parser.error(f"--judge_options is not valid JSON: {err}")
    if not isinstance(args.judge_options, dict):
        parser.error("--judge_options must be a JSON object")
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    if args.max_new_tokens < 1 or args.batch_size < 1 or args.temperature < 0 or not 0 < args.top_p <= 1:
        parser.error("need --max_new_tokens >= 1, --batch_size >= 1, --temperature >= 0 and 0 < --top_p <= 1")
    if args.model_outputs is not None and not Path(args.model_outputs).is_file():
        parser.error(f"--model_outputs {args.model_outputs}: no such file")
    return args


def _outputs_name(rows: list[dict], path: str) -> str:
    names = {row.get("generator") for row in rows}
    if len(names) == 1 and isinstance(next(iter(names)), str) and next(iter(names)):
        return next(iter(names))
    return Path(path).resolve().parent.name or "model"


def _build_judge(args: argparse.Namespace):
    judge = load_reward(args.judge, **args.judge_options)
    if reward_kind(judge) not in ("pairwise", "reward"):
        raise SystemExit(
            f"--judge {args.judge}: a {reward_kind(judge)} cannot judge AlpacaEval; use a pairwise judge or a reward model"
        )
    return judge


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    command = shlex.join(
        [sys.argv[0] if argv is None else "eval/alpaca_eval.py", *(sys.argv[1:] if argv is None else argv)]
    )

    reference_rows, source = load_reference(args.reference)  # a bad file fails before any model loads
    if args.model_outputs is not None:  # judge a given file: one process, no model
        model_rows = read_model_outputs(args.model_outputs)
        model_rows = model_rows[: args.limit] if args.limit is not None else model_rows
        name = args.name or _outputs_name(model_rows, args.model_outputs)
        output_dir = args.output_dir or ROOT / "outputs" / "alpaca_eval" / name
        model_rows = [{**row, "generator": name} for row in model_rows]
        metrics = evaluate_outputs(
            model_rows, reference_rows, _build_judge(args), output_dir=output_dir, name=name,
            reference=reference_name(reference_rows, source), seed=args.seed, source=str(args.model_outputs),
            extra={"reference_file": source, "model_outputs_file": str(args.model_outputs), "limit": args.limit, "command": command},
        )  # fmt: skip
    else:
        from align.generation import SamplingConfig

        accelerator = distributed_accelerator()
        main_process = accelerator is None or accelerator.is_main_process
        name = args.name or generator_name(args.model)
        output_dir = args.output_dir or ROOT / "outputs" / "alpaca_eval" / name
        judge = _build_judge(args) if main_process else None  # only the main process judges
        model, tokenizer = load_eval_model(args.model, base_model=args.base_model, dtype=args.dtype)
        sampling = SamplingConfig(
            num_samples=1, max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
            seed=args.seed, batch_size=args.batch_size, chunk_size=16,
        )  # fmt: skip
        metrics = run_alpaca_eval(
            model, tokenizer, judge=judge, output_dir=output_dir, limit=args.limit, reference=args.reference,
            sampling=sampling, accelerator=accelerator, name=name, seed=args.seed,
            cache_key={"model": args.model, "base_model": args.base_model, "dtype": args.dtype},
            extra={"command": command}, broadcast=False,
        )  # fmt: skip
        if metrics is None:  # not the main process
            return 0
    print(leaderboard_markdown(metrics), end="")
    print(f"wrote {', '.join(metrics['files'].values())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
