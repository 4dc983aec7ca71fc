"""The int8 graph beside the fp32 one: onnxruntime's post-training quantisation of an exported model.

Two methods (onnxruntime's "Quantize ONNX models" guide, https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html):
  dynamic  int8 weights; each activation's scale is computed at run time, per tensor. No data needed.
  static   int8 weights (per output channel) and activations whose scales are fixed beforehand from calibration
           utterances, in QDQ form (onnxruntime fuses each QuantizeLinear/DequantizeLinear pair into an int8 kernel).
params.yaml's export.int8 picks one (dynamic; `python -m hp.benchmarks int8` compares them).

Only MatMul and Gemm are quantised: the transformer's projections and FFN, where a released model's compute is.
The CNN's convolutions stay float: quantised (either method) they turned the mini models' embeddings to a cosine of
0.5-0.6 against fp32's, since the first convolution reads the raw waveform and its GroupNorm divides by
per-channel spreads that int8 rounding erases; so do norms, softmax and the position bias.

Imports onnxruntime (and onnx, through its quantisation tools) only; no torch.
"""
from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from hp.errors import ExportError

METHODS = ("dynamic", "static")
OPS = ["MatMul", "Gemm"]


def quantize(fp32: Path, out: Path, method: str, calibration: Iterable[tuple[np.ndarray, np.ndarray]] = ()) -> None:
    """Write the int8 version of the ONNX graph `fp32` to `out`. `calibration`: (wave, lengths) batches run through
    the float graph to fix the activation ranges (static only)."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")

    class Batches(CalibrationDataReader):
        def __init__(self, batches: Iterator):
            self.batches = batches

        def get_next(self):
            wave, lengths = next(self.batches, (None, None))
            return None if wave is None else {"wave": wave.astype(np.float32), "lengths": lengths.astype(np.int64)}

    with tempfile.TemporaryDirectory() as tmp:
        # shape inference and constant folding first, as the guide asks: quantisation needs every tensor's type
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        if method == "dynamic":
            quantize_dynamic(prepared, out, weight_type=QuantType.QInt8, op_types_to_quantize=OPS)
            return
        batches = iter(calibration)
        first = next(batches, None)
        if first is None:
            raise ExportError(f"{out}: static quantisation needs calibration utterances; none were given")
        quantize_static(prepared, out, Batches(iter([first, *batches])), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=OPS)


def agreement(fp32: dict[str, np.ndarray], int8: dict[str, np.ndarray]) -> dict[str, dict]:
    """How far the int8 outputs are from the fp32 ones, per output over the same inputs: embeddings by the
    smallest and median cosine of each pair (what SV scores with); scalar outputs (CM's scores and llrs) by the
    largest |difference| and its ratio to the fp32 values' standard deviation (the score's own spread)."""
    out = {}
    for name, ref in fp32.items():
        got = int8[name].astype(np.float64)
        ref = ref.astype(np.float64)
        if ref.ndim == 2:
            cosine = (ref * got).sum(1) / np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1), 1e-30)
            out[name] = {"min_cosine": float(cosine.min()), "median_cosine": float(np.median(cosine))}
        else:
            diff = float(np.abs(got - ref).max())
            out[name] = {"max_abs": diff, "max_abs_over_std": diff / max(float(ref.std()), 1e-30)}
    return out
