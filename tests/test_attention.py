"""varlen SDPA: a packed row attended per sequence gives the logits and gradients of running each
sequence alone, and everything that is not a packed row behaves exactly like transformers' sdpa."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from align.attention import VARLEN_SDPA, packed_segments, use_varlen_attention

LENGTHS = [5, 17, 1, 9, 30]


def llama(**overrides):
    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, attn_implementation="sdpa", **overrides)  # fmt: skip
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def qwen2_sliding(window):
    config = Qwen2Config(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=1, use_sliding_window=True, sliding_window=window,
                         max_window_layers=0, layer_types=["sliding_attention"] * 2, attn_implementation="sdpa")  # fmt: skip
    torch.manual_seed(0)
    return Qwen2ForCausalLM(config).eval()


def sequences():
    generator = torch.Generator().manual_seed(1)
    return [torch.randint(0, 97, (n,), generator=generator) for n in LENGTHS]


def packed_logits(model, seqs):
    input_ids = torch.cat(seqs)[None]
    position_ids = torch.cat([torch.arange(len(s)) for s in seqs])[None]
    return model(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits[0]


def test_packed_segments_split_at_position_restarts():
    positions = torch.tensor([[0, 1, 2, 0, 0, 1, 5, 6]])
    assert packed_segments(positions) == [(0, 3), (3, 4), (4, 6), (6, 8)]


@pytest.mark.parametrize("build", [llama, lambda: qwen2_sliding(4)], ids=["llama-gqa", "qwen2-sliding-window"])
def test_packed_logits_and_gradients_match_one_sequence_at_a_time(build):
    model, seqs = build(), sequences()
    alone = torch.cat([model(input_ids=s[None], use_cache=False).logits[0] for s in seqs])
    alone.square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    assert use_varlen_attention(model)
    assert model.config._attn_implementation == VARLEN_SDPA
    packed = packed_logits(model, seqs)
    packed.square().mean().backward()
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=1e-5)
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, grads[name], atol=1e-5, rtol=1e-5, msg=name)


def test_plain_sdpa_on_the_packed_row_gives_the_same_logits():
    """transformers' own block-diagonal mask is the reference the varlen path replaces."""
    model, seqs = llama(), sequences()
    reference = packed_logits(model, seqs)
    use_varlen_attention(model)
    torch.testing.assert_close(packed_logits(model, seqs), reference, atol=1e-5, rtol=1e-5)


def test_padded_batches_and_generation_are_unchanged():
    model, seqs = llama(), sequences()
    width = max(LENGTHS)
    input_ids = torch.zeros(len(seqs), width, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for i, s in enumerate(seqs):  # left padding, as in generation
        input_ids[i, width - len(s) :], attention_mask[i, width - len(s) :] = s, 1
    before = model(input_ids=input_ids, attention_mask=attention_mask).logits
    generated = model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=6, do_sample=False)
    use_varlen_attention(model)
    after = model(input_ids=input_ids, attention_mask=attention_mask).logits
    mask = attention_mask.bool()
    torch.testing.assert_close(after[mask], before[mask])
    assert torch.equal(model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=6, do_sample=False), generated)


def test_only_sdpa_text_models_switch_and_the_name_is_not_saved(tmp_path):
    eager = llama()
    eager.config._attn_implementation = "eager"
    assert not use_varlen_attention(eager)
    assert eager.config._attn_implementation == "eager"

    model = llama()
    assert use_varlen_attention(model)
    model.save_pretrained(tmp_path)
    assert VARLEN_SDPA not in (tmp_path / "config.json").read_text()
    reloaded = LlamaForCausalLM.from_pretrained(tmp_path, attn_implementation="sdpa")
    assert reloaded.config._attn_implementation == "sdpa"


def test_bf16_sequences_are_attended_in_fp32_on_cpu():
    """On CPU the fused kernel is much slower in bf16 than in fp32 for short sequences, so a bf16
    packed row is attended in fp32 and returned in bf16: exactly fp32 attention, rounded once."""
    import torch.nn.functional as F

    from align.attention import varlen_sdpa_attention_forward

    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 4, 12, 8).to(torch.bfloat16) for _ in range(3))
    positions = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 6]])
    module = torch.nn.Module()
    out, _ = varlen_sdpa_attention_forward(module, q, k, v, None, scaling=0.5, position_ids=positions)
    assert out.dtype == torch.bfloat16 and out.shape == (1, 12, 4, 8)
    expected = torch.cat(
        [F.scaled_dot_product_attention(q[:, :, s:e].float(), k[:, :, s:e].float(), v[:, :, s:e].float(), is_causal=True, scale=0.5)
         for s, e in [(0, 5), (5, 12)]], dim=2,
    ).to(torch.bfloat16).transpose(1, 2)  # fmt: skip
    assert torch.equal(out, expected)
    in_bf16 = torch.cat(
        [F.scaled_dot_product_attention(q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], is_causal=True, scale=0.5) for s, e in [(0, 5), (5, 12)]],
        dim=2,
    ).transpose(1, 2)
    assert not torch.equal(out, in_bf16)  # the bf16 kernel rounds differently: this checks the upcast


@pytest.mark.parametrize("build", [llama, lambda: qwen2_sliding(4)], ids=["llama-gqa", "qwen2-sliding-window"])
def test_a_shared_prompt_gives_each_completion_the_logits_and_gradients_of_its_own_copy(build):
    """[prompt, c1, c2, c3, other] with c2 and c3 starting at position len(prompt) (they continue the
    prompt, packed once) against [prompt+c1, prompt+c2, prompt+c3, other], each with its own copy:
    the same logits at every position of the shared row, and the same gradients of a loss on them."""
    model = build()
    assert use_varlen_attention(model)
    generator = torch.Generator().manual_seed(2)
    prompt, c1, c2, c3, other = (torch.randint(0, 97, (n,), generator=generator) for n in (6, 3, 5, 1, 4))
    p = len(prompt)
    weights = torch.randn(6 + 3 + 5 + 1 + 4, 97, generator=generator)

    copies = packed_logits(model, [torch.cat([prompt, c]) for c in (c1, c2, c3)] + [other])
    # rows of the copies that the shared row also has: the first copy whole, then each completion, then other
    first, second, third = 0, p + 3, 2 * p + 3 + 5
    rows = [*range(p + 3), *range(second + p, second + p + 5), third + p, *range(third + p + 1, third + p + 5)]
    expected = copies[rows]
    (expected * weights).sum().backward()
    grads = {n: q.grad.clone() for n, q in model.named_parameters()}
    model.zero_grad()

    input_ids = torch.cat([prompt, c1, c2, c3, other])[None]
    position_ids = torch.cat([torch.arange(p + 3), torch.arange(p, p + 5), torch.arange(p, p + 1), torch.arange(4)])[None]
    shared = model(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits[0]
    (shared * weights).sum().backward()
    torch.testing.assert_close(shared, expected, atol=1e-5, rtol=1e-5)
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, grads[name], atol=1e-5, rtol=1e-5, msg=name)
