"""Score with ``implicit_prm`` through ``score_steps_sharded`` under `accelerate launch` and write what
every process returned as JSON. Usage: dist_score.py PRM_DIR OUT_JSON

Two calls: the items of :data:`PROMPTS` / :data:`COMPLETIONS`, and the same with one bad item
appended (an empty conversation, which lands on the last process's share): every process must raise
the RewardError naming it."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, for `align`

PROMPTS = [
    [{"role": "user", "content": "What is 7 times 8?"}],
    "Natalia sold 48 clips in April. ",
    [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "How many clips?"}],
    [{"role": "user", "content": "Weng earns $12 an hour."}],
    "Q: 7 * 8? A: ",
]
COMPLETIONS = [
    "7 * 8 = 56\n#### 56",
    "In May she sold 48 / 2 = 24 clips.\n48 + 24 = 72\n#### 72",
    "The answer is 72.",
    "50 minutes is 50 / 60 of an hour.\n\n12 * 50 / 60 = 10\n\n#### 10",
    "56",
]
OPTIONS = {"split": "newline", "final_answer": "####", "batch_size": 2, "device": "cpu"}


def main() -> None:
    from accelerate import Accelerator
    from accelerate.utils import gather_object

    from align.distributed import finish_distributed
    from align.rewards import RewardError, load_reward, score_steps_sharded

    prm_dir, out = sys.argv[1], Path(sys.argv[2])
    accelerator = Accelerator()
    prm = load_reward(f"implicit_prm:{prm_dir}", **OPTIONS)
    scores = score_steps_sharded(prm, PROMPTS, COMPLETIONS, accelerator=accelerator)
    error = None
    try:
        score_steps_sharded(prm, [*PROMPTS, []], [*COMPLETIONS, "x"], accelerator=accelerator)
    except RewardError as err:
        error = {"index": err.index, "message": str(err)}
    view = {"rank": accelerator.process_index, "scores": [s._asdict() for s in scores], "error": error}
    views = gather_object([view])
    if accelerator.is_main_process:
        out.write_text(json.dumps({"world_size": accelerator.num_processes, "ranks": views}))
    finish_distributed(accelerator)


if __name__ == "__main__":
    main()
