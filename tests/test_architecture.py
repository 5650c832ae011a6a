"""The README's architecture layers hold: the import contract in ``.importlinter`` (import-linter's
layers contract over ``align``, function-local imports included) is kept, and it does break when a
module imports upward, lazily or not, or a new module is placed in no layer."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """import-linter on the ``align`` package and ``.importlinter`` found in ``root`` (no cache
    written into the tree); exit status 0 when every contract is kept."""
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"
    env = {**os.environ, "PYTHONPATH": str(root)}  # a copy of the package in root shadows the installed one
    return subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_the_layers_contract_is_kept():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


@pytest.fixture
def package_copy(tmp_path):
    shutil.copytree(ROOT / "align", tmp_path / "align", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    "module, added, broken",
    [
        # Pure math importing the data layer, at module level.
        ("objectives/base.py", "from align.data import prompt_ids", "align.objectives.base -> align.data"),
        # The cycles this contract replaced, written as function-local imports.
        ("rewards/lm_judge.py", "def _f():\n    from align.evaluation.common import generate_answers",
         "align.rewards.lm_judge -> align.evaluation.common"),
        ("evaluation/common.py", "def _f():\n    from align.loops.run import RunFolder",
         "align.evaluation.common -> align.loops.run"),
        # Siblings of one layer that must stay independent.
        ("generation/hf.py", "def _f():\n    import align.rewards", "align.generation.hf -> align.rewards"),
    ],
)  # fmt: skip
def test_an_upward_import_breaks_the_contract(package_copy, module, added, broken):
    with open(package_copy / "align" / module, "a", encoding="utf-8") as f:
        f.write(f"\n\n{added}\n")
    result = lint_imports(package_copy)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "0 kept, 1 broken" in result.stdout and broken in result.stdout


def test_a_module_in_no_layer_breaks_the_contract(package_copy):
    (package_copy / "align" / "newcomer.py").write_text("X = 1\n", encoding="utf-8")
    result = lint_imports(package_copy)
    assert result.returncode == 1 and "align.newcomer" in result.stdout, result.stdout + result.stderr
