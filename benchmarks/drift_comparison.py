"""Likelihood drift of DPO, RPO (α = 1) and SPPO-hard on the same SmolLM2 pairs, and the drift
probes' cost on training time.

    python benchmarks/drift_comparison.py                  # ~15 min on 2 CPU cores
    python benchmarks/drift_comparison.py --max_steps 32 --methods dpo,rpo

Each method is the RPO recipe (recipes/rpo.py: SmolLM2-135M-Instruct + LoRA, GSM8K pairs, its
YAML defaults) with only the objective changed: ``--alpha 0`` (DPO), ``--alpha 1`` (RPO),
``--objective sppo_hard``; all with β = 0.1, the same seed, pairs and probe pairs (the recipe's
held-out eval pairs), probed every ``--drift_eval_steps`` (4) for the curves. The overhead is
measured on the first method by two more runs back to back at the recipe's own probe interval
(its eval_steps), with the probes and with ``--drift false``: the ratio of their train_runtime.

Writes ``benchmarks/results/drift_comparison.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METHODS = {
    "dpo": ("DPO", ["--alpha", "0"]),
    "rpo": ("RPO (α=1)", ["--alpha", "1"]),
    "sppo_hard": ("SPPO-hard", ["--objective", "sppo_hard"]),
}
COLUMNS = (
    ("chosen_change_per_token", "Δ chosen logp/tok"),
    ("rejected_change_per_token", "Δ rejected logp/tok"),
    ("margin_change", "Δ margin"),
    ("displacement_rate", "displaced"),
    ("topk_entropy", "top-k entropy"),
    ("topk_mass", "top-k mass"),
    ("ches_corr", "corr(CHES, Δ chosen)"),
    ("grad_cosine", "grad cosine"),
)


def run_recipe(output_dir: Path, extra: list[str], args, *, drift_eval_steps: int | None = None) -> dict:
    if args.reuse and (output_dir / "train_results.json").exists():
        return json.loads((output_dir / "train_results.json").read_text())
    cmd = [sys.executable, str(ROOT / "recipes" / "rpo.py"), "--output_dir", str(output_dir), "--max_steps", str(args.max_steps),
           "--save_strategy", "no", "--resume_from_checkpoint", "false", "--num_eval", str(args.num_eval),
           *extra]  # fmt: skip
    if drift_eval_steps:
        cmd += ["--drift_eval_steps", str(drift_eval_steps)]
    print("$", " ".join(cmd[1:]), flush=True)
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr[-4000:]}")
    return json.loads((output_dir / "train_results.json").read_text())


def read_records(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "likelihood_drift.jsonl").read_text().splitlines() if line.strip()]


def fmt(value, signed: bool = False) -> str:
    return "n/a" if value is None else format(value, "+.3f" if signed else ".3f") if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--max_steps", type=int, default=16)
    parser.add_argument("--num_eval", type=int, default=8, help="held-out pairs of each run: the probes and the eval set")
    parser.add_argument("--drift_eval_steps", type=int, default=4,
                        help="probe interval of the compared runs (denser than the recipe's default, for the curves)")
    parser.add_argument("--reuse", action="store_true", help="keep finished runs found in --work_dir")
    parser.add_argument("--no_overhead", action="store_true", help="skip the run without probes")
    parser.add_argument("--work_dir", default="/tmp/align-drift-comparison")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "drift_comparison"))
    args = parser.parse_args(argv)
    work = Path(args.work_dir)
    methods = args.methods.split(",")

    runs, records = {}, {}
    for method in methods:
        label, extra = METHODS[method]
        runs[method] = run_recipe(work / method, extra, args, drift_eval_steps=args.drift_eval_steps)
        records[label] = read_records(work / method)
    overhead = None
    if not args.no_overhead:
        base_label, base_extra = METHODS[methods[0]]
        with_drift = run_recipe(work / f"{methods[0]}-drift", base_extra, args)
        without = run_recipe(work / f"{methods[0]}-no-drift", [*base_extra, "--drift", "false"], args)
        overhead = {"method": base_label, "with_drift_s": with_drift["train_runtime"], "without_drift_s": without["train_runtime"]}
        overhead["overhead"] = overhead["with_drift_s"] / overhead["without_drift_s"] - 1

    from align.callbacks import plot_drift

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot_drift(records, out.with_suffix(".png"))
    final = {label: recs[-1] for label, recs in records.items()}
    lines = [
        f"SmolLM2-135M-Instruct + LoRA (recipes/configs/rpo.yaml), GSM8K pairs, {args.max_steps} steps × 4 pairs, β = 0.1; "
        f"{len(next(iter(records.values())))} measurements (every {args.drift_eval_steps} steps) on the recipe's "
        f"{args.num_eval} held-out probe pairs; "
        f"{platform.machine()} {os.cpu_count()} cores.",
        "",
        "| method | " + " | ".join(title for _, title in COLUMNS) + " |",
        "|---|" + "---|" * len(COLUMNS),
    ]
    for label, record in final.items():
        grad = next((r["grad_cosine"] for r in reversed(records[label]) if "grad_cosine" in r), None)
        values = [record.get(key) if key != "grad_cosine" else grad for key, _ in COLUMNS]
        signed = [title.startswith("Δ") or key in ("ches_corr", "grad_cosine") for key, title in COLUMNS]
        lines.append(f"| {label} | " + " | ".join(fmt(v, s) for v, s in zip(values, signed)) + " |")
    if overhead:
        lines += ["", f"Probe overhead ({overhead['method']}, the recipe's interval): train_runtime {overhead['with_drift_s']:.0f} s with the probes, "
                      f"{overhead['without_drift_s']:.0f} s without: {100 * overhead['overhead']:+.1f}%."]  # fmt: skip
    table = "\n".join(lines) + "\n"
    result = {"records": records, "train_results": runs, "overhead": overhead, "command": " ".join(sys.argv)}
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(table)
    print(table)
    return result


if __name__ == "__main__":
    main()
