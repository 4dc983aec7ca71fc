"""hp's front end against transformers' on one batch: the comparison of the parity tests."""
import torch

# Float32 end-to-end through up to 24 layers on random weights: differences are a few 1e-6 (summation
# order of different kernels); 1e-4 leaves room for that and catches any real mismatch (those are >1e-2).
ATOL = 1e-4


def compare(ref, model, wave, lengths):
    """hp on a batch against transformers: on the same batch without padding; with `lengths`, against each
    utterance run alone (hp's outputs do not depend on the padding; transformers' group-norm CNN takes its
    statistics over the padding too, so its padded batch is not the reference)."""
    with torch.no_grad():
        got = model(wave, lengths)
        if lengths is None:
            expected = [ref(wave, output_hidden_states=True)]
            pieces = [(slice(None), slice(None))]
        else:
            expected = [ref(wave[i:i + 1, :n], output_hidden_states=True) for i, n in enumerate(lengths.tolist())]
            pieces = [(slice(i, i + 1), slice(0, e.hidden_states[0].shape[1])) for i, e in enumerate(expected)]
    assert len(got) == ref.config.num_hidden_layers + 1
    for e, (rows, frames) in zip(expected, pieces):
        assert len(e.hidden_states) == len(got)
        for i, (a, b) in enumerate(zip(got, e.hidden_states)):
            a = a[rows, frames]
            assert a.shape == b.shape, i
            assert (a - b).abs().max().item() <= ATOL, f"hidden state {i}: max diff {(a - b).abs().max().item()}"
        last = model.last_hidden_state(got)[rows, frames]
        assert (last - e.last_hidden_state).abs().max().item() <= ATOL
