"""Progress while a stage works: plain lines when the output is no terminal (DVC, CI, nohup), a tqdm bar on one,
nothing on ranks other than 0; and a training run's lines (step, loss, expected sparsity vs target, rate, time
left)."""
import io
import re

import pytest
import torch

import hp
from hp.tasks import TaskModel
from hp.training.live_log import LiveLogger
from hp.training.loop import train
from hp.utils import progress as P
from configs import head_config, train_config


def test_plain_lines_every_interval_and_one_at_the_end(monkeypatch):
    clock = {"now": 0.0}
    monkeypatch.setattr(P.time, "monotonic", lambda: clock["now"])
    out = io.StringIO()
    bar = P.Progress("finetune@sv", total=4, unit="step", items_per_unit=8, stream=out, interval=15)
    bar.set(loss="3.210")
    for now in (10.0, 20.0, 30.0, 40.0):  # lines at 20 s (15 s since the start) and at the end, none between
        clock["now"] = now
        bar.update()
        if now == 30.0:
            bar.set(loss="2.500", sparsity="0.412 -> 0.700")
    bar.close()
    assert out.getvalue().splitlines() == [
        "finetune@sv: step 2/4 (50.0 %), loss 3.210, 0.8 utt/s, 0m20s left",
        "finetune@sv: step 4/4 (100.0 %), loss 2.500, sparsity 0.412 -> 0.700, 0.8 utt/s, done in 0m40s",
    ]


def test_a_resumed_run_counts_its_rate_from_where_it_resumed(monkeypatch):
    clock = {"now": 0.0}
    monkeypatch.setattr(P.time, "monotonic", lambda: clock["now"])
    bar = P.Progress("x", total=10, initial=6, stream=io.StringIO(), interval=1e9)
    clock["now"] = 4.0
    bar.update(2)  # 2 steps in 4 s since the resume, not 8
    assert bar.line() == "x: step 8/10 (80.0 %), 0.5 utt/s, 0m04s left"


def test_only_rank_0_reports_and_a_terminal_gets_a_bar(monkeypatch):
    monkeypatch.setattr(P.distributed, "is_main", lambda: False)
    out = io.StringIO()
    with P.Progress("x", total=3, stream=out, interval=0) as bar:
        bar.update(3)
    assert out.getvalue() == ""
    monkeypatch.setattr(P.distributed, "is_main", lambda: True)

    class Terminal(io.StringIO):
        def isatty(self):
            return True
    tty = Terminal()
    with P.Progress("x", total=3, stream=tty, interval=0) as bar:
        bar.update(3)
    assert "3/3" in tty.getvalue() and "\r" in tty.getvalue()  # tqdm's redrawn line, not plain lines


def test_a_failed_loop_prints_no_line_after_its_error():
    out = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        with P.Progress("x", total=3, stream=out, interval=1e9):
            raise KeyboardInterrupt
    assert out.getvalue() == ""


def test_training_reports_progress_in_lines_when_not_on_a_terminal(corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(P.SECONDS_ENV, "0")
    torch.manual_seed(0)
    model = TaskModel("sv", hp.Frontend(hp.SHAPES["tiny"]), sorted(corpus["label"].unique()), head_config())
    cfg = train_config(target_sparsity=0.3, epochs=2, batch_size=4, crop_seconds=0.5, sparsity_warmup_epochs=1,
                       log_every=1, device="cpu")
    logger = LiveLogger(tmp_path / "live", tmp_path / "staging")
    run = train(model, corpus, cfg, logger)
    logger.close()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("train sv: step ")]
    steps = run["steps"]
    assert len(lines) == steps  # one per step at interval 0 (the last one is the end's)
    pattern = (r"train sv: step (\d+)/%d \([\d.]+ %%\), loss \d+\.\d{3}, sparsity 0\.\d{3} -> 0\.\d{3}, "
               r"[\d.e+-]+ utt/s, (\d+m\d\ds left|done in \d+m\d\ds)" % steps)
    assert all(re.fullmatch(pattern, line) for line in lines), lines
    assert lines[-1].startswith(f"train sv: step {steps}/{steps} (100.0 %)") and "done in" in lines[-1]


def test_a_bad_interval_is_one_line(monkeypatch):
    from hp.errors import ConfigError

    monkeypatch.setenv(P.SECONDS_ENV, "often")
    with pytest.raises(ConfigError, match="^HP_PROGRESS_SECONDS='often': expected a number of seconds"):
        P.Progress("x", total=1)
