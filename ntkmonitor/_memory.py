"""Memory budgets: how much a kernel computation may allocate, and what is available.

The Jacobian-based methods hold blocks of per-example gradients. The block size is bounded by a
*budget* in bytes, by default :data:`DEFAULT_MEMORY_BUDGET` (1 GiB) or a quarter of the memory
available on the device, whichever is smaller. Set the environment variable
``NTKMONITOR_MEMORY_BUDGET`` (bytes, or a number with a unit: ``512MB``, ``2GiB``) to change it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

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
    """Memory that can still be allocated on ``device``, in bytes (a best-effort estimate).

    On CUDA: free plus cached device memory. On the CPU: the least of the system's available memory
    (``MemAvailable``), the headroom under the process's control group limit (cgroup v2 ``memory.max``, v1
    ``memory.limit_in_bytes``) and under its ``ulimit`` (``RLIMIT_AS`` against the address space in use,
    ``RLIMIT_DATA`` against the data segment), so a container or ``ulimit -v`` gives a clear
    :class:`~ntkmonitor.KernelMemoryError` instead of an allocator failure.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + cached)
    limits = [_system_available(), cgroup_headroom(), _rlimit_headroom()]
    known = [b for b in limits if b is not None]
    return max(0, min(known)) if known else 1 << 40  # unknown: do not block


def _system_available() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _read_number(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except (OSError, ValueError):
        return None
    return int(text) if text.isdigit() else None  # "max" (no limit) and anything unexpected: None


def cgroup_headroom(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Bytes left under this process's memory control group limit, or ``None`` when there is no limit.

    Args:
        root: where the cgroup filesystem is mounted.

    Returns:
        ``limit - usage`` of the process's own group (cgroup v2: ``memory.max`` and ``memory.current``;
        v1: ``memory/memory.limit_in_bytes`` and ``memory/memory.usage_in_bytes``), or ``None``.
    """
    group = ""
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            parts = line.split(":", 2)
            if len(parts) == 3 and parts[0] == "0" and parts[1] == "":
                group = parts[2].strip("/")
    except OSError:
        pass
    candidates = [
        (root / group / "memory.max", root / group / "memory.current"),
        (root / "memory.max", root / "memory.current"),
        (root / "memory" / "memory.limit_in_bytes", root / "memory" / "memory.usage_in_bytes"),
    ]
    for limit_path, usage_path in candidates:
        limit = _read_number(limit_path)
        if limit is None or limit >= 1 << 60:  # v1 writes a huge number for "no limit"
            continue
        usage = _read_number(usage_path) or 0
        return limit - usage
    return None


def _rlimit_headroom() -> int | None:
    try:
        import resource
    except ImportError:  # not on POSIX
        return None
    status: dict[str, int] = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmSize", "VmData") and rest.split():
                status[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError):
        return None
    room = []
    for limit_name, used in (("RLIMIT_AS", "VmSize"), ("RLIMIT_DATA", "VmData")):
        soft, _ = resource.getrlimit(getattr(resource, limit_name))
        if soft != resource.RLIM_INFINITY and used in status:
            room.append(soft - status[used])
    return min(room) if room else None


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
