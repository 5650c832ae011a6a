"""Benchmarks for a model under evaluation: GSM8K (:mod:`align.evaluation.gsm8k`), AlpacaEval 2.0
(:mod:`align.evaluation.alpaca_eval`), best-of-N with a process reward model
(:mod:`align.evaluation.best_of_n`) and safety (harmful rate, over-refusal, utility, safe/harmful
NLL: :mod:`align.evaluation.safety`), the shared model loading and resumable sharded sampling
(:mod:`align.evaluation.common`), and the hook that runs a benchmark during training
(:mod:`align.evaluation.hook`). The command-line front ends are ``eval/gsm8k.py``,
``eval/alpaca_eval.py``, ``eval/best_of_n.py`` and ``eval/safety.py``."""

from align.evaluation.best_of_n import (
    BestOfNConfig,
    Candidate,
    best_of_n_accuracy,
    run_best_of_n,
    select,
    step_error_detection,
)
from align.evaluation.common import (
    DEFAULT_MODEL,
    distributed_accelerator,
    generate_answers,
    generator_name,
    load_eval_model,
)
from align.evaluation.safety import SafetyConfig, evaluate_safety, run_safety, safety_table

__all__ = [
    "DEFAULT_MODEL",
    "BestOfNConfig",
    "Candidate",
    "SafetyConfig",
    "best_of_n_accuracy",
    "distributed_accelerator",
    "evaluate_safety",
    "generate_answers",
    "generator_name",
    "load_eval_model",
    "run_best_of_n",
    "run_safety",
    "safety_table",
    "select",
    "step_error_detection",
]
