"""Benchmarks for a model under evaluation: GSM8K (:mod:`align.evaluation.gsm8k`) and AlpacaEval 2.0
(:mod:`align.evaluation.alpaca_eval`), the shared model loading and resumable sharded sampling
(:mod:`align.evaluation.common`), and the hook that runs a benchmark during training
(:mod:`align.evaluation.hook`). The command-line front ends are ``eval/gsm8k.py`` and
``eval/alpaca_eval.py``."""

from align.evaluation.common import (
    DEFAULT_MODEL,
    distributed_accelerator,
    generate_answers,
    generator_name,
    load_eval_model,
)

__all__ = ["DEFAULT_MODEL", "distributed_accelerator", "generate_answers", "generator_name", "load_eval_model"]
