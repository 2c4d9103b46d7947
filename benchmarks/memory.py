"""Peak resident memory of a block of code, for the benchmarks (Linux: read from /proc).

A sampling thread rather than `ru_maxrss`, because ru_maxrss is the process's high-water mark and
cannot tell the peak of one step from the steps before it in the same process.
"""

from __future__ import annotations

import os
import threading


class PeakRSS:
    """Highest RSS while the block runs, sampled every `interval` seconds (short enough to catch
    transient peaks, long enough that the sampler's GIL share is negligible)."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())

    @property
    def delta_mb(self) -> float:
        return (self.peak - self.start) / 2**20

    def text(self) -> str:
        return f"peak RSS {self.peak / 2**30:.2f} GiB (+{(self.peak - self.start) / 2**30:.2f} GiB over the start)"


def rss() -> int:
    """Resident set size of this process in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
