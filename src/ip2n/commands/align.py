"""`ip2n align`: a photo → the EG3D/FFHQ-style aligned crop (OUT.png) and its camera (OUT.json)."""

from __future__ import annotations

import math
import time
from pathlib import Path

from ip2n.commands.common import UserError, prepare_output_dir

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
        "--size", type=int, default=512, help="crop size in pixels (default 512, what EG3D uses)"
    )
    parser.add_argument(
        "--min-face-width",
        type=int,
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
    if args.size < 64:
        raise UserError(f"--size must be at least 64, got {args.size}")
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
    """Open and fully decode an image file, or raise a UserError that says what is wrong with it."""
    from PIL import Image, ImageOps

    if not path.is_file():
        raise UserError(f"image not found: {path}")
    try:
        with Image.open(path) as image:
            image.load()
            # Upright as the camera meant it (a detached copy), so sizes and coordinates in the JSON
            # refer to the picture people see.
            return ImageOps.exif_transpose(image)
    except Image.DecompressionBombError:
        assert Image.MAX_IMAGE_PIXELS is not None  # PIL raises this error only while the limit is set
        limit = 2 * Image.MAX_IMAGE_PIXELS / 1e6
        raise UserError(
            f"{path} is too large to open safely (over {limit:.0f} megapixels); scale it down"
        ) from None
    except OSError as exc:
        raise UserError(f"cannot read {path} as an image ({exc}); use a JPEG, PNG or WebP file") from None
