"""Hooks and fixtures of every tier; the helpers tests import by name are in helpers.py (a conftest.py is not
imported by name: tests/pipeline has one of its own)."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub; the hub path is tested on a local cache
# pytest-xdist's workers share the cores: each worker, and every stage it starts (OMP_NUM_THREADS is inherited),
# runs on its share, so that 2 workers on 2 cores do not run 4 threads that wait on each other
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // _WORKERS)))

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from helpers import noise_wav, random_hf_model  # noqa: E402

TESTS = Path(__file__).resolve().parent
if _WORKERS > 1:
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_collection_modifyitems(config, items):
    """The tier is the folder: tests/pipeline are `pipeline` tests, tests/gpu `gpu` ones, skipped without CUDA."""
    no_cuda = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        tier = Path(item.fspath).resolve().relative_to(TESTS).parts[0]
        if tier in ("pipeline", "gpu"):
            item.add_marker(tier)
        if tier == "gpu" and not torch.cuda.is_available():
            item.add_marker(no_cuda)


@pytest.fixture
def tiny_checkpoint(tmp_path):
    """A genuine transformers checkpoint directory (config.json + model.safetensors) of the tiny post-LN shape."""
    model = random_hf_model("tiny-post")
    model.save_pretrained(tmp_path / "ckpt")
    return tmp_path / "ckpt", model


@pytest.fixture(scope="session")
def augmentation_trees(tmp_path_factory) -> dict[str, Path]:
    """MUSAN (noise, music, speech: three files each) and RIRS_NOISES (two simulated RIRs) in their layouts."""
    root = tmp_path_factory.mktemp("augmentation")
    for k, kind in enumerate(("noise", "music", "speech")):
        for i in range(3):
            noise_wav(root / "musan" / kind / "sub" / f"{kind}-{i}.wav", 1.0 + i, seed=10 * k + i)
    for i in range(2):
        noise_wav(root / "RIRS_NOISES" / "simulated_rirs" / "smallroom" / "Room001" / f"Room001-0000{i}.wav",
                  0.3, seed=100 + i, decay=0.05)
    return {"musan": root / "musan", "rirs": root / "RIRS_NOISES"}
