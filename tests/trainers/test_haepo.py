"""HAEPOTrainer on a tiny random model: the trainer's token entropies and KL against a direct
forward, a higher-return completion gaining log-probability, ragged lists (a different K per row)
masked exactly, gradient-accumulation invariance on them, and the config's refusals."""

import pytest
import torch
from datasets import Dataset

from align.trainers import HAEPOConfig, HAEPOTrainer
from tests.trainers.common import QUESTIONS
from tests.trainers.test_base import load

EXTRA = (" Done.", " Let me check again.")
RETURNS = (1.0, 0.0, 0.5, 0.25)


def list_dataset(n: int = 4, ks=(2, 3, 4)) -> Dataset:
    """Row i: K = ks[i % len(ks)] completions (the right and the wrong answer, then each with a
    tail), returns RETURNS[:K]."""
    rows = []
    for i in range(n):
        question, right, wrong = QUESTIONS[i % len(QUESTIONS)]
        k = ks[i % len(ks)]
        texts = [right, wrong, right + EXTRA[0], wrong + EXTRA[1]][:k]
        rows.append({
            "prompt": [{"role": "user", "content": question}],
            "completions": [[{"role": "assistant", "content": t}] for t in texts],
            "returns": list(RETURNS[:k]),
        })  # fmt: skip
    return Dataset.from_list(rows)


def haepo_config(tmp_path, **overrides):
    base = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, per_device_eval_batch_size=4,
                max_steps=1, learning_rate=0.5, optim="sgd", lr_scheduler_type="constant", max_grad_norm=1e9,
                logging_steps=1, save_strategy="no", report_to="none", max_length=128, seed=0, disable_tqdm=True)  # fmt: skip
    return HAEPOConfig(**{**base, **overrides})


def outputs(trainer, rows):
    """The objective's output on a collated batch of ``rows`` (tokenized dataset rows)."""
    batch = trainer._prepare_inputs(trainer.data_collator(rows))
    with torch.no_grad():
        _, out = trainer.compute_loss(trainer.model, batch, return_outputs=True)
    return out


def direct_token_values(model, ref, prompt_ids, completion_ids):
    """Per-token log-probs (policy, reference) and policy entropies of one completion from a
    plain, unpacked forward over the full-vocabulary logits."""
    ids = torch.tensor([list(prompt_ids) + list(completion_ids)])
    start = len(prompt_ids)
    values = []
    for m in (model, ref):
        with torch.no_grad():
            logprobs = torch.log_softmax(m(ids).logits[0, start - 1 : -1].double(), dim=-1)
        values.append(logprobs)
    target = torch.tensor(completion_ids)
    policy, reference = (v.gather(-1, target[:, None])[:, 0] for v in values)
    entropy = -(values[0].exp() * values[0]).sum(-1)
    return policy, reference, entropy


@pytest.mark.parametrize("estimator", ["k1", "k3"])
def test_entropy_and_kl_equal_a_direct_forward(tiny_model_dir, tmp_path, estimator):
    """haepo/entropy = mean over every completion token of a group of −Σ_v p_v log p_v, and
    haepo/kl the mean per-token estimate (log r = log π_ref − log π_θ; k1 = −log r,
    k3 = e^{log r} − 1 − log r) against a perturbed reference, from a plain forward of each
    completion alone: the packed, fused-head path computes the same numbers, ragged rows included."""
    model, tok = load(tiny_model_dir)
    ref, _ = load(tiny_model_dir, seed_offset=7)
    direct_ref, _ = load(tiny_model_dir, seed_offset=7)
    trainer = HAEPOTrainer(model, haepo_config(tmp_path, kl_estimator=estimator), list_dataset(3), None, tok, ref_model=ref)
    rows = [trainer.train_dataset[i] for i in range(3)]
    out = outputs(trainer, rows)
    for b, row in enumerate(rows):
        token_kl, entropies = [], []
        for completion in row["completion_ids"]:
            policy, reference, entropy = direct_token_values(trainer.model, direct_ref, row["prompt_ids"], completion)
            log_r = reference - policy
            token_kl.append(-log_r if estimator == "k1" else torch.expm1(log_r) - log_r)
            entropies.append(entropy)
        assert out.metrics["haepo/entropy"][b].item() == pytest.approx(torch.cat(entropies).mean().item(), rel=1e-4)
        assert out.metrics["haepo/kl"][b].item() == pytest.approx(torch.cat(token_kl).mean().item(), rel=1e-3, abs=1e-6)
    assert (out.metrics["haepo/kl"].abs() > 1e-4).all()  # the perturbed reference differs


def test_higher_return_completion_gains_log_probability(tiny_model_dir, tmp_path):
    """One prompt, three completions, returns [1, 0, 0]: after one SGD step the top-return
    completion's log-likelihood rises and its lead over the best of the others grows."""
    question, right, wrong = QUESTIONS[0]
    texts = [right, wrong, wrong + EXTRA[1]]
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": question}],
                               "completions": [[{"role": "assistant", "content": t}] for t in texts],
                               "returns": [1.0, 0.0, 0.0]}])  # fmt: skip
    model, tok = load(tiny_model_dir)
    # τ = 50 spreads the weights over the three (a random model's summed log-likelihoods differ by
    # several nats, which would put nearly all the weight on one completion)
    trainer = HAEPOTrainer(model, haepo_config(tmp_path, tau=50.0, learning_rate=2.0), data, None, tok)
    row = trainer.train_dataset[0]

    def logps():
        batch = trainer._prepare_inputs(trainer.data_collator([row]))
        with torch.no_grad():
            return trainer.completion_groups(trainer.model, batch).policy_logps_sum[0]

    before = logps()
    trainer.train()
    after = logps()
    assert after[0] > before[0] + 1e-3
    assert (after[0] - after[1:].max()) > (before[0] - before[1:].max()) + 1e-3


@pytest.mark.parametrize("padding_free", [True, False])
def test_masked_list_entries_change_neither_loss_nor_metrics(tiny_model_dir, tmp_path, padding_free):
    """A K = 2 row batched beside a K = 4 row (its entries 2 and 3 masked) gets the loss and every
    metric it gets alone, packed and padded."""
    model, tok = load(tiny_model_dir)
    ref, _ = load(tiny_model_dir, seed_offset=7)
    args = haepo_config(tmp_path, padding_free=padding_free)
    trainer = HAEPOTrainer(model, args, list_dataset(3, ks=(2, 4, 3)), None, tok, ref_model=ref)
    short, long = trainer.train_dataset[0], trainer.train_dataset[1]
    assert (len(short["completion_ids"]), len(long["completion_ids"])) == (2, 4)
    alone, together = outputs(trainer, [short]), outputs(trainer, [long, short])
    torch.testing.assert_close(together.loss[1], alone.loss[0], rtol=1e-5, atol=1e-6)
    for name, values in alone.metrics.items():
        torch.testing.assert_close(together.metrics[name][1], values[0], rtol=1e-5, atol=1e-6, msg=name)


def test_gradient_accumulation_invariance_on_ragged_lists(tiny_model_dir, tmp_path):
    """One optimizer step on 4 lists with K = 2, 3, 4, 2 (every term on: KL to a perturbed
    reference, entropy bonus): batch 4 × 1 step equals batch 1 × 4 accumulation steps."""
    results = []
    for batch, accumulation in ((4, 1), (1, 4)):
        model, tok = load(tiny_model_dir)
        ref, _ = load(tiny_model_dir, seed_offset=7)
        args = haepo_config(tmp_path, per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation,
                            tau=20.0, entropy_coef=0.1, kl_coef=0.5)  # fmt: skip
        trainer = HAEPOTrainer(model, args, list_dataset(4), None, tok, ref_model=ref)
        trainer.train()
        results.append({n: p.detach().clone() for n, p in trainer.model.named_parameters()})
    initial = load(tiny_model_dir)[0].state_dict()
    assert max((results[0][n] - initial[n]).abs().max().item() for n in results[0]) > 1e-4
    for name in results[0]:
        torch.testing.assert_close(results[0][name], results[1][name], rtol=0, atol=1e-6, msg=name)


def test_trains_and_logs_every_term(tiny_model_dir, tmp_path):
    """Two steps with LoRA (the reference: the adapter switched off, i.e. π_prev) log each term,
    the effective sample size (1 ≤ ESS ≤ K) and the weight on the best-return completion."""
    from peft import LoraConfig

    model, tok = load(tiny_model_dir)
    peft = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0, task_type="CAUSAL_LM")
    args = haepo_config(tmp_path, max_steps=2, per_device_train_batch_size=2, learning_rate=0.1)
    trainer = HAEPOTrainer(model, args, list_dataset(4), None, tok, peft_config=peft)
    assert trainer.reference == "adapter" and trainer.ref_model is None
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 2
    for entry in logs:
        assert {"haepo/pl_term", "haepo/entropy", "haepo/kl", "haepo/ess", "haepo/best_weight"} <= set(entry)
        assert 1.0 - 1e-6 <= entry["haepo/ess"] <= 4.0 and 0.0 <= entry["haepo/best_weight"] <= 1.0
    assert logs[0]["haepo/kl"] == pytest.approx(0.0, abs=1e-7)  # the first step: π_θ is π_prev
    assert logs[1]["haepo/kl"] > 0.0


def test_config_refusals(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="must be 'haepo'"):
        haepo_config(tmp_path, objective="dpo")
    with pytest.raises(ValueError, match="return_norm"):
        haepo_config(tmp_path, return_norm="rank")
    model, tok = load(tiny_model_dir)
    with pytest.raises(ValueError, match="needs reference"):
        HAEPOTrainer(model, haepo_config(tmp_path, reference="none"), list_dataset(2), None, tok)
    # no KL term: no reference at all, and reference='none' is fine
    trainer = HAEPOTrainer(model, haepo_config(tmp_path, kl_coef=0.0, reference="none"), list_dataset(2), None, tok)
    assert trainer.reference == "none" and trainer.ref_model is None
    pairs = Dataset.from_list([{"prompt": "q", "chosen": "a", "rejected": "b"}])
    with pytest.raises(Exception, match="list"):
        HAEPOTrainer(model, haepo_config(tmp_path), pairs, None, tok)
