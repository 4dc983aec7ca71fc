"""Training at scale on CPU: a killed run resumes to the very same model, two gloo DDP processes match one
process with the same global batch, and the sampler deals one global order out to any number of ranks."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from hp.stages.manifests import manifests
from hp.stages.prepare import prepare
from hp.training.checkpoint import Checkpoints
from hp.training.feeding import ShardedSampler

ROOT = Path(__file__).resolve().parents[2]
RUNNER = ROOT / "tests" / "training_run.py"


@pytest.fixture(scope="module")
def train_table(tmp_path_factory) -> Path:
    """The mini CM corpus, small: 24 training utterances (3 steps of 8 per epoch)."""
    root = tmp_path_factory.mktemp("mini_cm")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["prepare"]["cm"]["mini"].update(train_speakers=4, test_speakers=2, bonafide_per_speaker=3,
                                           spoofed_per_speaker=3, test_bonafide_per_speaker=3,
                                           test_spoofed_per_speaker=3, min_seconds=1.0, max_seconds=1.5)
    prepare("cm", params, root / "corpus")
    manifests("cm", params, root / "corpus", root / "manifests")
    return root / "manifests" / "train.parquet"


def run(table: Path, out: Path, *overrides: str, processes: int = 1) -> subprocess.CompletedProcess:
    out.mkdir(parents=True, exist_ok=True)
    launcher = ([sys.executable] if processes == 1 else
                [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"])
    return subprocess.run([*launcher, str(RUNNER), str(table), str(out), *overrides], capture_output=True,
                          text=True, timeout=600)


def finished(result: subprocess.CompletedProcess, out: Path) -> dict[str, torch.Tensor]:
    assert result.returncode == 0, result.stderr[-3000:]
    return load_file(out / "final.safetensors")


@pytest.mark.slow  # subprocess training runs, killed and resumed or under torchrun (~20-30 s each)
@pytest.mark.parametrize("every,die_at", [(1, 4), (None, 5)])
def test_a_killed_run_resumes_to_the_same_model(train_table, tmp_path, every, die_at):
    """Killed at step 4 (mid-epoch: 3 steps per epoch; checkpoints every step) or step 5 (checkpoints only at
    epoch ends: it restarts from step 3), then rerun: bit-identical to the uninterrupted run."""
    setting = f"checkpoint_every={json.dumps(every)}"
    reference = finished(run(train_table, tmp_path / "a", setting), tmp_path / "a")
    killed = run(train_table, tmp_path / "b", setting, f"die_at_step={die_at}")
    assert killed.returncode == 137 and not (tmp_path / "b" / "final.safetensors").exists()
    saved = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)
    assert saved["step"] == (die_at if every == 1 else 3)
    resumed = finished(run(train_table, tmp_path / "b", setting), tmp_path / "b")
    assert json.loads((tmp_path / "b" / "run.json").read_text())["resumed_at_step"] == saved["step"]
    assert reference.keys() == resumed.keys()
    for name in reference:
        assert torch.equal(reference[name], resumed[name]), name


@pytest.mark.slow  # subprocess training runs, killed and resumed or under torchrun (~20-30 s each)
def test_two_ddp_processes_match_one_with_the_same_global_batch(train_table, tmp_path):
    """2 gloo processes x 4 utterances and 1 process x 2 accumulated micro-batches of 4 against 1 x 8, after
    9 steps of joint pruning + fine-tuning (AdamW, gates, lambdas). They differ only in the order of float
    sums (all-reduce, accumulation): 1e-4 on weights of size ~0.1-1 allows for that, while one step that
    saw other data or another gate sample moves weights by ~lr = 2e-3. The SV head (MHFA + AAM) has no batch
    norm; the CM head's normalises each micro-batch on its own, as the authors' does."""
    sv = '"sv"'
    one = finished(run(train_table, tmp_path / "one", f"task={sv}"), tmp_path / "one")
    two = finished(run(train_table, tmp_path / "two", f"task={sv}", processes=2), tmp_path / "two")
    accumulated = finished(run(train_table, tmp_path / "acc", f"task={sv}", "grad_accumulation=2"),
                           tmp_path / "acc")
    for other in (two, accumulated):
        assert other.keys() == one.keys()
        assert differences(one, other) < 1e-4
    run_two = json.loads((tmp_path / "two" / "run.json").read_text())
    assert run_two["steps"] == json.loads((tmp_path / "one" / "run.json").read_text())["steps"] == 9
    # and the check can fail: another seed differs by far more
    other_seed = finished(run(train_table, tmp_path / "seed", f"task={sv}", "seed=1"), tmp_path / "seed")
    assert differences(one, other_seed) > 1e-3


# MHFA's attention logits are per-head affine in these biases, so the softmax over frames cancels them: their
# true gradient is 0, and AdamW turns the float noise left in it into lr-sized steps of random sign
SOFTMAX_INVARIANT = ("backend.attention.bias", "backend.key_proj.bias")


def differences(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a if a[k].is_floating_point() and k not in SOFTMAX_INVARIANT)


@pytest.mark.slow  # subprocess training runs, killed and resumed or under torchrun (~20-30 s each)
def test_a_killed_ddp_run_with_accumulation_and_frozen_gates_resumes_exactly(train_table, tmp_path):
    """2 gloo processes x 2 accumulated micro-batches of 2, the gates frozen once the target is reached (step 6),
    killed at step 4 (mid-epoch), rerun on 2 processes: bit-identical to the uninterrupted run."""
    setting = ("grad_accumulation=2", "checkpoint_every=1", "freeze_tolerance=1.0")
    reference = finished(run(train_table, tmp_path / "a", *setting, processes=2), tmp_path / "a")
    assert json.loads((tmp_path / "a" / "run.json").read_text())["gates_frozen_at_step"] == 6
    killed = run(train_table, tmp_path / "b", *setting, "die_at_step=4", processes=2)
    assert killed.returncode != 0 and not (tmp_path / "b" / "final.safetensors").exists()
    resumed = finished(run(train_table, tmp_path / "b", *setting, processes=2), tmp_path / "b")
    assert json.loads((tmp_path / "b" / "run.json").read_text())["resumed_at_step"] == 4
    for name in reference:
        assert torch.equal(reference[name], resumed[name]), name


@pytest.mark.slow  # subprocess training runs, killed and resumed or under torchrun (~20-30 s each)
def test_train_time_compaction_under_ddp_resumes_exactly_and_ends_with_the_gated_runs_model(train_table, tmp_path):
    """2 gloo processes, the gates frozen at step 6 and the model compacted there (DDP wrapping the smaller model):
    killed at step 7 and rerun, bit-identical to the run that went through; beside the same run without the switch,
    the head differs by float reorderings only (see test_two_ddp_processes_match_one_with_the_same_global_batch)."""
    setting = ("grad_accumulation=2", "checkpoint_every=1", "freeze_tolerance=1.0", 'task="sv"')
    gated = finished(run(train_table, tmp_path / "g", *setting, processes=2), tmp_path / "g")
    small = finished(run(train_table, tmp_path / "a", *setting, "compact_on_freeze=true", processes=2), tmp_path / "a")
    assert json.loads((tmp_path / "a" / "run.json").read_text())["compacted_at_step"] == 6
    killed = run(train_table, tmp_path / "b", *setting, "compact_on_freeze=true", "die_at_step=7", processes=2)
    assert killed.returncode != 0 and not (tmp_path / "b" / "final.safetensors").exists()
    resumed = finished(run(train_table, tmp_path / "b", *setting, "compact_on_freeze=true", processes=2),
                       tmp_path / "b")
    assert json.loads((tmp_path / "b" / "run.json").read_text())["resumed_at_step"] == 7
    assert resumed.keys() == small.keys()
    for name in small:
        assert torch.equal(small[name], resumed[name]), name
    assert sum(v.numel() for v in small.values()) < sum(v.numel() for v in gated.values())
    head = {k: v for k, v in gated.items() if not k.startswith("frontend.")}
    assert differences(head, {k: small[k] for k in head}) < 1e-4


@pytest.mark.slow  # subprocess training runs under torchrun (~20-30 s each)
def test_sampled_execution_under_ddp_matches_the_masked_computation(train_table, tmp_path):
    """2 gloo processes x 2 accumulated micro-batches (one held gate sample per step), sampled execution on and off
    (hp.model.sampled): after 9 steps of joint pruning the weights agree to float reorderings, as between process
    counts above, and differ in the last bits (the switch reaches the model). The FFN units' gates start at
    init_prune_prob 0.5, so about half of them are skipped in every step."""
    setting = ("grad_accumulation=2", 'task="sv"')
    sampled = finished(run(train_table, tmp_path / "s", *setting, processes=2), tmp_path / "s")
    masked = finished(run(train_table, tmp_path / "m", *setting, "sampled_execution=false", processes=2),
                      tmp_path / "m")
    assert sampled.keys() == masked.keys()
    assert differences(sampled, masked) < 1e-4
    assert any(not torch.equal(sampled[k], masked[k]) for k in sampled)


def test_resumed_curves_continue_without_repeated_steps(tmp_path):
    from hp.training.live_log import LiveLogger

    live, staging = tmp_path / "live", tmp_path / "checkpoints" / "dvclive"
    logger = LiveLogger(live, staging)
    for step in range(6):  # a run that checkpointed at step 3 and was killed after logging step 5
        logger.log(step, {"task_loss": float(step)})
    assert not live.exists()  # staged until the run has finished
    logger = LiveLogger(live, staging, resume_at=3)
    for step in range(3, 8):
        logger.log(step, {"task_loss": 10.0 + step})
    logger.close()
    assert not staging.exists()
    rows = (live / "plots" / "metrics" / "task_loss.tsv").read_text().splitlines()[1:]
    assert [line.split("\t") for line in rows] == [[str(s), str(float(s if s < 3 else 10 + s))] for s in range(8)]
    failed = LiveLogger(live, staging)  # a fresh run that fails: the finished run's curves stay
    failed.log(0, {"lr": 1.0})
    assert (live / "plots" / "metrics" / "task_loss.tsv").read_text().splitlines()[1:] == rows
    LiveLogger(live, staging).close()  # a fresh run that finishes replaces them
    assert not (live / "plots" / "metrics" / "task_loss.tsv").exists()


def test_one_gpu_cannot_serve_several_processes(monkeypatch):
    from hp.utils import distributed

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="names one GPU, but 2 processes need one each"):
        distributed.device("cuda:1")
    assert distributed.device("cpu").type == "cpu"


@pytest.mark.parametrize("world", [1, 2, 4])
def test_sharded_sampler_deals_one_global_order(world):
    n, per_rank_step = 37, 2  # 2 utterances per rank per step
    reference = list(ShardedSampler(n, per_rank_step * world, 0, 1, seed=3))
    ranks = [list(ShardedSampler(n, per_rank_step, r, world, seed=3)) for r in range(world)]
    assert all(len(r) == len(ranks[0]) for r in ranks) and len(ranks[0]) * world == len(reference)
    for k in range(len(ranks[0]) // per_rank_step):
        together = sorted(i for r in ranks for i in r[k * per_rank_step:(k + 1) * per_rank_step])
        assert together == sorted(reference[k * per_rank_step * world:(k + 1) * per_rank_step * world])
    resumed = ShardedSampler(n, per_rank_step, 1 % world, world, seed=3)
    resumed.set_epoch(0, skip=2)
    assert list(resumed) == ranks[1 % world][2:]
    moved = ShardedSampler(n, per_rank_step, 0, world, seed=3)
    moved.set_epoch(1)
    assert list(moved) != ranks[0]  # a new order each epoch


def test_a_checkpoint_of_another_run_is_not_resumed(tmp_path, capsys):
    Checkpoints(tmp_path, "run-a").save({"step": 3})
    assert Checkpoints(tmp_path, "run-a").latest()["step"] == 3
    assert Checkpoints(tmp_path, "run-b").latest() is None
    assert "a checkpoint of other settings or data; starting afresh" in capsys.readouterr().out
    assert Checkpoints(tmp_path, "run-a", resume=False).latest() is None
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(Exception, match="last.pt: unreadable checkpoint"):
        Checkpoints(tmp_path, "run-a").latest()


# the training stages under torchrun (runtime.nproc_per_node 2): test_asvspoof.py's DVC run on ASVspoof5's tree
