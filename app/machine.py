"""The one-line description of the machine that every timing is quoted with (benchmarks, the communication
study): a measured rate means little without the cores and the CPU it was measured on."""
from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_line(*extras: str) -> str:
    """'<cores> cores, <CPU model>' followed by `extras` (library versions, say), comma-separated."""
    return ", ".join([f"{os.cpu_count()} cores", cpu_model(), *extras])
