"""docs/pipeline.md, "What reproduces": two from-scratch runs of the default DAG, training stages included (the frozen pretrain
stage run by hand, then `dvc repro`), in two repositories at different paths, one decoding audio in the main
process and checkpointing never, the other with two DataLoader workers and a checkpoint every 3 steps, both at
runtime.threads 1 (a CI machine's core count must not matter), give bitwise-identical outputs: every file dvc.lock
records, the pretrained front end and the training curves; the files that hold wall-clock times (timed, below)
agree in everything else."""
import json
import sys
from pathlib import Path

import pytest

from pipeline_repo import make_repo, outputs, run, tiny_params, untimed

PRETRAIN = dict(speakers=12, utterances_per_speaker=2, clusters=8, kmeans_frames=2000, kmeans_iterations=5, steps=12,
                batch_size=4, warmup_steps=3, held_out_speakers=2, log_every=4)


def files_under(repo: Path, *folders: str) -> dict[str, bytes]:
    return {p.relative_to(repo).as_posix(): p.read_bytes() for folder in folders
            for p in sorted((repo / folder).rglob("*")) if p.is_file()}


@pytest.mark.slow  # two runs of the whole DAG at its smallest (minutes)
def test_two_runs_from_scratch_give_identical_outputs(tmp_path):
    repos = []
    for name, workers, every in (("first", 0, None), ("second", 2, 3)):
        params = tiny_params()
        params["pretrain"].update(PRETRAIN)
        params["runtime"].update(num_workers=workers, checkpoint_every=every, threads=1)
        (tmp_path / name).mkdir()
        repo = make_repo(tmp_path / name, params)
        run([sys.executable, "-m", "stages.pretrain"], repo)  # frozen in dvc.yaml: `dvc repro` would skip it
        run(["dvc", "repro"], repo)
        repos.append(repo)
    first = repos[0]
    # the pretraining record (in metrics/ and beside the weights) holds its wall-clock times: compared apart
    pretrained = ("metrics/pretrain.json", "models/pretrained/tiny")
    expected, got = (outputs(r) for r in repos)
    assert got.keys() == expected.keys() and len(got) > 20
    assert [path for path in got if got[path] != expected[path] and path not in pretrained] == []
    files = [files_under(r, "models/pretrained", "plots/pretrain", "dvclive") for r in repos]
    assert files[0].keys() == files[1].keys() and len(files[0]) > 10
    record = "models/pretrained/tiny/hp_pretraining.json"  # wall-clock times: equal only when they round alike
    assert [path for path in files[0] if files[0][path] != files[1][path] and path != record] == []
    timed = [record, "metrics/pretrain.json"] + [f"metrics/{task}/{name}.json" for task in ("sv", "cm")
                                                    for name in ("warmup", "finetune", "export")]
    for path in timed:
        a, b = (json.loads((r / path).read_text()) for r in repos)
        assert untimed(a) == untimed(b), path
    for task in ("sv", "cm"):  # runtime.threads reached the training stage
        assert json.loads((first / f"metrics/{task}/finetune.json").read_text())["hardware"]["torch_threads"] == 1
