"""`ip2n align`: a photo → the EG3D/FFHQ-style aligned crop (OUT.png) and its camera (OUT.json)."""

from __future__ import annotations

import math
import time
from pathlib import Path

from ip2n.commands.common import UserError, bounded_int, prepare_output_dir
from ip2n.limits import MAX_ALIGN_SIZE, MIN_ALIGN_SIZE

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "align",
        help="align your own photo: EG3D/FFHQ-style 512² crop + camera label (CPU, no downloads)",
        description=(
            "Find the largest face in a photo, crop it the way EG3D crops FFHQ (eyes and mouth at fixed "
            "places, face upright) and estimate the camera. Writes OUT.png and OUT.json (the 25-number "
            "camera label, yaw/pitch, the 68 landmarks in crop pixels and the crop transform)."
        ),
    )
    parser.add_argument("image", help="the photo (JPEG, PNG, WebP, …)")
    parser.add_argument(
        "-o", "--out", required=True, help="output image, e.g. aligned.png; the JSON goes beside it"
    )
    parser.add_argument(
        "--size",
        type=bounded_int(MIN_ALIGN_SIZE, MAX_ALIGN_SIZE),
        default=512,
        help=f"crop size in pixels, {MIN_ALIGN_SIZE} to {MAX_ALIGN_SIZE} (default 512, what EG3D uses)",
    )
    parser.add_argument(
        "--min-face-width",
        type=bounded_int(1, MAX_ALIGN_SIZE),
        default=80,
        metavar="PX",
        help="refuse faces narrower than this many pixels in the photo (default 80)",
    )
    parser.set_defaults(run=run)


def run(args) -> int:
    out_image = Path(args.out)
    if out_image.suffix.lower() not in IMAGE_SUFFIXES:
        raise UserError(
            f"-o/--out must name an image file ending in {', '.join(IMAGE_SUFFIXES)}; got {args.out}"
        )
    out_json = out_image.with_suffix(".json")
    source = Path(args.image)
    image = load_photo(source)

    from ip2n.align import align_face

    start = time.perf_counter()
    aligned = align_face(image, output_size=args.size, min_face_width=args.min_face_width, name=source.name)
    seconds = round(time.perf_counter() - start, 3)

    from ip2n.commands.common import write_result_json
    from ip2n.export.images import save_image

    prepare_output_dir(out_image.parent)
    save_image(aligned.image, out_image)
    try:
        write_result_json(
            out_json,
            {
                "command": "align",
                "source": str(source),
                "source_size": list(image.size),
                "output_size": args.size,
                "camera": [float(value) for value in aligned.camera],
                "yaw": aligned.yaw,
                "pitch": aligned.pitch,
                "yaw_degrees": math.degrees(aligned.yaw),
                "pitch_degrees": math.degrees(aligned.pitch),
                "landmarks": aligned.landmarks.round(3).tolist(),
                "transform": aligned.transform.tolist(),
                "face_box": [round(value, 2) for value in aligned.face_box],
                "message": aligned.message,
                "seconds": seconds,
            },
        )
    except BaseException:
        # The pair belongs together: without its JSON the crop would look finished but lack its camera.
        out_image.unlink(missing_ok=True)
        raise
    if aligned.message:
        print(f"note: {aligned.message}")
    print(out_image)
    print(out_json)
    return 0


def load_photo(path: Path):
    """Open and fully decode an image file, or raise a UserError that says what is wrong with it.

    The formats and the size limit are those of `ip2n edit` (`ip2n.pipeline.inputs`), checked from
    the header before anything is decoded.
    """
    import warnings

    from PIL import Image, ImageOps

    from ip2n.pipeline.inputs import MAX_INPUT_PIXELS, READ_FORMATS

    if not path.is_file():
        raise UserError(f"image not found: {path}")
    too_large = (
        f"{path} is too large to read (over {MAX_INPUT_PIXELS / 1e6:.0f} megapixels, the limit of ip2n); "
        "scale it down or crop it around the face first"
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is lower
            image = Image.open(path, formats=READ_FORMATS)
        with image:
            if image.width * image.height > MAX_INPUT_PIXELS:
                raise UserError(too_large)
            image.load()
            # Upright as the camera meant it (a detached copy), so sizes and coordinates in the JSON
            # refer to the picture people see.
            return ImageOps.exif_transpose(image)
    except Image.DecompressionBombError:
        raise UserError(too_large) from None
    except (OSError, SyntaxError, EOFError) as exc:  # how Pillow reports unknown and damaged files
        raise UserError(f"cannot read {path} as an image ({exc}); use a JPEG, PNG or WebP file") from None
