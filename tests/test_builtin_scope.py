"""What the built-in model can edit: heads of its synthetic world (images carrying the world's mark)
and instructions that name its attributes. Everything else is refused with a message that says why
and what to do, or run with an explicit opt-in that the result then records. Also `ip2n models`,
`ip2n synth sample`, the marks of `ip2n synth data`, and `ip2n render` on the built-in model's
latents."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.images import portrait
from ip2n.builtin import example_heads, render_portrait, sample_head
from ip2n.cli import main
from ip2n.export.images import save_image
from ip2n.pipeline import EditPipeline, NotAWorldHeadError, OutsideWorldError, UnknownInstructionError
from ip2n.synthetic.world.attributes import ATTRIBUTE_NAMES
from ip2n.synthetic.world.instructions import CORE, phrasings
from ip2n.synthetic.world.marks import why_unmarked, world_mark
from ip2n.synthetic.world.vocabulary import KEYWORDS, named_attributes, words

QUICK = ["--steps", "10", "--views", "0"]


@pytest.fixture(scope="module")
def pipeline() -> EditPipeline:
    return EditPipeline.from_preset("synthetic")


@pytest.fixture(scope="module")
def head(tmp_path_factory) -> Path:
    """A head of the world as `ip2n synth sample` writes it: a marked PNG."""
    path = tmp_path_factory.mktemp("head") / "head.png"
    identity, attributes, _ = example_heads()[0]
    save_image(render_portrait(identity, attributes, seed=0), path)
    return path


def _opened(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.load()
        return image.copy()


def run_ip2n(capsys, *args) -> tuple[int, str, str]:
    status = main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return status, out, err


def _flat(text: str) -> str:
    """Text with its line breaks (argparse, textwrap) folded into single spaces."""
    return " ".join(text.split())


# --- the mark -------------------------------------------------------------------------------------------


def test_a_rendered_head_keeps_its_mark_only_while_its_pixels_are_what_the_world_rendered(head, tmp_path):
    record = world_mark(_opened(head))
    identity, attributes = sample_head(0)
    assert record is not None and record["seed"] == 0
    assert np.allclose(record["identity"], identity[0].numpy(), atol=1e-5)
    # A byte copy and a lossless re-save that keeps the text chunk (ip2n's save_image) still count.
    shutil.copy(head, tmp_path / "copy.png")
    save_image(_opened(head), tmp_path / "resaved.png")
    assert world_mark(_opened(tmp_path / "copy.png")) == record
    assert world_mark(_opened(tmp_path / "resaved.png")) == record
    # A tool that drops PNG text chunks, a JPEG, a resize or a retouch: an ordinary picture again.
    _opened(head).save(tmp_path / "plain.png")
    _opened(head).save(tmp_path / "copy.jpg", quality=100)
    retouched = _opened(head)
    retouched.putpixel((5, 5), (255, 0, 0))
    save_image(retouched, tmp_path / "retouched.png")
    assert "carries no ip2n-world mark" in why_unmarked(_opened(tmp_path / "plain.png"))
    assert "carries no ip2n-world mark" in why_unmarked(_opened(tmp_path / "copy.jpg"))
    for changed in (_opened(head).resize((64, 64)), _opened(tmp_path / "retouched.png")):
        assert "no longer those ip2n rendered" in why_unmarked(changed)
        assert world_mark(changed) is None


def test_synth_sample_writes_a_marked_head_of_the_world(tmp_path, capsys):
    out = tmp_path / "new" / "head.png"
    status, stdout, _ = run_ip2n(capsys, "synth", "sample", "-o", out, "--seed", 3, "--yaw", 10)
    assert status == 0 and str(out) in stdout
    record = world_mark(_opened(out))
    identity, attributes = sample_head(3)
    assert record is not None and (record["seed"], record["yaw_deg"]) == (3, 10.0)
    assert record["attributes"] == attributes
    assert _opened(out).size == (128, 128)
    status, _, stderr = run_ip2n(capsys, "synth", "sample", "-o", tmp_path / "head.jpg")
    assert status == 2 and "use .png" in stderr and not (tmp_path / "head.jpg").exists()
    status, _, stderr = run_ip2n(capsys, "synth", "sample", "-o", tmp_path / "side.png", "--yaw", 80)
    assert status == 2 and "--yaw must be within ±30 degrees" in stderr


def test_synth_data_marks_its_images(tmp_path, capsys):
    out = tmp_path / "data"
    status, _, _ = run_ip2n(
        capsys, "synth", "data", "--out", out, "--pairs", 1, "--size", 32, "--instructions", 1, "--threads", 1
    )
    assert status == 0
    images = sorted(out.rglob("*.png"))
    assert len(images) == 2
    marks = [world_mark(_opened(path)) for path in images]
    assert all(mark is not None and mark["rendered_by"] == "ip2n synth data" for mark in marks)
    assert [mark["side"] for mark in marks if mark] == [0, 1]


# --- the instructions it understands -------------------------------------------------------------------


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_every_phrasing_of_the_world_names_its_attribute(split):
    for attribute, value in CORE:
        for sentence in phrasings(attribute, value, split):
            assert attribute in named_attributes(sentence), (attribute, value, sentence)


def test_keywords_are_words_the_text_tower_was_trained_on():
    for attribute, keywords in KEYWORDS.items():
        seen = {
            word
            for name, value in CORE
            if name == attribute
            for sentence in phrasings(name, value, "train")
            for word in words(sentence)
        }
        assert set(keywords) <= seen, (attribute, set(keywords) - seen)


@pytest.mark.parametrize(
    "instruction, attributes",
    [
        ("make her look like the Mona Lisa", ()),
        ("turn his head to the left", ()),
        ("give him specs", ()),  # a synonym the world's phrasings never use: its text tower never saw it
        ("Make her SMILE!", ("smile",)),
        ("she smiles a lot", ("smile",)),
        ("put a glass on him", ("eyeglasses",)),
        ("make him look older and give him a goatee", ("goatee", "age")),
    ],
)
def test_instructions_are_read_by_their_words(instruction, attributes):
    assert named_attributes(instruction) == attributes


# --- the Python API ----------------------------------------------------------------------------------------


def test_a_photo_is_refused_with_why_and_what_to_do(pipeline, tmp_path):
    portrait(0).save(tmp_path / "photo.jpg")
    with pytest.raises(NotAWorldHeadError) as caught:
        pipeline(tmp_path / "photo.jpg", "make her smile")
    assert isinstance(caught.value, OutsideWorldError) and isinstance(caught.value, ValueError)
    message = str(caught.value)
    for text in (
        f"{tmp_path / 'photo.jpg'} is not a head of the built-in model's synthetic world",
        "carries no ip2n-world mark",
        "would turn this picture into an unrelated synthetic head",
        "official InstructPix2NeRF weights",
        "github.com/mybabyyh/InstructPix2NeRF",
        "docs/checkpoints.md",
        "EditPipeline.from_weights(DIR)",
        "ip2n demo",
        "ip2n synth sample -o FILE",
        "pass allow_any_image=True",
    ):
        assert text in message, text
    assert "`ip2n weights download` fetches" in message  # the command that brings the files
    # An array carries no mark either.
    with pytest.raises(NotAWorldHeadError, match="the image is not a head"):
        pipeline(np.asarray(_opened(tmp_path / "photo.jpg")), "make her smile")


def test_an_instruction_naming_no_attribute_is_refused(pipeline, head):
    with pytest.raises(UnknownInstructionError) as caught:
        pipeline(head, "make her look like the Mona Lisa")
    message = str(caught.value)
    for text in (
        "cannot tell what “make her look like the Mona Lisa” asks for",
        "it would make an unrelated edit",
        "eyeglasses (glasses, eyeglasses, spectacles)",
        "style (bronze, marble, statue)",
        "`ip2n models` lists them",
        "pass allow_any_instruction=True",
    ):
        assert text in message, text
    # Each instruction is checked on its own, also when they are combined into one prompt.
    with pytest.raises(UnknownInstructionError, match="“make her look like the Mona Lisa”"):
        pipeline(head, ["make her smile", "make her look like the Mona Lisa"])


def test_with_the_opt_ins_the_result_says_it_is_not_an_edit_of_the_input(pipeline, head, tmp_path):
    ordinary = pipeline(head, "make him smile", num_inference_steps=10)
    assert ordinary.notes == () and ordinary.outside_world == ()
    portrait(1).save(tmp_path / "photo.png")
    result = pipeline(
        tmp_path / "photo.png",
        "make her look like the Mona Lisa",
        num_inference_steps=10,
        allow_any_image=True,
        allow_any_instruction=True,
        generator=torch.Generator().manual_seed(0),
    )
    assert result.outside_world == ("image", "instruction")
    assert result.notes[0].startswith("not an edit of the input: ")
    assert result.notes[1].startswith("not the edit asked for: ")
    result.save(tmp_path / "out", views=0)
    record = json.loads((tmp_path / "out" / "result.json").read_text())
    assert record["notes"] == list(result.notes) and record["outside_world"] == ["image", "instruction"]


# --- the command line --------------------------------------------------------------------------------------


def test_edit_without_weights_refuses_a_photo(tmp_path, capsys):
    portrait(0, size=300).save(tmp_path / "photo.jpg")
    out = tmp_path / "out"
    status, _, stderr = run_ip2n(capsys, "edit", tmp_path / "photo.jpg", "-i", "make her smile", "-o", out)
    assert status == 2
    assert stderr.startswith("ip2n edit: error: ") and len(stderr.splitlines()) == 1
    for text in (
        "photo.jpg is not a head of the built-in model's synthetic world",
        "official InstructPix2NeRF weights",
        "pass it with --weights DIR",
        "docs/checkpoints.md",
        "`ip2n demo` writes one",
        "ip2n synth sample -o head.png",
        "pass --any-image",
    ):
        assert text in stderr, text
    assert not out.exists()


def test_edit_refuses_an_instruction_the_built_in_model_does_not_know(head, tmp_path, capsys):
    out = tmp_path / "out"
    status, _, stderr = run_ip2n(capsys, "edit", head, "-i", "make her look like the Mona Lisa", "-o", out)
    assert status == 2 and stderr.startswith("ip2n edit: error: the built-in model cannot tell what")
    assert "`ip2n models` lists them" in stderr and "pass --any-instruction" in stderr
    assert not out.exists()
    status, _, stderr = run_ip2n(capsys, "demo", "-i", "make her look like the Mona Lisa", "-o", out)
    assert status == 2 and "pass --any-instruction" in stderr and not out.exists()


def test_edit_with_the_opt_ins_records_that_the_output_is_not_an_edit(tmp_path, capsys):
    portrait(2).save(tmp_path / "photo.png")
    out = tmp_path / "out"
    status, _, stderr = run_ip2n(
        capsys,
        "edit",
        tmp_path / "photo.png",
        "-i",
        "make her look like the Mona Lisa",
        "-o",
        out,
        "--any-image",
        "--any-instruction",
        *QUICK,
    )
    assert status == 0, stderr
    record = json.loads((out / "photo" / "result.json").read_text())
    assert record["outside_world"] == ["image", "instruction"]
    assert record["notes"][0].startswith("not an edit of the input: ")
    assert "not the edit asked for" in record["notes"][1]


def test_results_of_the_built_in_model_can_be_edited_and_rendered_again(head, tmp_path, capsys):
    out = tmp_path / "out"
    status, _, stderr = run_ip2n(capsys, "edit", head, "-i", "give him glasses", "-o", out, *QUICK)
    assert status == 0, stderr
    folder = out / "head"
    record = json.loads((folder / "result.json").read_text())
    assert record["generator"] == {"kind": "synthetic-world", "preset": "synthetic"} and record["notes"] == []
    # Its renders are heads of the world: the edit can be edited again.
    assert world_mark(_opened(folder / "edited.png")) is not None
    status, _, stderr = run_ip2n(
        capsys, "edit", folder / "edited.png", "-i", "make him bald", "-o", tmp_path / "again", *QUICK
    )
    assert status == 0, stderr
    # `ip2n render` renders the latent with the built-in world's generator; at yaw 0 it is the edit's
    # own frontal view, and other cameras work too.
    latent = folder / "edited_latent.npy"
    status, _, stderr = run_ip2n(capsys, "render", "--latent", latent, "-o", tmp_path / "front")
    assert status == 0, stderr
    render = json.loads((tmp_path / "front" / "render.json").read_text())
    assert render["generator"] == "the built-in synthetic world's generator"
    front = np.asarray(_opened(tmp_path / "front" / "image.png"), dtype=np.int16)
    assert np.abs(front - np.asarray(_opened(folder / "edited.png"), dtype=np.int16)).max() <= 1
    status, _, _ = run_ip2n(capsys, "render", "--latent", latent, "-o", tmp_path / "side", "--yaw", 25)
    assert status == 0 and _opened(tmp_path / "side" / "image.png").size == (128, 128)
    # A copy without its result.json is recognised by its width.
    shutil.copy(latent, tmp_path / "alone.npy")
    status, _, stderr = run_ip2n(capsys, "render", "--latent", tmp_path / "alone.npy", "-o", tmp_path / "r")
    assert status == 0, stderr
    # It is not a latent of another generator, and an EG3D-wide latent needs its generator.
    status, _, stderr = run_ip2n(
        capsys, "render", "--latent", latent, "-o", tmp_path / "r2", "--weights", tmp_path
    )
    assert status == 2 and "render it without --weights" in stderr and not (tmp_path / "r2").exists()
    np.save(tmp_path / "wide.npy", np.zeros((1, 14, 512), np.float32))
    status, _, stderr = run_ip2n(capsys, "render", "--latent", tmp_path / "wide.npy", "-o", tmp_path / "r3")
    assert status == 2 and "pass its generator with --weights DIR" in stderr
    assert not (tmp_path / "r3").exists()


def test_models_lists_what_each_model_understands(capsys):
    status, stdout, _ = run_ip2n(capsys, "models")
    assert status == 0
    text = _flat(stdout)
    assert "synthetic (built in, --model synthetic) — the default without --weights" in text
    assert "official InstructPix2NeRF weights (not built in: --weights DIR)" in text
    assert "github.com/mybabyyh/InstructPix2NeRF" in text and "`ip2n weights download` fetches" in text
    for attribute in ATTRIBUTE_NAMES:
        assert re.search(rf"\b{attribute} \(", text), attribute
    assert '"give him glasses"' in text and "words glasses, eyeglasses, spectacles" in text
    assert "--any-image" in text and "--any-instruction" in text and "strength 0.6" in text
