"""Progress of a long loop, for whoever watches it: a tqdm bar on a terminal; elsewhere (under DVC, in CI, with nohup,
piped to a file) one plain line every HP_PROGRESS_SECONDS seconds (default 30) and one at the end, e.g.

    finetune@sv: step 120/2160 (5.6 %), loss 3.210, sparsity 0.412 -> 0.700, 4.2 utt/s, 14m05s left

Only rank 0 of a torchrun job reports (the ranks step together). Lines go to stderr, where DVC shows a stage's own
output while it runs."""
from __future__ import annotations

import os
import sys
import time

from hp.errors import ConfigError
from hp.utils import distributed

SECONDS_ENV = "HP_PROGRESS_SECONDS"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def stage_name(default: str) -> str:
    """`<script>@<task>` of a stage process (python -m stages.finetune sv: finetune@sv), else `default`."""
    script = os.path.basename(sys.argv[0]).removesuffix(".py") if sys.argv and sys.argv[0] else ""
    if os.path.basename(os.path.dirname(sys.argv[0] or "")) != "stages":
        return default
    return script + (f"@{sys.argv[1]}" if len(sys.argv) > 1 else "")


def seconds_between_lines() -> float:
    """HP_PROGRESS_SECONDS (default 30), checked."""
    value = os.environ.get(SECONDS_ENV, "30")
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise ConfigError(f"{SECONDS_ENV}={value!r}: expected a number of seconds (0: a line per step)")
    return seconds


class Progress:
    """`total` units (steps, batches, files) of work named `name`; `items_per_unit` (utterances per step, say)
    gives the rate in items/s, named `item`."""

    def __init__(self, name: str, total: int, initial: int = 0, unit: str = "step", items_per_unit: float = 1.0,
                 item: str = "utt", stream=None, interval: float | None = None):
        self.name, self.total, self.done, self.unit = name, total, initial, unit
        self.items_per_unit, self.item = items_per_unit, item
        self.stream = stream if stream is not None else sys.stderr
        self.interval = seconds_between_lines() if interval is None else interval
        self.fields: dict[str, str] = {}
        self.enabled = distributed.is_main()
        self.start, self.first = time.monotonic(), initial
        self.last_line, self.shown = self.start, None  # when the last line was printed, at which count
        self.bar = None
        if self.enabled and getattr(self.stream, "isatty", lambda: False)():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=name, unit=unit, file=self.stream, mininterval=1)

    def set(self, **fields: str) -> None:
        """What the next line shows beside the count (formatted values: loss="3.210")."""
        self.fields.update(fields)
        if self.bar is not None:
            self.bar.set_postfix(self.fields, refresh=False)

    def update(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if now - self.last_line >= self.interval:
            self.last_line = now
            self._line(now)

    def line(self, now: float | None = None) -> str:
        """The plain progress line as it stands (at `now`, time.monotonic()'s clock)."""
        elapsed = (time.monotonic() if now is None else now) - self.start
        parts = [f"{self.name}: {self.unit} {self.done}/{self.total} ({100 * self.done / max(self.total, 1):.1f} %)"]
        parts += [f"{key.replace('_', ' ')} {value}" for key, value in self.fields.items()]
        rate = (self.done - self.first) / elapsed if elapsed > 0 else 0.0
        if rate > 0:
            parts.append(f"{rate * self.items_per_unit:.3g} {self.item}/s")
            if self.done < self.total:
                parts.append(f"{_duration((self.total - self.done) / rate)} left")
        if self.done >= self.total:
            parts.append(f"done in {_duration(elapsed)}")
        return ", ".join(parts)

    def _line(self, now: float) -> None:
        self.shown = self.done
        print(self.line(now), file=self.stream, flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        elif self.shown != self.done:  # the last count, unless a line just gave it
            self._line(time.monotonic())

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.close()
        elif self.bar is not None:  # a failure or Ctrl-C: its own one line says so, no progress line after it
            self.bar.close()
