"""Atomic file writes: a file appears under its final name complete, or not at all.

Every output ip2n writes (images, videos, meshes, weights, JSON) goes through `atomic_path`, so an
interrupted run never leaves a half-written file that a later run would mistake for a finished one.

The temporary file is hidden and named `.<stem>.ip2n<pid>-<random>.partial<suffix>`. A process
killed outright (SIGKILL, power loss) cannot remove it, so the first write of a process into a folder
removes the stale ones found there: files of this naming that are older than the current process
and whose writing process is gone.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

# mkstemp creates files readable by the owner only; outputs should get the usual permissions.
_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK

# Older files were named `.<stem>.<random>.partial<suffix>`: without the writer's process id.
PARTIAL_NAME = re.compile(r"^\..*\.(?:ip2n(?P<pid>\d+)-)?[a-z0-9_]{8}\.partial(?:\.[^./]*)?$")
DISK_FULL_ERRORS = (errno.ENOSPC, errno.EDQUOT)
# ip2n.atomic is imported when a command starts: a partial file older than this was left by an
# earlier process.
_PROCESS_START = time.time()
_cleaned: set[Path] = set()
_cleaned_lock = threading.Lock()


@contextlib.contextmanager
def atomic_path(final_path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `final_path`; rename it into place only if the block succeeds.

    The temporary file lives in the same directory (so `os.replace` is an atomic rename on one file
    system) and keeps the final suffix (so writers that infer the format from the name still work).
    A full disk is reported as an `OSError` (ENOSPC) naming `final_path`.
    """
    final_path = Path(final_path)
    directory = final_path.parent
    with _naming(final_path):
        directory.mkdir(parents=True, exist_ok=True)
        clean_stale_partials(directory)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{final_path.stem}.ip2n{os.getpid()}-",
            suffix=f".partial{final_path.suffix}",
            dir=directory,
        )
    os.close(fd)
    tmp_path = Path(tmp_name)
    try:
        with _naming(final_path):
            yield tmp_path
            os.chmod(tmp_path, _FILE_MODE)
            os.replace(tmp_path, final_path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def _naming(final_path: Path) -> Iterator[None]:
    """Re-raise a full disk as an OSError naming the file being written (writers rarely name it)."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in DISK_FULL_ERRORS or exc.filename == str(final_path):
            raise
        raise OSError(exc.errno, os.strerror(exc.errno), str(final_path)) from exc


def clean_stale_partials(directory: str | os.PathLike) -> list[Path]:
    """Remove the temporary files interrupted writes left in `directory` (once per process and folder).

    Only files named as `atomic_path` names them, older than this process, whose writing process is
    not running, are removed; returns them.
    """
    directory = Path(directory)
    key = directory.resolve()
    with _cleaned_lock:
        if key in _cleaned:
            return []
        if len(_cleaned) > 10_000:  # a long-running server writes into many folders
            _cleaned.clear()
        _cleaned.add(key)
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    for entry in entries:
        match = PARTIAL_NAME.match(entry.name)
        if match is None or not _is_stale(entry, match.group("pid")):
            continue
        with contextlib.suppress(OSError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def _is_stale(entry: os.DirEntry, pid: str | None) -> bool:
    try:
        if not entry.is_file(follow_symlinks=False) or entry.stat().st_mtime >= _PROCESS_START:
            return False
    except OSError:
        return False
    return pid is None or not _running(int(pid))


def _running(pid: int) -> bool:
    if pid <= 0 or pid == os.getpid():
        return False  # this process writes only files newer than itself
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # another user's process
        return True
    return True


def write_bytes_atomic(final_path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(final_path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(final_path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(final_path, text.encode("utf-8"))
