"""Run TRL's own loss code on our inputs, so parity tests fail if TRL's formula changes.

TRL 1.16 computes every DPO loss type inline in ``DPOTrainer._compute_loss`` (an if/elif chain on
``loss_type``). We cut the body of one branch out of the installed source and execute it with the
variables it reads, instead of re-typing the formula by hand.
"""

from __future__ import annotations

import inspect
import textwrap
from types import SimpleNamespace

import torch
import torch.nn.functional as F


def trl_loss_branch(loss_type: str) -> str:
    from trl import DPOTrainer

    lines = textwrap.dedent(inspect.getsource(DPOTrainer._compute_loss)).splitlines()
    heads = {f'if loss_type == "{loss_type}":', f'elif loss_type == "{loss_type}":'}
    start = next(i for i, line in enumerate(lines) if line.strip() in heads)
    indent = len(lines[start]) - len(lines[start].lstrip())
    body = []
    for line in lines[start + 1 :]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        body.append(line)
    return textwrap.dedent("\n".join(body))


def run_trl_loss_branch(loss_type: str, beta: float, **tensors: torch.Tensor) -> torch.Tensor:
    """``per_sequence_loss`` of TRL's branch for ``loss_type``, given the tensors it reads."""
    namespace = {"torch": torch, "F": F, "self": SimpleNamespace(beta=beta), **tensors}
    exec(trl_loss_branch(loss_type), namespace)
    return namespace["per_sequence_loss"]
