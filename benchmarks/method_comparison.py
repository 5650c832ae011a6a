"""Held-out accuracy against wall time: SPPO, the iterative RPO loop, HAEPO and TRL's GRPOTrainer on one task.

    python benchmarks/method_comparison.py                          # 4 methods x 3 iterations, seed 0 (~1 h, estimated)
    python benchmarks/method_comparison.py --seeds 0,1,2 --reuse     # more seeds; finished runs are kept
    python benchmarks/method_comparison.py --methods sppo,grpo --iterations 1 --prompts_per_iteration 4 \\
        --num_samples 2 --max_new_tokens 16 --num_eval_prompts 8    # a smoke run

The task is the SPPO recipe's default (recipes/configs/sppo.yaml): SmolLM2-135M-Instruct (built in)
+ LoRA, ``builtin:arithmetic`` prompts, the ``gsm8k_verifier`` judge, K samples per prompt at its
temperature and top-p, ``prompts_per_iteration`` fresh prompts per iteration (iteration t takes
the t-th slice of the train split, as the loop does), its learning rate and max new tokens. Every
method gets these values on its command line, read from that YAML (``--model_name_or_path``,
``--iterations``, ... override them), and keeps its own training schedule:

- ``sppo``: ``recipes/sppo.py`` (sppo_pairs: highest vs lowest win rate, 2 epochs);
- ``rpo``: ``recipes/rpo.py --config recipes/configs/rpo_loop.yaml`` (rpo_pairs: a correct
  sample, or the gold solution when none is, against a wrong one; DPO + NLL, 1 epoch);
- ``haepo``: ``recipes/haepo.py`` (lists of K samples with returns R = the verifier's 0/1);
- ``grpo``: ``trl.GRPOTrainer`` with its default loss, run here (``--grpo_worker``, a subprocess
  like the recipes) on the same model folder (:func:`align.models.load_model`), LoRA config
  (:func:`align.models.get_peft_config`), tokenizer and prompts, with reward
  r = 1[verifier says correct] from the same judge through :func:`align.rewards.checked_verdicts`.

GRPO mapping. With P prompts per iteration, K samples per prompt and G prompts per GRPO step
(``--grpo_prompts_per_step``): ``num_generations = K``, one generation batch of G·K completions
per optimizer step (``per_device_train_batch_size = G·K``, no accumulation, ``num_iterations = 1``),
the prompts in the loop's order (``shuffle_dataset = False``), so one GRPO "iteration" is
S = P / G optimizer steps and consumes exactly the P prompts (P·K completions) the loop samples in
that iteration; ``max_steps = iterations · S``. After each S steps GRPO is evaluated and probed
as the loops are after each iteration.

Measured per method, seed and iteration:

- held-out greedy accuracy on the first ``num_eval_prompts`` test prompts, at the start and after
  each iteration, by :meth:`align.loops.OnPolicyLoop.evaluate` (GRPO calls the same method on its
  model);
- samples seen: completions generated so far (the loops' ``generate`` stages; the completions
  GRPO's reward function judged);
- cumulative wall time of generation, judging, building the dataset and training, with model
  loading between iterations and the drift probes, without the held-out evaluations. Loops: from
  their manifests' stage timestamps (1 s resolution): each iteration runs from the end of the
  previous evaluation to the end of its ``train`` stage. GRPO: a clock from the trainer's
  construction, stopped during evaluations;
- likelihood drift: each iteration's probe pairs, the best and worst completion of its first
  ``drift_num_probes`` training groups, measured against π_t at the iteration's start and end
  (every method with ``--drift_eval_steps`` large, so every clock holds the same two
  measurements per iteration): the mean change of their log-probs per token. The loops' numbers are
  the last record of ``iteration-NN/train/likelihood_drift.jsonl``. GRPO's probes are built from
  its own samples of the iteration with the SPPO builder (highest vs lowest win rate under the same
  judge) and measured by :func:`align.callbacks.measure_pairs` on its model with the trainable
  weights at the iteration's start swapped in and then the current ones. (``LikelihoodDriftCallback``
  does not fit here: it binds to a PreferenceTrainer's tokenization and needs its probes before the
  first step, while GRPO draws them during the iteration.)

Runs are sequential (one torch job at a time), each in ``--work_dir/<method>/seed-<s>``; without
``--reuse`` a run folder is deleted and run afresh. With ``--reuse`` a loop recipe is run again on
its folder, which resumes it or does nothing if it finished, and a finished GRPO run with the same
settings is kept (a resumed loop's clock also counts the time it was stopped).

Writes ``benchmarks/results/method_comparison.{md,json,png}`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TASK_CONFIG = ROOT / "recipes" / "configs" / "sppo.yaml"
# method -> (label, recipe, extra arguments); None as the recipe: GRPO, run by this script
METHODS: dict[str, tuple[str, str | None, list[str]]] = {
    "sppo": ("SPPO", "recipes/sppo.py", []),
    "rpo": ("iterative RPO", "recipes/rpo.py", ["--config", "recipes/configs/rpo_loop.yaml"]),
    "haepo": ("HAEPO", "recipes/haepo.py", []),
    "grpo": ("GRPO (TRL)", None, []),
}
# the task and the shared settings: every method gets these keys of TASK_CONFIG on its command line
TASK_KEYS = (
    "model_name_or_path", "dtype", "use_peft", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules",
    "iterations", "prompts", "prompts_split", "prompts_per_iteration", "eval_prompts", "eval_prompts_split",
    "num_eval_prompts", "judge", "judge_options", "num_samples", "temperature", "top_p", "max_new_tokens",
    "learning_rate", "lr_scheduler_type", "bf16", "max_length", "drift_num_probes", "drift_entanglement_every",
)  # fmt: skip
# probes at each iteration's first step and its end only (the callback always measures both)
DRIFT_EVAL_STEPS = 1_000_000
STAMP = "%Y-%m-%dT%H:%M:%S"
METRICS = ("accuracy", "wall_time_s", "samples_seen", "sample_accuracy", "best_drift", "worst_drift")


# -- settings ------------------------------------------------------------------------------------


def task_settings(args: argparse.Namespace) -> dict[str, Any]:
    """TASK_KEYS from the task YAML, with the command line's overrides."""
    import yaml

    config = yaml.safe_load(TASK_CONFIG.read_text())
    settings = {key: config[key] for key in TASK_KEYS if key in config}
    for key in ("model_name_or_path", "iterations", "prompts_per_iteration", "num_eval_prompts", "num_samples",
                "max_new_tokens", "judge", "judge_options"):  # fmt: skip
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    settings["drift_eval_steps"] = DRIFT_EVAL_STEPS
    return settings


def cli_args(settings: dict[str, Any]) -> list[str]:
    def text(value: Any) -> str:
        return str(value).lower() if isinstance(value, bool) else str(value)

    return [word for key, value in settings.items() for word in (f"--{key}", text(value))]


def grpo_prompts_per_step(settings: dict[str, Any], wanted: int) -> int:
    """G, the prompts of one GRPO step: ``wanted``, or all P when fewer; P must be a multiple of it."""
    prompts = int(settings["prompts_per_iteration"])
    per_step = min(wanted, prompts)
    if per_step < 1 or prompts % per_step:
        raise ValueError(
            f"--prompts_per_iteration {prompts} is not a multiple of --grpo_prompts_per_step {per_step}: a GRPO "
            "iteration must consume exactly the loop's prompts"
        )
    return per_step


# -- the loop recipes ----------------------------------------------------------------------------


def run_command(cmd: list[str], log: Path) -> float:
    """Run ``cmd`` from the project root with its output in ``log``; its wall time in seconds."""
    print("$", shlex.join(cmd), flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w") as out:
        result = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                                env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    if result.returncode != 0:
        tail = log.read_text()[-4000:]
        raise RuntimeError(f"{shlex.join(cmd)} failed (exit status {result.returncode}; log {log}):\n{tail}")
    return time.perf_counter() - start


def _stamp(stages: dict, stage: str, manifest: Path) -> float:
    if stage not in stages:
        raise KeyError(f"{manifest}: stage {stage!r} did not finish (finished: {', '.join(stages)})")
    return time.mktime(time.strptime(stages[stage]["finished_at"], STAMP))


def read_loop_run(run_dir: Path, iterations: int) -> dict:
    """A finished loop run's points: iteration 0 (the start) and one per iteration (module docstring)."""
    points, clock, samples, prompts = [], 0.0, 0, 0
    for t in range(iterations):
        it = run_dir / f"iteration-{t:02d}"
        manifest = it / "manifest.json"
        if not manifest.exists():
            raise FileNotFoundError(f"{manifest}: missing; the run did not reach iteration {t}")
        stages = json.loads(manifest.read_text())["stages"]
        if t == 0:
            points.append({"iteration": 0, "accuracy": stages["evaluate_start"]["accuracy"], "wall_time_s": 0.0,
                           "samples_seen": 0, "prompts_seen": 0})  # fmt: skip
            start = _stamp(stages, "evaluate_start", manifest)
        clock += _stamp(stages, "train", manifest) - start
        start = _stamp(stages, "evaluate", manifest)
        samples += stages["generate"]["samples"]
        prompts += stages["generate"]["prompts"]
        dataset = stages["dataset"]
        drift_file = it / "train" / "likelihood_drift.jsonl"
        drift = json.loads(drift_file.read_text().splitlines()[-1]) if drift_file.exists() else {}
        indices = [json.loads(line)["index"] for line in (it / "samples.jsonl").read_text().splitlines() if line]
        points.append({
            "iteration": t + 1, "accuracy": stages["evaluate"]["accuracy"], "wall_time_s": clock,
            "samples_seen": samples, "prompts_seen": prompts, "prompt_indices": indices,
            "sample_accuracy": stages["judge"].get("sample_accuracy"),
            "rows": dataset.get("pairs", dataset.get("lists", dataset.get("rows"))),
            "best_drift": drift.get("chosen_change_per_token"), "worst_drift": drift.get("rejected_change_per_token"),
            "displacement_rate": drift.get("displacement_rate"),
        })  # fmt: skip
    config = json.loads((run_dir / "run.json").read_text())["config"]
    training = config["training"]
    schedule = {key: training.get(key) for key in ("objective", "num_train_epochs", "per_device_train_batch_size",
                                                     "gradient_accumulation_steps")}  # fmt: skip
    schedule["dataset_builder"] = config["loop"]["dataset_builder"]
    return {"points": points, "schedule": schedule}


def run_method(method: str, seed: int, settings: dict, args: argparse.Namespace) -> dict:
    label, recipe, extra = METHODS[method]
    run_dir = Path(args.work_dir) / method / f"seed-{seed}"
    argv = [*cli_args(settings), "--seed", str(seed)]
    if recipe is not None and not (ROOT / recipe).exists():
        raise FileNotFoundError(f"{ROOT / recipe}: no such recipe for method {method!r}; leave it out of --methods")
    if recipe is None and args.reuse and _finished_grpo(run_dir, argv, args.grpo_prompts_per_step):
        print(f"{run_dir}: a finished GRPO run with these settings; reused", flush=True)
        seconds = None
    else:
        if not args.reuse and run_dir.exists():
            shutil.rmtree(run_dir)
        if recipe is None:
            run_dir.mkdir(parents=True, exist_ok=True)
            spec = {"argv": argv, "prompts_per_step": args.grpo_prompts_per_step}
            (run_dir / "grpo_args.json").write_text(json.dumps(spec, indent=2))
            cmd = [sys.executable, str(Path(__file__).resolve()), "--grpo_worker", str(run_dir)]
        else:
            cmd = [sys.executable, str(ROOT / recipe), *extra, *argv, "--output_dir", str(run_dir),
                   "--disable_tqdm", "true"]  # fmt: skip
        seconds = run_command(cmd, Path(args.work_dir) / "logs" / f"{method}-seed-{seed}.log")
    run = read_grpo_run(run_dir) if recipe is None else read_loop_run(run_dir, int(settings["iterations"]))
    return {"method": method, "label": label, "seed": seed, "run_dir": str(run_dir), "process_s": seconds, **run}


# -- GRPO ----------------------------------------------------------------------------------------


def _finished_grpo(run_dir: Path, argv: list[str], prompts_per_step: int) -> bool:
    path = run_dir / "grpo.json"
    if not path.exists():
        return False
    saved = json.loads(path.read_text())
    return saved.get("finished", False) and saved["argv"] == argv and saved["prompts_per_step"] == prompts_per_step


def read_grpo_run(run_dir: Path) -> dict:
    saved = json.loads((run_dir / "grpo.json").read_text())
    if not saved.get("finished"):
        raise RuntimeError(f"{run_dir / 'grpo.json'}: the GRPO run did not finish")
    return {"points": saved["points"], "schedule": saved["schedule"]}


def _swap_weights(params: list, values: list) -> list:
    """Put ``values`` into ``params``; return the values they held."""
    import torch

    with torch.no_grad():
        held = [p.detach().clone() for p in params]
        for p, v in zip(params, values):
            p.copy_(v)
    return held


def grpo_worker(run_dir: Path) -> None:
    """Train GRPO on the task (module docstring), writing ``run_dir/grpo.json`` at the end."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from align.callbacks import drift_metrics, measure_pairs
    from align.cli import parse_recipe_args
    from align.loops import LoopArguments, OnPolicyLoop, load_prompt_rows
    from align.loops import iteration_slice  # the loop's own slicing: the same prompts per iteration
    from align.models import get_peft_config, load_model, load_tokenizer
    from align.rewards import checked_verdicts, load_reward, reward_kind
    from align.trainers import SPPOConfig
    from align.trainers.base import tokenize_for_training

    spec = json.loads((run_dir / "grpo_args.json").read_text())
    # the task's settings parsed exactly as the SPPO recipe parses them (its YAML + the same flags)
    la, ta, model_args, drift_args, _ = parse_recipe_args(
        SPPOConfig, TASK_CONFIG, [*spec["argv"], "--output_dir", str(run_dir / "train")], data_classes=(LoopArguments,)
    )
    k, per_step = la.num_samples, spec["prompts_per_step"]
    steps = la.prompts_per_iteration // per_step
    loop = OnPolicyLoop(loop_args=la, training_args=ta, model_args=model_args, trainer_cls=None,
                        default_builder="sppo_pairs", method="grpo")  # fmt: skip
    judge = load_reward(la.judge, **la.judge_kwargs())
    if reward_kind(judge) != "verifier":
        raise ValueError(f"--judge {la.judge!r} is not a verifier: GRPO's reward here is the verifier's 0/1 verdict")
    prompts = load_prompt_rows(la.prompts, la.prompts_split, la.prompt_field)
    eval_rows = load_prompt_rows(la.eval_prompts, la.eval_prompts_split, la.prompt_field)[: la.num_eval_prompts]
    rows = [{"prompt": r["prompt"], "reference": r.get("answer", r.get("solution")), "index": r["index"]}
            for t in range(la.iterations) for r in iteration_slice(prompts, t, la.prompts_per_iteration)]  # fmt: skip
    tokenizer = load_tokenizer(model_args)
    model = load_model(model_args, for_training=True)
    start = loop.evaluate(model, tokenizer, judge, eval_rows)
    points = [{"iteration": 0, "accuracy": start["accuracy"], "wall_time_s": 0.0, "samples_seen": 0, "prompts_seen": 0}]
    groups: dict[int, dict[int, dict]] = {}  # iteration -> prompt index -> prompt, reference, completions, verdicts

    def verifier_reward(prompts, completions, reference, index, trainer_state, **_) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        verdicts = checked_verdicts(judge, prompts, texts, reference, prompt_ids=index)
        seen = groups.setdefault(trainer_state.global_step // steps, {})
        for prompt, ref, i, text, ok in zip(prompts, reference, index, texts, verdicts):
            group = seen.setdefault(i, {"prompt": prompt, "answer": ref, "index": i, "completions": [], "correct": []})
            group["completions"].append(text)
            group["correct"].append(bool(ok))
        return verdicts.astype(float).tolist()

    config = GRPOConfig(
        output_dir=str(run_dir / "train"), learning_rate=ta.learning_rate, lr_scheduler_type=ta.lr_scheduler_type,
        warmup_steps=ta.warmup_steps, weight_decay=ta.weight_decay, max_grad_norm=ta.max_grad_norm, optim=ta.optim,
        seed=ta.seed, bf16=ta.bf16, use_cpu=ta.use_cpu, disable_dropout=ta.disable_dropout,
        activation_checkpointing=ta.activation_checkpointing,  # TRL turns it on by default; the loops do not
        per_device_train_batch_size=per_step * k, gradient_accumulation_steps=1, num_generations=k,
        max_completion_length=la.max_new_tokens, temperature=la.temperature, top_p=la.top_p, top_k=0,
        max_steps=la.iterations * steps, shuffle_dataset=False, logging_steps=ta.logging_steps, save_strategy="no",
        report_to="none", disable_tqdm=True,
    )  # fmt: skip

    class IterationEnd(TrainerCallback):
        """After every S steps: the probes (on the clock), then the held-out evaluation (off it)."""

        def __init__(self) -> None:
            self.excluded, self.trainer, self.start_weights = 0.0, None, None

        def params(self) -> list:
            return [p for p in self.trainer.model.parameters() if p.requires_grad]

        def on_train_begin(self, args, state, control, **kwargs):
            self.start_weights = [p.detach().clone() for p in self.params()]

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % steps:
                return
            t = state.global_step // steps - 1
            judged_groups = list(groups[t].values())
            metrics = self.probe_drift(judged_groups)
            wall = time.perf_counter() - clock_start - self.excluded
            before_eval = time.perf_counter()
            result = loop.evaluate(self.trainer.model, tokenizer, judge, eval_rows)
            self.excluded += time.perf_counter() - before_eval
            verdicts = [ok for g in judged_groups for ok in g["correct"]]
            points.append({
                "iteration": t + 1, "accuracy": result["accuracy"], "wall_time_s": wall,
                "samples_seen": points[-1]["samples_seen"] + len(verdicts),
                "prompts_seen": points[-1]["prompts_seen"] + len(judged_groups),
                "prompt_indices": [g["index"] for g in judged_groups],
                "sample_accuracy": sum(verdicts) / len(verdicts), "rows": len(judged_groups),
                "best_drift": metrics.get("chosen_change_per_token"),
                "worst_drift": metrics.get("rejected_change_per_token"),
                "displacement_rate": metrics.get("displacement_rate"),
            })  # fmt: skip
            print(f"GRPO iteration {t + 1}: held-out accuracy {result['accuracy']:.3f}, {wall:.0f} s", flush=True)
            self.start_weights = [p.detach().clone() for p in self.params()]

        def probe_drift(self, judged_groups: list[dict]) -> dict:
            judged = loop.judge(judge, [{k: g[k] for k in ("prompt", "answer", "index")} for g in judged_groups],
                                [g["completions"] for g in judged_groups])  # fmt: skip
            pairs = loop.build_dataset(judged)[0][: drift_args.drift_num_probes]
            if not pairs:  # every group tied: no (best, worst) pair, as a loop would warn
                return {}
            probes = tokenize_for_training(Dataset.from_list(pairs), "probe", None, (), tokenizer, ta)
            model, measure = self.trainer.model, dict(pad_token_id=tokenizer.pad_token_id, top_k=drift_args.drift_top_k,
                                                      autocast=self.trainer.autocast_smart_context_manager)  # fmt: skip
            end = measure_pairs(model, probes, **measure)
            current = _swap_weights(self.params(), self.start_weights)
            begin = measure_pairs(model, probes, **measure)
            _swap_weights(self.params(), current)
            return drift_metrics(begin, end, beta=0.1)  # β only scales the implicit rewards, not reported

    callback = IterationEnd()
    clock_start = time.perf_counter()
    trainer = GRPOTrainer(
        model=model, reward_funcs=verifier_reward, args=config, train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer, peft_config=get_peft_config(model_args), callbacks=[callback],
    )  # fmt: skip
    callback.trainer = trainer
    trainer.train()
    schedule = {"objective": f"grpo ({config.loss_type} loss)", "beta": config.beta, "epsilon": config.epsilon,
                "scale_rewards": config.scale_rewards, "completions_per_step": per_step * k,
                "prompts_per_step": per_step, "steps_per_iteration": steps, "max_steps": config.max_steps}  # fmt: skip
    result = {"argv": spec["argv"], "prompts_per_step": per_step, "schedule": schedule, "points": points,
              "finished": True}  # fmt: skip
    (run_dir / "grpo.json").write_text(json.dumps(result, indent=2))


# -- results -------------------------------------------------------------------------------------


def summarize(runs: list[dict]) -> dict[str, list[dict]]:
    """Per method, per iteration (0 = start): for each metric its mean, min, max and std
    (sample standard deviation; 0 for one seed) over the seeds that have it."""
    out: dict[str, list[dict]] = {}
    for method in dict.fromkeys(r["method"] for r in runs):
        seeds = [r for r in runs if r["method"] == method]
        rows = []
        for i in range(max(len(r["points"]) for r in seeds)):
            points = [r["points"][i] for r in seeds if i < len(r["points"])]
            row: dict[str, Any] = {"iteration": i, "seeds": len(points)}
            for metric in METRICS:
                values = [p[metric] for p in points if p.get(metric) is not None]
                if values:
                    std = statistics.stdev(values) if len(values) > 1 else 0.0
                    row[metric] = {"mean": statistics.fmean(values), "min": min(values), "max": max(values), "std": std}
            rows.append(row)
        out[method] = rows
    return out


def _cell(stat: dict | None, spec: str = ".3f", signed: bool = False) -> str:
    if stat is None:
        return "n/a"
    spec = ("+" if signed else "") + spec
    text = format(stat["mean"], spec)
    if stat["min"] == stat["max"]:
        return text
    return f"{text} ({format(stat['min'], spec)} – {format(stat['max'], spec)})"


def markdown(result: dict) -> str:
    settings, summary, runs = result["settings"], result["summary"], result["runs"]
    machine = result["machine"]
    lines = [
        "# Method comparison: held-out accuracy against wall time",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Machine: {machine['platform']}, {machine['cpu_count']} CPU cores, torch {machine['torch']} with "
        f"{machine['torch_threads']} threads (OMP_NUM_THREADS {machine['OMP_NUM_THREADS'] or 'unset'}), "
        f"transformers {machine['transformers']}, trl {machine['trl']}; runs one after another. "
        f"Seeds: {', '.join(map(str, result['seeds']))}.",
        "",
        "Shared settings (recipes/configs/sppo.yaml and the command line; every method): "
        + ", ".join(f"{k} = {v}" for k, v in settings.items()) + ".",
        "",
        "| method | training per iteration |",
        "|---|---|",
    ]
    for method in summary:
        schedule = next(r["schedule"] for r in runs if r["method"] == method)
        lines.append(f"| {METHODS[method][0]} | " + ", ".join(f"{k} {v}" for k, v in schedule.items()) + " |")
    if "grpo" in summary:
        lines += [
            "",
            f"GRPO: one iteration = {result['grpo']['steps_per_iteration']} optimizer steps of "
            f"{result['grpo']['prompts_per_step']} prompts × {settings['num_samples']} completions (the "
            f"{settings['prompts_per_iteration']} prompts the loops sample in that iteration, in their order).",
        ]
    lines += [
        "",
        "Mean over seeds (min – max when they differ). Wall time: generation, judging, dataset and training "
        "(with model loading and two probe measurements per iteration), without the held-out evaluations. "
        "Δ best / worst: change in log-prob per token of each iteration's best and worst completions (its "
        "probe pairs) over the iteration.",
        "",
        "| method | iteration | held-out accuracy | wall time (s) | samples seen | sample accuracy | "
        "Δ best logp/tok | Δ worst logp/tok |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, rows in summary.items():
        for row in rows:
            it = "0 (start)" if row["iteration"] == 0 else str(row["iteration"])
            lines.append(
                f"| {METHODS[method][0]} | {it} | {_cell(row.get('accuracy'))} | "
                f"{_cell(row.get('wall_time_s'), '.0f')} | {_cell(row.get('samples_seen'), '.0f')} | "
                f"{_cell(row.get('sample_accuracy'))} | "
                f"{_cell(row.get('best_drift'), signed=True)} | {_cell(row.get('worst_drift'), signed=True)} |"
            )
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (method, rows) in enumerate(result["summary"].items()):
        color = f"C{i}"
        for run in (r for r in result["runs"] if r["method"] == method):
            xs = [p["wall_time_s"] / 60 for p in run["points"]]
            ax.scatter(xs, [p["accuracy"] for p in run["points"]], color=color, alpha=0.35, s=14)
        xs = [row["wall_time_s"]["mean"] / 60 for row in rows]
        ax.plot(xs, [row["accuracy"]["mean"] for row in rows], marker="o", color=color, label=METHODS[method][0])
    ax.set_xlabel("cumulative wall time, evaluation excluded (min)")
    ax.set_ylabel(f"held-out greedy accuracy ({result['settings']['num_eval_prompts']} prompts)")
    ax.set_title("Accuracy vs wall time (lines: mean over seeds; points: seeds)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--grpo_worker"]:
        grpo_worker(Path(argv[1]))
        return {}
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds (each a run per method)")
    parser.add_argument("--iterations", type=int)
    parser.add_argument("--prompts_per_iteration", type=int)
    parser.add_argument("--num_eval_prompts", type=int)
    parser.add_argument("--num_samples", type=int, help="K, samples per prompt (GRPO's num_generations)")
    parser.add_argument("--max_new_tokens", type=int)
    parser.add_argument("--model_name_or_path", help="default: the task YAML's (builtin:smollm2-135m-instruct)")
    parser.add_argument("--judge", help="default: the task YAML's (gsm8k_verifier); a verifier")
    parser.add_argument("--judge_options")
    parser.add_argument("--grpo_prompts_per_step", type=int, default=4, help="G: GRPO prompts per optimizer step")
    parser.add_argument("--reuse", action="store_true", help="keep finished runs found in --work_dir")
    parser.add_argument("--work_dir", default="/tmp/align-method-comparison")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "method_comparison"))
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        parser.error(f"--methods: unknown {unknown or 'none given'}; known: {', '.join(METHODS)}")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    settings = task_settings(args)
    args.grpo_prompts_per_step = grpo_prompts_per_step(settings, args.grpo_prompts_per_step)

    runs = [run_method(method, seed, settings, args) for seed in seeds for method in methods]

    import torch
    import transformers
    import trl

    shown = {k: v for k, v in settings.items() if k != "drift_eval_steps"}
    steps = int(settings["prompts_per_iteration"]) // args.grpo_prompts_per_step
    result = {
        "command": shlex.join(["python", "benchmarks/method_comparison.py", *argv]),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "transformers": transformers.__version__,
                    "trl": trl.__version__, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},  # fmt: skip
        "seeds": seeds,
        "settings": shown,
        "grpo": {"prompts_per_step": args.grpo_prompts_per_step, "steps_per_iteration": steps},
        "runs": runs,
        "summary": summarize(runs),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    table = markdown(result)
    out.with_suffix(".md").write_text(table)
    plot(result, out.with_suffix(".png"))
    print(table)
    return result


if __name__ == "__main__":
    main()
