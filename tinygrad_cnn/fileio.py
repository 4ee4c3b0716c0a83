"""Atomic file writes, shared by checkpoints, pictures, metrics and data files.

A file is written to a temporary name in the same directory, flushed,
fsynced and renamed over the target, and the directory is fsynced: a crash
at any moment leaves either the old file or the new one, never a mix.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

_UMASK = os.umask(0o022)  # read the process umask (it can only be read by setting it)
os.umask(_UMASK)


def atomic_write(path, data):
    """Write ``data`` to ``path`` atomically and return the path.

    ``data`` is bytes, a str (written as UTF-8), or a callable that writes
    into the binary file object it is given (e.g. ``lambda f: np.savez(f, ...)``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            # mkstemp makes the file private (0600); give it the mode open() would.
            os.fchmod(f.fileno(), 0o666 & ~_UMASK)
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def fsync_dir(directory):
    """Make a rename in ``directory`` durable (where the platform allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
