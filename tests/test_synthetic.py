"""The synthetic heads world: latent round trip, visible view-consistent attributes, gradients, data."""

import json
import math
import re

import pytest
import torch

from ip2n.cli import main
from ip2n.diffusion.latent_packing import pack_latent, unpack_latent
from ip2n.rendering.cameras import camera_labels
from ip2n.synthetic.world.attributes import (
    ATTRIBUTE_NAMES,
    BINARY_ATTRIBUTES,
    CATEGORICAL_ATTRIBUTES,
    complete_attributes,
    sample_attributes,
    sample_identity,
)
from ip2n.synthetic.world.generator import SyntheticHeadGenerator, synthetic_preset
from ip2n.synthetic.world.instructions import (
    CORE,
    DESCRIPTIVE_FRAMES,
    FRAMES,
    compose_instruction,
    core_phrases,
    phrasings,
)
from ip2n.synthetic.world.latent import attributes_of, identity_of


@pytest.fixture(scope="module")
def model():
    return SyntheticHeadGenerator(synthetic_preset("tiny"))


def render(model, identity, attributes, yaw=0.0, pitch=0.0):
    ws = model.encode_heads(identity, [complete_attributes(attributes)])
    with torch.no_grad():
        return model.synthesis(ws, camera_labels(yaw, pitch))["image_raw"][0]  # (3, r, r)


def test_latent_round_trip_and_packing(model):
    generator = torch.Generator().manual_seed(0)
    identity = sample_identity(6, generator)
    attributes = [sample_attributes(generator) for _ in range(6)]
    ws = model.encode_heads(identity, attributes)  # (6, 14, C)
    assert ws.shape == (6, 14, model.config.w_dim)
    coordinates = model.synthesize_planes(ws)
    assert torch.allclose(identity_of(coordinates), identity, atol=1e-5)
    assert attributes_of(coordinates) == attributes
    # The DiT sees the latent through the shared packing code; unpacking restores it exactly.
    assert torch.equal(unpack_latent(pack_latent(ws)), ws)
    # Random latents from the "mapping" decode to valid heads, and w_avg is the prior mean.
    z = torch.randn(4, model.config.z_dim, generator=generator)
    assert all(
        set(a) == set(ATTRIBUTE_NAMES) for a in attributes_of(model.synthesize_planes(model.mapping(z)))
    )
    assert model.backbone.mapping.w_avg.shape == (14, model.config.w_dim)


# Each attribute edit and the image region (rows, columns as fractions of the frontal view) it must change.
REGIONS = {
    "eyeglasses": (True, (0.3, 0.5), (0.25, 0.75)),
    "smile": (True, (0.6, 0.8), (0.35, 0.65)),
    "mouth_open": (True, (0.6, 0.8), (0.35, 0.65)),
    "bangs": (True, (0.05, 0.35), (0.3, 0.7)),
    "bald": (True, (0.0, 0.3), (0.2, 0.8)),
    "hair_color": ("blond", (0.0, 0.3), (0.2, 0.8)),
    "beard": (True, (0.7, 1.0), (0.25, 0.75)),
    "mustache": (True, (0.6, 0.75), (0.35, 0.65)),
    "goatee": (True, (0.75, 0.95), (0.4, 0.6)),
    "bushy_eyebrows": (True, (0.25, 0.45), (0.25, 0.75)),
    "big_nose": (True, (0.4, 0.7), (0.4, 0.6)),
    "chubby": (True, (0.5, 0.9), (0.15, 0.85)),
    "pale_skin": (True, (0.4, 0.7), (0.25, 0.75)),
    "age": ("old", (0.2, 0.6), (0.25, 0.75)),
    "style": ("marble", (0.2, 0.8), (0.2, 0.8)),
}


@pytest.mark.parametrize("attribute", list(REGIONS))
def test_each_attribute_changes_its_region_and_keeps_identity(model, attribute):
    value, rows, cols = REGIONS[attribute]
    identity = sample_identity(1, torch.Generator().manual_seed(1)) * 0.5
    before = render(model, identity, {})
    after = render(model, identity, {attribute: value})
    size = before.shape[-1]
    region = (
        slice(int(rows[0] * size), int(rows[1] * size)),
        slice(int(cols[0] * size), int(cols[1] * size)),
    )
    change = (after - before).abs().amax(dim=0)  # (r, r)
    assert change[region].max() > 0.3, f"{attribute} does not show in its region"
    # Only the attribute's coordinates move in the latent: the identity decodes unchanged.
    ws = model.encode_heads(identity, [complete_attributes({attribute: value})])
    assert torch.allclose(identity_of(model.synthesize_planes(ws)), identity, atol=1e-5)


@pytest.mark.parametrize("yaw", [-math.radians(30), math.radians(30)])
def test_edits_are_visible_from_the_side(model, yaw):
    identity = torch.zeros(1, 27)
    for attribute, value in (("eyeglasses", True), ("beard", True), ("hair_color", "pink")):
        before = render(model, identity, {}, yaw=yaw, pitch=0.1)
        after = render(model, identity, {attribute: value}, yaw=yaw, pitch=0.1)
        assert (after - before).abs().amax(dim=0).max() > 0.3, f"{attribute} invisible at yaw {yaw:.2f}"


def test_views_show_the_same_head_turned(model):
    # Mirror symmetry of the world: yaw +θ is the mirror image of yaw −θ for a symmetric head.
    identity = torch.zeros(1, 27)
    ws = model.encode_heads(identity, [complete_attributes({"eyeglasses": True, "smile": True})])
    with torch.no_grad():
        out = model.synthesis(ws.expand(2, -1, -1), camera_labels([-0.4, 0.4], [0.0, 0.0]))
    # Lighting comes from one side, so compare the silhouettes (head vs background) only.
    coverage = out["weights_sum"][:, 0] > 0.5
    mismatch = (coverage[0] != coverage[1].flip(-1)).float().mean()
    assert mismatch < 0.03


def test_latent_scene_renders_synthetic_heads(model):
    from ip2n.scene import LatentScene

    ws = model.encode_heads(torch.zeros(1, 27), [complete_attributes({"beard": True})])
    scene = LatentScene(model, ws)
    views = scene.render(camera_labels([0.0, 0.3], [0.0, 0.0]))
    assert views["image"].shape == (2, 3, model.config.img_resolution, model.config.img_resolution)
    vertices, faces, colors = scene.mesh(resolution=32)
    assert len(faces) > 100 and colors.shape == vertices.shape


def test_gradients_reach_the_latent(model):
    identity = torch.zeros(1, 27)
    ws = model.encode_heads(identity, [complete_attributes({"eyeglasses": True})]).requires_grad_(True)
    image = model.synthesis(ws, camera_labels(0.2, -0.1))["image"]
    image.mean().backward()
    assert ws.grad is not None and torch.isfinite(ws.grad).all()
    per_row = ws.grad.abs().sum(dim=-1)[0]  # (14,)
    assert (per_row > 0).sum() >= 10, per_row


def test_density_for_meshes(model):
    ws = model.encode_heads(torch.zeros(1, 27), [complete_attributes({})])
    lattice = model.density_lattice(model.synthesize_planes(ws), 24)
    assert lattice.shape == (24, 24, 24)
    assert lattice.max() > 100 and lattice.min() < 0  # solid head inside, empty space outside
    assert lattice[12, 12, 12] > 100


def test_instruction_phrasings():
    for attribute, value in CORE:
        everything = phrasings(attribute, value)
        assert len(everything) >= 20, (attribute, value)
        train, heldout = (
            set(phrasings(attribute, value, "train")),
            set(phrasings(attribute, value, "heldout")),
        )
        assert train and heldout and not train & heldout and train | heldout == set(everything)
    for name in BINARY_ATTRIBUTES:
        assert (name, True) in CORE and (name, False) in CORE
    for name, values in CATEGORICAL_ATTRIBUTES.items():
        assert all((name, value) in CORE for value in values)
    generator = torch.Generator().manual_seed(0)
    sentence = compose_instruction({"eyeglasses": True, "smile": True, "hair_color": "blue"}, generator)
    assert sentence.count(",") + sentence.count(" and ") >= 2 and "blue" in sentence


def test_heldout_phrasings_use_only_words_the_training_split_teaches():
    # A text tower trained from scratch cannot know a word it never saw (a pretrained CLIP would), so
    # the held-out split holds out wordings of known words: every word of a held-out core phrase
    # occurs in some training core phrase or frame.
    def words(text: str) -> set[str]:
        return set(re.findall(r"[a-z'-]+", re.sub(r"\{\w+\}", " ", text.lower())))

    taught = set().union(*(words(frame) for frame in FRAMES + DESCRIPTIVE_FRAMES))
    for attribute, value in CORE:
        taught |= set().union(*(words(t) for t in core_phrases(attribute, value, "train")))
    taught.add("and")  # the joiner of multi-edit sentences
    unseen = {
        t: words(t) - taught for a, v in CORE for t in core_phrases(a, v, "heldout") if words(t) - taught
    }
    assert not unseen
    held = sum(len(core_phrases(a, v, "heldout")) for a, v in CORE)
    assert 0.15 < held / sum(len(CORE[key]) for key in CORE) < 0.35  # about a quarter held out


def test_synth_data_command_writes_the_official_layout(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        assert (
            main(
                [
                    "synth",
                    "data",
                    "--out",
                    str(out),
                    "--pairs",
                    "3",
                    "--size",
                    "64",
                    "--seed",
                    "7",
                    "--threads",
                    "1",
                ]
            )
            == 0
        )
    labels = json.loads((first / "dataset.json").read_text())["labels"]
    assert len(labels) == 6
    for name in ("00000", "00001", "00002"):
        lines = (first / name / f"{name}.txt").read_text().splitlines()
        assert len(lines) == 20 and all(lines) and len(set(lines)) == 20
        for side in (0, 1):
            assert (first / name / f"{name}_{side}.png").read_bytes() == (
                second / name / f"{name}_{side}.png"
            ).read_bytes()
    assert all(len(numbers) == 25 for _, numbers in labels)
    assert {path for path, _ in labels} == {
        f"{n}/{n}_{s}.png" for n in ("00000", "00001", "00002") for s in (0, 1)
    }
    truth = [json.loads(line) for line in (first / "truth.jsonl").read_text().splitlines()]
    assert all(row["edits"] and all(row["target"][k] == v for k, v in row["edits"].items()) for row in truth)
    assert (first / "dataset.json").read_bytes() == (second / "dataset.json").read_bytes()
    # Atomic writes leave no temporary files behind.
    assert not [p for p in first.rglob("*") if ".partial" in p.name]
