"""The prunable front end on CUDA (skipped without a device): the checks of scripts/gpu_check.py, the script a lent
GPU machine runs without pytest, as tests, so that `pytest tests/gpu` on a CUDA machine holds them to its bounds."""
import importlib.util

import pytest
import torch

from helpers import ROOT_DIR

spec = importlib.util.spec_from_file_location("gpu_check", ROOT_DIR / "scripts" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)
# float32 with TF32 off: the same arithmetic as transformers', so only summation order differs (1e-4 on hidden states
# of unit scale after 12 or 24 layers, as on CPU)
TOLERANCE = 1e-4


@pytest.fixture
def cuda():
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


@pytest.mark.parametrize("shape,hf_kwargs", [("base-plus", {}), ("large", gpu_check.LARGE)])
def test_parity_with_transformers(cuda, shape, hf_kwargs):
    assert gpu_check.parity(shape, hf_kwargs, cuda) <= TOLERANCE


def test_compaction_equals_the_gated_model(cuda):
    result = gpu_check.compaction(cuda)
    assert result["counts_exact"] and result["compact_vs_gated_max_abs_diff"] <= TOLERANCE


def test_a_bf16_pruning_step_has_finite_gradients(cuda):
    result = gpu_check.train_step(cuda)
    assert result["bf16_grads_finite"] and torch.isfinite(torch.tensor(result["bf16_loss"]))
