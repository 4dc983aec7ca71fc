"""Back-ends (hp/heads/pooling.py): ECAPA-TDNN and MHFA shapes, exact padding invariance, gradients."""
import pytest
import torch
from torch import nn

from hp.heads.pooling import ECAPATDNN, MHFA, AttentiveStatsPool, Res2Conv, subtract_mean, weighted_sum
from configs import head_config

L, D = 4, 16  # hidden states, their width


def small_ecapa(num_states: int = L, **changes) -> ECAPATDNN:
    return ECAPATDNN(num_states, D, **dict(channels=32, embedding=12, attention_channels=8, se_channels=8,
                                           scale=4) | changes)


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random layer weights and BatchNorm statistics/affines: BN's shift then makes padded frames non-zero
    unless they are re-zeroed, and a uniform layer weighting cannot hide a mix-up of layers."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("_weights"):
                p.copy_(torch.randn(p.shape, generator=g))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g))
    return model.eval()


def sharpen(pool: AttentiveStatsPool) -> AttentiveStatsPool:
    """Peakier attention than the default init, so that its global context weighs in visibly."""
    with torch.no_grad():
        pool.hidden.weight.mul_(4)
        pool.score.weight.mul_(4)
    return pool


def make(backend: str) -> nn.Module:
    torch.manual_seed(0)
    if backend == "ecapa":
        model = randomise(small_ecapa())
        sharpen(model.pool)
        return model
    return randomise(MHFA(L, D, heads=4, compression=8, embedding=12))


def states(batch: int, frames: int, seed: int = 1) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, frames, D, generator=g) for _ in range(L))


def padded_batch(short: tuple[torch.Tensor, ...], pad: int, pad_value: str):
    """`short` (one utterance, T frames) padded by `pad` frames into a batch after a T + pad frame utterance."""
    t = short[0].shape[1]
    long = states(1, t + pad, seed=2)
    fill = (lambda: torch.zeros(1, pad, D)) if pad_value == "zeros" else (lambda: 10 * torch.randn(1, pad, D))
    batch = tuple(torch.cat([lo, torch.cat([s, fill()], dim=1)]) for lo, s in zip(long, short))
    mask = torch.ones(2, t + pad, dtype=torch.bool)
    mask[1, t:] = False
    return batch, mask


def test_ecapa_output_shape():
    model = small_ecapa().eval()
    out = model(states(3, 25), torch.ones(3, 25, dtype=torch.bool))
    assert out.shape == (3, 12)
    assert model(states(3, 25)).shape == (3, 12)


@pytest.mark.parametrize("backend", ["ecapa", "mhfa"])
@pytest.mark.parametrize("pad_value", ["zeros", "noise"])
def test_padding_invariance(backend, pad_value):
    """One utterance alone == the same utterance padded inside a batch with a longer one, with the mask; noise
    padding stands for WavLM's non-zero states on padded frames. ECAPA: fails if the input zeroing, the re-zeroing
    after any TDNN layer, or the masking of the SE mean, the global context or the attention softmax is dropped."""
    model = make(backend)
    short = states(1, 13, seed=3)
    batch, mask = padded_batch(short, pad=7, pad_value=pad_value)
    with torch.no_grad():
        alone = model(short)
        alone_masked = model(short, torch.ones(1, 13, dtype=torch.bool))
        both = model(batch, mask)
    torch.testing.assert_close(alone_masked, alone, rtol=0, atol=1e-6)
    assert (both[1] - alone[0]).abs().max() < 1e-5
    assert (both[0] - both[1]).abs().max() > 1e-2  # the two utterances differ: the check above is not vacuous


def test_ecapa_train_mode_statistics_ignore_padding():
    """In training the BatchNorms' batch statistics use real frames only: more padding on a batch changes
    neither the outputs nor the running statistics (fails if BatchNorm sees the padded zeros)."""
    short = states(1, 13, seed=3)
    batch, mask = padded_batch(short, pad=7, pad_value="noise")
    more = tuple(torch.cat([s, torch.randn(2, 9, D)], dim=1) for s in batch)
    more_mask = torch.cat([mask, torch.zeros(2, 9, dtype=torch.bool)], dim=1)
    outs, stats = [], []
    for frames, m in [(batch, mask), (more, more_mask)]:
        model = make("ecapa").train()
        outs.append(model(frames, m))
        norms = [b for b in model.modules() if isinstance(b, nn.BatchNorm1d)]
        stats.append(torch.cat([b.running_mean for b in norms] + [b.running_var for b in norms]))
    # the last BatchNorm's running statistics hold the batch's pre-normalisation embeddings; a train-mode
    # BatchNorm over 2 utterances outputs about +-1 per dimension, amplifying rounding: looser tolerance there
    torch.testing.assert_close(stats[1], stats[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=1e-3)


def test_attentive_pool_ignores_padded_frames():
    """The pool alone: garbage on padded frames changes nothing (fails without the masked global context or
    the masked softmax)."""
    torch.manual_seed(0)
    pool = sharpen(AttentiveStatsPool(6, attention_channels=4))
    x = torch.randn(1, 6, 9)
    padded = torch.cat([x, 10 * torch.randn(1, 6, 4)], dim=-1).expand(2, -1, -1).clone()
    mask = torch.ones(2, 13, dtype=torch.bool)
    mask[1, 9:] = False
    out = pool(padded, mask)
    assert (out[1] - pool(x)[0]).abs().max() < 1e-5
    assert (out[0] - out[1]).abs().max() > 1e-2


def test_ecapa_attention_sums_to_one_over_real_frames():
    torch.manual_seed(0)
    pool = sharpen(AttentiveStatsPool(6, attention_channels=4))
    x = torch.randn(2, 6, 9)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 5:] = False
    weights = pool.attention(x, mask)
    assert weights.shape == (2, 6, 9)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 6))
    assert (weights[1, :, 5:] == 0).all()
    assert weights[1, :, :5].std(-1).min() > 0  # not uniform: the scores depend on the frames
    # the pooled statistics are the attention-weighted mean and std, by hand
    mean = (weights * x).sum(-1)
    std = (weights * (x - mean[..., None]) ** 2).sum(-1).sqrt()
    torch.testing.assert_close(pool(x, mask), torch.cat([mean, std], dim=1))


def test_res2net_groups_are_chained():
    """Output group i depends on input groups 1..i (group 0 passes through unchanged)."""
    torch.manual_seed(0)
    res2 = Res2Conv(8, kernel_size=3, dilation=2, scale=4)
    x = torch.randn(1, 8, 10, requires_grad=True)
    out = res2(x)
    assert torch.equal(out[:, :2], x[:, :2])
    for i in range(1, 4):
        (grad,) = torch.autograd.grad(out[:, 2 * i:2 * i + 2].sum(), x, retain_graph=True)
        used = grad.abs().sum((0, 2)).view(4, 2).sum(1) > 0
        assert used.tolist() == [j != 0 and j <= i for j in range(4)], i


@pytest.mark.parametrize("channels, paper", [(512, 6.2e6), (1024, 14.7e6)])
def test_ecapa_size_matches_paper(channels, paper):
    """On 80 filterbanks ECAPA-TDNN has the paper's 6.2M (C = 512) and 14.7M (C = 1024) parameters, with the
    aggregation at 1536 channels for both."""
    model = ECAPATDNN(1, 80, channels=channels, embedding=192, mfa_channels=1536)
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - paper) < 0.01 * paper, count


def test_ecapa_gradients_reach_every_parameter():
    model = small_ecapa().train()
    frames = states(3, 11)
    mask = torch.ones(3, 11, dtype=torch.bool)
    mask[2, 6:] = False
    out = model(frames, mask)
    # a random projection, not out.sum(): the final train-mode BatchNorm makes the batch sum constant
    (out * torch.randn_like(out)).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_one_hot_layer_weights_select_that_layer():
    frames = states(2, 10)
    k = 2
    logits = torch.full((L,), -1e4)
    logits[k] = 0
    assert torch.equal(weighted_sum(frames, logits), frames[k])

    model = make("ecapa")
    single = small_ecapa(num_states=1).eval()
    single.load_state_dict({**model.state_dict(), "layer_weights": torch.zeros(1)})
    with torch.no_grad():
        model.layer_weights.copy_(logits)
        out = model(frames)
        torch.testing.assert_close(out, single((frames[k],)), rtol=0, atol=1e-6)
        assert (out - single((frames[k - 1],))).abs().max() > 1e-2


@pytest.mark.parametrize("backend", ["ecapa", "mhfa"])
def test_frame_mean_norm_ignores_padding(backend):
    """mean_norm `frames` subtracts each channel's mean over the utterance's real frames: padded inside a batch
    (noise on the padded frames), an utterance keeps the embedding it has alone."""
    model = make(backend)
    short = states(1, 13, seed=3)
    batch, mask = padded_batch(short, pad=7, pad_value="noise")
    with torch.no_grad():
        alone = model(tuple(subtract_mean(h, "frames") for h in short))
        both = model(tuple(subtract_mean(h, "frames", mask) for h in batch), mask)
        unnormed = model(short)
    assert (both[1] - alone[0]).abs().max() < 1e-5
    assert (alone - unnormed).abs().max() > 1e-3  # the normalisation changes the embedding: not vacuous
    normed = subtract_mean(batch[0], "frames", mask)
    torch.testing.assert_close(normed[1, :13].mean(0), torch.zeros(D), rtol=0, atol=1e-6)


def test_channel_mean_norm_is_the_authors_cmvn_on_their_layout():
    """The authors stack the hidden states as [batch, channels, frames, layers] and their apply_cmvn subtracts
    the mean over dim 1: per frame and layer, the mean over the channels. `channels` computes that."""
    hidden = states(2, 9)
    theirs = torch.stack(hidden, dim=0).permute(1, 3, 2, 0)  # [B, D, T, L] as in their front end's forward
    theirs = theirs - theirs.mean(dim=1, keepdim=True)
    ours = torch.stack([subtract_mean(h, "channels") for h in hidden], dim=0).permute(1, 3, 2, 0)
    torch.testing.assert_close(ours, theirs)
    frames = torch.stack([subtract_mean(h, "frames") for h in hidden], dim=0).permute(1, 3, 2, 0)
    assert (frames - theirs).abs().max() > 0.1  # the two normalisations differ


def test_mean_norm_setting_is_checked_and_used_by_the_task_model():
    import hp
    from hp.tasks import TaskModel

    with pytest.raises(ValueError, match="mean_norm must be null or one of"):
        head_config(mean_norm="time")
    torch.manual_seed(0)
    frontend = hp.Frontend(hp.SHAPES["tiny"], prune_units=()).eval()
    with torch.no_grad():  # a LayerNorm at its init (1, 0) leaves every frame's channel mean at 0 already
        for name, p in frontend.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.3)
    wave = torch.randn(2, 8000)
    embeddings = {}
    for norm in (None, "frames", "channels"):
        torch.manual_seed(1)
        model = TaskModel("cm", frontend, ["spoof", "bonafide"], head_config(heads=2, compression=8, embedding=8,
                                                                             mean_norm=norm)).eval()
        with torch.no_grad():
            embeddings[norm] = model.embed(wave)
    assert (embeddings["frames"] - embeddings[None]).abs().max() > 1e-3
    assert (embeddings["channels"] - embeddings[None]).abs().max() > 1e-3
