"""PreferenceTrainer on a tiny random model: learning, LoRA, reference strategies, layouts,
gradient accumulation, and parity with TRL's DPOTrainer."""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from align.trainers import PreferenceConfig, PreferenceTrainer, RPOConfig, RPOTrainer
from tests.trainers.common import pair_dataset


def config(tmp_path, config_cls=None, **overrides):
    base = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        max_steps=2,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        max_length=128,
        seed=0,
        disable_tqdm=True,
    )
    return (config_cls or RPOConfig)(**{**base, **overrides})


def load(model_dir, seed_offset=0):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if seed_offset:  # a different reference: perturb every weight deterministically
        g = torch.Generator().manual_seed(seed_offset)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.02)
    return model, AutoTokenizer.from_pretrained(model_dir)


def lora():
    from peft import LoraConfig

    return LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", lora_dropout=0.0, task_type="CAUSAL_LM")


def test_step0_dpo_loss_is_ln2_with_a_copy_as_reference(tiny_model_dir, tmp_path):
    model, tok = load(tiny_model_dir)
    trainer = RPOTrainer(model, config(tmp_path, alpha=0.0), pair_dataset(), pair_dataset(), tok)
    metrics = trainer.evaluate()
    assert metrics["eval_loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert metrics["eval_rewards/margins"] == pytest.approx(0.0, abs=1e-6)


def test_training_changes_policy_and_lowers_loss(tiny_model_dir, tmp_path):
    model, tok = load(tiny_model_dir)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    data = pair_dataset(8)
    trainer = RPOTrainer(model, config(tmp_path, max_steps=15, per_device_train_batch_size=8), data, data, tok)
    start = trainer.evaluate()["eval_loss"]
    trainer.train()
    end = trainer.evaluate()
    assert end["eval_loss"] < start - 0.1, (start, end["eval_loss"])
    assert end["eval_rewards/accuracies"] == 1.0
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert len(changed) == len(before)
    assert all(not p.requires_grad for p in trainer.ref_model.parameters())


def test_lora_trains_adapter_only_with_no_second_model(tiny_model_dir, tmp_path):
    model, tok = load(tiny_model_dir)
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    data = pair_dataset(8)
    trainer = RPOTrainer(model, config(tmp_path, max_steps=5), data, data, tok, peft_config=lora())
    assert trainer.reference == "adapter" and trainer.ref_model is None
    assert trainer.evaluate()["eval_loss"] == pytest.approx(math.log(2) + trainer.evaluate()["eval_nll"], abs=1e-5)
    lora_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}
    trainer.train()
    for name, param in trainer.model.named_parameters():
        if "lora_B" in name:
            assert not torch.equal(param.detach(), lora_before[name]), name
        elif "lora_" not in name:
            key = name.replace("base_model.model.", "").replace(".base_layer", "")
            assert torch.equal(param.detach(), base[key]), name
    assert trainer.evaluate()["eval_rewards/margins"] > 0


@pytest.mark.parametrize("reference", ["model", "precomputed"])
def test_reference_strategies_agree(tiny_model_dir, tmp_path, reference):
    """A separate reference model and precomputed reference log-probs give the same step-0 loss."""
    model, tok = load(tiny_model_dir)
    ref, _ = load(tiny_model_dir, seed_offset=7)
    trainer = RPOTrainer(model, config(tmp_path, reference=reference), pair_dataset(), pair_dataset(), tok, ref_model=ref)
    value = trainer.evaluate()["eval_loss"]
    expected = _step0_loss(tiny_model_dir, tmp_path, reference="model")
    assert value == pytest.approx(expected, abs=1e-6)
    assert abs(value - (math.log(2) + trainer.evaluate()["eval_nll"])) > 1e-3  # the reference really differs


def test_precomputed_reference_with_lora_trains_like_the_disabled_adapter(tiny_model_dir, tmp_path):
    """With LoRA, log-probs precomputed with the adapter disabled are the reference the adapter
    strategy computes every step: the same losses and rewards, step by step, over two epochs
    (the setting of the default SPPO recipe, whose loop merges earlier adapters into the base)."""
    history = {}
    for reference in ("adapter", "precomputed"):
        model, tok = load(tiny_model_dir)
        args = config(tmp_path / reference, reference=reference, max_steps=-1, num_train_epochs=2)
        trainer = RPOTrainer(model, args, pair_dataset(8), None, tok, peft_config=lora())
        assert trainer.reference == reference and trainer.ref_model is None
        trainer.train()
        history[reference] = [v for h in trainer.state.log_history if "loss" in h for v in (h["loss"], h["rewards/margins"])]
    assert len(history["adapter"]) == 2 * 4
    assert history["precomputed"] == pytest.approx(history["adapter"], abs=1e-5)
    assert history["adapter"][-1] > 1e-2  # the adapter moved away from the reference


def _step0_loss(model_dir, tmp_path, **overrides):
    model, tok = load(model_dir)
    ref, _ = load(model_dir, seed_offset=7)
    trainer = RPOTrainer(model, config(tmp_path, **overrides), pair_dataset(), pair_dataset(), tok, ref_model=ref)
    return trainer.evaluate()["eval_loss"]


def test_packed_and_padded_layouts_give_the_same_loss(tiny_model_dir, tmp_path):
    packed = _step0_loss(tiny_model_dir, tmp_path, padding_free=True)
    padded = _step0_loss(tiny_model_dir, tmp_path, padding_free=False)
    assert packed == pytest.approx(padded, abs=1e-5)


def test_gradient_accumulation_invariance(tiny_model_dir, tmp_path):
    """One optimizer step on 8 pairs: batch 8 × 1 step equals batch 1 × 8 accumulation steps."""
    results = []
    for batch, accumulation in ((8, 1), (1, 8)):
        model, tok = load(tiny_model_dir)
        ref, _ = load(tiny_model_dir, seed_offset=7)
        args = config(
            tmp_path, max_steps=1, per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation,
            optim="sgd", learning_rate=0.5, lr_scheduler_type="constant", max_grad_norm=1e9,
        )  # fmt: skip
        trainer = RPOTrainer(model, args, pair_dataset(8), None, tok, ref_model=ref)
        trainer.train()
        results.append({n: p.detach().clone() for n, p in trainer.model.named_parameters()})
    moved = max((results[0][n] - load(tiny_model_dir)[0].state_dict()[n]).abs().max().item() for n in results[0])
    assert moved > 1e-3
    for name in results[0]:
        torch.testing.assert_close(results[0][name], results[1][name], rtol=0, atol=1e-6, msg=name)


def test_step0_dpo_loss_matches_trl(tiny_model_dir, tmp_path):
    """Same policy, same (different) reference, same pairs: TRL 1.16 DPOTrainer, loss_type sigmoid,
    and ours (rpo with α = 0) agree on the loss and the chosen/rejected log-probs to 1e-5."""
    from trl import DPOConfig, DPOTrainer

    model, tok = load(tiny_model_dir)
    ref, _ = load(tiny_model_dir, seed_offset=7)
    trl_args = DPOConfig(
        output_dir=str(tmp_path / "trl"), per_device_eval_batch_size=8, beta=0.1, loss_type=["sigmoid"],
        max_length=128, report_to="none", disable_tqdm=True, bf16=False,
    )  # fmt: skip
    trl = DPOTrainer(model=model, ref_model=ref, args=trl_args, train_dataset=pair_dataset(), eval_dataset=pair_dataset(), processing_class=tok).evaluate()

    model, tok = load(tiny_model_dir)
    ref, _ = load(tiny_model_dir, seed_offset=7)
    ours = RPOTrainer(model, config(tmp_path, alpha=0.0, beta=0.1), pair_dataset(), pair_dataset(), tok, ref_model=ref).evaluate()
    assert abs(trl["eval_loss"] - math.log(2)) > 1e-3
    assert ours["eval_loss"] == pytest.approx(trl["eval_loss"], abs=1e-5)
    for key in ("logps/chosen", "logps/rejected", "rewards/margins"):
        assert ours[f"eval_{key}"] == pytest.approx(trl[f"eval_{key}"], abs=1e-4), key


def test_objective_needing_a_missing_field_fails_before_training(tiny_model_dir, tmp_path):
    model, tok = load(tiny_model_dir)
    args = PreferenceConfig(output_dir=str(tmp_path / "o"), objective="sppo", report_to="none")
    with pytest.raises(ValueError, match="win_rates"):
        from align.trainers import PreferenceTrainer

        PreferenceTrainer(model, args, pair_dataset(), None, tok)


def test_reference_none_is_refused_for_dpo(tiny_model_dir, tmp_path):
    model, tok = load(tiny_model_dir)
    with pytest.raises(ValueError, match="needs reference log-probs"):
        RPOTrainer(model, config(tmp_path, reference="none"), pair_dataset(), None, tok)


def test_precomputed_reference_is_cached_and_reused(tiny_model_dir, tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="align.trainers.base")
    data = pair_dataset()
    columns = []
    for _ in range(2):
        model, tok = load(tiny_model_dir)
        ref, _ = load(tiny_model_dir, seed_offset=7)
        trainer = RPOTrainer(model, config(tmp_path, reference="precomputed"), data, None, tok, ref_model=ref)
        columns.append(trainer.train_dataset["ref_logps"])
    assert len(list((tmp_path / "out" / "ref_logps").glob("*.json"))) == 1
    assert columns[0] == columns[1]
    assert "reusing precomputed reference log-probs" in caplog.text


@pytest.mark.parametrize(
    "varlen, share", [(True, True), (True, False), (False, False)], ids=["shared-prompt", "varlen-attention", "block-diagonal-mask"]
)
@pytest.mark.parametrize("kind", ["pair", "list"])
def test_packed_path_matches_trl_fused_head_per_token(tiny_model_dir, varlen, share, kind):
    """The packed path (LM head at completion positions only, chunked log-softmax; attention per
    sequence, per sequence with each prompt packed once for all its completions, or transformers'
    block-diagonal mask) and the padded path (TRL's fused LM head) give the same per-token
    log-probs, entropies, sums and gradients of every parameter, on pairs and on lists of 2-4."""
    from trl.trainer.utils import add_fused_lm_head

    from align.attention import use_varlen_attention
    from align.data import PreferenceCollator, prepare_preference_dataset
    from align.trainers import completion_logps

    model, tok = load(tiny_model_dir)
    add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    if varlen:
        assert use_varlen_attention(model)
    if kind == "pair":
        rows, _ = prepare_preference_dataset(pair_dataset(6), tok, kind="pair", max_length=128)
    else:
        from tests.trainers.test_haepo import list_dataset

        rows, _ = prepare_preference_dataset(list_dataset(4), tok, kind="list", max_length=128)
    results = {}
    for packed in (True, False):
        model.zero_grad()
        batch = PreferenceCollator(tok.pad_token_id, padding_free=packed, share_prompt=share)(list(rows))
        if packed:  # the shared layout is really used: fewer tokens than one prompt per completion
            shorter = batch["input_ids"].shape[1] < sum(len(r["prompt_ids"]) * len(r["completion_ids"]) + sum(map(len, r["completion_ids"])) for r in rows)
            assert shorter == share
        out = completion_logps(model, batch, entropy=True)
        out["logps_sum"].sum().backward()
        results[packed] = (out, {n: p.grad.clone() for n, p in model.named_parameters()})
    (packed, grad_packed), (padded, grad_padded) = results[True], results[False]
    for key in ("logps_sum", "token_logps", "token_entropy"):
        torch.testing.assert_close(packed[key], padded[key], rtol=1e-5, atol=1e-5, msg=key)
    assert torch.equal(packed["token_mask"], padded["token_mask"])
    for name in grad_packed:
        torch.testing.assert_close(grad_packed[name], grad_padded[name], rtol=1e-4, atol=1e-6, msg=name)


def test_padding_free_trainer_attends_per_sequence(tiny_model_dir, tmp_path):
    from align.attention import VARLEN_SDPA

    model, tok = load(tiny_model_dir)
    ref, _ = load(tiny_model_dir, seed_offset=7)
    trainer = RPOTrainer(model, config(tmp_path, padding_free=True), pair_dataset(), None, tok, ref_model=ref)
    assert trainer.model.config._attn_implementation == VARLEN_SDPA
    assert trainer.ref_model.config._attn_implementation == VARLEN_SDPA
    model, tok = load(tiny_model_dir)
    trainer = RPOTrainer(model, config(tmp_path, padding_free=False), pair_dataset(), None, tok, ref_model=ref)
    assert trainer.model.config._attn_implementation == "sdpa"


def test_lora_init_does_not_depend_on_the_global_rng(tiny_model_dir, tmp_path):
    """A resumed loop skips stages a fresh run executes; the new adapter must still be the same."""
    adapters = []
    for noise in (1, 2):
        torch.manual_seed(noise)
        model, tok = load(tiny_model_dir)
        trainer = RPOTrainer(model, config(tmp_path), pair_dataset(), None, tok, peft_config=lora())
        adapters.append({n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_A" in n})
    assert adapters[0] and all(torch.equal(adapters[0][n], adapters[1][n]) for n in adapters[0])


# -- resuming: exactly max_steps, the same model and the same train_loss as an uninterrupted run ------------


class _Crash(Exception):
    pass


def _crash_after(step):
    from transformers import TrainerCallback

    class CrashAfter(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise _Crash(step)

    return CrashAfter()


def test_resume_gives_the_uninterrupted_run(tiny_model_dir, tmp_path):
    """Killed after the checkpoint at step 4 of 6 and resumed, or "resumed" from the final
    checkpoint of a finished run (a kill during the final save): the weights, global_step and
    train_loss equal the uninterrupted run's, and no step past max_steps is trained."""
    data = pair_dataset(24)

    def run(out, resume=None, callbacks=()):
        model, tok = load(tiny_model_dir)
        args = config(tmp_path, output_dir=str(out), max_steps=6, save_strategy="steps", save_steps=2,
                      logging_steps=3, eval_on_start=True, eval_strategy="steps", eval_steps=6)  # fmt: skip
        trainer = RPOTrainer(model, args, data, pair_dataset(4), tok, callbacks=list(callbacks))
        return trainer, trainer.train(resume_from_checkpoint=resume)

    full, full_out = run(tmp_path / "full")
    with pytest.raises(_Crash):
        run(tmp_path / "killed", callbacks=[_crash_after(4)])
    resumed, resumed_out = run(tmp_path / "killed", resume=str(tmp_path / "killed" / "checkpoint-4"))
    finished, finished_out = run(tmp_path / "full", resume=str(tmp_path / "full" / "checkpoint-6"))

    weights = {n: p.detach().clone() for n, p in full.model.named_parameters()}
    for trainer, out in ((resumed, resumed_out), (finished, finished_out)):
        assert out.global_step == trainer.state.global_step == 6
        assert out.training_loss == pytest.approx(full_out.training_loss, rel=1e-6)
        assert out.metrics["train_loss"] == pytest.approx(full_out.metrics["train_loss"], rel=1e-6)
        for name, param in trainer.model.named_parameters():
            torch.testing.assert_close(param, weights[name], rtol=0, atol=1e-6)
    # the Trainer's own number for the resumed call (steps 5-6 only) differs: what we correct
    losses = [e["loss"] for e in full.state.log_history if "loss" in e]
    assert full_out.training_loss == pytest.approx(sum(losses) / len(losses), rel=1e-6)
    assert finished.state.global_step == 6 and not any(
        e.get("step", 0) > 6 for e in finished.state.log_history
    )


# -- method configs take the objective's hyperparameters from the objective (objective_fields) --------------


def test_method_configs_take_every_hyperparameter_from_their_objectives():
    """Each objective field is a config field with the objective's type, default and help: one
    default, in the objective (RPO β = 0.1, α = 1; SPPO β = 0.001; implicit PRM β = 0.05, w = 0)."""
    import dataclasses

    from align.objectives import RPO, SPPO, ImplicitPRMCE, ImplicitPRMDPO, SPPOHard, SPPOSingle
    from align.trainers import ImplicitPRMConfig, SPPOConfig

    for config_cls, objectives in ((RPOConfig, [RPO]), (SPPOConfig, [SPPO, SPPOSingle, SPPOHard]),
                                   (ImplicitPRMConfig, [ImplicitPRMCE, ImplicitPRMDPO])):  # fmt: skip
        config_fields = {f.name: f for f in dataclasses.fields(config_cls)}
        for objective in objectives:
            for f in dataclasses.fields(objective):
                ours = config_fields[f.name]
                expected = (f.default, float, f.metadata["help"])
                assert (ours.default, ours.type, ours.metadata["help"]) == expected, f.name
        assert set(config_cls.objective_field_defaults) == {f.name for o in objectives for f in dataclasses.fields(o)}
    assert RPOConfig.objective_field_defaults == {"beta": 0.1, "alpha": 1.0}
    assert SPPOConfig.objective_field_defaults == {"beta": 0.001}
    assert ImplicitPRMConfig.objective_field_defaults == {"beta": 0.05, "nll_weight": 0.0}


def test_objective_fields_parse_and_bad_values_fail_while_parsing(tmp_path):
    from transformers import HfArgumentParser

    from align.trainers import ImplicitPRMConfig

    parser = HfArgumentParser(RPOConfig)
    (args,) = parser.parse_args_into_dataclasses(["--output_dir", str(tmp_path), "--beta", "0.2", "--alpha", "0"])
    assert (args.beta, args.alpha) == (0.2, 0.0)
    assert "Weight α of the winner's per-token NLL" in parser.format_help()
    with pytest.raises(ValueError, match="RPO.beta must be a positive number, got -1.0"):
        parser.parse_args_into_dataclasses(["--output_dir", str(tmp_path), "--beta", "-1"])
    with pytest.raises(ValueError, match="--gamma"):
        parser.parse_args_into_dataclasses(["--output_dir", str(tmp_path), "--gamma", "1"])
    (args,) = HfArgumentParser(ImplicitPRMConfig).parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--nll_weight", "0.1", "--beta", "0.2"]
    )
    assert (args.objective, args.beta, args.nll_weight) == ("implicit_prm_ce", 0.2, 0.1)
    assert args.build_objective().nll_weight == 0.1
    # a hyperparameter of another objective the config covers is refused, not silently ignored
    with pytest.raises(ValueError, match="alpha=0.5: not a hyperparameter of objective 'dpo'"):
        config(tmp_path, objective="dpo", alpha=0.5)
    assert config(tmp_path, objective="dpo").build_objective().beta == 0.1  # alpha at its default: fine


def test_objective_fields_refuses_clashes_and_keeps_overrides(tmp_path):
    """Two objectives disagreeing on a default, a field named like a TrainingArguments field, or
    one without a default fail when the config class is made; a field the config declares wins."""
    from dataclasses import dataclass, field

    from align.objectives import DPO, SPPO, ImplicitPRMCE, Objective
    from align.trainers import PreferenceConfig, objective_fields

    with pytest.raises(TypeError, match=r"SPPO.beta: \(<class 'float'>, 0.001\) disagrees"):
        objective_fields(DPO, SPPO)(type("Both", (PreferenceConfig,), {"__annotations__": {}}))

    @dataclass
    class Seeded(DPO):
        seed: int = 3

    with pytest.raises(TypeError, match="Seeded.seed clashes with the inherited config field 'seed'"):
        objective_fields(Seeded)(type("Clash", (PreferenceConfig,), {"__annotations__": {}}))

    @dataclass
    class NoDefault(Objective):
        tau: float = field(default_factory=lambda: 1.0)

    with pytest.raises(TypeError, match="NoDefault.tau has no plain default"):
        objective_fields(NoDefault)(type("Factory", (PreferenceConfig,), {"__annotations__": {}}))

    @dataclass
    @objective_fields(ImplicitPRMCE)
    class Sharper(PreferenceConfig):
        objective: str = "implicit_prm_ce"
        beta: float = 0.5  # a deliberate, documented override

    args = Sharper(output_dir=str(tmp_path), report_to="none")
    assert (args.beta, args.nll_weight, args.build_objective().beta) == (0.5, 0.0, 0.5)
    assert Sharper.objective_field_defaults == {"beta": 0.5, "nll_weight": 0.0}


def test_precomputed_reference_comes_from_the_named_reference_model(tiny_model_dir, tmp_path):
    """reference='precomputed' with ref_model_name_or_path precomputes with that model, not the
    policy: the step-0 loss equals the 'model' strategy's with the same reference folder."""
    ref, tok = load(tiny_model_dir, seed_offset=7)
    ref.save_pretrained(tmp_path / "ref")
    losses = {}
    for reference in ("model", "precomputed"):
        args = config(tmp_path / reference, reference=reference, ref_model_name_or_path=str(tmp_path / "ref"))
        trainer = RPOTrainer(load(tiny_model_dir)[0], args, pair_dataset(), pair_dataset(), tok)
        losses[reference] = trainer.evaluate()
    assert losses["precomputed"]["eval_loss"] == pytest.approx(losses["model"]["eval_loss"], abs=1e-6)
    assert abs(losses["model"]["eval_rewards/margins"]) > 1e-3  # the reference really differs from the policy


@pytest.mark.parametrize("objective", ["dpo", "sppo", "sppo_single", "sppo_hard"])
def test_pair_objectives_train_end_to_end_by_name(objective, tiny_model_dir, tmp_path):
    """Each pair objective, named in the config, trains: the loss falls and the chosen completions'
    log-ratio Δ = log π_θ − log π_ref ends above the rejected ones' on every training pair."""
    from align.trainers import SPPOConfig, SPPOTrainer

    model, tok = load(tiny_model_dir)
    data = pair_dataset(8).map(lambda row: {"win_rates": [0.8, 0.2], "pair_prob": 0.8})
    if objective == "dpo":
        trainer_cls, args = PreferenceTrainer, config(tmp_path, PreferenceConfig, objective="dpo", max_steps=15)
    else:
        trainer_cls, args = SPPOTrainer, config(tmp_path, SPPOConfig, objective=objective, beta=0.1, max_steps=15)
    args.per_device_train_batch_size = 8
    trainer = trainer_cls(model, args, data, data, tok)
    assert trainer.objective.name == objective
    start = trainer.evaluate()["eval_loss"]
    trainer.train()
    assert trainer.evaluate()["eval_loss"] < start - 0.1
    batch = trainer._prepare_inputs(next(iter(trainer.get_eval_dataloader())))
    with torch.no_grad():
        delta = trainer.completion_groups(trainer.model, batch).logratios()
    assert (delta[:, 0] > delta[:, 1]).all(), delta
