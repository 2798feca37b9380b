"""Peak resident memory of this process on Linux, shared by ``bench_entk.py`` and ``_nt_worker.py``.

Plain Python (no torch, no jax): the neural-tangents worker imports it from its own environment.
"""

from __future__ import annotations


def proc_status_kib(field: str) -> int | None:
    """A ``/proc/self/status`` field in KiB (``"VmRSS"``, ``"VmHWM"``), or ``None`` where unavailable."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset the peak-RSS watermark (``VmHWM``) to the current RSS; ``False`` where not supported."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False
