"""Sampling under `accelerate launch` with 2 CPU processes (DDP, and DeepSpeed ZeRO-3 with
partitioned parameters): the chunks are split between the processes, every process returns the
full result, and it equals a 1-process run with the same seed, also when resumed."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "generation" / "dist_generate.py"
CONFIGS = ROOT / "accelerate_configs"

LAUNCHES = {
    "ddp": ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--dynamo_backend", "no"],
    "zero3": ["--config_file", str(CONFIGS / "zero3.yaml"), "--num_processes", "2"],
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(model_dir, tmp_path, launch_args):
    """Run dist_generate.py under accelerate on its own rendezvous port; one thread per process in
    every run, so the 1- and 2-process runs compute with the same kernels."""
    out = tmp_path / "samples.json"
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *launch_args, "--mixed_precision", "no",
           "--main_process_port", str(free_port()), str(SCRIPT), str(model_dir), str(out)]  # fmt: skip
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-5000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def single(tiny_model_dir, tmp_path_factory):
    return launch(tiny_model_dir, tmp_path_factory.mktemp("single"), ["--num_processes", "1", "--dynamo_backend", "no"])


@pytest.mark.slow
@pytest.mark.parametrize("name", list(LAUNCHES))
def test_two_processes_match_one(name, tiny_model_dir, single, tmp_path):
    run = launch(tiny_model_dir, tmp_path, LAUNCHES[name])
    assert run["world_size"] == 2 and single["world_size"] == 1
    assert run["deepspeed"] == (name == "zero3")
    [reference] = single["ranks"]
    expected = reference["full"]
    assert reference["sampled_full"] == [0, 1, 2, 3] and reference["resumed"] == expected
    assert len(expected) == 7 and all(len(samples) == 3 for samples in expected)

    ranks = sorted(run["ranks"], key=lambda view: view["rank"])
    for view in ranks:  # every process returns the full, gathered result
        assert view["full"] == expected, (name, view["rank"])
        assert view["resumed"] == expected, (name, view["rank"])
        assert view["bare"] == expected, (name, view["rank"])
        assert view["training"]  # training mode restored after sampling
    # 4 chunks dealt round-robin: rank 0 samples 0 and 2, rank 1 samples 1 and 3; resumed, the
    # pending chunks 1 and 2 go one to each rank
    assert [view["sampled_full"] for view in ranks] == [[0, 2], [1, 3]]
    assert [view["sampled_resumed"] for view in ranks] == [[1], [2]]
    # on_chunk runs on the main process only, once per newly finished chunk
    assert ranks[0]["on_chunk_full"] == [0, 1, 2, 3] and ranks[1]["on_chunk_full"] == []
    assert ranks[0]["on_chunk_resumed"] == [1, 2] and ranks[1]["on_chunk_resumed"] == []
    # ZeRO-3 really partitions the parameters, and they are partitioned again after sampling
    assert all(view["partitioned"] == view["still_partitioned"] == (name == "zero3") for view in ranks)
