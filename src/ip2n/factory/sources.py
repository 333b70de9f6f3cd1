"""Where pairs start: photos (aligned and labelled by `ip2n.align`) or rendered heads of the synthetic world.

Photos: a folder (searched recursively) or image files, in sorted order. Before anything is written
each file is opened far enough to read its size (`check_photos`): files that cannot be read or are
too small are rejected in the manifest with the reason, and a run where no file is usable, or where
the one file named is unusable, is refused. When a pair is made the photo is decoded
(`ip2n.pipeline.inputs.load_image`) and aligned the way EG3D cropped FFHQ (`ip2n.align.align_face`),
which also gives its camera label; a photo without an alignable face is rejected ("no_face").

World heads: head `i` of a run with seed `s` is drawn from seed `derive_seed(s, "head", i)`:
identity and attributes from the world's prior, one visible attribute edit (all of the paper's
triplets are single edits), a pose from the `ip2n synth data` distribution (yaw ±30°, pitch ±20°).
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ip2n.factory.spec import FactorySettings, PairState, SourceRef, derive_seed

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


class SourceError(ValueError):
    """Sources that cannot make a data set (nothing usable, a missing path); the message says why."""


@dataclass(frozen=True)
class PhotoCheck:
    ref: SourceRef
    problem: str | None  # reason code ("unreadable", "too_small") or None
    detail: str = ""


def list_photos(paths: Sequence[str | os.PathLike]) -> list[SourceRef]:
    """Image files under the given folders and files → refs named relative to their folder, sorted."""
    if not paths:
        raise SourceError("no sources given: name a folder of photos, image files, or use --world-heads N")
    refs: dict[str, SourceRef] = {}
    for given in paths:
        path = Path(given)
        if not path.exists():
            raise SourceError(f"source {path} does not exist")
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            files = [p for p in files if not any(part.startswith(".") for part in p.relative_to(path).parts)]
            named = [(p.relative_to(path).as_posix(), p) for p in files]
        else:
            named = [(path.name, path)]
        for name, file in named:
            if name in refs and refs[name].path != str(file):
                raise SourceError(f"two sources are both named {name}: {refs[name].path} and {file}")
            refs[name] = SourceRef("photo", name, path=str(file))
    if not refs:
        raise SourceError(
            f"no images found in {', '.join(map(str, paths))} (looked for {', '.join(IMAGE_SUFFIXES)})"
        )
    return [refs[name] for name in sorted(refs)]


def check_photos(refs: Sequence[SourceRef], min_side: int) -> list[PhotoCheck]:
    """Open each file's header: unreadable or too small → a problem (cheap: nothing is decoded)."""
    checks = []
    for ref in refs:
        assert ref.path is not None
        path = Path(ref.path)
        try:
            if path.stat().st_size == 0:
                raise OSError("the file is empty")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path) as image:
                    size = image.size
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError) as exc:
            checks.append(PhotoCheck(ref, "unreadable", f"{path.name}: {exc}"))
            continue
        if min(size) < min_side:
            checks.append(
                PhotoCheck(
                    ref, "too_small", f"{path.name} is {size[0]}×{size[1]} px; at least {min_side} px needed"
                )
            )
            continue
        checks.append(PhotoCheck(ref, None))
    return checks


def prepare_photo(state: PairState, settings: FactorySettings, detector: Any = None) -> PairState:
    """Decode and align the pair's photo → the aligned source (resolution²) and its camera label."""
    from ip2n.align import AlignmentError, align_face
    from ip2n.pipeline.inputs import ImageInputError, load_image

    ref = state.job.source
    assert ref.path is not None
    try:
        image = load_image(ref.path)
    except ImageInputError as exc:
        reason = "too_small" if "too small" in str(exc) or "small to" in str(exc) else "unreadable"
        return state.reject(reason, str(exc))
    if min(image.size) < settings.min_source_side:
        return state.reject(
            "too_small",
            f"{ref.name} is {image.size[0]}×{image.size[1]} px; at least {settings.min_source_side}",
        )
    try:
        aligned = align_face(image, output_size=settings.resolution, detector=detector, name=ref.name)
    except AlignmentError as exc:
        return state.reject("no_face", str(exc))
    state.source_image = np.asarray(aligned.image, dtype=np.uint8)
    state.camera = [float(v) for v in aligned.camera.tolist()]
    state.source_meta = {
        "yaw_deg": round(math.degrees(aligned.yaw), 4),
        "pitch_deg": round(math.degrees(aligned.pitch), 4),
        "alignment": aligned.message,
    }
    return state


# --- the synthetic world -------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def world_generator(size: int = 128):
    """The world's procedural generator rendering `size`² images (built once per process and size)."""
    import dataclasses

    from ip2n.builtin import PRESET_NAME
    from ip2n.synthetic.world.generator import SyntheticHeadGenerator, synthetic_preset

    # As `ip2n synth data --size`: the neural render at half the size, enlarged bilinearly.
    config = dataclasses.replace(
        synthetic_preset(PRESET_NAME), img_resolution=size, neural_rendering_resolution=size // 2
    )
    return SyntheticHeadGenerator(config).eval()


def world_heads(count: int) -> list[SourceRef]:
    width = max(5, len(str(max(count - 1, 0))))
    return [SourceRef("world", f"world-head-{i:0{width}d}", index=i) for i in range(count)]


def render_world(
    identity: torch.Tensor, attributes: list[dict], camera: torch.Tensor, size: int = 128
) -> list[np.ndarray | None]:
    """Heads (identity (1, P) shared, one attribute set each) at one camera → uint8 size² images
    (None: not finite)."""
    generator = world_generator(size)
    ws = generator.encode_heads(identity.expand(len(attributes), -1), attributes)
    with torch.no_grad():
        images = generator.synthesis(ws, camera.expand(len(attributes), -1))["image"]
    return [to_uint8(image) for image in images]


def to_uint8(image: torch.Tensor) -> np.ndarray | None:
    """(3, H, W) in [-1, 1] → uint8 (H, W, 3); None when it holds NaN or infinity."""
    if not bool(torch.isfinite(image).all()):
        return None
    array = ((image.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return array.permute(1, 2, 0).numpy().copy()


def prepare_world_head(state: PairState, settings: FactorySettings) -> PairState:
    """Draw head `index` (identity, attributes, a single visible edit, pose) and render its source."""
    from ip2n.factory.phrasing import world_edit
    from ip2n.rendering.cameras import camera_labels
    from ip2n.synthetic.lab.data import sample_edit, sample_pose
    from ip2n.synthetic.world.attributes import sample_attributes, sample_identity

    ref = state.job.source
    generator = torch.Generator().manual_seed(derive_seed(settings.seed, "head", ref.index))
    identity = sample_identity(1, generator)
    source = sample_attributes(generator)
    target, edits = sample_edit(source, generator, count_probabilities=(1.0,))
    yaw, pitch = sample_pose(generator)
    camera = camera_labels(yaw, pitch)
    (image,) = render_world(identity, [source], camera, settings.world_size)
    if image is None:
        return state.reject("unreadable", "the world rendered a non-finite source image")
    state.source_image = image
    state.camera = [float(v) for v in camera[0].tolist()]
    state.source_meta = {
        "identity": [float(v) for v in identity[0].tolist()],  # exact float32 values
        "source_attributes": source,
        "target_attributes": target,
        "yaw_deg": round(math.degrees(yaw), 4),
        "pitch_deg": round(math.degrees(pitch), 4),
        "size": settings.world_size,
    }
    if state.edit is None:  # the world editor: the edit is the one drawn for this head
        state.edit = world_edit(edits)
    return state
