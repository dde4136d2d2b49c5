"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half.

Every output privatune leaves behind (metrics summaries, ledgers, reports, keys) goes
through :func:`write_bytes_atomic`, so the rule "a crash loses nothing and leaves nothing
half-written" has one implementation.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_bytes_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` via a synced temporary file in the same folder.

    The temporary file gets ``mode`` before any byte is written (mkstemp creates it 0600,
    so a private key is never briefly world-readable), and is removed if anything fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: Path, text: str, *, mode: int = 0o644) -> None:
    """:func:`write_bytes_atomic` for UTF-8 text."""
    write_bytes_atomic(path, text.encode("utf-8"), mode=mode)
