"""Orbit videos: frames → MP4 (H.264 through the ffmpeg binary that imageio-ffmpeg ships) or GIF."""

from __future__ import annotations

import errno
import os
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np

from ip2n.atomic import atomic_path

VIDEO_FORMATS = ("mp4", "gif")


class VideoWriteError(OSError):
    """The video encoder failed; nothing was installed under the video's name."""


def write_video(frames: np.ndarray, path: str | os.PathLike, fps: int = 24) -> Path:
    """Write (N, H, W, 3) uint8 frames to `path` (.mp4 or .gif), atomically.

    MP4 uses yuv420p so every common player opens it; that needs even sizes, which our renders have.
    """
    path = Path(path)
    kind = path.suffix.lower().lstrip(".")
    if kind not in VIDEO_FORMATS:
        raise ValueError(
            f"unsupported video format '{path.suffix}': "
            f"use one of {', '.join('.' + f for f in VIDEO_FORMATS)}"
        )
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames of shape (N, H, W, 3), got {frames.dtype} {frames.shape}")
    with atomic_path(path) as tmp:
        if kind == "mp4":
            _write_mp4(frames, tmp, fps, name=path)
        else:
            _write_gif(frames, tmp, fps)
    return path


def _write_mp4(frames: np.ndarray, path: Path, fps: int, name: Path) -> None:
    """Encode with the ffmpeg binary of imageio-ffmpeg, and check how it ended.

    imageio's writer ignores ffmpeg's exit status: an encoder that fails at the end (a full disk while
    the index is written) would leave a truncated file that then looks finished. Here ffmpeg runs
    directly, with imageio's settings for these options (libx264, quality 8 = CRF 10, yuv420p), and
    any failure raises `VideoWriteError` quoting ffmpeg's own message (`name`: the video's final name,
    for messages; `path` is the temporary file being written).
    """
    import imageio_ffmpeg

    height, width = frames.shape[1:3]
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-y",
        "-f",
        "rawvideo",
        "-vcodec",
        "rawvideo",
        "-s",
        f"{width}x{height}",
        "-pix_fmt",
        "rgb24",
        "-r",
        str(Fraction(fps).limit_denominator()),
        "-i",
        "-",
        "-an",
        "-vcodec",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-crf",
        "10",
        "-v",
        "error",
        str(path),
    ]
    with tempfile.TemporaryFile() as log:
        try:
            # Its own session: Ctrl-C reaches ip2n, which stops ffmpeg and removes the partial file.
            process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True
            )
        except OSError as exc:
            raise VideoWriteError(f"cannot start ffmpeg to write {name} ({exc})") from None
        assert process.stdin is not None
        try:
            try:
                for frame in frames:
                    process.stdin.write(np.ascontiguousarray(frame).data)
                process.stdin.close()
            except BrokenPipeError:
                pass  # ffmpeg stopped reading: its exit status and message say why
            status = process.wait()
        except BaseException:
            process.kill()
            process.wait()
            raise
        if status != 0:
            log.seek(0)
            raise _encoder_failure(name, status, log.read().decode("utf-8", "replace"))
    if not path.is_file() or path.stat().st_size == 0:
        raise VideoWriteError(f"ffmpeg reported success but wrote no video to {name}")


def _encoder_failure(path: Path, status: int, log: str) -> OSError:
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    detail = "; ".join(lines[-3:])[-500:] or "no message"
    if "No space left on device" in log:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return VideoWriteError(f"ffmpeg could not write the video {path} (exit status {status}: {detail})")


def _write_gif(frames: np.ndarray, path: Path, fps: int) -> None:
    from PIL import Image

    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(
        path, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0
    )
