"""Train the tiny model for two steps (likelihood-drift probes every step) and write the log
history and the drift records as JSON; run under
`accelerate launch` with 1 or 2 processes. Usage: dist_run.py MODEL_DIR REF_DIR OUT_JSON PER_DEVICE_BATCH [implicit_prm] [haepo] [safe_align]

With ``implicit_prm``, the same launch then trains both implicit PRM variants the same way (see
:func:`implicit_prm_runs`), with ``haepo`` HAEPO on lists of different K (:func:`haepo_run`), with ``safe_align`` SAFE-ALIGN
and NPO on multi-turn conversations (:func:`safe_align_runs`), so
one launch serves several checks.

The reference is loaded from its own folder (not perturbed in place) so that it also loads
correctly under ZeRO-3, where from_pretrained partitions parameters as it loads them."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, for `tests.*`

from tests.trainers.common import pair_dataset  # noqa: E402
from tests.trainers.test_base import load  # noqa: E402
from tests.trainers.test_haepo import list_dataset  # noqa: E402
from tests.trainers.test_implicit_prm import labelled_dataset  # noqa: E402
from tests.trainers.test_safe_align import safety_dataset  # noqa: E402

from align.callbacks import LikelihoodDriftCallback  # noqa: E402
from align.distributed import finish_distributed  # noqa: E402
from align.trainers import (  # noqa: E402
    HAEPOConfig,
    HAEPOTrainer,
    ImplicitPRMConfig,
    ImplicitPRMTrainer,
    RPOConfig,
    RPOTrainer,
    SafeAlignConfig,
    SafeAlignTrainer,
)


def main():
    model_dir, ref_dir, out, per_device = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
    args = RPOConfig(
        output_dir=str(out.parent / "run"), per_device_train_batch_size=per_device, max_steps=2,
        learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to="none", max_length=128,
        seed=0, disable_tqdm=True, optim="sgd", lr_scheduler_type="constant",
    )  # fmt: skip
    model, tok = load(model_dir)
    ref, _ = load(ref_dir)
    drift = LikelihoodDriftCallback(pair_dataset(4), eval_steps=1, entanglement_every=1, entanglement_pairs=2)
    trainer = RPOTrainer(model, args, pair_dataset(8), None, tok, ref_model=ref, callbacks=[drift])
    trainer.train()
    result = {}
    if trainer.accelerator.is_main_process:
        world = trainer.accelerator.num_processes
        records = [json.loads(line) for line in (Path(args.output_dir) / "likelihood_drift.jsonl").read_text().splitlines()]
        result = {"world_size": world, "log_history": trainer.state.log_history, "drift": records}
    if "implicit_prm" in sys.argv[5:]:
        trainer, result["implicit_prm"] = implicit_prm_runs(model_dir, ref_dir, out.parent, per_device)
    if "haepo" in sys.argv[5:]:
        trainer, result["haepo"] = haepo_run(model_dir, ref_dir, out.parent, per_device)
    if "safe_align" in sys.argv[5:]:
        trainer, result["safe_align"] = safe_align_runs(model_dir, ref_dir, out.parent, per_device)
    if trainer.accelerator.is_main_process:
        out.write_text(json.dumps(result))
    finish_distributed(trainer.accelerator)


def implicit_prm_runs(model_dir, ref_dir, folder: Path, per_device: int):
    """Both implicit PRM variants, two SGD steps on 8 prompts × (correct, incorrect) completions:
    CE on the 16 labelled completions, DPO on the 8 pairs the trainer builds from them; drift
    probes from 4 prompts' labelled completions; then the eval loss (the weights after both steps)
    and save_model (implicit_prm.json). Returns the last trainer and, per objective, what it logged."""
    runs = {}
    for objective in ("implicit_prm_ce", "implicit_prm_dpo"):
        output_dir = folder / objective
        args = ImplicitPRMConfig(
            output_dir=str(output_dir), objective=objective, beta=0.5, per_device_train_batch_size=per_device,
            per_device_eval_batch_size=8, max_steps=2, learning_rate=0.1, logging_steps=1, save_strategy="no",
            report_to="none", max_length=128, seed=0, disable_tqdm=True, optim="sgd", lr_scheduler_type="constant",
        )  # fmt: skip
        model, tok = load(model_dir)
        ref, _ = load(ref_dir)
        drift = LikelihoodDriftCallback(labelled_dataset(4), eval_steps=1, entanglement_every=0)
        data = labelled_dataset(8)
        trainer = ImplicitPRMTrainer(model, args, data, data, tok, ref_model=ref, callbacks=[drift])
        trainer.train()
        final = trainer.evaluate()
        trainer.save_model()
        if trainer.accelerator.is_main_process:
            runs[objective] = {
                "log_history": trainer.state.log_history, "final": final,
                "drift": [json.loads(line) for line in (output_dir / "likelihood_drift.jsonl").read_text().splitlines()],
                "info": json.loads((output_dir / "implicit_prm.json").read_text()),
                "files": sorted(p.name for p in output_dir.iterdir()),
            }  # fmt: skip
    return trainer, runs


def haepo_run(model_dir, ref_dir, folder: Path, per_device: int):
    """HAEPO, two SGD steps on 8 lists of K = 2, 3, 4 completions (every term on: the entropy
    bonus and the KL to a separate reference), then the eval loss on the same lists."""
    args = HAEPOConfig(
        output_dir=str(folder / "haepo"), per_device_train_batch_size=per_device, per_device_eval_batch_size=per_device,
        max_steps=2, learning_rate=0.5, logging_steps=1, save_strategy="no", report_to="none", max_length=128, seed=0,
        disable_tqdm=True, optim="sgd", lr_scheduler_type="constant", tau=20.0, entropy_coef=0.1, kl_coef=0.5,
    )  # fmt: skip
    model, tok = load(model_dir)
    ref, _ = load(ref_dir)
    data = list_dataset(8)
    trainer = HAEPOTrainer(model, args, data, data, tok, ref_model=ref)
    trainer.train()
    final = trainer.evaluate()
    run = {"log_history": trainer.state.log_history, "final": final} if trainer.accelerator.is_main_process else {}
    return trainer, run


def safe_align_runs(model_dir, ref_dir, folder: Path, per_device: int):
    """SAFE-ALIGN (per-token bounded ascent, λ_red = 1) and NPO (against a separate reference), two
    SGD steps on 8 conversations (4 safe, 4 harmful, some multi-turn: user turns masked), then the
    eval loss on the same rows. Returns the last trainer and, per objective, what it logged."""
    runs = {}
    for objective, extra in (("safe_align", {"red_weight": 1.0, "threshold": 6.0}), ("npo", {"beta": 0.5})):
        args = SafeAlignConfig(
            output_dir=str(folder / objective), objective=objective, per_device_train_batch_size=per_device,
            per_device_eval_batch_size=per_device, max_steps=2, learning_rate=0.05, logging_steps=1, save_strategy="no",
            report_to="none", max_length=128, seed=0, disable_tqdm=True, optim="sgd", lr_scheduler_type="constant", **extra,
        )  # fmt: skip
        model, tok = load(model_dir)
        ref, _ = load(ref_dir)
        data = safety_dataset(8)
        trainer = SafeAlignTrainer(model, args, data, data, tok, ref_model=ref if objective == "npo" else None)
        trainer.train()
        final = trainer.evaluate()
        if trainer.accelerator.is_main_process:
            runs[objective] = {"log_history": trainer.state.log_history, "final": final}
    return trainer, runs


if __name__ == "__main__":
    main()
