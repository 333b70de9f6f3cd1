"""Orbit videos: frames → MP4 (H.264 through the ffmpeg binary that imageio-ffmpeg ships) or GIF."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ip2n.atomic import atomic_path

VIDEO_FORMATS = ("mp4", "gif")


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
            _write_mp4(frames, tmp, fps)
        else:
            _write_gif(frames, tmp, fps)
    return path


def _write_mp4(frames: np.ndarray, path: Path, fps: int) -> None:
    import imageio.v2 as imageio

    writer = imageio.get_writer(
        path,
        format="FFMPEG",
        mode="I",
        fps=fps,
        codec="libx264",
        quality=8,
        pixelformat="yuv420p",
        macro_block_size=1,
    )
    try:
        for frame in frames:
            writer.append_data(frame)
    finally:
        writer.close()


def _write_gif(frames: np.ndarray, path: Path, fps: int) -> None:
    from PIL import Image

    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(
        path, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0
    )
