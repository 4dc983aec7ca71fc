"""docs/pipeline.md, "What reproduces": two from-scratch runs of the default DAG, training stages included (the frozen
pretrain stage run by hand, then `dvc repro`), in two repositories at different paths give bitwise-identical outputs:
every file dvc.lock records, the pretrained front end and the training curves; the files that hold wall-clock times
(timed, below) agree in everything else. The first is the suite's reference run (tests/pipeline/conftest.py:
decoding in the main process, no checkpoints), the second decodes in two DataLoader workers and checkpoints every 3
steps; both at runtime.threads 1 (a CI machine's core count must not matter)."""
import json
import sys
from pathlib import Path

import pytest

from pipeline_repo import make_repo, outputs, reference_params, run, untimed


def files_under(repo: Path, *folders: str) -> dict[str, bytes]:
    return {p.relative_to(repo).as_posix(): p.read_bytes() for folder in folders
            for p in sorted((repo / folder).rglob("*")) if p.is_file()}


@pytest.mark.slow  # a second run of the whole DAG at its smallest, against the suite's reference run (minutes)
def test_two_runs_from_scratch_give_identical_outputs(reference_run, tmp_path):
    second = make_repo(tmp_path, reference_params(num_workers=2, checkpoint_every=3))
    run([sys.executable, "-m", "stages.pretrain"], second)  # frozen in dvc.yaml: `dvc repro` would skip it
    run(["dvc", "repro"], second)
    repos = [reference_run, second]
    # the pretraining record (in metrics/ and beside the weights) holds its wall-clock times: compared apart
    # so do the released folders' model cards (latency, training minutes) and the checksums that list them
    apart = ("metrics/pretrain.json", "models/pretrained/tiny", "models/sv/export", "models/cm/export")
    expected, got = (outputs(r) for r in repos)
    assert got.keys() == expected.keys() and len(got) > 20
    assert [path for path in got if got[path] != expected[path] and path not in apart] == []
    files = [files_under(r, "models/pretrained", "plots/pretrain", "dvclive", "models/sv/export", "models/cm/export")
             for r in repos]
    assert files[0].keys() == files[1].keys() and len(files[0]) > 10
    timed_files = ("models/pretrained/tiny/hp_pretraining.json",  # wall-clock times: equal when they round alike
                   *(f"models/{task}/export/{name}" for task in ("sv", "cm") for name in ("README.md", "SHA256SUMS")))
    assert [path for path in files[0] if files[0][path] != files[1][path] and path not in timed_files] == []
    timed = [timed_files[0], "metrics/pretrain.json"] + [f"metrics/{task}/{name}.json" for task in ("sv", "cm")
                                                    for name in ("warmup", "finetune", "export")]
    for path in timed:
        a, b = (json.loads((r / path).read_text()) for r in repos)
        assert untimed(a) == untimed(b), path
    for task in ("sv", "cm"):  # runtime.threads reached the training stage
        assert json.loads((reference_run / f"metrics/{task}/finetune.json").read_text())["hardware"]["torch_threads"] == 1
