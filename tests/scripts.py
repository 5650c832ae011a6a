"""Import the repo's scripts (eval/, data/, recipes/: folders, not packages) as modules in tests,
and run commands that may start worker processes (:func:`run_in_session`)."""

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_script(relative_path: str):
    """The module at ROOT/relative_path, imported once under a private name."""
    name = "_script_" + relative_path.replace("/", "_").removesuffix(".py")
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / relative_path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def run_in_session(cmd: list[str], *, cwd, env: dict, timeout: float) -> tuple[int | None, str]:
    """Run ``cmd`` in a session of its own; return its exit status (None: killed after ``timeout``
    seconds) and its output (stdout and stderr). On a timeout the whole session is killed, so
    worker processes (accelerate's, DeepSpeed's) do not outlive the command."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        return None, output
    return proc.returncode, output
