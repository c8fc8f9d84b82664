"""Process memory from /proc (Linux), so the benchmarks need no psutil."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def status_kb(pid: int, field: str = "VmRSS") -> int:
    """A memory field of /proc/PID/status in KiB (VmRSS: now; VmHWM: the peak so far); 0 if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def children(pid: int) -> list[int]:
    """The direct children of a process."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def spawned_children(pid: int) -> list[int]:
    """Children started by multiprocessing's spawn (the worker processes), not its resource tracker."""
    return [child for child in children(pid) if "spawn_main" in cmdline(child)]


def mib(kib: int) -> float:
    return kib / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14 and 15


def reset_peak(pid: int) -> None:
    """Start VmHWM afresh from the current RSS (Linux clear_refs 5), to see the peak of what follows."""
    with contextlib.suppress(OSError):  # not Linux, or not ours: the peak then counts from the start
        Path(f"/proc/{pid}/clear_refs").write_text("5")
