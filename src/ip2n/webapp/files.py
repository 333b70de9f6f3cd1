"""What the web app serves and accepts as files: its own output folder, its own file types, bounded uploads.

Gradio serves any file under the folders it is allowed (`allowed_paths`, its upload folder) and
accepts uploads of any type and number. That is too much for a public page: an uploaded HTML or SVG
file would be served back inline from the app's own origin (stored cross-site scripting), and files
that were in the output folder before the app ran would be downloadable. `FileGuard` is an ASGI
middleware in front of Gradio's routes that narrows both:

- `/gradio_api/file=…` serves only files the app wrote or accepted — inside `requests/`,
  `examples/` or an upload folder of the output root, not hidden, of an image, video or mesh type —
  with that type's `Content-Type` and `X-Content-Type-Options: nosniff`; everything else gets 403,
  as do the older `/gradio_api/file/…` and `/gradio_api/proxy=…` (remote files), which the page never
  uses.
- `/gradio_api/upload` takes at most `MAX_UPLOAD_FILES` image files per request (the suffixes ip2n
  reads), with a declared length of at most that many times the size limit; other uploads are
  deleted and refused. After each upload the oldest upload folders beyond `keep` are removed.

The output root carries a marker file (`OWNER_MARKER`): a non-empty folder without it holds files the
app did not write, and is refused (`check_output_root`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from ip2n.limits import MAX_UPLOAD_FILES

logger = logging.getLogger(__name__)

OWNER_MARKER = ".ip2n-webapp"
# Folders of the output root whose files the app wrote (see ip2n.webapp.session's layout).
SERVED_FOLDERS = ("requests", "examples")
# Gradio keeps each upload in a folder named by the SHA-256 of its content.
UPLOAD_FOLDER = re.compile(r"^[0-9a-f]{64}$")
SERVED_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".mp4": "video/mp4",
    ".glb": "model/gltf-binary",
}
# What a portrait upload may be: the files ip2n reads (ip2n.pipeline.inputs.IMAGE_SUFFIXES).
UPLOAD_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
# Room for the multipart framing around the files of one upload request.
_MULTIPART_OVERHEAD = 64 * 2**10

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def check_output_root_owner(output_root: str | os.PathLike) -> None:
    """Refuse a folder that holds files the web app did not write (no `OWNER_MARKER` in it)."""
    output_root = Path(output_root)
    if not output_root.is_dir() or (output_root / OWNER_MARKER).is_file():
        return
    found = _first_file(output_root)
    if found is not None:
        raise ValueError(
            f"the output folder {output_root} already holds files that ip2n serve did not write (such as "
            f"{found.relative_to(output_root)}), and the page could serve them; choose an empty or new "
            "folder for the web app (-o/--out)"
        )


def claim_output_root(output_root: str | os.PathLike) -> None:
    """Mark `output_root` as the web app's own (after `check_output_root_owner`)."""
    output_root = Path(output_root)
    output_root.mkdir(parents=True, exist_ok=True)
    marker = output_root / OWNER_MARKER
    if not marker.is_file():
        marker.write_text(
            "This folder is written by `ip2n serve`; it serves files from it.\n", encoding="utf-8"
        )


def _first_file(folder: Path) -> Path | None:
    for directory, _folders, files in os.walk(folder):
        if files:
            return Path(directory) / files[0]
    return None


def served_file(output_root: Path, requested: str) -> tuple[Path, str] | None:
    """(file, media type) when `requested` (a `/file=` path) is a file the app may serve, else None."""
    if not requested.startswith("/"):
        return None  # URLs and relative paths: the app only hands out absolute paths of its own files
    try:
        path = Path(requested).resolve(strict=True)
        relative = path.relative_to(output_root)
    except (OSError, ValueError, RuntimeError):
        return None
    parts = relative.parts
    if len(parts) < 2 or any(part.startswith(".") for part in parts) or not path.is_file():
        return None
    if parts[0] not in SERVED_FOLDERS and not UPLOAD_FOLDER.match(parts[0]):
        return None
    media_type = SERVED_TYPES.get(path.suffix.lower())
    return None if media_type is None else (path, media_type)


def prune_uploads(output_root: Path, keep: int) -> list[Path]:
    """Remove the oldest upload folders beyond the newest `keep`; returns the removed ones."""
    try:
        folders = [
            entry for entry in os.scandir(output_root) if entry.is_dir() and UPLOAD_FOLDER.match(entry.name)
        ]
    except OSError:
        return []
    folders.sort(key=lambda entry: entry.stat().st_mtime, reverse=True)
    removed = []
    for entry in folders[keep:]:
        logger.info("removing old upload %s (keeping the newest %d)", entry.path, keep)
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(Path(entry.path))
    return removed


class FileGuard:
    """ASGI middleware: file serving and uploads as the module docstring says."""

    def __init__(
        self, app: Callable, output_root: str | os.PathLike, max_upload_bytes: int, keep: int
    ) -> None:
        self.app = app
        self.output_root = Path(output_root).resolve()
        self.max_upload_bytes = max_upload_bytes
        self.keep = keep

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path.startswith(("/gradio_api/proxy=", "/gradio_api/file/")):
            # Remote files, and the older file route (paths relative to the server's working folder):
            # the page uses neither.
            await _plain(send, 403, "file not allowed")
        elif path.startswith("/gradio_api/file="):
            await self._file(path, scope, receive, send)
        elif path.rstrip("/") == "/gradio_api/upload" and scope.get("method") == "POST":
            await self._upload(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _file(self, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        served = served_file(self.output_root, path[len("/gradio_api/file=") :])
        if served is None:
            await _plain(send, 403, "file not allowed")
            return
        media_type = served[1].encode("latin-1")

        async def typed(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] in (200, 206):
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() not in (b"content-type", b"x-content-type-options")
                ]
                headers += [(b"content-type", media_type), (b"x-content-type-options", b"nosniff")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, typed)

    async def _upload(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = MAX_UPLOAD_FILES * self.max_upload_bytes + _MULTIPART_OVERHEAD
        length = _content_length(scope)
        if length is None:
            await _plain(send, 411, "an upload must declare its Content-Length")
            return
        if length > limit:
            await _plain(
                send, 413, f"upload too large: at most {MAX_UPLOAD_FILES} files of the size limit each"
            )
            return
        start: Message | None = None
        body: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                body.append(message.get("body", b""))

        await self.app(scope, receive, capture)
        payload = b"".join(body)
        if start is not None and start["status"] == 200:
            refusal = self._check_uploaded(payload)
            if refusal is not None:
                await _plain(send, *refusal)
                return
            prune_uploads(self.output_root, self.keep)
        if start is None:
            await _plain(send, 500, "the upload failed")
            return
        await send(start)
        await send({"type": "http.response.body", "body": payload})

    def _check_uploaded(self, payload: bytes) -> tuple[int, str] | None:
        """None when the uploaded files are acceptable; else delete them all → (status, message)."""
        try:
            paths = [Path(item) for item in json.loads(payload)]
        except (ValueError, TypeError):
            return None  # not Gradio's list of paths: nothing to judge
        problem = None
        if len(paths) > MAX_UPLOAD_FILES:
            problem = (413, f"at most {MAX_UPLOAD_FILES} files can be uploaded at once")
        elif any(path.suffix.lower() not in UPLOAD_SUFFIXES for path in paths):
            problem = (415, f"only images can be uploaded ({', '.join(UPLOAD_SUFFIXES)})")
        if problem is not None:
            for path in paths:
                self._remove_upload(path)
        return problem

    def _remove_upload(self, path: Path) -> None:
        with contextlib.suppress(OSError, ValueError):
            resolved = path.resolve()
            folder = resolved.parent
            if folder.parent == self.output_root and UPLOAD_FOLDER.match(folder.name):
                resolved.unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only when empty: the same content may have been uploaded before


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _plain(send: Send, status: int, text: str) -> None:
    body = text.encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode("latin-1")),
                (b"x-content-type-options", b"nosniff"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
