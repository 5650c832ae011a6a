"""The README's code examples run as written."""

import re
from pathlib import Path

import torch

from align.objectives import CompletionGroups, get_objective
from align.objectives import base as base_module

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_custom_objective_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    example = next(b for b in blocks if "register_objective" in b)
    try:
        exec(example, {})
        batch = CompletionGroups(
            policy_logps_sum=torch.tensor([[-1.0, -3.0]]),
            ref_logps_sum=torch.tensor([[-1.0, -1.0]]),
            token_counts=torch.tensor([[1, 3]]),
        )
        out = get_objective("my_loss")(batch)
        assert out.loss.item() < 0 and out.metrics["my/margin"].item() == 2.0
    finally:
        base_module._REGISTRY.pop("my_loss", None)
