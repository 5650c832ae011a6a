"""Sample image prompts with HFGenerator under `accelerate launch` (1 or 2 processes; DDP or DeepSpeed
ZeRO-3) on a saved tiny LLaVA and write what every process returned as JSON.
Usage: dist_generate_vision.py MODEL_DIR IMAGE_DIR OUT_JSON

Two calls: a full sampled run, and a resumed run with chunk 0 given as done."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, for `tests.*`

import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402
from accelerate.utils import DistributedType, gather_object  # noqa: E402
from transformers import AutoModelForImageTextToText, AutoProcessor  # noqa: E402

from align.distributed import configure_cpu_distributed, finish_distributed  # noqa: E402
from align.generation import HFGenerator, SamplingConfig  # noqa: E402
from tests.generation.test_vision import turn1, turn2  # noqa: E402


def main():
    model_dir, image_dir, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    configure_cpu_distributed()
    accelerator = Accelerator()
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(model_dir)
    if accelerator.distributed_type == DistributedType.DEEPSPEED:  # no dataloader to infer it from
        accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = 1
    model = accelerator.prepare(model)
    accelerator.unwrap_model(model).train()
    partitioned = all(p.numel() == 0 for p in accelerator.unwrap_model(model).parameters())

    a, b, c, d = sorted(str(path) for path in image_dir.glob("*.png"))
    prompts = [turn1(a, "Shape?"), turn2(a, b, "Shape?"), turn1(c, "Colour?"), turn2(c, d, "Colour?"), turn1(d, "Hi")]
    config = SamplingConfig(num_samples=2, max_new_tokens=6, temperature=1.0, seed=0, batch_size=3, chunk_size=2)
    generator = HFGenerator(model, processor, accelerator, show_progress=False)
    full = generator.generate(prompts, config)
    resumed = generator.generate(prompts, config, done_chunks={0: full[0:2]})
    view = {"rank": accelerator.process_index, "full": full, "resumed": resumed, "partitioned": partitioned}
    views = gather_object([view])
    if accelerator.is_main_process:
        out.write_text(json.dumps({"world_size": accelerator.num_processes, "ranks": views}))
    finish_distributed(accelerator)


if __name__ == "__main__":
    main()
