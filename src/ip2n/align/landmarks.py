"""Faces and their 68 landmarks in a photo, with dlib's HOG detector and shape predictor.

The models ship inside pip packages (`dlib-bin` for the code, `face_recognition_models` for the
`.dat` files), so nothing is downloaded at run time.

Coordinates: pixels with the image's top-left CORNER at (0, 0), x right, y down; the centre of the
pixel in column i, row j is (i + 0.5, j + 0.5). (dlib reports pixel indices; they are shifted here
once, so every later scaling is a plain multiplication.)

Landmark order is the usual 68-point (iBUG 300-W) layout, 0-based: jaw 0–16, brows 17–26, nose
27–35 (30 = tip), eyes 36–47 (36–41 on the image-left eye), mouth 48–67 (48, 54 = corners).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

logger = logging.getLogger(__name__)

PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
# Detection runs on a copy whose longer side is at most `max_side`, upsampled `upsample` times
# (each upsampling halves the smallest face found, ≈ 80 px → 40 px, and quadruples the cost).
# The first stage that finds a face wins; the cheap one finds ordinary portraits in ~30 ms.
DETECTION_STAGES = ((640, 0), (640, 1), (1280, 1))
# Faces narrower than this (detector box, input pixels) would be upscaled more than ~4× into the
# 512² crop: too blurry for the encoder.
MIN_FACE_WIDTH = 80


class AlignmentError(ValueError):
    """A photo that cannot be aligned; the message names the problem and what to do about it."""


@dataclass(frozen=True)
class FaceBox:
    """A detected face: box (left, top, right, bottom) in input pixels and the detector's score."""

    left: float
    top: float
    right: float
    bottom: float
    score: float

    @property
    def width(self) -> float:
        return self.right - self.left

    @property
    def area(self) -> float:
        return (self.right - self.left) * (self.bottom - self.top)


def model_dir() -> Path:
    """Folder of the `.dat` models installed by `face_recognition_models`.

    Found by path: importing the package needs `pkg_resources`, which new setuptools no longer has.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise AlignmentError(
            "the face landmark model is missing: install it with `pip install face_recognition_models`"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def as_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image → 8-bit RGB, upright as the camera's EXIF orientation says.

    Transparent areas are composited on white; 16-/32-bit grayscale is rescaled from its own range,
    which PIL's plain `convert("RGB")` would clip to white.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        array = (array - low) * (255.0 / max(high - low, 1e-12))
        return Image.fromarray(np.round(array).astype(np.uint8), mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


class LandmarkDetector:
    """dlib's HOG face detector and 68-point shape predictor (CPU, ~30 ms + 3 ms per face).

    Build once and reuse: loading the predictor takes about a second.
    """

    def __init__(self, predictor_path: str | Path | None = None):
        import dlib

        path = Path(predictor_path) if predictor_path is not None else model_dir() / PREDICTOR_FILE
        if not path.is_file():
            raise AlignmentError(
                f"the face landmark model {path} is missing: reinstall it with "
                "`pip install --force-reinstall face_recognition_models`"
            )
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(path))

    def detect(self, image: np.ndarray, upsample: int = 0) -> list[FaceBox]:
        """Faces in an (H, W, 3) uint8 RGB array, largest first; boxes in that array's pixels."""
        rects, scores, _ = self._detector.run(np.ascontiguousarray(image), upsample, 0.0)
        boxes = [
            FaceBox(rect.left(), rect.top(), rect.right() + 1.0, rect.bottom() + 1.0, float(score))
            for rect, score in zip(rects, scores)
        ]
        return sorted(boxes, key=lambda box: box.area, reverse=True)

    def landmarks(self, image: np.ndarray, box: FaceBox) -> np.ndarray:
        """68 landmarks (68, 2) float64 of the face in `box`, in the (H, W, 3) uint8 array's pixels."""
        rect = self._dlib.rectangle(
            int(round(box.left)), int(round(box.top)), int(round(box.right)) - 1, int(round(box.bottom)) - 1
        )
        shape = self._predictor(np.ascontiguousarray(image), rect)
        return np.array([(point.x + 0.5, point.y + 0.5) for point in shape.parts()], dtype=np.float64)


@functools.lru_cache(maxsize=1)
def default_detector() -> LandmarkDetector:
    """The shared detector (built on first use, then reused by every alignment in the process)."""
    return LandmarkDetector()


@dataclass(frozen=True)
class FaceLandmarks:
    """The face chosen in a photo: its box and landmarks (68, 2) in input pixels, and a face count."""

    box: FaceBox
    landmarks: np.ndarray
    num_faces: int


def find_face(
    image: Image.Image,
    detector: LandmarkDetector,
    *,
    min_face_width: float = MIN_FACE_WIDTH,
    name: str = "the image",
) -> FaceLandmarks:
    """The largest face of an RGB image and its 68 landmarks, or an `AlignmentError` saying why not.

    `name` is how error messages refer to the image (e.g. its file name).
    """
    width, height = image.size
    for max_side, upsample in _stages(max(width, height)):
        factor = min(1.0, max_side / max(width, height))
        small = (
            image
            if factor == 1.0
            else image.resize(
                (max(1, round(width * factor)), max(1, round(height * factor))),
                Image.Resampling.BILINEAR,
                reducing_gap=2.0,
            )
        )
        # The resized copy's exact scale per axis (sizes are rounded to whole pixels).
        scale = (small.size[0] / width, small.size[1] / height)
        array = np.asarray(small)
        boxes = detector.detect(array, upsample)
        if boxes:
            break
    else:
        raise AlignmentError(
            f"no face found in {name}: use a photo where the face is visible, roughly frontal and at least "
            f"{min_face_width:.0f} px wide"
        )
    largest = boxes[0]
    box = FaceBox(
        largest.left / scale[0],
        largest.top / scale[1],
        largest.right / scale[0],
        largest.bottom / scale[1],
        largest.score,
    )
    if box.width < min_face_width:
        raise AlignmentError(
            f"the face in {name} is only {box.width:.0f} px wide; at least {min_face_width:.0f} px is "
            "needed: use a larger photo or one taken closer to the face"
        )
    if len(boxes) > 1:
        logger.info("%d faces found in %s; using the largest (%.0f px wide)", len(boxes), name, box.width)
    landmarks = detector.landmarks(array, largest) / np.array(scale)  # (68, 2) in input pixels
    return FaceLandmarks(box=box, landmarks=landmarks, num_faces=len(boxes))


def _stages(longer_side: int) -> list[tuple[int, int]]:
    """Detection stages worth running: a stage that sees no more pixels than an earlier one is skipped."""
    stages, seen = [], 0
    for max_side, upsample in DETECTION_STAGES:
        effective = min(max_side, longer_side) * 2**upsample
        if effective > seen:
            stages.append((max_side, upsample))
            seen = effective
    return stages


# A mean face's landmarks in 3-D, in millimetres, for the weak-perspective fits of crop.py and
# pose.py. Axes as EG3D's world: x towards the subject's left (image right in a frontal photo),
# y up, z out of the face; origin at the nose tip. x/y are typical adult proportions; the depths
# were scaled so that the crop scale does not drift with yaw on the calibration portraits
# (docs/alignment.md).
_TEMPLATE_MIDLINE = {
    27: (0.0, 33.0, -24.1),
    28: (0.0, 22.0, -13.4),
    29: (0.0, 11.0, -4.0),
    30: (0.0, 0.0, 0.0),
    33: (0.0, -13.0, -13.4),
    51: (0.0, -27.0, -14.7),
    57: (0.0, -42.0, -17.4),
}
# Points on the image-left half (the subject's right) and their mirror partners.
_TEMPLATE_LEFT_HALF = {
    17: ((-58.0, 45.0, -60.3), 26),
    18: ((-48.0, 52.0, -44.2), 25),
    19: ((-36.0, 55.0, -34.8), 24),
    20: ((-24.0, 54.0, -29.5), 23),
    21: ((-12.0, 50.0, -26.8), 22),
    31: ((-13.0, -10.0, -21.4), 35),
    32: ((-7.0, -12.0, -16.1), 34),
    36: ((-45.0, 33.0, -46.9), 45),
    37: ((-37.0, 38.0, -40.2), 44),
    38: ((-27.0, 38.0, -38.9), 43),
    39: ((-18.0, 33.0, -40.2), 42),
    40: ((-27.0, 30.0, -40.2), 47),
    41: ((-37.0, 30.0, -41.5), 46),
    48: ((-25.0, -33.0, -33.5), 54),
    49: ((-16.0, -28.0, -21.4), 53),
    50: ((-7.0, -26.0, -16.1), 52),
    58: ((-8.0, -41.0, -18.8), 56),
    59: ((-16.0, -38.0, -24.1), 55),
}


def _build_template() -> tuple[np.ndarray, np.ndarray]:
    points = dict(_TEMPLATE_MIDLINE)
    for index, ((x, y, z), partner) in _TEMPLATE_LEFT_HALF.items():
        points[index] = (x, y, z)
        points[partner] = (-x, y, z)
    indices = np.array(sorted(points))
    return indices, np.array([points[index] for index in indices], dtype=np.float64)


# (K,) landmark indices and (K, 3) their template positions; eyes, brows, nose and mouth only:
# the jaw line is a silhouette that slides over the face as the head turns.
TEMPLATE_INDICES, TEMPLATE_POINTS = _build_template()

LEFT_EYE = slice(36, 42)
RIGHT_EYE = slice(42, 48)
NOSE_TIP = 30
MOUTH_LEFT, MOUTH_RIGHT = 48, 54


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """(68, 2) landmarks → (5, 2): the two eye centres, the nose tip, the two mouth corners."""
    return np.stack(
        (
            landmarks[LEFT_EYE].mean(axis=0),
            landmarks[RIGHT_EYE].mean(axis=0),
            landmarks[NOSE_TIP],
            landmarks[MOUTH_LEFT],
            landmarks[MOUTH_RIGHT],
        )
    )


def five_point_template() -> np.ndarray:
    """The same five points of the 3-D template (5, 3), in millimetres."""
    full = np.zeros((68, 3))
    full[TEMPLATE_INDICES] = TEMPLATE_POINTS
    return five_points(full)
