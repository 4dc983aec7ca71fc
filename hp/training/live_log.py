"""A training run's curves through DVCLive (LiveLogger), staged beside its checkpoints and published only when the
run finishes. Named live_log, not logging, so as not to shadow the standard library's module."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from hp.utils.files import atomic_path, replace_dir


class LiveLogger:
    """Training curves through DVCLive; metrics and plots are declared by hand in dvc.yaml.

    The curves are written to `staging` while the run lasts and replace `directory` only at close(), once the run
    has finished: a run that fails, at its checks or hours in, leaves the previous run's curves as they were."""

    def __init__(self, directory: str | Path, staging: str | Path, resume_at: int | None = None):
        """`resume_at`: continue the staged curves of a run resumed at this step, dropping the rows it logged from
        this step on before it was stopped (they are logged again); None: start afresh."""
        from dvclive import Live

        self.directory, self.staging = Path(directory), Path(staging)
        if resume_at is None:
            shutil.rmtree(self.staging, ignore_errors=True)
        else:
            for tsv in (self.staging / "plots" / "metrics").glob("*.tsv"):
                rows = pd.read_csv(tsv, sep="\t")
                with atomic_path(tsv) as tmp:
                    rows[rows["step"] < resume_at].to_csv(tmp, sep="\t", index=False)
        self.live = Live(str(self.staging), dvcyaml=False, save_dvc_exp=False, report=None,
                         resume=resume_at is not None)

    def log(self, step: int, values: dict[str, float]) -> None:
        self.live.step = step
        for name, value in values.items():
            self.live.log_metric(name, value)
        self.live.next_step()

    def close(self) -> None:
        self.live.end()
        replace_dir(self.staging, self.directory)
