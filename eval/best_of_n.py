"""Best-of-N with a process reward model: accuracy against N for each selection rule, step-error detection.

    python eval/best_of_n.py --prm implicit_prm:outputs/implicit-prm/model --num_problems 32 --n 1,4,16
    python eval/best_of_n.py --generator outputs/rpo-smollm2 --prm implicit_prm:<path> --prompts builtin:gsm8k \\
        --max_new_tokens 256 --step_checker none
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 eval/best_of_n.py --prm implicit_prm:<path>

The generator (``--generator``: ``builtin:<name>``, default SmolLM2-135M-Instruct, a model folder, a
LoRA adapter folder or a hub id) samples ``--num_samples`` M (default the largest N) solutions per
problem of ``--prompts`` (any prompt rows with an ``answer`` or ``solution``: ``builtin:multistep``,
the default, ``builtin:arithmetic``, ``builtin:gsm8k``, a JSONL/JSON/Parquet file or a hub id;
``--split``, the first ``--num_problems``) at temperature 0.7, top-p 0.9 by default; under
``accelerate launch`` the problems are sharded over the processes. The main process then verifies
them (``--verifier``, default ``gsm8k_verifier``: the number after ``####``), scores them with the
process reward model (``--prm``, any plug-in with ``score_steps``, options as JSON in
``--prm_options``) and, on a task with a step checker (``--step_checker auto``: the multistep task's
``check_solution`` for ``builtin:multistep``; or ``package.module:function``; or ``none``), checks
every step of every solution. It prints the best-of-N table (accuracy at each N of the PRM's
aggregations min / sum / mean / min Q, the outcome reward, the PRM-weighted vote, majority vote,
random and oracle) and the step-error table, and writes to ``--output_dir`` (default
``outputs/best_of_n/<generator name>``) ``samples.jsonl``, ``scores.jsonl``, ``step_checks.jsonl``,
``best_of_n.{json,md,png}`` and ``step_errors.{json,md}``. Finished chunks of samples
(``generation/``) and of step scores (``scoring/``) are kept: re-running the command samples and
scores only what is missing. Rules and formulas: :mod:`align.evaluation.best_of_n`.

Step-error detection needs the PRM to split a solution into the same steps as the checker (solutions
split otherwise are counted, reported and left out): for ``implicit_prm`` on ``builtin:multistep``
pass ``--prm_options '{"split": "newline", "final_answer": "####"}'``, the task's one-equation-a-line
rule.
"""

from __future__ import annotations

import argparse
import codecs
import functools
import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from align.evaluation.best_of_n import BestOfNConfig, best_of_n_markdown, run_best_of_n, step_errors_markdown
from align.evaluation.common import DEFAULT_MODEL, distributed_accelerator, generator_name, load_eval_model
from align.rewards import check_reward_spec, load_reward, reward_options

__all__ = ["main", "parse_args"]

# The step checker that --step_checker auto picks for a built-in task.
AUTO_CHECKERS = {"builtin:multistep": "align.data.multistep:check_solution"}


def _n_values(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers joined by commas (1,4,16), got {text!r}") from None
    if any(n < 1 for n in values):
        raise argparse.ArgumentTypeError(f"every N must be at least 1, got {text!r}")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--generator", default=DEFAULT_MODEL, help="builtin:<name>, model folder, LoRA adapter folder or hub id"
    )
    parser.add_argument(
        "--base_model", default=None, help="base model of a LoRA adapter (default: from adapter_config.json)"
    )
    parser.add_argument("--name", default=None, help="the generator's name in results (default: from --generator)")
    parser.add_argument("--prm", required=True, help="a process reward model plug-in, e.g. implicit_prm:<path>")
    parser.add_argument("--prm_options", default="{}", help="the PRM's options as JSON")
    parser.add_argument("--verifier", default="gsm8k_verifier", help="the verifier plug-in that labels the samples")
    parser.add_argument("--verifier_options", default="{}", help="the verifier's options as JSON")
    parser.add_argument("--prompts", default="builtin:multistep", help="prompt rows with an answer or solution")
    parser.add_argument("--split", default="test")
    parser.add_argument("--num_problems", type=int, default=None, help="the first N problems (default: all)")
    parser.add_argument("--n", type=_n_values, default=(1, 4, 16), help="N values joined by commas (default 1,4,16)")
    parser.add_argument("--num_samples", type=int, default=None, help="M samples per problem (default: the largest N)")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top_p", type=float, default=0.9)
    parser.add_argument("--max_new_tokens", type=int, default=96)
    parser.add_argument("--batch_size", type=int, default=32, help="sequences per generate call")
    parser.add_argument("--score_chunk_size", type=int, default=8, help="problems per resumable scoring chunk")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="float32", help="the generator's dtype: float32, bfloat16 or float16")
    parser.add_argument(
        "--step_checker", default="auto", help="auto (the task's own), none, or package.module:function"
    )
    parser.add_argument(
        "--step_separator", default="\\n", help="the checker's step separator, backslash escapes read (default \\n)"
    )
    parser.add_argument("--output_dir", type=Path, default=None, help="default: outputs/best_of_n/<name>")
    args = parser.parse_args(argv)
    if args.num_problems is not None and args.num_problems < 1:
        parser.error(f"--num_problems must be at least 1, got {args.num_problems}")
    try:
        args.config = BestOfNConfig(
            n=args.n, num_samples=args.num_samples, temperature=args.temperature, top_p=args.top_p,
            max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, seed=args.seed,
            score_chunk_size=args.score_chunk_size,
        )  # fmt: skip
        args.prm_options = reward_options(args.prm_options, "prm_options")
        args.verifier_options = reward_options(args.verifier_options, "verifier_options")
        check_reward_spec(args.prm, **args.prm_options)
        check_reward_spec(args.verifier, **args.verifier_options)
        args.step_separator = codecs.decode(args.step_separator, "unicode_escape")
        if not args.step_separator:
            raise ValueError("--step_separator must not be empty")
    except (ValueError, TypeError, KeyError, ImportError, AttributeError) as err:
        parser.error(str(err).strip("'\""))
    return args


def step_checker(spec: str, prompts: str, separator: str):
    """The ``check(row, completion)`` that ``--step_checker`` names (with ``separator``), or None."""
    if spec == "auto":
        spec = AUTO_CHECKERS.get(prompts, "none")
    if spec == "none":
        return None
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"--step_checker {spec!r}: expected auto, none or package.module:function")
    try:
        function = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"--step_checker {spec!r}: {err}") from None
    return functools.partial(function, separator=separator)


def load_problems(source: str, split: str, limit: int | None) -> list[dict]:
    """The first ``limit`` rows of ``source`` [``split``], as align reads any prompt source."""
    from align.data import read_rows

    rows = [row for _, part in read_rows(source, split) for row in part]
    return rows[:limit] if limit is not None else rows


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(argv)
    name = args.name or generator_name(args.generator)
    output_dir = args.output_dir or ROOT / "outputs" / "best_of_n" / name
    try:  # everything that can be checked before a model loads
        checker = step_checker(args.step_checker, args.prompts, args.step_separator)
        rows = load_problems(args.prompts, args.split, args.num_problems)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    accelerator = distributed_accelerator()
    main_process = accelerator is None or accelerator.is_main_process
    # only the main process verifies and scores
    prm = load_reward(args.prm, **args.prm_options) if main_process else None
    verifier = load_reward(args.verifier, **args.verifier_options) if main_process else None
    model, tokenizer = load_eval_model(args.generator, base_model=args.base_model, dtype=args.dtype)
    result = run_best_of_n(
        model, tokenizer, rows, prm=prm, verifier=verifier, output_dir=output_dir, config=args.config,
        accelerator=accelerator, prm_key={"spec": args.prm, "options": args.prm_options}, step_checker=checker,
        cache_key={"model": args.generator, "base_model": args.base_model, "dtype": args.dtype},
        source=f"{args.prompts} [{args.split}]",
    )  # fmt: skip
    if result is None:  # not the main process
        return None
    print(best_of_n_markdown(result["best_of_n"]))
    errors = result["step_errors"]
    if errors is not None:
        print(step_errors_markdown(errors))
        if errors["mismatched"]:
            print(
                f"warning: the PRM split {errors['mismatched']} of {errors['solutions']} wrong solutions into other "
                "steps than the checker, so they were left out; make them split alike (implicit_prm on "
                """builtin:multistep: --prm_options '{"split": "newline", "final_answer": "####"}')""",
                file=sys.stderr,
            )
    print(f"wrote {', '.join(result['files'].values())}")
    return result


if __name__ == "__main__":
    main()
