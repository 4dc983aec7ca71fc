"""hp's dense WavLM against transformers' WavLMModel on the same checkpoint."""
import pytest
import torch

import hp
from hp.model.io import state_dict_from_hf

from helpers import hf_config, hp_config, random_hf_model
from parity import ATOL, compare


def hp_from_hf(name, ref, prune_units=()):
    model = hp.Frontend(hp_config(name), prune_units=prune_units)
    model.load_state_dict(state_dict_from_hf(ref.state_dict(), model.config, "test"), strict=not prune_units)
    return model.eval()


@pytest.mark.parametrize("name", ["tiny-post", "tiny-pre"])
@pytest.mark.parametrize("padded", [False, True])
def test_tiny_layouts_match_transformers(name, padded):
    ref = random_hf_model(name)
    model = hp_from_hf(name, ref)
    torch.manual_seed(1)
    wave = torch.randn(3, 12000)
    compare(ref, model, wave, torch.tensor([12000, 9100, 4000]) if padded else None)


@pytest.mark.slow  # full-size random models (Large: ~17 s)
@pytest.mark.parametrize("name", ["base-plus", "large"])
def test_full_size_layouts_match_transformers(name):
    """Base+ (12x768, group norm, post-LN) and Large (24x1024, layer norm, pre-LN), equal and padded."""
    ref = random_hf_model(name)
    model = hp_from_hf(name, ref)
    torch.manual_seed(2)
    wave = torch.randn(2, 8000)
    compare(ref, model, wave, None)
    compare(ref, model, wave, torch.tensor([8000, 5000]))


def test_equal_lengths_equal_no_lengths():
    """Full lengths change nothing but the group norm's arithmetic (two-pass masked sums vs the fused kernel)."""
    ref = random_hf_model("tiny-post")
    model = hp_from_hf("tiny-post", ref)
    wave = torch.randn(2, 6000)
    with torch.no_grad():
        for a, b in zip(model(wave), model(wave, torch.tensor([6000, 6000]))):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_gated_model_at_init_is_close_to_dense_except_ffn():
    """Conv/head/layer gates start almost surely on; their eval masks then only scale by ~sigmoid(0.8*4.6/b)."""
    ref = random_hf_model("tiny-post")
    gated = hp_from_hf("tiny-post", ref, prune_units=("conv", "head", "attlayer", "ffnlayer"))
    assert all(g.num_pruned() == 0 for g in gated.gates().values())
    assert all(g.deterministic_mask().min() > 0.99 for g in gated.gates().values())


@pytest.mark.parametrize("name", ["base-plus", "large"])
def test_num_params_matches_transformers(name):
    with torch.device("meta"):
        ref = __import__("transformers").WavLMModel(hf_config(name))
        model = hp.Frontend(hp_config(name), prune_units=())
    # masked_spec_embed (hidden_size values, SpecAugment only) is not part of hp's model
    assert model.num_params() == ref.num_parameters() - ref.config.hidden_size
    assert model.num_params() == model.dense_num_params == model.deterministic_num_params()
    assert model.expected_num_params().item() == pytest.approx(model.num_params(), abs=0.5)


def test_brief_parameter_counts():
    """docs/references.md §6: HF WavLMModel Base+ 94.38M (CNN 4.20M), Large 315.45M (with masked_spec_embed)."""
    with torch.device("meta"):
        base = hp.Frontend(hp.SHAPES["base-plus"], prune_units=())
        large = hp.Frontend(hp.SHAPES["large"], prune_units=())
    assert round((base.num_params() + 768) / 1e6, 2) == 94.38
    assert round(sum(p.numel() for p in base.cnn.parameters()) / 1e6, 2) == 4.20
    assert round((large.num_params() + 1024) / 1e6, 2) == 315.45


def test_gradients_reach_every_parameter_and_gate():
    model = hp.Frontend(hp.SHAPES["tiny"]).train()
    out = model(torch.randn(2, 8000), torch.tensor([8000, 6000]))
    (sum(h.pow(2).mean() for h in out) + model.expected_sparsity()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing


def test_layerdrop_keeps_hidden_state_count():
    model = hp.Frontend(hp.SHAPES["tiny"].replace(layerdrop=1.0, num_hidden_layers=3), prune_units=()).train()
    states = model(torch.randn(1, 4000))
    assert len(states) == 4
    assert torch.equal(states[1], states[2]) and torch.equal(states[2], states[3])  # layers 1, 2 dropped
    assert len(model.eval()(torch.randn(1, 4000))) == 4


def test_bad_lengths_rejected():
    model = hp.Frontend(hp.SHAPES["tiny"], prune_units=())
    with pytest.raises(ValueError, match="lengths"):
        model(torch.randn(2, 4000), torch.tensor([4000, 100]))  # 100 samples make no frame
    with pytest.raises(ValueError, match="lengths"):
        model(torch.randn(2, 4000), torch.tensor([4001, 4000]))
    with pytest.raises(ValueError, match="batch, samples"):
        model(torch.randn(4000))


def _explicit_attention(q, k, v, attn_mask=None, dropout_p=0.0, **_):
    """softmax(q k^T / sqrt(d) + mask) v, written out: the plain path SDPA must reproduce."""
    assert dropout_p == 0.0
    scores = q.float() @ k.float().transpose(-1, -2) / q.shape[-1] ** 0.5 + attn_mask.float()
    return (torch.softmax(scores, dim=-1) @ v.float()).to(q.dtype)


@pytest.mark.parametrize("name", ["tiny-post", "tiny-pre"])
def test_sdpa_attention_matches_the_explicit_softmax(name, monkeypatch):
    """Every layer's attention runs through F.scaled_dot_product_attention with WavLM's gated relative position
    bias (and the padding mask) as the additive mask: the whole model, padded, against the written-out path;
    and under bf16 autocast (CPU here; CUDA in training) it runs and stays within bf16's resolution."""
    from torch.nn import functional

    model = hp_from_hf(name, random_hf_model(name), prune_units=("head",))  # heads gated: a subset path too
    torch.manual_seed(1)
    wave, lengths = torch.randn(2, 8000), torch.tensor([8000, 5000])
    with torch.no_grad():
        fast = model(wave, lengths)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(wave, lengths)
        monkeypatch.setattr(functional, "scaled_dot_product_attention", _explicit_attention)
        plain = model(wave, lengths)
    frames = model.frame_mask(lengths, fast[0].shape[1])
    for a, b, c in zip(fast, plain, low):
        assert (a - b)[frames].abs().max().item() <= ATOL
        scale = b[frames].abs().max().item()
        assert (c.float() - b)[frames].abs().max().item() <= 0.05 * scale  # bf16: 8 bits of mantissa, through every layer
