"""Image → encoder tensor, exactly as the official PREIM3D / InstructPix2NeRF transform does it.

The official transform is torchvision's `Resize((256, 256))` on a PIL image (PIL's bilinear
resampling, which antialiases when shrinking), `ToTensor` and `Normalize(0.5, 0.5)`. The same
[-1, 1] tensor feeds the identity network after an adaptive average pool to 112×112.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ENCODER_RESOLUTION = 256
IDENTITY_RESOLUTION = 112


def _as_rgb_pil(image: Image.Image | np.ndarray) -> Image.Image:
    if isinstance(image, Image.Image):
        if image.mode != "RGB":
            raise ValueError(
                f"expected an RGB image, got PIL mode '{image.mode}'; convert it first, "
                "e.g. image.convert('RGB')"
            )
        return image
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f"expected a uint8 array of shape (H, W, 3) in RGB order, got {image.dtype} {image.shape}"
            )
        return Image.fromarray(np.ascontiguousarray(image))  # uint8 (H, W, 3) → mode "RGB"
    raise TypeError(f"expected an RGB PIL image or a uint8 (H, W, 3) array, got {type(image).__name__}")


def encoder_input(image: Image.Image | np.ndarray, resolution: int = ENCODER_RESOLUTION) -> torch.Tensor:
    """Official encoder preprocessing of one image.

    Args:
        image: an RGB PIL image, or a uint8 array (H, W, 3) in RGB order; any size (aspect ratio is
            not preserved: the official transform squashes to a square).
        resolution: output side (256 for the official encoders).

    Returns:
        float32 tensor (3, resolution, resolution) in [-1, 1].
    """
    pil = _as_rgb_pil(image)
    # torchvision's Resize on a PIL image is exactly this call (size given as (width, height)).
    resized = pil.resize((resolution, resolution), Image.Resampling.BILINEAR)
    pixels = torch.from_numpy(np.array(resized, dtype=np.uint8))  # (H, W, 3)
    tensor = pixels.permute(2, 0, 1).to(torch.float32).div(255)  # (3, H, W) in [0, 1]
    return tensor.sub(0.5).div(0.5)


def pool_for_identity(images: torch.Tensor, size: int = IDENTITY_RESOLUTION) -> torch.Tensor:
    """Adaptive average pool to the identity network's input size (official `IDLoss.extract_feats`).

    No face crop and no re-normalisation. 256 → 112 is not an integer ratio, so the windows overlap
    and vary in size: output row i averages input rows floor(i·H/size) … ceil((i+1)·H/size) − 1
    (the same for columns).

    Args:
        images: (N, 3, H, W), usually the 256×256 encoder input in [-1, 1].

    Returns:
        (N, 3, size, size), same value range.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
    return F.adaptive_avg_pool2d(images, (size, size))
