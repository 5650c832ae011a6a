"""Sample with HFGenerator under `accelerate launch` (1 or 2 processes; DDP or DeepSpeed ZeRO-3) and
write what every process saw as JSON. Usage: dist_generate.py MODEL_DIR OUT_JSON

Three calls: a full run, a resumed run with chunks 0 and 3 given as done, and a full run given
the bare module instead of what ``accelerator.prepare`` returned. The model is wrapped by
``accelerator.prepare`` (a DDP module, or a ZeRO-3 engine with partitioned parameters)."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, for `tests.*`

import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402
from accelerate.utils import DistributedType, gather_object  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from align.distributed import configure_cpu_distributed, finish_distributed  # noqa: E402
from align.generation import HFGenerator  # noqa: E402
from tests.generation.common import PROMPTS, sampling_config  # noqa: E402


class RecordingGenerator(HFGenerator):
    """Notes which chunks this process sampled itself."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sampled: list[int] = []

    def _sample_chunk(self, model, chunk, index, config, eos):
        self.sampled.append(index)
        return super()._sample_chunk(model, chunk, index, config, eos)


def main():
    model_dir, out = sys.argv[1], Path(sys.argv[2])
    configure_cpu_distributed()  # DeepSpeed on CPU: gloo process group first
    accelerator = Accelerator()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    deepspeed = accelerator.distributed_type == DistributedType.DEEPSPEED
    if deepspeed:  # no dataloader to infer it from; DeepSpeed insists on a micro-batch size
        accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = 1
    model = accelerator.prepare(model)
    accelerator.unwrap_model(model).train()  # as in a training loop; sampling must leave it so
    partitioned = all(p.numel() == 0 for p in accelerator.unwrap_model(model).parameters())

    generator = RecordingGenerator(model, tokenizer, accelerator, show_progress=False)
    config = sampling_config()
    full_calls, resumed_calls = [], []
    full = generator.generate(PROMPTS, config, on_chunk=lambda i, r: full_calls.append(i))
    sampled_full, generator.sampled = generator.sampled, []
    done = {0: full[0:2], 3: full[6:7]}
    resumed = generator.generate(PROMPTS, config, on_chunk=lambda i, r: resumed_calls.append(i), done_chunks=done)
    # the bare module works too (under ZeRO-3 its engine is found through the accelerator)
    bare = HFGenerator(accelerator.unwrap_model(model), tokenizer, accelerator, show_progress=False).generate(
        PROMPTS, config
    )
    still_partitioned = all(p.numel() == 0 for p in accelerator.unwrap_model(model).parameters())

    views = gather_object([{
        "rank": accelerator.process_index, "full": full, "resumed": resumed, "bare": bare, "sampled_full": sampled_full,
        "sampled_resumed": generator.sampled, "on_chunk_full": full_calls, "on_chunk_resumed": resumed_calls,
        "partitioned": partitioned, "still_partitioned": still_partitioned, "training": accelerator.unwrap_model(model).training,
    }])  # fmt: skip
    if accelerator.is_main_process:
        out.write_text(json.dumps({"world_size": accelerator.num_processes, "deepspeed": deepspeed, "ranks": views}))
    finish_distributed(accelerator)


if __name__ == "__main__":
    main()
