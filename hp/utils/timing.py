"""Wall time and peak memory of named sections of a stage process, for the benchmarks (hp.benchmarks).

Off unless the environment variable HP_TIMINGS names a file: then each `timed(...)` section appends
{section, seconds, peak_rss_gb, count} and the list is written there as JSON when the process exits. Peak RSS is the
process's high-water mark so far (getrusage), so the section that first reaches a new peak is the one that set it.
"""
from __future__ import annotations

import atexit
import contextlib
import json
import os
import resource
import sys
import time
from pathlib import Path

ENV = "HP_TIMINGS"
_sections: list[dict] = []


def peak_rss_gb(usage: resource.struct_rusage | None = None) -> float:
    """The peak resident memory of `usage` (default: this process's so far), GB (ru_maxrss: kilobytes on Linux,
    bytes on macOS)."""
    peak = (usage or resource.getrusage(resource.RUSAGE_SELF)).ru_maxrss
    return peak / (1e9 if sys.platform == "darwin" else 1e6)


@contextlib.contextmanager
def timed(section: str, count: int | None = None):
    """Record the section's wall time (and `count`, the items it handled) when HP_TIMINGS is set."""
    if not os.environ.get(ENV):
        yield
        return
    start = time.perf_counter()
    yield
    _sections.append({"section": section, "seconds": round(time.perf_counter() - start, 3),
                      "peak_rss_gb": round(peak_rss_gb(), 3), **({"count": count} if count is not None else {})})


def _write(path: str) -> None:
    Path(path).write_text(json.dumps(_sections, indent=1))


if os.environ.get(ENV):
    atexit.register(_write, os.environ[ENV])
