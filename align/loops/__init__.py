"""On-policy loops: the run folder, pair builders and the iteration engine."""

from align.loops.onpolicy import LoopArguments, OnPolicyLoop, load_prompt_rows
from align.loops.pairs import rpo_pairs, sppo_pairs
from align.loops.run import ConfigChangedError, IterationFolder, RunFolder, atomic_write_json, fingerprint, read_json

__all__ = [
    "ConfigChangedError",
    "IterationFolder",
    "LoopArguments",
    "OnPolicyLoop",
    "RunFolder",
    "atomic_write_json",
    "fingerprint",
    "load_prompt_rows",
    "read_json",
    "rpo_pairs",
    "sppo_pairs",
]
