"""Sampled-structure execution (hp.model.sampled) against the masked computation it replaces: the same loss, every
parameter's gradient (gates and lambdas included) and the same parameters after several AdamW steps, for every
family and layout, with padding and gradient accumulation, at random gate states and at the edges (a gate group
sampled all 0, exactly one unit kept, all kept). Dropout and LayerDrop are off: with dropout on, the two draw
their dropout masks over differently shaped tensors, so only the distributions agree."""
import copy

import pytest
import torch

import hp
from hp.model.sampled import computed_units, skips_zeros
from hp.training.sparsity import SparsityController, param_groups

from helpers import hf_config as wavlm_config
from test_families import VARIANTS, hf_config

NO_DROPOUT = dict(hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
                  layerdrop=0.0)
# WavLM (its Base / Large layouts), then HuBERT and wav2vec 2.0 (tests/unit/test_families.py)
CONFIGS = {"wavlm-base": hp.FrontendConfig.from_dict(wavlm_config("tiny-post").to_dict()),
           "wavlm-large": hp.FrontendConfig.from_dict(wavlm_config("tiny-pre").to_dict()),
           **{name: hp.FrontendConfig.from_dict(hf_config(name).to_dict()) for name in VARIANTS}}
# Saturated log_alpha: a sample of exactly 0 (u >= 1e-6 caps the logistic noise at 13.8) or of exactly 1.
OFF, ON = -40.0, 40.0
EDGES = ("off", "one", "all")


def model_of(layout: str, seed: int = 0) -> hp.Frontend:
    torch.manual_seed(seed)
    config = CONFIGS[layout].replace(**NO_DROPOUT)
    model = hp.Frontend(config).train()
    with torch.no_grad():  # norms and biases away from their init, so that a dropped affine term shows
        for name, p in model.named_parameters():
            if "log_alpha" not in name and (p.dim() == 1 or "norm" in name):
                p.add_(torch.randn_like(p) * 0.2)
    return model


def set_gates(model: hp.Frontend, state: str, seed: int) -> None:
    """"random": log_alpha ~ N(1, 2^2), samples a mix of 0, fractions and 1, some groups all 0. "edges-<k>": the
    gate groups take the three edge states in turn (offset k, so that each group meets each edge over k = 0, 1, 2):
    every unit 0, exactly one unit kept (sample 1), every unit kept (fractional samples, so that log_alpha's
    gradient through the sample is tested, with the rare exact 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for i, gate in enumerate(model.gates().values()):
            if state == "random":
                gate.log_alpha.copy_(torch.randn(gate.n, generator=g) * 2 + 1)
                continue
            edge = EDGES[(i + int(state.split("-")[1])) % 3]
            if edge == "off":
                gate.log_alpha.fill_(OFF)
            elif edge == "one":
                gate.log_alpha.fill_(OFF)
                gate.log_alpha[torch.randint(gate.n, (), generator=g)] = ON
            else:
                gate.log_alpha.copy_(torch.rand(gate.n, generator=g) * 4 + 4)


LR, STEPS = 1e-3, 3


def train_steps(model: hp.Frontend, sampled: bool, steps: int = STEPS, micro_batches: int = 2):
    """AdamW steps with the Lagrangian, each over `micro_batches` padded micro-batches under one gate sample. Returns
    the losses, the first step's gradients (model and lambdas, by name) and the units computed per gate group."""
    model.set_sampled_execution(sampled)
    model.share_sampling(123)
    controller = SparsityController(0.5, warmup_steps=0, lambda2_init=1.0)
    main, reg = param_groups(model, controller, lr=LR, reg_lr=0.05, weight_decay=0.01)
    # eps 1e-4, not 1e-8: AdamW moves each weight by ~lr * g / (|g| + eps), so a gradient that is 0 in exact
    # arithmetic and float noise in either computation (the key projection's bias, as softmax ignores a constant
    # added to a query's scores: ~1e-11; a layer norm over one kept channel, whose output is its bias: ~1e-7) would
    # move by up to lr, in a direction set by that noise
    optimizers = [torch.optim.AdamW(main, eps=1e-4), torch.optim.AdamW(reg, eps=1e-4)]
    data = torch.Generator().manual_seed(7)
    losses, first_grads = [], None
    with computed_units() as computed:
        for step in range(steps):
            for o in optimizers:
                o.zero_grad(set_to_none=True)
            with model.one_gate_sample():
                for _ in range(micro_batches):
                    wave = torch.randn(3, 6000, generator=data)
                    lengths = torch.tensor([6000, 4500, 3000])
                    states = model(wave, lengths)
                    states = (*states, model.last_hidden_state(states))
                    loss = sum(h.pow(2).mean() for h in states) / micro_batches
                    reg_loss, _ = controller(model.expected_sparsity(), step)
                    (loss + reg_loss / micro_batches).backward()
                    losses.append(loss.item())
            if first_grads is None:
                named = {**dict(model.named_parameters()), **{f"controller.{n}": p
                                                             for n, p in controller.named_parameters()}}
                first_grads = {n: None if p.grad is None else p.grad.clone() for n, p in named.items()}
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 3.0)
            for o in optimizers:
                o.step()
            controller.clamp_()
    return losses, first_grads, {gate: tuple(c) for gate, c in computed.items()}


def close(a: torch.Tensor, b: torch.Tensor, floor: float) -> bool:
    """Float32 sums over other subsets of terms differ by ~1e-7 of the magnitudes summed. 1e-5 of the tensor's
    scale, plus `floor` for elements whose terms cancel (1e-4 of the model's largest gradient: a layer norm over the
    one channel a sample keeps, the "one" edge of a layer-norm CNN, divides a zero deviation by sqrt(eps), which
    scales its rounding residue by 316), is room for that and far below a real difference: a unit missing or
    computed wrongly changes a gradient by O(1) of its scale."""
    scale = max(a.abs().max().item(), b.abs().max().item())
    return (a - b).abs().max().item() <= 1e-5 * scale + floor


def close_updates(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Parameter updates of the AdamW steps. Adam divides each gradient element by its own running magnitude, so
    the rounding noise of an element whose gradient is small reaches its update at the scale of the update itself.
    1e-2 of the update's scale, plus 1e-2 of lr * steps for the elements at the noise floor (see train_steps' eps),
    is room for that, while a unit computed wrongly or not updated moves by the whole scale."""
    scale = max(a.abs().max().item(), b.abs().max().item())
    return (a - b).abs().max().item() <= 1e-2 * scale + 1e-2 * LR * STEPS


def assert_steps_equal_masked(sampled: hp.Frontend) -> dict:
    """Training `sampled` with sampled execution and a copy of it masked: the same losses, gradients and updates.
    Returns the units each gate group computed with sampled execution."""
    masked, before = copy.deepcopy(sampled), copy.deepcopy(sampled)
    losses_s, grads_s, computed_s = train_steps(sampled, True)
    losses_m, grads_m, computed_m = train_steps(masked, False)
    assert losses_s == pytest.approx(losses_m, rel=1e-5)
    floor = 1e-4 * max(g.abs().max().item() for g in grads_m.values() if g is not None)
    for name, g in grads_m.items():  # no gradient, or a wrong one, for a skipped unit's parameter fails here
        if name.endswith("log_alpha") and sampled.get_parameter(name).requires_grad is False:
            assert g is None and grads_s[name] is None, f"{name}: a frozen gate got a gradient"
            continue
        assert g is not None and grads_s[name] is not None, f"{name}: no gradient"
        assert close(grads_s[name], g, floor), f"{name}: gradients differ"
    for (name, a), b, p0 in zip(sampled.named_parameters(), masked.parameters(), before.parameters()):
        assert close_updates(a.detach() - p0, b.detach() - p0), f"{name}: parameters differ after the AdamW steps"
    assert all(c == n for c, n in computed_m.values())  # the masked run computed every unit
    return computed_s


@pytest.mark.parametrize("state", ["random", *(f"edges-{k}" for k in range(3))])
@pytest.mark.parametrize("layout", list(CONFIGS))
def test_sampled_steps_equal_masked_steps(layout, state):
    sampled = model_of(layout)
    set_gates(sampled, state, seed=len(layout))
    computed = assert_steps_equal_masked(sampled)
    # not vacuous: sampled execution skipped units (all of them in some groups)
    assert any(c < n for c, n in computed.values())
    assert state == "random" or any(c == 0 for c, _ in computed.values())


@pytest.mark.parametrize("state", ["random", "edges-1"])
@pytest.mark.parametrize("layout", ["wavlm-base", "wavlm-large"])
def test_frozen_gates_skip_the_zeros_of_their_fixed_mask(layout, state):
    """Gates frozen without train-time compaction (compact_on_freeze false): every step skips the units their fixed
    deterministic mask sets to 0, as exactly as a sample's."""
    sampled = model_of(layout)
    set_gates(sampled, state, seed=5)
    sampled.freeze_gates()
    zeros = {g: int((g.frozen_mask == 0).sum()) for g in sampled.gates().values()}
    computed = assert_steps_equal_masked(sampled)
    forwards = STEPS * 2  # micro-batches
    for gate, (c, n) in computed.items():  # the fixed mask's zeros, not computed in any forward
        assert n == forwards * gate.n
        assert c <= forwards * (gate.n - zeros[gate]) + (forwards if zeros[gate] == gate.n else 0)
    assert any(zeros.values())


def test_a_block_switched_off_gives_its_parameters_zero_gradients():
    """The residual path past a skipped block still hands every parameter of the block a gradient, of zeros:
    AdamW then decays its moments and applies weight decay exactly as after the masked step."""
    model = model_of("wavlm-base")
    set_gates(model, "random", 0)
    attention = model.encoder.layers[1].attention
    with torch.no_grad():
        attention.block_gate.log_alpha.fill_(OFF)
    with computed_units() as computed:
        sum(h.pow(2).mean() for h in model(torch.randn(2, 4000))).backward()
    assert computed[attention.block_gate] == [0, 1]
    for name, p in attention.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape and not p.grad.any(), name


def test_every_channel_sampled_zero_keeps_the_cnn_exact():
    """A CNN layer has no residual path: a sample that keeps none of its channels computes one, times its 0. Every
    CNN layer in turn, and the last one, whose output the feature projection normalises."""
    for layer in range(7):
        sampled = model_of("wavlm-large")
        set_gates(sampled, "random", layer)
        with torch.no_grad():
            sampled.cnn.layers[layer].gate.log_alpha.fill_(OFF)
        masked = copy.deepcopy(sampled)
        losses_s, grads_s, computed = train_steps(sampled, True, steps=1, micro_batches=1)
        losses_m, grads_m, _ = train_steps(masked, False, steps=1, micro_batches=1)
        assert computed[sampled.cnn.layers[layer].gate] == (1, sampled.cnn.layers[layer].gate.n)
        assert losses_s == pytest.approx(losses_m, rel=1e-5)
        floor = 1e-4 * max(g.abs().max().item() for g in grads_m.values() if g is not None)
        assert all(close(grads_s[n], g, floor) for n, g in grads_m.items())


def test_only_training_forwards_skip_units():
    """Eval mode and the switch off compute every unit, each multiplied by its mask, as before; training skips
    zeros whether the gates learn or are frozen."""
    model = model_of("wavlm-base")
    set_gates(model, "edges-0", 0)
    assert all(skips_zeros(g) for g in model.gates().values())
    frozen = copy.deepcopy(model)
    frozen.freeze_gates()
    assert all(skips_zeros(g) for g in frozen.gates().values())
    for setting in ("eval", "off"):
        m = copy.deepcopy(frozen if setting == "eval" else model)
        if setting == "eval":
            m.eval()
        else:
            m.set_sampled_execution(False)
        assert not any(skips_zeros(g) for g in m.gates().values()), setting
    with computed_units() as computed, torch.no_grad():
        m(torch.randn(2, 4000))
    assert len(computed) == len(m.gates()) and all(c == n for c, n in computed.values())
