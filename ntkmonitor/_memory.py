"""Memory budgets: how much a kernel computation may allocate, and what is available.

The Jacobian-based methods hold blocks of per-example gradients. The block size is bounded by a
*budget* in bytes, by default :data:`DEFAULT_MEMORY_BUDGET` (1 GiB) or a quarter of the memory
available on the device, whichever is smaller. Set the environment variable
``NTKMONITOR_MEMORY_BUDGET`` (bytes, or a number with a unit: ``512MB``, ``2GiB``) to change it.
"""

from __future__ import annotations

import os
import re

import torch

from .errors import InputError

DEFAULT_MEMORY_BUDGET = 1 << 30
"""Default bound, in bytes, on the intermediate blocks one kernel computation holds (1 GiB)."""

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_bytes(text: str) -> int:
    """Parse ``"123"``, ``"512MB"`` or ``"2GiB"`` into a number of bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).upper() not in _UNITS:
        raise InputError(
            f"Expected NTKMONITOR_MEMORY_BUDGET to be a number of bytes such as 536870912, 512MB or 2GiB, "
            f"but got {text!r}."
        )
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def available_bytes(device: torch.device) -> int:
    """Memory that can still be allocated on ``device``, in bytes (a best-effort estimate)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + cached)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 40  # unknown: do not block


def memory_budget(device: torch.device) -> int:
    """The byte budget for intermediate blocks on ``device`` (see the module docstring)."""
    env = os.environ.get("NTKMONITOR_MEMORY_BUDGET")
    if env:
        return max(1, parse_bytes(env))
    return max(1 << 20, min(DEFAULT_MEMORY_BUDGET, available_bytes(device) // 4))


def format_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"
