"""One from-scratch run of the whole DAG at its smallest, shared by the tests that compare a run against it or use
a finished run (the reproducibility, fault-injection and README-commands tests): the suite trains and exports it
once, not once per test."""
import os
import sys

import pytest
from filelock import FileLock

from pipeline_repo import make_repo, reference_params, run


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory):
    """A repository after `python -m stages.pretrain` and `dvc repro` of reference_params: DataLoader decoding in
    the main process, no checkpoints. Tests read it and never write to it. Under pytest-xdist each worker is a
    session of its own, so the run is built once in the directory the workers share, under a file lock (the
    pattern pytest-xdist documents for session fixtures)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's base directory, above each worker's own
    base, done = root / "reference", root / "reference.done"
    with FileLock(str(root / "reference.lock")):
        if not done.is_file():
            base.mkdir(exist_ok=True)
            repo = make_repo(base, reference_params(num_workers=0, checkpoint_every=None))
            run([sys.executable, "-m", "stages.pretrain"], repo)
            run(["dvc", "repro"], repo)
            done.touch()
    return base / "repo"
