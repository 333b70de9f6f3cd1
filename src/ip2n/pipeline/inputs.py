"""The user's inputs to an edit, checked and normalised at the boundary: portraits and instructions.

Images: any file Pillow decodes (or a PIL image / NumPy array) becomes one 8-bit RGB PIL image,
upright. Conversions are made *correctly* and logged: EXIF orientation applied, grayscale replicated
to three channels, 16-bit samples scaled (not clipped) to 8 bits, CMYK converted through its ICC
profile when it has one, transparency composited onto white, the first frame of an animation taken,
very large photos reduced to `WORKING_SIDE`. Everything else is refused with an `ImageInputError`
that names the file, the problem and the fix: missing or empty files, files that are not images (only
`READ_FORMATS` are ever opened), truncated or damaged files, images too small to hold a face (also
after the reduction of an elongated one), images too large to decode safely, 32-bit or signed
integer samples and floating-point samples that are not finite.

Instructions: each must hold words, and the prompt given to the text encoder must fit its 77-token
window: a prompt that would be cut is refused with the part that would be lost (never cut silently).
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageCms, ImageOps, UnidentifiedImageError

from ip2n.limits import MAX_INSTRUCTION_CHARACTERS
from ip2n.text.tokens import CONTEXT_LENGTH, count_tokens, cut_text

logger = logging.getLogger(__name__)

# Decoding costs 3 bytes per pixel (and Pillow refuses ~179 MP outright as a decompression bomb).
MAX_INPUT_PIXELS = 100_000_000
# Far more than the 512² crop an edit uses; larger photos are reduced first to bound memory and time.
WORKING_SIDE = 4096
# Below this a face cannot be encoded meaningfully (the encoder works at 256²).
MIN_SIDE = 64
# Below this the encoder has to upsample: allowed, but the user is warned.
RECOMMENDED_SIDE = 256
# Background for transparent pixels: portraits cut out of their background are usually shown on white.
ALPHA_BACKGROUND = (255, 255, 255)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
# A ready crop (no alignment) may be this much wider than tall or taller than wide (of its long side).
SQUARE_TOLERANCE = 0.02

# The formats ip2n reads ("JPEG" includes the multi-picture JPEGs many phones write); Pillow is never
# asked to try others — e.g. EPS, which it would hand to Ghostscript.
READ_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


class ImageInputError(ValueError):
    """An input image that cannot be used; the message names the file, the problem and the fix."""


class InstructionError(ValueError):
    """An instruction that cannot be used (empty, or too long for the text encoder)."""


# --- images -------------------------------------------------------------------------------------------


def load_image(path: str | os.PathLike, encoder_resolution: int = RECOMMENDED_SIDE) -> Image.Image:
    """Read a portrait file → upright 8-bit RGB PIL image (see the module docstring for conversions).

    Raises `ImageInputError` for anything that is not a usable image.
    """
    path = Path(path)
    if not path.exists():
        raise ImageInputError(
            f"{path}: no such file; check the path (and that the image was copied completely)"
        )
    if path.is_dir():
        raise ImageInputError(f"{path} is a folder, not an image; pass image files, or the folder to --batch")
    if path.stat().st_size == 0:
        raise ImageInputError(f"{path} is empty (0 bytes); copy or download the image again")
    try:
        with warnings.catch_warnings():
            # Size is checked below with our own, clearer limit.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path, formats=READ_FORMATS)
    except Image.DecompressionBombError:
        raise ImageInputError(_too_large_message(path, None)) from None
    except UnidentifiedImageError:
        raise ImageInputError(
            f"{path} is not an image file ip2n can read (its content is not JPEG, PNG, WebP, BMP, TIFF or "
            "GIF); pass a photo of a face in one of these formats"
        ) from None
    except OSError as exc:
        raise ImageInputError(
            f"cannot open {path} ({exc.strerror or exc}); check that the file is readable"
        ) from None
    with image:
        _check_size(image.size, path)
        _reduce_while_decoding(image)
        try:
            image.load()
        # Pillow's decoders signal damaged data with assorted exception types (OSError, SyntaxError,
        # ValueError, EOFError, struct.error, ...), all of which mean the same thing to the user.
        except Exception as exc:  # noqa: BLE001
            raise ImageInputError(
                f"{path} could not be decoded ({exc}): the file is truncated or damaged; "
                "copy, download or export it again"
            ) from None
        prepared = prepare_image(image, name=str(path), encoder_resolution=encoder_resolution)
        # Leaving the `with` block closes `image`; hand out an image that outlives it.
        return image.copy() if prepared is image else prepared


def prepare_image(
    image: Image.Image | np.ndarray, name: str = "the image", encoder_resolution: int = RECOMMENDED_SIDE
) -> Image.Image:
    """A decoded image (PIL, or an array (H, W), (H, W, 3) or (H, W, 4) of uint8/uint16/float in [0, 1])
    → upright 8-bit RGB PIL image, with at most `WORKING_SIDE` pixels on the long side.

    An image that is already RGB, upright and not too large is returned as is. A warning says when
    it is smaller than `encoder_resolution` (the encoder then has to enlarge it).
    """
    if isinstance(image, np.ndarray):
        image = _from_array(image, name)
    elif not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image, a NumPy array or a file path, got {type(image).__name__}")
    _check_size(image.size, name)
    frames = getattr(image, "n_frames", 1)  # only multi-frame formats (GIF, TIFF, ...) have n_frames
    if frames > 1:
        logger.info("%s has %d frames; using the first", name, frames)
    image = _upright(image, name)
    image = _to_rgb(image, name)
    image = _limit_size(image, name)
    width, height = image.size
    if min(width, height) < encoder_resolution:
        logger.warning(
            "%s is only %d×%d pixels; the encoder works at %d×%d, so the edit will be blurry. "
            "Use a photo where the face is at least %d pixels wide",
            name,
            width,
            height,
            encoder_resolution,
            encoder_resolution,
            encoder_resolution,
        )
    return image


def _from_array(array: np.ndarray, name: str) -> Image.Image:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageInputError(
            f"{name}: expected an image array of shape (H, W), (H, W, 3) or (H, W, 4), got {array.shape}"
        )
    if array.dtype == np.uint16:
        array = _sixteen_to_eight_bits(array)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise ImageInputError(f"{name}: a float image array must hold values in [0, 1]")
        array = np.round(array * 255).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise ImageInputError(
            f"{name}: unsupported array type {array.dtype}; use uint8, uint16 or float in [0, 1]"
        )
    return Image.fromarray(np.ascontiguousarray(array))


def _check_size(size: tuple[int, int], name: str | os.PathLike) -> None:
    width, height = size
    if width * height > MAX_INPUT_PIXELS:
        raise ImageInputError(_too_large_message(name, size))
    if min(width, height) < MIN_SIDE:
        raise ImageInputError(
            f"{name} is only {width}×{height} pixels, too small to hold a usable face; "
            f"use an image of at least {RECOMMENDED_SIDE}×{RECOMMENDED_SIDE}"
        )
    if max(width, height) > WORKING_SIDE:
        short = round(min(width, height) * WORKING_SIDE / max(width, height))
        if short < MIN_SIDE:
            raise ImageInputError(
                f"{name} is {width}×{height} pixels: reduced to {WORKING_SIDE} pixels on its long side, as "
                f"ip2n reduces large photos, its short side would be {short} pixels, below the minimum of "
                f"{MIN_SIDE}; crop it around the face first"
            )


def _too_large_message(name: str | os.PathLike, size: tuple[int, int] | None) -> str:
    what = (
        f"{size[0]}×{size[1]} pixels ({size[0] * size[1] / 1e6:.0f} megapixels)" if size else "far too large"
    )
    return (
        f"{name} is {what}; ip2n reads images of at most {MAX_INPUT_PIXELS / 1e6:.0f} megapixels. "
        f"Downscale it first (e.g. to {WORKING_SIDE} pixels on the long side) or crop it around the face"
    )


def _reduce_while_decoding(image: Image.Image) -> None:
    """Let the JPEG decoder skip detail we would throw away (decodes at 1/2, 1/4 or 1/8 scale)."""
    if image.format == "JPEG" and max(image.size) > WORKING_SIDE:
        scale = WORKING_SIDE / max(image.size)
        image.draft("RGB", (max(1, round(image.width * scale)), max(1, round(image.height * scale))))


def _upright(image: Image.Image, name: str) -> Image.Image:
    orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    if orientation in (None, 1):
        return image
    logger.info("%s carries EXIF orientation %s; rotating it upright", name, orientation)
    return ImageOps.exif_transpose(image)


def _to_rgb(image: Image.Image, name: str) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT_MODES:
        logger.info("%s is a 16-bit grayscale image; scaling it to 8 bits and replicating it to RGB", name)
        gray = Image.fromarray(_sixteen_to_eight_bits(np.asarray(image)))
        return gray.convert("RGB")
    if mode == "I" or mode.startswith("I;"):
        # 32-bit or signed samples: which value is white is not known, and clipping would turn the
        # picture white.
        raise ImageInputError(
            f"{name} holds 32-bit or signed integer samples (mode {mode}); ip2n reads 8- and 16-bit images: "
            "save it as an ordinary 8-bit (or 16-bit) image"
        )
    if mode == "F":
        values = np.asarray(image, dtype=np.float32)
        if not np.isfinite(values).all():
            raise ImageInputError(
                f"{name} is a floating-point image holding NaN or infinite values; save it without them, "
                "as an ordinary 8-bit image"
            )
        scale = 255.0 if values.max(initial=0.0) <= 1.0 else 1.0
        logger.info("%s is a floating-point grayscale image; converting it to 8-bit RGB", name)
        return Image.fromarray(np.clip(np.round(values * scale), 0, 255).astype(np.uint8)).convert("RGB")
    if mode == "CMYK":
        return _cmyk_to_rgb(image, name)
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        logger.info("%s has transparency; placing it on a white background", name)
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, ALPHA_BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in ("1", "L", "P"):
        if mode != "P":
            logger.info("%s is a grayscale image; replicating it to RGB", name)
        return image.convert("RGB")
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageInputError(
            f"{name} uses the colour mode '{mode}', which cannot be converted to RGB ({exc}); "
            "save it as an ordinary RGB JPEG or PNG"
        ) from None


def _sixteen_to_eight_bits(array: np.ndarray) -> np.ndarray:
    # 65535 ↦ 255 exactly; plain clipping (what Image.convert does) would turn most pixels white.
    return np.round(array.astype(np.float64) / 257.0).clip(0, 255).astype(np.uint8)


def _cmyk_to_rgb(image: Image.Image, name: str) -> Image.Image:
    profile = image.info.get("icc_profile")
    if profile:
        try:
            converted = ImageCms.profileToProfile(
                image,
                ImageCms.ImageCmsProfile(io.BytesIO(profile)),
                ImageCms.createProfile("sRGB"),
                outputMode="RGB",
            )
            assert converted is not None  # None only when converting in place (inPlace=True)
            logger.info("%s is a CMYK image; converted to sRGB through its ICC profile", name)
            return converted
        except (ImageCms.PyCMSError, OSError, ValueError):
            logger.warning("%s: its ICC profile is unusable; converting CMYK to RGB without it", name)
    logger.info("%s is a CMYK image; converting it to RGB", name)
    return image.convert("RGB")


def _limit_size(image: Image.Image, name: str) -> Image.Image:
    if max(image.size) <= WORKING_SIDE:
        return image
    scale = WORKING_SIDE / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    logger.info("%s is %d×%d pixels; reducing it to %d×%d first", name, *image.size, *size)
    return image.resize(size, Image.Resampling.LANCZOS)


def check_square_crop(image: Image.Image, name: str) -> None:
    """Refuse an image that is not (nearly) square when it is used as a ready crop, without alignment.

    The encoder reads a square FFHQ-style crop: a wider or taller picture would be squashed, the face
    distorted. Sides that differ by at most `SQUARE_TOLERANCE` (rounding of an earlier resize) pass.
    """
    width, height = image.size
    if abs(width - height) > SQUARE_TOLERANCE * max(width, height):
        raise ImageInputError(
            f"{name} is {width}×{height} pixels, not a square portrait crop: without alignment the model "
            "reads the image as an FFHQ-style crop (square, the face centred and filling it) and would "
            "squash this one. Align it (--align in the CLI, align=True in Python, “Align face” in the "
            "web app) to find and crop the face, or crop it square around the face first"
        )


def is_image_file(path: Path) -> bool:
    """Whether a folder entry looks like an image ip2n reads (by its suffix)."""
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


# --- instructions -------------------------------------------------------------------------------------


def check_instructions(instructions: str | Sequence[str]) -> tuple[str, ...]:
    """One instruction or several → tuple of stripped instructions; refuses none, empty or non-text ones."""
    if isinstance(instructions, str):
        instructions = (instructions,)
    instructions = tuple(instructions)
    if not instructions:
        raise InstructionError(
            'no instruction given; say what to change, e.g. "make her smile" (-i in the CLI)'
        )
    for number, text in enumerate(instructions, start=1):
        if not isinstance(text, str):
            raise InstructionError(f"instruction {number} is a {type(text).__name__}, not text")
        if not text.strip():
            which = "the instruction" if len(instructions) == 1 else f"instruction {number}"
            raise InstructionError(f'{which} is empty; say what to change, e.g. "give him a beard"')
    return tuple(text.strip() for text in instructions)


def combine_instructions(instructions: Sequence[str]) -> str:
    """Several instructions → one prompt, "a, b and c" (how multi-instruction prompts are written)."""
    if len(instructions) == 1:
        return instructions[0]
    parts = [text.strip().rstrip(".,;!") for text in instructions]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def edit_prompts(instructions: str | Sequence[str], chain: bool = False) -> tuple[str, ...]:
    """The prompts of an edit: one combined prompt, or (chain) one per instruction, applied in order.

    Each prompt must fit the text encoder's window; otherwise `InstructionError` quotes what would be cut.
    """
    instructions = check_instructions(instructions)
    prompts = instructions if chain else (combine_instructions(instructions),)
    for prompt in prompts:
        check_prompt_length(prompt, combined=len(instructions) > 1 and not chain)
    return prompts


def check_prompt_length(prompt: str, combined: bool = False) -> None:
    """Refuse a prompt longer than the 77-token window, quoting the part that would be cut."""
    advice = "shorten it"
    if combined:
        advice += ", or apply the instructions one after another (--chain / chain=True)"
    if len(prompt) > MAX_INSTRUCTION_CHARACTERS:
        # Far beyond 77 tokens; not worth tokenizing.
        raise InstructionError(
            f"the instruction {_shorten(prompt)!r} is {len(prompt)} characters long, but the text encoder "
            f"reads only {CONTEXT_LENGTH} tokens (a sentence or two; ip2n refuses more than "
            f"{MAX_INSTRUCTION_CHARACTERS} characters unread); {advice}"
        )
    tokens = count_tokens(prompt)
    if tokens <= CONTEXT_LENGTH:
        return
    raise InstructionError(
        f"the instruction {_shorten(prompt)!r} needs {tokens} tokens, but the text encoder reads only "
        f"{CONTEXT_LENGTH}: this end would be cut off: {_quote_cut(cut_text(prompt))}; {advice}"
    )


def _quote_cut(text: str, limit: int = 100) -> str:
    """`text` quoted, its middle left out when it is long (a message must stay readable)."""
    if len(text) <= limit:
        return repr(text)
    half = limit // 2 - 2
    return f"{text[:half] + ' … ' + text[-half:]!r} ({len(text)} characters)"


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
