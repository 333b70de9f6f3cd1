"""Stage timer and peak-memory reader shared by the benchmarks."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (10⁶ bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6  # bytes on macOS, KiB elsewhere


def current_rss_mb() -> float:
    """Current resident memory, in MB (Linux /proc; the peak elsewhere)."""
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
        return pages * resource.getpagesize() / 1e6
    except OSError:
        return peak_rss_mb()


def file_backed_rss_mb() -> float | None:
    """The part of the current resident memory that maps files, in MB (Linux only, else None).

    Weights read from safetensors are memory-mapped: their pages count in the RSS, but they are
    clean file pages that the kernel can drop and that processes loading the same files share.
    """
    try:
        with open("/proc/self/status") as handle:
            fields = dict(line.split(":", 1) for line in handle if ":" in line)
        return int(fields["RssFile"].split()[0]) * 1024 / 1e6
    except (OSError, KeyError, ValueError):
        return None


@dataclass
class StageTimer:
    """Collects (stage, seconds, peak RSS after the stage) rows."""

    rows: list[dict] = field(default_factory=list)

    @contextmanager
    def stage(self, name: str, **details) -> Iterator[None]:
        start = time.perf_counter()
        yield
        seconds = time.perf_counter() - start
        self.rows.append(
            {"stage": name, "seconds": round(seconds, 3), "peak_rss_mb": round(peak_rss_mb()), **details}
        )

    def table(self) -> str:
        width = max(len(row["stage"]) for row in self.rows)
        lines = [f"{'stage':<{width}}  {'seconds':>8}  {'peak RSS MB':>11}"]
        for row in self.rows:
            lines.append(f"{row['stage']:<{width}}  {row['seconds']:>8.2f}  {row['peak_rss_mb']:>11}")
        return "\n".join(lines)
