"""The mark on images rendered from the synthetic heads world: the pictures the built-in model can edit.

The built-in model knows only the heads of its world; a photo given to it is turned into an
unrelated synthetic head. So every picture ip2n renders from the world carries a mark, and the
built-in model edits only marked pictures (or any picture when explicitly told to: `--any-image`,
`allow_any_image=True`, the web app's "Try anyway"). Marked are the images of `ip2n demo`
(input.png), `ip2n synth sample`, `ip2n synth data` and the web app's examples, and the source and
edited views the built-in model writes (source.png, edited.png, crop.png of a marked input), so an
edit can be edited again.

The mark is a PNG text chunk `ip2n-world` holding a JSON record: what was rendered (the head's seed,
identity values and attributes when known, the camera in degrees, or which latent of which edit) and
the SHA-256 of the image's RGB pixels and size. `world_mark` accepts a mark only when the pixels
still hash to it, so a marked image is exactly what the world rendered:

- a byte-for-byte copy, or a lossless re-save that keeps the text chunk (ip2n's `save_image`,
  Pillow with `pnginfo`), still counts;
- a re-encoded copy (JPEG, WebP, a resize, a crop, a screenshot, a retouch) does not: its pixels
  changed. Nor does a copy whose editor dropped the PNG text chunks: the mark is gone.

In memory the mark travels in `PIL.Image.info` (Pillow copies `info` through `copy`, `convert`,
`resize`, ...; the hash tells the untouched copies from the others).

The mark is a label, not a signature: anyone can write one. It keeps the built-in model from
silently turning a photo into an unrelated synthetic head; it does not stop a user who wants to
run it on anything (the opt-in does that openly).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from PIL import Image

MARK_KEY = "ip2n-world"
MARK_VERSION = 1
WORLD_NAME = "ip2n synthetic 3-D heads"


def pixel_digest(image: Image.Image) -> str:
    """SHA-256 of the image's size and RGB pixels (hex)."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    digest = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode())
    digest.update(rgb.tobytes())
    return digest.hexdigest()


def mark_world_image(image: Image.Image, record: Mapping[str, Any]) -> Image.Image:
    """Mark `image` (in place, and returned) as rendered from the world; `record` says what it shows.

    Saving it as PNG with `ip2n.export.images.save_image` writes the mark into the file.
    """
    mark = {"world": WORLD_NAME, "version": MARK_VERSION, **record, "pixels_sha256": pixel_digest(image)}
    image.info[MARK_KEY] = json.dumps(mark, sort_keys=True)
    return image


def world_mark(image: Image.Image) -> dict[str, Any] | None:
    """The mark's record if `image` is a marked, unchanged render of the world, else None."""
    return _read(image)[0]


def why_unmarked(image: Image.Image) -> str:
    """Why `image` does not count as a head of the world ("" when it does)."""
    return _read(image)[1]


def _read(image: Image.Image) -> tuple[dict[str, Any] | None, str]:
    text = image.info.get(MARK_KEY)
    if not isinstance(text, str):
        return (
            None,
            "it carries no ip2n-world mark, the mark ip2n puts on the heads it renders from its world",
        )
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        return None, "its ip2n-world mark is damaged"
    if not isinstance(record, dict) or record.get("world") != WORLD_NAME:
        return None, "its ip2n-world mark is not one ip2n wrote"
    if record.get("pixels_sha256") != pixel_digest(image):
        return None, (
            "its pixels are no longer those ip2n rendered (the image was re-encoded, resized or edited "
            "after it was marked)"
        )
    return record, ""
