"""One from-scratch run of the whole DAG at its smallest, shared by the tests that compare a run against it (the
reproducibility and fault-injection tests): the suite trains and exports it once, not once per test."""
import sys

import pytest

from pipeline_repo import make_repo, reference_params, run


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory):
    """A repository after `python -m stages.pretrain` and `dvc repro` of reference_params: DataLoader decoding in
    the main process, no checkpoints. Tests read it and never write to it. Under pytest-xdist each worker has a
    session of its own, so the tests that use this run share one xdist_group (one worker)."""
    repo = make_repo(tmp_path_factory.mktemp("reference"), reference_params(num_workers=0, checkpoint_every=None))
    run([sys.executable, "-m", "stages.pretrain"], repo)
    run(["dvc", "repro"], repo)
    return repo
