"""Users' own photos → the EG3D/FFHQ-style 512² crop and a camera label (CPU, models ship in pip packages).

    from ip2n.align import align_face
    aligned = align_face(Image.open("me.jpg"))
    aligned.image.save("me_aligned.png"); aligned.camera  # (25,) EG3D label

Steps: find the largest face and its 68 landmarks (landmarks.py) → the similarity transform that
puts it where EG3D's FFHQ preprocessing puts faces (crop.py) → refine the landmarks on that upright,
normalised crop and correct the transform → warp → head pose → camera label (pose.py).
Conventions and calibration: docs/alignment.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ip2n.align.crop import (
    ALIGNED_FACE_BOX,
    REFERENCE_SIZE,
    apply_transform,
    crop_transform,
    scale_matrix,
    warp_image,
)
from ip2n.align.landmarks import (
    MIN_FACE_WIDTH,
    AlignmentError,
    FaceBox,
    LandmarkDetector,
    as_rgb,
    default_detector,
    find_face,
)
from ip2n.align.pose import camera_label, estimate_head_pose

__all__ = ["AlignedFace", "AlignmentError", "LandmarkDetector", "align_face"]


@dataclass(frozen=True)
class AlignedFace:
    """An aligned portrait and what was learnt about it.

    - `image`: RGB PIL image, output_size × output_size.
    - `camera`: (25,) float32 EG3D camera label (cam2world 16 + intrinsics 9) for `yaw`, `pitch`.
    - `landmarks`: (68, 2) float64, in the crop's pixels (top-left corner at (0, 0), y down).
    - `yaw`, `pitch`: the camera's angles in radians, ip2n convention (docs/cameras.md).
    - `transform`: (3, 3) float64 similarity, input pixels → crop pixels (homogeneous columns).
    - `face_box`: (left, top, right, bottom) of the detected face in input pixels.
    "Input pixels" are those of the photo turned upright by its EXIF orientation.
    - `message`: a note for the user (e.g. "3 faces found; used the largest") or None.
    """

    image: Image.Image
    camera: torch.Tensor
    landmarks: np.ndarray
    yaw: float
    pitch: float
    transform: np.ndarray
    face_box: tuple[float, float, float, float]
    message: str | None = None


def align_face(
    image: Image.Image,
    *,
    output_size: int = REFERENCE_SIZE,
    min_face_width: float = MIN_FACE_WIDTH,
    detector: LandmarkDetector | None = None,
    name: str = "the image",
) -> AlignedFace:
    """Align the largest face of a photo the way EG3D crops FFHQ, and estimate its camera.

    `image`: any PIL image (EXIF orientation, alpha, grayscale, CMYK and 16-bit are handled).
    `detector`: reuse one across calls (default: a shared instance built on first use).
    `name`: how error messages call the image. Raises `AlignmentError` (a `ValueError`) when there
    is no usable face.
    """
    if output_size < 16:
        raise ValueError(f"output_size must be at least 16 px, got {output_size}")
    detector = detector or default_detector()
    # 1. The photo as upright 8-bit RGB.
    image = as_rgb(image)
    # 2. The largest face and its landmarks, found on a reduced copy for speed.
    found = find_face(image, detector, min_face_width=min_face_width, name=name)
    # 3. A first crop from those landmarks.
    first = crop_transform(found.landmarks)  # input → REFERENCE_SIZE crop
    # 4. Landmarks again on that upright, normalised crop, where dlib's predictor is at its best
    #    (it was trained on upright faces), and the correction they imply.
    draft = np.asarray(warp_image(image, first, REFERENCE_SIZE))
    refined = detector.landmarks(draft, FaceBox(*ALIGNED_FACE_BOX, score=0.0))  # (68, 2) in the draft
    correction = crop_transform(refined)
    transform = scale_matrix(output_size / REFERENCE_SIZE) @ correction @ first
    landmarks = apply_transform(scale_matrix(output_size / REFERENCE_SIZE) @ correction, refined)
    # 5. The crop at the requested size, straight from the photo (one resampling).
    crop = warp_image(image, transform, output_size)
    # 6. Head pose → camera.
    pose = estimate_head_pose(landmarks)
    message = None
    if found.num_faces > 1:
        message = f"{found.num_faces} faces found; used the largest ({found.box.width:.0f} px wide)"
    box = found.box
    return AlignedFace(
        image=crop,
        camera=camera_label(pose),
        landmarks=landmarks,
        yaw=pose.yaw,
        pitch=pose.pitch,
        transform=transform,
        face_box=(box.left, box.top, box.right, box.bottom),
        message=message,
    )
