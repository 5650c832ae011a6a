"""On-policy loops: the run folder, dataset builders, stages and the iteration engine."""

from align.loops.onpolicy import LoopArguments, OnPolicyLoop, iteration_slice, load_prompt_rows
from align.loops.builders import (
    all_pairs,
    available_builders,
    get_builder,
    labelled_singles,
    register_builder,
    return_lists,
    rpo_pairs,
    sppo_pairs,
)
from align.loops.stages import DEFAULT_STAGES, IterationState, Stage
from align.loops.run import ConfigChangedError, IterationFolder, RunFolder, atomic_write_json, fingerprint, read_json

__all__ = [
    "DEFAULT_STAGES",
    "IterationState",
    "Stage",
    "all_pairs",
    "available_builders",
    "get_builder",
    "labelled_singles",
    "register_builder",
    "return_lists",
    "ConfigChangedError",
    "IterationFolder",
    "LoopArguments",
    "OnPolicyLoop",
    "RunFolder",
    "atomic_write_json",
    "fingerprint",
    "iteration_slice",
    "load_prompt_rows",
    "read_json",
    "rpo_pairs",
    "sppo_pairs",
]
