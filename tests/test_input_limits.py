"""Portrait files and instructions at the edges: integer and floating-point TIFFs, extreme aspect
ratios, formats ip2n does not read (EPS must never reach Ghostscript), and instructions far too long
for the text encoder, whose error messages stay short."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import EpsImagePlugin, Image

from helpers.images import portrait
from ip2n.commands.align import load_photo
from ip2n.commands.common import UserError
from ip2n.pipeline.inputs import ImageInputError, InstructionError, edit_prompts, load_image, prepare_image

EPS = (
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 300 300\n%%EndComments\n"
    b"newpath 0 0 moveto showpage\n%%EOF\n"
)


def test_a_32_bit_integer_tiff_is_refused_not_clipped_to_white(tmp_path):
    values = (np.arange(256 * 256).reshape(256, 256) * 30_000).astype(np.int32)
    Image.fromarray(values).save(tmp_path / "deep.tif")
    assert Image.open(tmp_path / "deep.tif").mode == "I"
    with pytest.raises(ImageInputError, match=r"deep\.tif holds 32-bit or signed integer samples \(mode I\)"):
        load_image(tmp_path / "deep.tif")


def test_a_float_tiff_with_nan_is_refused(tmp_path):
    values = np.random.default_rng(0).random((256, 256)).astype(np.float32)
    values[10, 10] = np.nan
    Image.fromarray(values).save(tmp_path / "float.tif")
    with pytest.raises(ImageInputError, match=r"float\.tif is a floating-point image holding NaN"):
        load_image(tmp_path / "float.tif")
    values[10, 10] = 0.5  # finite values in [0, 1] are still read
    Image.fromarray(values).save(tmp_path / "fine.tif")
    assert load_image(tmp_path / "fine.tif").mode == "RGB"


def test_an_extreme_aspect_ratio_is_refused_instead_of_shrunk_below_the_minimum(tmp_path):
    Image.new("RGB", (64, 20_000), (120, 100, 90)).save(tmp_path / "strip.png")
    with pytest.raises(
        ImageInputError, match=r"strip\.png is 64×20000 pixels.*short side would be 13 pixels"
    ):
        load_image(tmp_path / "strip.png")
    with pytest.raises(ImageInputError, match="short side would be 13 pixels"):
        prepare_image(np.zeros((20_000, 64, 3), dtype=np.uint8))


@pytest.fixture
def no_ghostscript(monkeypatch):
    """Fails the test if Pillow ever tries to run Ghostscript."""
    calls = []

    def ghostscript(*args, **kwargs):
        calls.append(args)
        raise AssertionError("Ghostscript was run")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", ghostscript)
    monkeypatch.setattr(EpsImagePlugin, "gs_windows_binary", None, raising=False)
    return calls


def test_eps_never_reaches_ghostscript(tmp_path, no_ghostscript):
    (tmp_path / "face.png").write_bytes(EPS)  # an EPS file under an image's name
    with pytest.raises(ImageInputError, match="is not an image file ip2n can read"):
        load_image(tmp_path / "face.png")
    with pytest.raises(UserError, match="cannot read"):
        load_photo(tmp_path / "face.png")  # `ip2n align` reads the same formats
    assert no_ghostscript == []


def test_the_usual_formats_are_still_read(tmp_path):
    image = portrait(0, size=128)
    for suffix, options in (
        (".png", {}),
        (".jpg", {"quality": 95}),
        (".webp", {}),
        (".bmp", {}),
        (".tif", {}),
    ):
        image.save(tmp_path / f"face{suffix}", **options)
        assert load_image(tmp_path / f"face{suffix}").size == (128, 128), suffix
        assert load_photo(tmp_path / f"face{suffix}").size == (128, 128), suffix


def test_a_long_instruction_is_refused_with_a_short_message():
    huge = "make her smile and " * 4_999 + "make her smile"  # 94 995 characters
    with pytest.raises(InstructionError) as refused:
        edit_prompts(huge)
    assert f"{len(huge)} characters long" in str(refused.value) and len(str(refused.value)) < 400
    words = "very " * 600 + "happy ending"  # under the character limit, far over 77 tokens
    with pytest.raises(InstructionError) as refused:
        edit_prompts(words)
    message = str(refused.value)
    assert "this end would be cut off" in message and "happy ending'" in message  # where the cut text ends
    assert len(message) < 400 and " … " in message and "characters)" in message
