"""GPU checks for the prunable WavLM core, run as one script on a lent CUDA machine (prints one JSON line).

    python scripts/gpu_check.py [--bench]  # needs torch, transformers, safetensors (no dvc, no soundfile)

The same checks run as tests (tests/gpu/test_cuda.py) where pytest is installed.

1. Parity with transformers' WavLMModel on CUDA in float32 (TF32 off), Base+ and Large shapes, padded batch.
2. Compaction at random masks on CUDA: compact == gated (eval), exact parameter counts.
3. A bf16-autocast training step of the gated model with the Lagrangian: finite loss and gradients.
4. With --bench: the training-throughput benchmark (python -m hp.benchmarks train --target 0.7) at the brief's
   settings, Base+ 128 x 3 s and 64 x 3 s, Large 64 x 3 s: transformers vs hp dense, hp pruned at the gates' init,
   at gates of expected sparsity 0.7 with sampled execution and without; one JSON line each, then one line
   setting transformers' measured utt/s against the brief's anchors (§6: 802, 641 and 304 utt/s on one H100).
   Imports hp.benchmarks' entry point, which needs pandas and soundfile only for its data benchmarks (carry a wheel).
"""
from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import hp  # noqa: E402
from hp.model.io import state_dict_from_hf  # noqa: E402

LARGE = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
             do_stable_layer_norm=True, feat_extract_norm="layer")


def parity(shape: str, hf_kwargs: dict, device: torch.device) -> float:
    torch.manual_seed(0)
    ref = transformers.WavLMModel(transformers.WavLMConfig(**hf_kwargs)).eval().to(device)
    model = hp.Frontend(hp.FrontendConfig.from_dict(ref.config.to_dict()), prune_units=()).eval()
    model.load_state_dict(state_dict_from_hf({k: v.cpu() for k, v in ref.state_dict().items()}, model.config, shape))
    model.to(device)
    wave = torch.randn(4, 48000, device=device)
    lengths = torch.tensor([48000, 40000, 30000, 16000], device=device)
    mask = (torch.arange(48000, device=device) < lengths[:, None]).long()
    with torch.no_grad():
        expected = ref(wave, attention_mask=mask, output_hidden_states=True).hidden_states
        got = model(wave, lengths)
    return max((a - b).abs().max().item() for a, b in zip(got, expected))


def compaction(device: torch.device) -> dict:
    g = torch.Generator().manual_seed(0)
    worst, exact = 0.0, True
    for trial in range(5):
        model = hp.Frontend(hp.SHAPES["base-plus"]).eval()
        with torch.no_grad():
            for gate in model.gates().values():
                gate.log_alpha.copy_(torch.randn(gate.n, generator=g) * (1.0 + trial))
        model.to(device)
        small = hp.compact(model)
        wave = torch.randn(2, 32000, device=device)
        with torch.no_grad():
            worst = max(worst, max((a - b).abs().max().item() for a, b in zip(model(wave), small(wave))))
        exact &= small.num_params() == model.deterministic_num_params()
    return {"compact_vs_gated_max_abs_diff": worst, "counts_exact": exact}


def train_step(device: torch.device) -> dict:
    model = hp.Frontend(hp.SHAPES["base-plus"]).train().to(device)
    controller = hp.SparsityController(0.7, warmup_steps=10).to(device)
    main, reg = hp.param_groups(model, controller, lr=1e-4, reg_lr=0.05)
    opt, reg_opt = torch.optim.AdamW(main), torch.optim.AdamW(reg)
    wave = torch.randn(8, 48000, device=device)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        states = model(wave)
        task = sum(h.float().pow(2).mean() for h in states)
    reg_loss, _ = controller(model.expected_sparsity().to(device), step=5)
    (task + reg_loss).backward()
    finite = all(torch.isfinite(p.grad).all().item() for p in model.parameters() if p.grad is not None)
    opt.step(), reg_opt.step()
    return {"bf16_loss": float(task), "bf16_grads_finite": finite}


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device("cuda")
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "transformers": transformers.__version__,
              "parity_base_plus_max_abs_diff": parity("base-plus", {}, device),
              "parity_large_max_abs_diff": parity("large", LARGE, device),
              **compaction(device), **train_step(device)}
    result["ok"] = (result["parity_base_plus_max_abs_diff"] <= 1e-4 and result["parity_large_max_abs_diff"] <= 1e-4
                    and result["compact_vs_gated_max_abs_diff"] <= 1e-4 and result["counts_exact"]
                    and result["bf16_grads_finite"])
    print(json.dumps(result), flush=True)
    if "--bench" in sys.argv:
        from hp.benchmarks import __main__ as bench

        anchors = {("base-plus", 128): 802, ("base-plus", 64): 641, ("large", 64): 304}  # BRIEF §6, one H100
        for (shape, batch), anchor in anchors.items():
            out = io.StringIO()
            with contextlib.redirect_stdout(out):  # one variant at a time on the card: rounds 1
                bench.main(["train", "--shape", shape, "--batch", str(batch), "--seconds", "3", "--target", "0.7",
                            "--rounds", "1", "--json"])
            line = out.getvalue().strip()
            print(line, flush=True)
            variants = json.loads(line)["variants"]
            print(json.dumps({"shape": shape, "batch": batch, "anchor_hf_utt_per_s": anchor,
                              **{f"{name}_vs_anchor": round(v["utt_per_s"] / anchor, 4)
                                 for name, v in variants.items()}}), flush=True)


if __name__ == "__main__":
    main()
