"""Writing files so that nothing a user has is damaged: atomically, and never through a link.

:func:`write_text_atomic` writes a temporary file next to the destination and renames it over the destination.
A reader sees the old file or the new one, never half of one; a crash leaves the old file; and a destination
that is a symbolic link is replaced by the new file instead of its target being overwritten.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import InputError


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file and an atomic rename.

    Args:
        path: the destination; its folder must exist. A link there is replaced, its target left alone.
        text: the whole content.

    Returns:
        The destination as a ``Path``.

    Raises:
        InputError: ``path`` is an existing directory.

    Example:
        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = write_text_atomic(pathlib.Path(d) / "a.json", "{}")
        ...     p.read_text()
        '{}'
    """
    target = Path(path)
    if target.is_dir() and not target.is_symlink():
        raise InputError(f"Expected {str(target)!r} to be a file to write, but it is a directory. Move it away.")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        unlink_quietly(tmp)
        raise
    return target


def unlink_quietly(path: str | os.PathLike[str]) -> None:
    """Remove ``path`` if it exists, ignoring errors (cleanup of a temporary file)."""
    try:
        os.unlink(path)
    except OSError:
        pass


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
