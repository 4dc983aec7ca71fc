"""The prunable front end (WavLM, HuBERT, wav2vec 2.0): the model-level forward, counts, prune() and structure
walk the blocks."""
from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Iterable

import torch
from torch import nn

from hp.measure import PARAMS, Measure
from hp.model.cnn import FeatureExtractor, FeatureProjection, frame_lengths
from hp.model.config import FrontendConfig
from hp.model.gates import UNIT_TYPES, HardConcrete
from hp.model.structure import WavLMStructure
from hp.model.transformer import Encoder


class Frontend(nn.Module):
    """A front end of `config.model_type`'s family with hard-concrete gates on the unit types in `prune_units`:
    WavLM (Base/Base+/Large layouts), HuBERT (Base / Large) or wav2vec 2.0 (Base / the pre-LN Large of XLS-R).
    One class: the families differ only in options of the shared blocks (the relative position bias, HuBERT's
    optional projection norm), which the config switches.

    `model(wave[B, T], lengths=None)` returns the L + 1 hidden states, each [B, frames, D], with the order
    and values of transformers' `WavLMModel` (`HubertModel`, `Wav2Vec2Model`) `(...).hidden_states`: the input
    of the first layer, then each layer's output (for the pre-LN layout the last one is before the final
    LayerNorm, as in transformers >= 5; `last_hidden_state()` applies it). `lengths` (samples per utterance)
    masks padding as transformers' `attention_mask` does.

    With `prune_units=()` the model has no gates; a compacted model is such a model built from a smaller
    `structure`.
    """

    def __init__(self, config: FrontendConfig, structure: WavLMStructure | None = None,
                 prune_units: Iterable[str] = UNIT_TYPES):
        super().__init__()
        prune_units = frozenset(prune_units)
        unknown = prune_units - set(UNIT_TYPES)
        if unknown:
            raise ValueError(f"unknown prune_units {sorted(unknown)}; choose from {list(UNIT_TYPES)}")
        structure = structure or WavLMStructure.dense(config)
        structure.validate(config)
        self.config = config
        self.cnn = FeatureExtractor(config, structure.conv_channels, gated="conv" in prune_units)
        self.projection = FeatureProjection(config, structure.conv_channels[-1])
        self.encoder = Encoder(config, structure.layers, prune_units)

    # ---- forward -------------------------------------------------------------------------------------
    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        if wave.dim() != 2:
            raise ValueError(f"wave must be [batch, samples], got shape {tuple(wave.shape)}")
        # checked where it costs no device sync (lengths usually come from the CPU-side loader) and not while
        # tracing for export, where the values are symbolic
        if (lengths is not None and lengths.device.type == "cpu" and not torch.compiler.is_exporting()
                and not torch.jit.is_tracing()
                and (lengths.shape != wave.shape[:1] or (lengths > wave.shape[1]).any()
                     or (self.frame_lengths(lengths) < 1).any())):
            raise ValueError(f"lengths {lengths.tolist()} do not fit a batch of shape {tuple(wave.shape)}")
        features, channel_mask, channel_keep = self.cnn(wave, lengths)
        x = self.projection(features.transpose(1, 2), channel_mask, channel_keep)
        frame_mask = None if lengths is None else self.frame_mask(lengths, x.shape[1])
        return self.encoder(x, frame_mask)

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames per utterance for `lengths` in samples."""
        return frame_lengths(lengths, self.config)

    def frame_mask(self, lengths: torch.Tensor, frames: int) -> torch.Tensor:
        """[B, frames], True on the frames that `lengths` (samples) cover; on the model's device."""
        device = self.projection.linear.weight.device
        return torch.arange(frames, device=device) < self.frame_lengths(lengths).to(device)[:, None]

    def last_hidden_state(self, hidden_states: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """transformers' `last_hidden_state`: the pre-LN layout normalises the last hidden state."""
        x = hidden_states[-1]
        return self.encoder.norm(x) if self.config.do_stable_layer_norm else x

    # ---- structure and parameter counts -------------------------------------------------------------
    @property
    def structure(self) -> WavLMStructure:
        return WavLMStructure(tuple(layer.conv.out_channels for layer in self.cnn.layers),
                              tuple(layer.structure for layer in self.encoder.layers))

    @property
    def prune_units(self) -> frozenset[str]:
        """The unit types that still carry gates (empty once compacted)."""
        units = {"conv"} if any(layer.gate is not None for layer in self.cnn.layers) else set()
        for layer in self.encoder.layers:
            a, f = layer.attention, layer.feed_forward
            for unit, gate in (("head", a and a.head_gate), ("attlayer", a and a.block_gate),
                               ("interm", f and f.unit_gate), ("ffnlayer", f and f.block_gate)):
                if gate is not None:
                    units.add(unit)
        return frozenset(units)

    def gates(self) -> dict[str, HardConcrete]:
        return {name: m for name, m in self.named_modules() if isinstance(m, HardConcrete)}

    def share_sampling(self, seed: int | None) -> dict[str, torch.Generator]:
        """Give the gate samples and LayerDrop generators of their own, seeded with `seed` (None: back to the
        global generator). Under DDP every rank seeds them alike, so all ranks draw the same structure and skip
        the same layers, as one forward of the whole batch would, while dropout, on the global generator
        seeded per rank, differs between ranks as it does between the samples of one batch."""
        gates = layers = None
        if seed is not None:
            gates = torch.Generator(next(self.parameters()).device).manual_seed(seed)
            layers = torch.Generator().manual_seed(seed + 1)  # on the CPU: a layer's skip is a host decision
        for gate in self.gates().values():
            gate.generator = gates
        self.encoder.layerdrop_generator = layers
        return {} if seed is None else {"gates": gates, "layerdrop": layers}

    @contextlib.contextmanager
    def one_gate_sample(self):
        """Within this context every gate samples its mask once (HardConcrete.hold_noise): an accumulated step
        sees the one structure that a single forward of its whole batch would."""
        gates = self.gates().values()
        for gate in gates:
            gate.hold_noise(True)
        try:
            yield
        finally:
            for gate in gates:
                gate.hold_noise(False)

    def set_sampled_execution(self, on: bool) -> None:
        """Whether a training forward computes only the units its gate sample keeps (hp.model.sampled; on by
        default) or every unit, multiplied by its mask. Both give the same loss and gradients."""
        for gate in self.gates().values():
            gate.sampled_execution = on

    def freeze_gates(self) -> None:
        """Fix the structure: every gate keeps its deterministic mask from now on, in training too."""
        for gate in self.gates().values():
            gate.freeze()

    def num_params(self) -> int:
        """Parameters of the front end, gates excluded.

        For a dense model this is transformers' `WavLMModel.num_parameters()` (`HubertModel`, `Wav2Vec2Model`:
        the same) minus `masked_spec_embed`
        (hidden_size values, present when mask_time_prob or mask_feature_prob > 0): that vector only replaces
        masked frames in SpecAugment, takes no part in inference, and is not loaded. hp applies no
        SpecAugment in training (the authors' recipes do not use it).
        """
        gate_params = {id(p) for g in self.gates().values() for p in g.parameters()}
        return sum(p.numel() for p in self.parameters() if id(p) not in gate_params)

    def _count(self, mode: str):
        cnn, channels = self.cnn.count(mode)
        return cnn + self.projection.count(channels) + self.encoder.count(self.config, mode)

    def _macs(self, mode: str, samples: int):
        cnn, channels, frames = self.cnn.macs(samples, mode)
        return cnn + self.projection.macs(channels, frames) + self.encoder.macs(self.config, frames, mode)

    def _cost(self, mode: str, measure: Measure):
        return self._count(mode) if measure.name == "params" else self._macs(mode, measure.samples)

    def expected_cost(self, measure: Measure = PARAMS) -> torch.Tensor:
        """Differentiable expected cost (parameters, or MACs at the measure's length): each unit count replaced by
        its expected L0 in the same polynomial."""
        return torch.as_tensor(self._cost("expected", measure), dtype=torch.float64)

    def deterministic_cost(self, measure: Measure = PARAMS) -> int:
        """The polynomial at the deterministic eval mask: the cost of the model `hp.compact` will produce."""
        return int(self._cost("deterministic", measure))

    def dense_cost(self, measure: Measure = PARAMS) -> int:
        """The cost of the unpruned front end this model was derived from."""
        return _dense_cost(self.config, measure)

    def expected_num_params(self) -> torch.Tensor:
        return self.expected_cost(PARAMS)

    def deterministic_num_params(self) -> int:
        """The parameter count `hp.compact` will produce."""
        return self.deterministic_cost(PARAMS)

    @property
    def dense_num_params(self) -> int:
        """N0: parameters of the unpruned front end this model was derived from."""
        return self.dense_cost(PARAMS)

    def num_macs(self, seconds: float) -> int:
        """MACs of one forward over `seconds` of audio (batch 1) at the deterministic masks."""
        return self.deterministic_cost(Measure("macs", seconds))

    def expected_sparsity(self, measure: Measure = PARAMS) -> torch.Tensor:
        return 1.0 - self.expected_cost(measure) / self.dense_cost(measure)

    def deterministic_sparsity(self, measure: Measure = PARAMS) -> float:
        """The sparsity `hp.compact` would realise now."""
        return 1.0 - self.deterministic_cost(measure) / self.dense_cost(measure)

    def sparsities(self, seconds: float) -> dict[str, float]:
        """The deterministic sparsity in both measures (MACs at `seconds`): what every run records."""
        return {"params": self.deterministic_sparsity(PARAMS),
                "macs": self.deterministic_sparsity(Measure("macs", seconds))}

    # ---- pruning ------------------------------------------------------------------------------------
    def prune(self, fold: bool = True) -> WavLMStructure:
        """Physically remove what the deterministic masks prune, in place; returns the new structure. `fold`: the
        soft masks of the kept units go into the weights and the gates go. Else (train-time compaction, the gates
        frozen) every gate stays, shrunk to its kept units, and still multiplies by their soft mask: the model
        computes what it did, and its weights are those it had, less the pruned units."""
        if not fold and not all(g.frozen for g in self.gates().values()):
            raise RuntimeError("prune(fold=False) needs the gates frozen (freeze_gates)")
        keep, scale = self.cnn.prune(fold)
        self.projection.prune(keep, scale, fold)
        for layer in self.encoder.layers:
            layer.prune(fold)
        return self.structure


@functools.cache
def _dense_cost(config: FrontendConfig, measure: Measure) -> int:
    with torch.device("meta"):
        model = Frontend(config, prune_units=())
    return model.num_params() if measure.name == "params" else model.deterministic_cost(measure)


def pruned_like(model: Frontend, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`tensors` shaped like some of `model`'s parameters and buffers (keyed by their names: optimiser moments, running
    sums) as `model.prune(fold=False)` leaves them: the same units dropped, nothing scaled; the entries of removed
    blocks are gone. The gates decide what goes, so their own entries cannot be among `tensors`."""
    gates = {f"{name}.{key}" for name, gate in model.gates().items() for key in gate.state_dict()}
    if gates & set(tensors):
        raise ValueError(f"pruned_like cannot slice the gates' own entries: {sorted(gates & set(tensors))[:3]}")
    shadow = copy.deepcopy(model)
    entries = dict(shadow.named_parameters()) | dict(shadow.named_buffers())
    with torch.no_grad():
        for name, value in tensors.items():
            entries[name].copy_(value)
    shadow.prune(fold=False)
    state = shadow.state_dict()
    return {name: state[name].to(value) for name, value in tensors.items() if name in state}


def compact(model: Frontend) -> Frontend:
    """A physically smaller, gate-free copy of `model` in eval mode that computes what `model.eval()` does.

    The copy is rebuilt from its `WavLMStructure` alone, then given the pruned weights, so the structure is
    all that `hp.load_compact` needs to rebuild it.
    """
    pruned = copy.deepcopy(model).eval()
    structure = pruned.prune()
    with torch.device("meta"):
        out = Frontend(model.config, structure, prune_units=())
    out.load_state_dict(pruned.state_dict(), strict=True, assign=True)
    return out.eval()
