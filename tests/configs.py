"""The typed configs tests build by hand. The library's dataclasses have no default for what params.yaml sets, so
a test names the recipe it runs: these are the settings the unit tests were written against, and a test changes
only what it is about."""
import dataclasses

from hp.params import Runtime
from hp.tasks.task_model import HeadConfig
from hp.training.config import TrainConfig

RUNTIME = Runtime(device="cpu", num_workers=0, log_every=10, checkpoint_every=None, nproc_per_node=1,
                  threads=None)
TRAIN = dict(target_sparsity=0.0, epochs=10, batch_size=32, crop_seconds=3.0, aug_prob=0.6, optimizer="adamw",
             momentum=0.9, lr=1e-4, final_lr=1e-6, lr_reference_batch=None, warmup_epochs=1.0, warmup_from_zero=True,
             weight_decay=1e-7, average_last=1, grad_clip=3.0, seed=0, grad_accumulation=1, precision="auto",
             resume="auto", reg_lr=0.05, sparsity_warmup_epochs=5.0)
HEAD = dict(backend="mhfa", heads=2, compression=8, embedding=8, grad_multiplier=1.0, mean_norm=None,
            ecapa_channels=512, ecapa_mfa_channels=1536, margin=0.2, scale=32.0, subcenters=1, topk=0,
            topk_penalty=0.06)
RUNTIME_KEYS = {f.name for f in dataclasses.fields(Runtime)}


def train_config(**changes) -> TrainConfig:
    """TRAIN with `changes`; a runtime key (device, log_every, ...) changes RUNTIME."""
    runtime = {key: changes.pop(key) for key in RUNTIME_KEYS & set(changes)}
    return TrainConfig(**{**TRAIN, **changes}, runtime=dataclasses.replace(RUNTIME, **runtime))


def head_config(**changes) -> HeadConfig:
    """A small MHFA head (2 heads, compression 8, embedding 8) and SV's AAM settings, with `changes`."""
    return HeadConfig(**{**HEAD, **changes})
