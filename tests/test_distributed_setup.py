"""The CPU process and thread set-up that align applies before the Trainer builds its state."""

import subprocess
import sys

CHECK_THREADS = "import torch; from align.distributed import configure_cpu_threads; print(configure_cpu_threads(), torch.get_num_threads())"


def run(env_extra):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCELERATE_") and k not in ("WORLD_SIZE", "OMP_NUM_THREADS")}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", CHECK_THREADS], env=env, capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_single_accelerate_cpu_process_gets_every_core():
    import os

    cores = len(os.sched_getaffinity(0))
    changed, threads = run({"ACCELERATE_MIXED_PRECISION": "no", "OMP_NUM_THREADS": "1"})
    if cores > 1:
        assert changed == str(cores) and threads == str(cores)
    else:
        assert changed == "None"


def test_several_processes_or_explicit_threads_are_left_alone():
    assert run({"ACCELERATE_MIXED_PRECISION": "no", "OMP_NUM_THREADS": "1", "WORLD_SIZE": "2"}) == ["None", "1"]
    assert run({"OMP_NUM_THREADS": "1"}) == ["None", "1"]  # not launched by accelerate: the user chose 1
