"""Atomic file writes: a file appears under its final name complete, or not at all.

Every output ip2n writes (images, videos, meshes, weights, JSON) goes through `atomic_path`, so an
interrupted run never leaves a half-written file that a later run would mistake for a finished one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

# mkstemp creates files readable by the owner only; outputs should get the usual permissions.
_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK


@contextlib.contextmanager
def atomic_path(final_path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `final_path`; rename it into place only if the block succeeds.

    The temporary file lives in the same directory (so `os.replace` is an atomic rename on one file
    system) and keeps the final suffix (so writers that infer the format from the name still work).
    """
    final_path = Path(final_path)
    directory = final_path.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{final_path.stem}.", suffix=f".partial{final_path.suffix}", dir=directory
    )
    os.close(fd)
    tmp_path = Path(tmp_name)
    try:
        yield tmp_path
        os.chmod(tmp_path, _FILE_MODE)
        os.replace(tmp_path, final_path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(final_path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(final_path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(final_path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(final_path, text.encode("utf-8"))
