"""benchmarks/method_comparison.py: every method end to end on the tiny model (one iteration, 2
prompts, 2 samples, 8 new tokens), and the summary over seeds on hand-made numbers."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("method_comparison", ROOT / "benchmarks" / "method_comparison.py")
method_comparison = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(method_comparison)

# A verifier that calls every other completion of a batch right (0, 2, 4, ... of the flat list the
# judge gets): a group of 2 samples always holds a right and a wrong one, whatever the random model
# writes, so every method's dataset has rows, and 2 greedy held-out answers score exactly 0.5.
VERIFIER = '''
class AlternatingVerifier:
    name = "alternating_verifier"

    def verify(self, prompts, completions, references):
        return [i % 2 == 0 for i in range(len(completions))]
'''


def test_summary_over_seeds():
    runs = [
        {"method": "sppo", "points": [{"accuracy": 0.25, "wall_time_s": 0.0}, {"accuracy": 0.5, "wall_time_s": 10.0}]},
        {"method": "sppo", "points": [{"accuracy": 0.25, "wall_time_s": 0.0}, {"accuracy": 0.75, "wall_time_s": 14.0}]},
        {"method": "grpo", "points": [{"accuracy": 0.25, "wall_time_s": 0.0}, {"accuracy": 0.5, "best_drift": None}]},
    ]
    summary = method_comparison.summarize(runs)
    first = summary["sppo"][1]
    assert first["seeds"] == 2
    assert first["accuracy"] == {"mean": 0.625, "min": 0.5, "max": 0.75, "std": pytest.approx(0.125 * 2**0.5)}
    assert first["wall_time_s"]["mean"] == 12.0
    assert summary["grpo"][1]["accuracy"]["std"] == 0.0 and "best_drift" not in summary["grpo"][1]


def test_grpo_steps_must_cover_an_iteration():
    assert method_comparison.grpo_prompts_per_step({"prompts_per_iteration": 64}, 4) == 4
    assert method_comparison.grpo_prompts_per_step({"prompts_per_iteration": 2}, 4) == 2
    with pytest.raises(ValueError, match="not a multiple of --grpo_prompts_per_step 4"):
        method_comparison.grpo_prompts_per_step({"prompts_per_iteration": 6}, 4)


@pytest.mark.slow
def test_every_method_on_the_tiny_model(tmp_path, tiny_model_dir, monkeypatch):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "alternating_verifier.py").write_text(VERIFIER)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "plugins"))
    methods = list(method_comparison.METHODS)
    prompts, samples, iterations = 2, 2, 1
    out = tmp_path / "results" / "method_comparison"
    result = method_comparison.main([
        "--methods", ",".join(methods), "--iterations", str(iterations), "--prompts_per_iteration", str(prompts),
        "--num_samples", str(samples), "--max_new_tokens", "8", "--num_eval_prompts", "2",
        "--grpo_prompts_per_step", "1", "--model_name_or_path", str(tiny_model_dir),
        "--judge", "alternating_verifier:AlternatingVerifier", "--work_dir", str(tmp_path / "work"), "--out", str(out),
    ])  # fmt: skip

    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["summary"] == json.loads(json.dumps(result["summary"]))
    assert list(saved["summary"]) == methods and out.with_suffix(".png").stat().st_size > 0
    table = out.with_suffix(".md").read_text()
    assert "--grpo_prompts_per_step 1" in table  # the command that made it
    runs = {run["method"]: run for run in saved["runs"]}
    for method, run in runs.items():
        label = method_comparison.METHODS[method][0]
        assert f"| {label} | 1 |" in table
        points = run["points"]
        assert [p["iteration"] for p in points] == [0, 1]
        # the judge's 0.5 on two answers: the held-out answers went through the loop's evaluation
        assert [p["accuracy"] for p in points] == [0.5, 0.5], method
        assert points[-1]["samples_seen"] == prompts * samples * iterations, method
        assert points[-1]["sample_accuracy"] == 0.5 and points[-1]["wall_time_s"] >= 0, method
        assert points[-1]["best_drift"] is not None and points[-1]["worst_drift"] is not None, method
    # GRPO: two steps of one prompt made the iteration, on the very prompts the loops sampled
    assert runs["grpo"]["schedule"]["steps_per_iteration"] == 2
    assert runs["grpo"]["points"][1]["prompts_seen"] == prompts
    assert runs["grpo"]["points"][1]["prompt_indices"] == runs["sppo"]["points"][1]["prompt_indices"]
