"""EditPipeline on tiny official-format weight files, its edit loop against the official fixture, and
the checks of user inputs (images and instructions).

The weight files are written the way the official code writes them, with random weights at the
smallest sizes that fit together (`helpers.official_files`).
"""

import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from helpers.images import png16, png_header_only, portrait
from helpers.official_files import TINY_SIZES, WIDE_TEXT, WIDE_TEXT_CONFIG, official_weights
from ip2n.encoding import build_encoder, encoder_preset
from ip2n.encoding.preprocess import encoder_input
from ip2n.pipeline import (
    DeviceError,
    EditPipeline,
    ImageInputError,
    IncompatibleWeightsError,
    InstructionError,
    PresetError,
    check_instructions,
    combine_instructions,
    comparison_grid,
    edit_codes,
    edit_prompts,
    edit_schedule,
    load_image,
    prepare_image,
    resolve_device,
)
from ip2n.pipeline.inputs import MAX_INPUT_PIXELS, WORKING_SIDE
from ip2n.text import TEXT_ENCODER_PRESETS, TextEncoder, TextEncoderConfig, tokenize
from ip2n.text.tokens import count_tokens

TOLERANCE = 1e-4

# --- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory, fixtures_dir) -> Path:
    return official_weights(tmp_path_factory, fixtures_dir)


@pytest.fixture(scope="module")
def pipeline(weights_dir) -> EditPipeline:
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(TEXT_ENCODER_PRESETS, WIDE_TEXT, WIDE_TEXT_CONFIG)
        return EditPipeline.from_weights(weights_dir, sizes=TINY_SIZES)


@pytest.fixture(scope="module")
def dit_io(fixtures_dir):
    return load_file(fixtures_dir / "dit_small" / "io.safetensors")


def _max_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return (actual - expected).abs().max().item()


# --- the edit loop and the pipeline ------------------------------------------------------------------


def test_edit_loop_matches_the_official_inference(pipeline, dit_io):
    # The DiT here was loaded from the official-format checkpoint (its `ema` = the fixture weights).
    codes = edit_codes(
        pipeline.dit,
        dit_io["pipe_codes"],
        dit_io["context_prompts"][:1],
        dit_io["context_empty"],
        edit_schedule(50, 0.3),
        strength=0.3,
        text_scale=2.5,
        image_scale=1.0,
        noise=dit_io["pipe_noise"],
    )
    assert _max_error(codes + dit_io["pipe_latent_avg"], dit_io["pipe_latents"]) <= TOLERANCE


def test_from_weights_loads_every_official_file(pipeline, fixtures_dir):
    expected_avg = load_file(fixtures_dir / "eg3d_small" / "io.safetensors")["latent_avg_psp"]
    assert _max_error(pipeline.latent_avg, expected_avg) <= TOLERANCE
    for model in (
        pipeline.generator,
        pipeline.dit,
        pipeline.text_encoder,
        pipeline.encoder,
        pipeline.identity_encoder,
    ):
        assert not model.training
        assert all(not parameter.requires_grad for parameter in model.parameters())
    assert pipeline.text_encoder.config == WIDE_TEXT_CONFIG
    assert pipeline.dit.config.hidden_size == 64
    assert pipeline.encoder.config.encoder_type == "WPlusEncoder"
    assert pipeline.device == torch.device("cpu")
    assert pipeline.load_seconds > 0


def _contexts(pipeline, prompts):
    with torch.no_grad():
        return pipeline.text_encoder(tokenize(prompts))  # (P, 77, 1024), no cache involved


def test_edit_is_the_documented_composition_of_steps(pipeline):
    image = portrait(1)
    result = pipeline(image, "make him smile", generator=torch.Generator().manual_seed(3))

    with torch.no_grad():
        pixels = encoder_input(image)[None]  # (1, 3, 256, 256)
        codes = pipeline.encoder(pixels)
        identity = pipeline.identity_encoder(pixels)
        text, empty = _contexts(pipeline, ["make him smile", ""])
        noise = torch.randn(1, 512, 4, 4, generator=torch.Generator().manual_seed(3))
        edited = edit_codes(
            pipeline.dit,
            codes,
            text[None],
            empty,
            edit_schedule(50, 0.3),
            strength=0.3,
            text_scale=2.5,
            image_scale=1.0,
            noise=noise,
            identity=identity,
        )
    assert result.source_latent.shape == result.edited_latent.shape == (1, 14, 512)
    assert _max_error(result.source_latent, codes + pipeline.latent_avg) <= TOLERANCE
    assert _max_error(result.edited_latent, edited + pipeline.latent_avg) <= TOLERANCE
    assert _max_error(result.edited_latent, result.source_latent) > 1e-3  # the edit changed something
    settings = result.settings
    scales = (settings.strength, settings.guidance_scale, settings.image_guidance_scale)
    assert settings.seed == 3 and scales == (0.3, 2.5, 1.0)
    assert settings.prompts == ("make him smile",) and settings.identity_conditioning
    assert {"validate", "encode", "text", "diffusion"} <= set(result.timings)


def test_seed_decides_the_noise_and_identity_conditioning_matters(pipeline):
    image = portrait(2)

    def edit(seed, **options):
        return pipeline(
            image, "add glasses", generator=torch.Generator().manual_seed(seed), **options
        ).edited_latent

    first = edit(0)
    assert torch.equal(first, edit(0))
    assert _max_error(first, edit(1)) > 1e-3
    assert _max_error(first, edit(0, identity_conditioning=False)) > 1e-4
    unseeded = pipeline(image, "add glasses")
    assert torch.equal(
        unseeded.edited_latent, edit(unseeded.settings.seed)
    )  # the recorded seed reproduces it


def test_prompts_are_encoded_once_and_chained_edits_run_in_turn(pipeline):
    image = portrait(3)
    encoded_rows, dit_calls = [], []
    hooks = [
        pipeline.text_encoder.register_forward_hook(
            lambda module, args, out: encoded_rows.append(out.shape[0])
        ),
        pipeline.dit.register_forward_hook(lambda module, args, out: dit_calls.append(out.shape[0])),
    ]
    pipeline.prompt_encoder.clear()
    try:
        instructions = ["add glasses", "make him smile", "add glasses"]
        result = pipeline(image, instructions, chain=True, generator=torch.Generator().manual_seed(4))
        assert sum(encoded_rows) == 3  # two distinct instructions and the empty prompt
        # 3 runs × 15 steps, the text + image and image-only branches batched (at image scale 1 the
        # unconditional branch has weight zero and is not run)
        assert result.settings.image_guidance_scale == 1.0
        assert dit_calls == [2] * 45
        pipeline(image, instructions, chain=True)
        assert sum(encoded_rows) == 3  # all cached now
    finally:
        for hook in hooks:
            hook.remove()

    assert result.settings.prompts == tuple(instructions) and result.settings.chain
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():
        pixels = encoder_input(image)[None]
        codes, identity = pipeline.encoder(pixels), pipeline.identity_encoder(pixels)
        contexts = _contexts(pipeline, instructions + [""])
        for context in contexts[:3]:
            noise = torch.randn(1, 512, 4, 4, generator=generator)
            codes = edit_codes(
                pipeline.dit,
                codes,
                context[None],
                contexts[3],
                edit_schedule(50, 0.3),
                strength=0.3,
                text_scale=2.5,
                image_scale=1.0,
                noise=noise,
                identity=identity,
            )
    assert _max_error(result.edited_latent, codes + pipeline.latent_avg) <= TOLERANCE


def test_the_empty_prompt_is_encoded_when_the_pipeline_is_built(weights_dir):
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(TEXT_ENCODER_PRESETS, WIDE_TEXT, WIDE_TEXT_CONFIG)
        pipeline = EditPipeline.from_weights(weights_dir, sizes=TINY_SIZES)
    encoded_rows = []
    hook = pipeline.text_encoder.register_forward_hook(
        lambda module, args, out: encoded_rows.append(out.shape[0])
    )
    try:
        pipeline(portrait(5), "add glasses", generator=torch.Generator().manual_seed(0))
    finally:
        hook.remove()
    assert encoded_rows == [1]  # only the instruction: the first edit costs what every later one does


def test_several_instructions_become_one_prompt(pipeline):
    result = pipeline(
        portrait(4), ["Add glasses.", "make him smile", "give him a beard"], num_inference_steps=20
    )
    assert result.settings.prompts == ("Add glasses, make him smile and give him a beard",)
    assert result.settings.num_inference_steps == 20


def test_token_position_randomization_is_an_option(pipeline):
    image = portrait(5)

    def edit(**options):
        return pipeline(image, "make her smile", generator=torch.Generator().manual_seed(9), **options)

    shifted = edit(token_position_randomization=True)
    assert shifted.settings.token_position_randomization
    assert torch.equal(shifted.edited_latent, edit(token_position_randomization=True).edited_latent)
    assert _max_error(shifted.edited_latent, edit().edited_latent) > 1e-5


def test_sweep_shares_the_noise_and_makes_a_grid(pipeline):
    image = portrait(6)
    results = pipeline.sweep(image, "make him old", strengths=(0.2, 0.4), guidance_scales=(1.5, 3.0), seed=2)
    assert [(r.settings.strength, r.settings.guidance_scale) for r in results] == [
        (0.2, 1.5),
        (0.2, 3.0),
        (0.4, 1.5),
        (0.4, 3.0),
    ]
    single = pipeline(
        image, "make him old", strength=0.4, guidance_scale=1.5, generator=torch.Generator().manual_seed(2)
    )
    assert torch.equal(results[2].edited_latent, single.edited_latent)
    grid = comparison_grid(results)
    tile = results[0].image()
    assert (
        grid.width == 5 * tile.width + 4 * 4 and grid.height > tile.height
    )  # reconstruction + 4, captions below


def test_failed_save_leaves_no_files(pipeline, tmp_path):
    result = pipeline(portrait(7), "make him smile", generator=torch.Generator().manual_seed(0))
    out_dir = tmp_path / "out"
    with pytest.raises(ValueError, match="no surface at density level"):
        result.save(out_dir, views=1, mesh="ply", mesh_resolution=16, mesh_level=1e9)
    assert not out_dir.exists()
    written = result.save(out_dir, views=0)
    names = ["source.png", "edited.png", "depth.png", "edited_latent.npy", "result.json"]
    assert [path.name for path in written] == names
    assert sorted(path.name for path in out_dir.iterdir()) == sorted(path.name for path in written)
    assert np.array_equal(np.load(out_dir / "edited_latent.npy"), result.edited_latent.numpy())


def test_models_that_do_not_fit_together_are_refused(pipeline):
    narrow_text = TextEncoder(TextEncoderConfig(width=64, heads=4, layers=2), device="meta")
    with pytest.raises(
        IncompatibleWeightsError, match="cross-attends to 1024-wide text, the text encoder is 64 wide"
    ):
        EditPipeline(
            pipeline.generator,
            pipeline.dit,
            narrow_text,
            pipeline.encoder,
            pipeline.identity_encoder,
            pipeline.latent_avg,
        )
    with torch.device("meta"):
        narrow_encoder = build_encoder(encoder_preset("tiny", "WPlusEncoder"))
    with pytest.raises(
        IncompatibleWeightsError, match="encoder predicts 14×32 codes, the generator takes 14×512"
    ):
        EditPipeline(
            pipeline.generator,
            pipeline.dit,
            pipeline.text_encoder,
            narrow_encoder,
            pipeline.identity_encoder,
            pipeline.latent_avg,
        )


# --- alignment hook --------------------------------------------------------------------------------------


def test_align_without_the_alignment_module_says_so(pipeline, monkeypatch):
    monkeypatch.setitem(sys.modules, "ip2n.align", None)  # makes the import fail as if it were not installed
    with pytest.raises(ValueError, match="face alignment is not available.*without --align"):
        pipeline(portrait(8), "make him smile", align=True)


def test_align_hands_the_crop_and_camera_through(pipeline, monkeypatch):
    crop, camera = portrait(9, size=512), torch.arange(25, dtype=torch.float32)
    seen = []

    def align_face(image, name):
        seen.append((image.size, name))
        return types.SimpleNamespace(
            image=crop, camera=camera, landmarks=np.zeros((5, 2)), message="2 faces found; using the largest"
        )

    monkeypatch.setitem(sys.modules, "ip2n.align", types.SimpleNamespace(align_face=align_face))
    result = pipeline(
        portrait(10, size=300), "make him smile", align=True, generator=torch.Generator().manual_seed(0)
    )
    assert seen == [((300, 300), "the image")]
    assert result.input_image is crop and torch.equal(result.input_camera, camera)
    assert result.notes == ("2 faces found; using the largest",) and result.settings.align
    direct = pipeline(crop, "make him smile", generator=torch.Generator().manual_seed(0))
    assert torch.equal(result.edited_latent, direct.edited_latent)


# --- presets, devices, settings ---------------------------------------------------------------------------


def test_unknown_preset_lists_what_exists():
    with pytest.raises(PresetError, match=r"unknown model 'ffhq'.*built-in models: synthetic.*--weights DIR"):
        EditPipeline.from_preset("ffhq")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_requested_without_cuda():
    with pytest.raises(DeviceError, match=r"CUDA was requested but is not available.*--device cpu"):
        resolve_device("cuda")
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("gpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize(
    ("steps", "strength", "message"),
    [
        (0, 0.3, "num_inference_steps must be an integer from 1 to 1000"),
        (50, 1.0, "strictly between 0 and 1"),
        (50, 0.0, "strictly between 0 and 1"),
        (3, 0.3, r"leaves no denoising step \(int\(0.3 × 3\) = 0\)"),
        (999, 0.3, "cannot be spaced evenly"),
    ],
)
def test_bad_schedule_settings(steps, strength, message):
    with pytest.raises(ValueError, match=message):
        edit_schedule(steps, strength)


def test_schedule_of_the_paper():
    schedule = edit_schedule(50, 0.3)
    assert schedule.num_steps == 50 and schedule.timestep_map[15].item() == 300


# --- instructions -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instructions", "message"),
    [
        ("", "the instruction is empty"),
        ("   ", "the instruction is empty"),
        (["add glasses", " "], "instruction 2 is empty"),
        ([], "no instruction given"),
    ],
)
def test_empty_instructions_are_refused(instructions, message):
    with pytest.raises(InstructionError, match=message):
        check_instructions(instructions)


def test_combined_instructions_read_as_one_sentence():
    assert combine_instructions(["make her smile"]) == "make her smile"
    assert combine_instructions(["add glasses.", "make him smile"]) == "add glasses and make him smile"
    assert combine_instructions(["a", "b", "c!"]) == "a, b and c"


def test_prompt_window_is_77_tokens():
    fits = " ".join(["a"] * 75)
    assert count_tokens(fits) == 77
    assert edit_prompts(fits) == (fits,)
    with pytest.raises(InstructionError, match=r"needs 78 tokens.*only 77.*cut off: 'a'; shorten it$"):
        edit_prompts(fits + " a")


def test_long_combined_prompt_suggests_chaining():
    instructions = ["give her long curly red hair and a wide brimmed straw summer hat"] * 5 + [
        "make her smile"
    ]
    with pytest.raises(InstructionError, match=r"cut off: '.*make her smile'.*--chain"):
        edit_prompts(instructions)
    assert len(edit_prompts(instructions, chain=True)) == 6


# --- images ------------------------------------------------------------------------------------------------


def _pixels(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image).astype(int)


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = np.asarray(portrait(0).convert("L"))
    Image.fromarray(gray).save(tmp_path / "gray.png")
    pixels = _pixels(load_image(tmp_path / "gray.png"))
    for channel in range(3):
        assert np.array_equal(pixels[:, :, channel], gray)


def test_16_bit_images_are_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 256 * 256).reshape(256, 256, 1).round().astype(np.uint16)
    gray = _pixels(load_image(png16(tmp_path / "gray16.png", ramp)))
    expected = np.round(ramp[:, :, 0] / 257)
    assert np.abs(gray[:, :, 0] - expected).max() == 0 and np.array_equal(gray[:, :, 0], gray[:, :, 2])
    colour = np.random.default_rng(0).integers(0, 65536, (64, 64, 3)).astype(np.uint16)
    rgb = _pixels(load_image(png16(tmp_path / "rgb16.png", colour)))
    assert np.abs(rgb - colour / 257).max() <= 1
    array = _pixels(prepare_image(colour))
    assert np.abs(array - colour / 257).max() <= 0.5


def test_cmyk_is_converted_to_rgb(tmp_path):
    Image.new("CMYK", (128, 128), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")  # pure red in CMYK
    red = _pixels(load_image(tmp_path / "cmyk.jpg"))
    assert np.abs(red - [255, 0, 0]).max() <= 3


def test_transparency_is_composited_on_white(tmp_path):
    rgba = np.zeros((128, 128, 4), dtype=np.uint8)
    rgba[:, :64] = [10, 20, 30, 255]  # opaque left half, transparent right half
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    pixels = _pixels(load_image(tmp_path / "alpha.png"))
    assert np.array_equal(pixels[:, :64], np.broadcast_to([10, 20, 30], (128, 64, 3)))
    assert np.array_equal(pixels[:, 64:], np.full((128, 64, 3), 255))
    palette = Image.fromarray(rgba).convert("P")
    palette.info["transparency"] = palette.getpixel((100, 0))
    assert _pixels(prepare_image(palette))[0, 100].tolist() == [255, 255, 255]


def test_exif_orientation_is_applied(tmp_path):
    array = np.zeros((128, 192, 3), dtype=np.uint8)  # landscape as stored
    array[:8, :8] = [255, 0, 0]  # marker in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.fromarray(array).save(tmp_path / "rotated.png", exif=exif)
    upright = _pixels(load_image(tmp_path / "rotated.png"))
    assert upright.shape == (192, 128, 3)  # portrait once upright
    assert upright[:8, -8:].tolist() == np.broadcast_to([255, 0, 0], (8, 8, 3)).tolist()  # now top-right
    assert prepare_image(load_image(tmp_path / "rotated.png")).size == (128, 192)  # idempotent


def test_large_photos_are_reduced_and_huge_ones_refused(tmp_path):
    Image.new("RGB", (6000, 3000), (90, 120, 150)).save(tmp_path / "large.jpg", quality=90)
    large = load_image(tmp_path / "large.jpg")
    assert large.size == (WORKING_SIDE, WORKING_SIDE // 2)
    assert np.abs(_pixels(large)[100, 100] - [90, 120, 150]).max() <= 3
    side = math.isqrt(MAX_INPUT_PIXELS) + 100  # over ip2n's limit, under Pillow's bomb limit
    for name, width in (("over_limit.png", side), ("bomb.png", 40000)):
        with pytest.raises(ImageInputError, match=r"megapixels.*Downscale it first"):
            load_image(png_header_only(tmp_path / name, width, width))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda path: path.write_text("not a picture"), "is not an image file ip2n can read"),
        (lambda path: path.write_bytes(b""), r"is empty \(0 bytes\)"),
        (lambda path: None, "no such file"),
        (lambda path: path.mkdir(), "is a folder, not an image"),
        (lambda path: portrait(0, size=32).save(path, format="PNG"), "too small to hold a usable face"),
    ],
)
def test_unusable_files_are_refused(tmp_path, make, message):
    path = tmp_path / "input.png"
    make(path)
    with pytest.raises(ImageInputError, match=message):
        load_image(path)


@pytest.mark.parametrize("kind", ["jpg", "png"])
def test_truncated_files_are_refused(tmp_path, kind):
    path = tmp_path / f"full.{kind}"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(path)
    cut = tmp_path / f"cut.{kind}"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ImageInputError, match="truncated or damaged"):
        load_image(cut)


def test_animated_image_uses_the_first_frame(tmp_path):
    frames = [Image.new("RGB", (128, 128), colour) for colour in ((200, 0, 0), (0, 0, 200))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    pixels = _pixels(load_image(tmp_path / "anim.gif"))
    assert pixels[0, 0, 0] > 150 and pixels[0, 0, 2] < 50


# --- views in degrees, square crops, models of other worlds ------------------------------------------


def test_views_are_asked_for_in_degrees(pipeline):
    from ip2n.rendering.cameras import camera_labels

    result = pipeline(portrait(11), "make him smile", generator=torch.Generator().manual_seed(0))
    expected = result.render(camera_labels(math.radians(30), math.radians(-10)))["image"]
    assert torch.equal(result.view(yaw_deg=30, pitch_deg=-10)["image"], expected)
    assert torch.equal(result.scene().view(yaw_deg=30, pitch_deg=-10)["image"], expected)
    # The radian keywords still work, with a DeprecationWarning; positional angles are refused rather
    # than read in the wrong unit.
    with pytest.warns(DeprecationWarning, match="yaw_deg= and pitch_deg="):
        old = result.view(yaw=math.radians(30), pitch=math.radians(-10))
    assert torch.equal(old["image"], expected)
    with pytest.raises(TypeError):
        result.view(30)


def test_a_picture_that_is_not_square_is_refused_without_align(pipeline):
    with pytest.raises(ImageInputError, match=r"the image is 512×256 pixels, not a square portrait crop"):
        pipeline(portrait(12).resize((512, 256)), "make him smile")
    # Sides that differ by a rounding error pass.
    pipeline(portrait(12).resize((256, 259)), "make him smile", generator=torch.Generator().manual_seed(0))


def test_official_weights_edit_any_picture_and_instruction(pipeline):
    """Only a model of the synthetic world limits what it edits (`ip2n.pipeline.scope`)."""
    assert not pipeline.world_model
    result = pipeline(
        portrait(13), "make her look like the Mona Lisa", generator=torch.Generator().manual_seed(0)
    )
    assert result.notes == () and result.outside_world == ()
