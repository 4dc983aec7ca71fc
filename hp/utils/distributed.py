"""Several processes through torchrun (training, scoring): who this process is, the process group, sharing work
out and summing it, relaunching a stage.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them this is the only process (rank 0 of 1) and no
process group is created, so single-process runs take no distributed code path at all.
"""
from __future__ import annotations

import os
import sys

import numpy as np
import torch
import torch.distributed as dist


def rank() -> int:
    return int(os.environ.get("RANK", 0))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", 1))


def is_main() -> bool:
    """Rank 0: the one process that logs and writes outputs."""
    return rank() == 0


def device(name: str) -> torch.device:
    """The device of this process: `name` ("auto": CUDA when present), on CUDA the local rank's GPU."""
    kind = ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name
    if world_size() > 1 and torch.device(kind).index is not None:  # NCCL needs one GPU per process
        raise ValueError(f"device {name!r} names one GPU, but {world_size()} processes need one each: use 'cuda'")
    if kind == "cuda" and world_size() > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(kind)


def set_threads(threads: int | None) -> None:
    """runtime.threads: torch's CPU threads in this process (None: torch's default, one per core, or torchrun's
    OMP_NUM_THREADS). A CPU result's last bits depend on it (a parallel sum adds per-thread partial sums), so a run
    is bitwise-reproducible at the thread count it recorded (hardware.torch_threads in its metrics)."""
    if threads is not None:
        torch.set_num_threads(threads)


def init(device: torch.device) -> None:
    """Join the process group (NCCL on CUDA, gloo on CPU) when running under torchrun; a no-op otherwise."""
    if world_size() > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_gather(obj) -> list:
    """`obj` of every rank, in rank order (a one-element list in a single process)."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def mean(value: float) -> float:
    """`value` averaged over the ranks (itself in a single process); every rank must call it."""
    if not dist.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.float64,
                     device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t)
    return t.item() / dist.get_world_size()


def share(n: int) -> np.ndarray:
    """The indices of n work items (batches, utterances) this rank does: every world_size()-th, from rank()."""
    return np.arange(rank(), n, world_size())


def all_sum(array: np.ndarray, chunk_bytes: int = 1 << 26) -> np.ndarray:
    """`array` summed over the ranks, on every rank (itself in a single process). Each rank fills the rows of its
    share() and leaves the others zero, so the sum is every row exactly as the rank that computed it wrote it.
    Reduced in chunks of `chunk_bytes`: a million embeddings need no second copy at once."""
    if not dist.is_initialized():
        return array
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    flat = array.reshape(-1)
    step = max(1, chunk_bytes // array.itemsize)
    for start in range(0, len(flat), step):
        part = torch.from_numpy(flat[start:start + step]).to(device)
        dist.all_reduce(part)
        flat[start:start + step] = part.cpu().numpy()
    return array


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def relaunch(nproc_per_node: int) -> None:
    """Replace this process by torchrun running the current program (a script, or a module run with -m) as
    `nproc_per_node` processes of this node; return only if that is not needed (one process, or already under
    torchrun). Replacing, not spawning: a signal to the stage (DVC stopping it) reaches torchrun, which passes
    it on, so no worker outlives its stage. Several nodes: start torchrun yourself on each (README,
    "Training at scale")."""
    if nproc_per_node < 1:
        raise ValueError(f"nproc_per_node must be >= 1, got {nproc_per_node}")
    if nproc_per_node == 1 or "WORLD_SIZE" in os.environ:
        return
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    program = ["-m", spec.name] if spec is not None else [sys.argv[0]]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "torch.distributed.run", "--standalone",
                              f"--nproc-per-node={nproc_per_node}", *program, *sys.argv[1:]])
