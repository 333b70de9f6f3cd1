"""Tensor images → PIL images and PNG files (grids, depth maps).

Contract: RGB tensors are (3, H, W) or (N, 3, H, W) in [-1, 1]; depth tensors are (1, H, W) or
(H, W) in scene units (larger = farther).
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from ip2n.atomic import atomic_path


def to_pil(image: torch.Tensor) -> Image.Image:
    """(3, H, W) in [-1, 1] → RGB PIL image (values outside the range are clipped)."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an image tensor of shape (3, H, W), got {tuple(image.shape)}")
    if not bool(torch.isfinite(image).all()):
        # Clipping would write NaN as black: a broken render must not pass for a result.
        raise ValueError(
            "the rendered image holds NaN or infinite values (the weights or the latent are broken)"
        )
    array = ((image.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return Image.fromarray(array.permute(1, 2, 0).numpy(), mode="RGB")


def depth_to_pil(depth: torch.Tensor, near: float | None = None, far: float | None = None) -> Image.Image:
    """Depth map → grayscale PIL image, near = bright, far = dark (normalised to the map's range)."""
    depth = depth.detach().float().cpu()
    if depth.ndim == 3 and depth.shape[0] == 1:
        depth = depth[0]
    if depth.ndim != 2:
        raise ValueError(f"expected a depth map of shape (H, W) or (1, H, W), got {tuple(depth.shape)}")
    near = float(depth.min()) if near is None else near
    far = float(depth.max()) if far is None else far
    normalised = (far - depth) / max(far - near, 1e-8)
    array = (normalised.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return Image.fromarray(array, mode="L")


def make_grid(images: list[Image.Image], columns: int | None = None, padding: int = 4) -> Image.Image:
    """Tile same-size images in rows (white padding between tiles)."""
    if not images:
        raise ValueError("make_grid needs at least one image")
    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    width, height = images[0].size
    grid = Image.new(
        "RGB", (columns * width + (columns - 1) * padding, rows * height + (rows - 1) * padding), "white"
    )
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        grid.paste(image.convert("RGB"), (column * (width + padding), row * (height + padding)))
    return grid


def save_image(image: Image.Image, path: str | os.PathLike) -> None:
    """Write a PIL image atomically; the format follows the file suffix.

    A PNG keeps the image's `ip2n-*` text entries (`image.info`), such as the mark of a head rendered
    from the synthetic world (`ip2n.synthetic.world.marks`).
    """
    kind = _format_for(path)
    options = {}
    text = {
        key: value
        for key, value in image.info.items()
        if isinstance(key, str) and key.startswith("ip2n-") and isinstance(value, str)
    }
    if kind == "PNG" and text:
        info = PngInfo()
        for key, value in text.items():
            info.add_text(key, value, zip=True)
        options["pnginfo"] = info
    with atomic_path(path) as tmp:
        image.save(tmp, format=kind, **options)


def _format_for(path: str | os.PathLike) -> str:
    suffix = os.fspath(path).rsplit(".", 1)[-1].lower()
    return {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}.get(suffix, "PNG")


def to_uint8_frames(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] → (N, H, W, 3) uint8, the layout video writers expect."""
    frames = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return frames.permute(0, 2, 3, 1).contiguous().numpy()
