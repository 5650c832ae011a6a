"""align's decoding loop (align.generation.decode) against transformers' ``generate``: the sampling
distribution against generate's own warpers, greedy outputs equal to ``generate``'s (rows finishing
at different steps; fp32 and bf16 autocast), and the fall-back to ``generate`` where the loop does
not apply."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from align.generation import SamplingConfig, encode_prompts, sample_completions
from align.generation.decode import decode, sample_tokens, sampling_weights, unsupported
from tests.generation.common import PROMPTS


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def generate_probs(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """The distribution ``generate`` samples from: its warpers in its order, then softmax."""
    scores = TemperatureLogitsWarper(temperature)(None, logits.clone())
    if top_k:
        scores = TopKLogitsWarper(top_k)(None, scores)
    if top_p < 1:
        scores = TopPLogitsWarper(top_p)(None, scores)
    return scores.softmax(-1)


@pytest.mark.parametrize(
    "temperature, top_k, top_p",
    [(0.7, 0, 0.9), (1.0, 50, 0.95), (1.3, 0, 1.0), (0.7, 20, 1.0), (2.0, 0, 0.99), (0.5, 0, 0.3)],
)
def test_sampling_weights_are_generates_distribution(temperature, top_k, top_p):
    """Over a vocabulary of 4,096 with peaked and flat rows (nuclei from 1 token to ~4,000, so the
    candidate set grows past 64 and 256), the normalised weights equal generate's probabilities."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(12, 4096, generator=gen) * torch.tensor([0.1, 0.5, 1, 2, 4, 8, 16, 0.01, 3, 6, 1, 0.2])[:, None]
    logits[10, 7] = 40.0  # one token carries nearly all the mass
    weights, index = sampling_weights(logits, temperature=temperature, top_k=top_k, top_p=top_p)
    ours = torch.zeros_like(logits).scatter_(-1, index, weights)
    ours = ours / ours.sum(-1, keepdim=True)
    expected = generate_probs(logits, temperature, top_k, top_p)
    assert torch.equal(ours > 0, expected > 0), "the kept tokens differ"
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-7)


def test_draws_follow_the_weights():
    """200,000 draws from 3 rows over 6 tokens: every frequency within 5 standard errors of its
    probability (and removed tokens never drawn)."""
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0], [0.0] * 6, [5.0, 4.9, 0.0, 0.0, 0.0, -9.0]])
    n = 200_000
    gen = torch.Generator().manual_seed(1)
    draws = sample_tokens(logits.repeat(n, 1), temperature=0.8, top_p=0.9, generator=gen).view(n, 3)
    probs = generate_probs(logits, 0.8, 0, 0.9)
    for row in range(3):
        freq = torch.bincount(draws[:, row], minlength=6).double() / n
        stderr = (probs[row] * (1 - probs[row]) / n).sqrt().double()
        assert bool(((freq - probs[row]).abs() <= 5 * stderr + 1e-12).all()), (row, freq, probs[row])
    assert sample_tokens(logits, temperature=0).tolist() == [0, 0, 0]


def greedy_alone(model, tok, prompt, max_new_tokens: int, eos: list[int]) -> list[int]:
    ids = torch.tensor([encode_prompts(tok, [prompt])[0]])
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                         max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=tok.pad_token_id)  # fmt: skip
    new = out[0, ids.shape[1] :].tolist()
    return next((new[:i] for i, token in enumerate(new) if token in eos), new)


@pytest.mark.parametrize("precision", ["model", "bf16"])
def test_greedy_equals_generate_with_rows_finishing_at_different_steps(tiny, precision):
    """Greedy answers of all prompts in one left-padded batch equal ``generate`` on each prompt alone,
    in fp32 and under bf16 autocast, with an extra EOS (a token some answers produce early) so rows
    leave the batch at different steps."""
    model, tok = tiny
    with torch.no_grad():
        first = [greedy_alone(model, tok, p, 16, [tok.eos_token_id]) for p in PROMPTS]
    stop = first[0][2]  # prompt 0 then stops after 2 tokens; others later or never
    eos = [tok.eos_token_id, stop]
    ids = encode_prompts(tok, PROMPTS)
    context = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else torch.autocast("cpu", enabled=False)
    with torch.no_grad(), context:
        ours = decode(model, ids, copies=1, max_new_tokens=16, eos=eos, pad_token_id=tok.pad_token_id, temperature=0)
        expected = [greedy_alone(model, tok, p, 16, eos) for p in PROMPTS]
    assert ours == expected
    lengths = {len(x) for x in ours}
    assert len(lengths) > 1 and 2 in lengths, "rows must finish at different steps"


def test_bf16_precision_samples_differently_and_reproducibly(tiny):
    model, tok = tiny
    base = dict(num_samples=3, max_new_tokens=12, temperature=1.0, top_p=0.95, chunk_size=4, batch_size=12)
    fp32 = sample_completions(model, tok, PROMPTS, SamplingConfig(**base), show_progress=False)
    bf16 = sample_completions(model, tok, PROMPTS, SamplingConfig(**base, precision="bf16"), show_progress=False)
    again = sample_completions(model, tok, PROMPTS, SamplingConfig(**base, precision="bf16"), show_progress=False)
    assert bf16 == again and bf16 != fp32
    assert next(model.parameters()).dtype == torch.float32  # the weights are left as they were
    # frozen weights (a LoRA base, merged adapters) sample the same and stay frozen
    for param in model.parameters():
        param.requires_grad_(False)
    try:
        frozen = sample_completions(model, tok, PROMPTS, SamplingConfig(**base, precision="bf16"), show_progress=False)
        assert frozen == bf16 and not any(p.requires_grad for p in model.parameters())
    finally:
        for param in model.parameters():
            param.requires_grad_(True)
    with pytest.raises(ValueError, match="precision must be one of model, bf16"):
        SamplingConfig(precision="fp16")


def test_generation_config_processors_fall_back_to_generate(tiny, tiny_model_dir):
    """A repetition penalty in the model's generation config is applied by ``generate``: the
    generator uses it, and its samples equal ``use_generate=True``'s."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tok = tiny[1]
    assert unsupported(model) is None
    model.generation_config.repetition_penalty = 1.3
    assert unsupported(model) == "its generation config sets repetition_penalty"
    config = SamplingConfig(num_samples=2, max_new_tokens=8, temperature=1.0, chunk_size=4, batch_size=8)
    calls = []
    original = model.generate
    model.generate = lambda **kwargs: calls.append(kwargs) or original(**kwargs)
    out = sample_completions(model, tok, PROMPTS, config, show_progress=False)
    assert len(calls) == 2  # one per chunk: generate did the sampling
    del model.generate
    assert out == sample_completions(model, tok, PROMPTS, config, show_progress=False, use_generate=True)


def test_vision_models_are_left_to_generate():
    from tests.tiny import build_tiny_llava

    model, _ = build_tiny_llava()
    assert unsupported(model) == "a vision-language model"
