"""The triplet data factory (`ip2n data make`, `ip2n.factory`): layout, editors, filters, resume, bad input.

The world editor runs the whole factory without downloaded weights; InstructPix2Pix runs as a tiny
random diffusers pipeline built here (prompt embeddings passed directly, nothing downloaded).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from ip2n.cli import main
from ip2n.factory import Edit, FactorySettings, make_dataset
from ip2n.factory.editors.base import Editor
from ip2n.factory.editors.world import WorldEditor
from ip2n.factory.filters import ClipJudge, IdentityJudge, Judges
from ip2n.factory.phrasing import (
    LMParaphraser,
    grammar_phrasings,
    paraphrase_text,
    pick_phrasings,
    read_instruction_file,
    world_edit,
)
from ip2n.factory.spec import Candidate, PairState
from ip2n.factory.store import Store
from ip2n.synthetic.world.attributes import visible_changes
from ip2n.training.data import read_triplets

REPO = Path(__file__).resolve().parents[1]
WORLD_SIZE = "64"  # quarter-cost renders; the pairs are what the 128² ones are, smaller
HEADS = 4


def world_make(out: Path, *extra: str) -> int:
    return main(
        [
            "data",
            "make",
            "--editor",
            "world",
            "--world-heads",
            str(HEADS),
            "--world-size",
            WORLD_SIZE,
            "-o",
            str(out),
        ]
        + list(extra)
    )


@pytest.fixture(scope="module")
def world_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("factory") / "world"
    assert world_make(out, "--threads", "1") == 0
    return out


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


# --- the world editor, layout, report -------------------------------------------------------------


def test_world_data_is_the_official_layout_that_training_reads(world_data):
    records = manifest(world_data)
    assert [r["pair"] for r in records] == [f"{i:05d}" for i in range(HEADS)]
    accepted = [r for r in records if r["status"] == "accepted"]
    assert accepted, "the exact editor's pairs should mostly pass"
    dataset, report = read_triplets(world_data)
    assert sorted(pair.name for pair in dataset.pairs) == [r["pair"] for r in accepted]
    assert not report.skipped
    for record in accepted:
        name = record["pair"]
        lines = (world_data / name / f"{name}.txt").read_text().splitlines()
        assert 20 <= len(lines) <= 30 and len(set(lines)) == len(lines) == record["instructions"]
        pair = next(p for p in dataset.pairs if p.name == name)
        assert pair.camera == tuple(record["camera"])
        with Image.open(pair.source_path) as source, Image.open(pair.edited_path) as edited:
            assert source.size == edited.size == (64, 64)
            assert source.info.get("ip2n-world") and edited.info.get("ip2n-world")  # the world's mark
        assert record["scores"]["identity"] >= 0.5 and record["scores"]["change"] >= 0.001
        assert record["scores"]["clip"] is None  # no CLIP model given: skipped
    for record in records:
        assert record["editor"] == "world" and record["source"].startswith("world-head-")
        assert record["reason"] is None if record["status"] == "accepted" else record["reason"]
    report_text = (world_data / "report.md").read_text()
    assert f"**{len(accepted)} accepted**" in report_text
    for picture in ("hist_identity.png", "hist_change.png", "contact_sheet.png"):
        with Image.open(world_data / "report" / picture) as image:
            assert image.size[0] > 100


def test_world_edits_are_single_visible_attribute_changes(world_data):
    for record in manifest(world_data):
        meta = record["source_meta"]
        changes = visible_changes(meta["source_attributes"], meta["target_attributes"])
        assert len(changes) == 1
        assert world_edit(changes).id == record["edit"]


def test_rerun_resumes_and_the_manifest_is_only_appended(world_data, tmp_path, capsys):
    out = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(world_data), str(out)], check=True)
    before = (out / "manifest.jsonl").read_bytes()
    assert world_make(out, "--threads", "1") == 0
    assert f"0 made now, {HEADS} already done" in capsys.readouterr().out
    assert (out / "manifest.jsonl").read_bytes() == before
    # A run killed while writing the last pair's line: its line is cut, and its files may be partial.
    lines = before.decode().splitlines(keepends=True)
    last = HEADS - 1
    cut = "".join(lines[:last]) + lines[last][:40]
    (out / "manifest.jsonl").write_text(cut)
    assert world_make(out, "--threads", "1") == 0
    assert f"1 made now, {last} already done" in capsys.readouterr().out
    after = (out / "manifest.jsonl").read_text()
    assert after.startswith(cut + "\n")  # appended, never rewritten
    assert [r["pair"] for r in Store(out).records()] == [f"{i:05d}" for i in range(HEADS)]
    redone = Store(out).latest()[f"{last:05d}"]
    original = json.loads(lines[last])
    assert (redone["status"], redone["scores"]) == (original["status"], original["scores"])
    assert json.loads((out / "dataset.json").read_text()) == json.loads(
        (world_data / "dataset.json").read_text()
    )


def test_an_out_holding_another_data_set_is_refused(world_data, tmp_path, capsys):
    before = (world_data / "manifest.jsonl").read_bytes()
    assert world_make(world_data, "--seed", "1") == 2
    error = capsys.readouterr().err
    assert "holds another data set" in error and "seed 0 → 1" in error
    assert (world_data / "manifest.jsonl").read_bytes() == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert world_make(other) == 2
    assert "not a data set made by `ip2n data make`" in capsys.readouterr().err
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]


def test_training_reads_the_factory_output(world_data, tmp_path, capsys):
    # configs/synthetic.yaml without the sample grid at the end (it would double the test's time).
    config = yaml.safe_load((REPO / "configs" / "synthetic.yaml").read_text())
    config["logging"]["sample_every"] = 0
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    argv = ["train", "--config", str(tmp_path / "train.yaml"), "--data", str(world_data), "-o", str(run)]
    assert main(argv + ["--stop-after", "2", "--threads", "1"]) == 0
    assert capsys.readouterr().out.strip().endswith("dit.safetensors")
    accepted = [r for r in manifest(world_data) if r["status"] == "accepted"]
    samples = sum(r["instructions"] for r in accepted)
    assert (
        f"training data: {len(accepted)} pairs, {samples} samples; skipped: nothing"
        in (run / "train.log").read_text()
    )


def test_the_factory_recipe_trains_on_the_built_in_models_float16_networks(world_data, tmp_path, capsys):
    """configs/factory_world.yaml: the built-in model's frozen networks (stored in float16) encode the
    factory's float32 images; they are widened when loaded, as the built-in pipeline widens them."""
    config = yaml.safe_load((REPO / "configs" / "factory_world.yaml").read_text())
    config["model"]["weights_dir"] = str(REPO / "src" / "ip2n" / "builtin" / "synthetic")
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    argv = ["train", "--config", str(tmp_path / "train.yaml"), "--data", str(world_data), "-o", str(run)]
    assert main(argv + ["--stop-after", "2", "--threads", "1"]) == 0
    assert capsys.readouterr().out.strip().endswith("dit.safetensors")


# --- filters ---------------------------------------------------------------------------------------


class PlantedEditor:
    """The world editor, except for planted faults by pair index."""

    name = "planted"
    faults = {0: "identity_swap", 1: "no_change", 2: "blank", 3: "nan"}

    def describe(self):
        return {"name": self.name}

    def edit(self, state):
        from ip2n.factory.sources import render_world

        fault = self.faults.get(state.job.index)
        (good,) = WorldEditor().edit(state)
        if fault == "identity_swap":
            meta = state.source_meta
            stranger = -torch.tensor([meta["identity"]])  # the opposite head
            camera = torch.tensor([state.camera])
            (image,) = render_world(stranger, [meta["target_attributes"]], camera, meta["size"])
            return [Candidate(seed=good.seed, image=image)]
        if fault == "no_change":
            return [Candidate(seed=good.seed, image=state.source_image.copy())]
        if fault == "blank":
            return [Candidate(seed=good.seed, image=np.full_like(state.source_image, 128))]
        if fault == "nan":
            return [Candidate(seed=good.seed, image=None)]
        return [good]


def test_planted_bad_pairs_are_rejected_with_the_right_reason(tmp_path):
    editor = PlantedEditor()
    assert isinstance(editor, Editor)
    settings = FactorySettings(editor="world", world_heads=5, world_size=32)
    result = make_dataset(tmp_path / "out", settings, editor=editor, progress=False)
    by_pair = Store(tmp_path / "out").latest()
    assert [by_pair[f"0000{i}"]["reason"] for i in range(4)] == [
        "identity",
        "no_change",
        "degenerate",
        "degenerate",
    ]
    assert by_pair["00000"]["scores"]["identity"] < 0.5 <= by_pair["00004"]["scores"]["identity"]
    assert by_pair["00001"]["scores"]["change"] == 0.0
    assert "blank" in by_pair["00002"]["why"] and "NaN" in by_pair["00003"]["why"]
    assert result.reasons == {"identity": 1, "no_change": 1, "degenerate": 2}
    assert (tmp_path / "out" / "rejected" / "00000.png").is_file()  # source | edit, for the contact sheet
    assert not list((tmp_path / "out").glob("rejected/*_0.png"))  # never read as training pairs


def tiny_clip():
    import open_clip

    model = open_clip.CLIP(
        embed_dim=16,
        vision_cfg=open_clip.CLIPVisionCfg(layers=1, width=32, head_width=16, patch_size=16, image_size=32),
        text_cfg=open_clip.CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2, layers=1),
    )

    def preprocess(image):
        array = np.asarray(image.resize((32, 32)), dtype=np.float32) / 127.5 - 1
        return torch.from_numpy(array).permute(2, 0, 1)

    return ClipJudge(model, open_clip.get_tokenizer("ViT-B-32"), preprocess, name="tiny")


def test_clip_directional_similarity_and_its_filter(tmp_path):
    torch.manual_seed(0)
    clip = tiny_clip()
    rng = np.random.default_rng(0)
    source, edited = (rng.integers(0, 256, (48, 48, 3), dtype=np.uint8) for _ in range(2))
    forward = clip.direction(source, edited, "give him glasses")
    assert -1 <= forward <= 1
    assert clip.direction(edited, source, "give him glasses") == pytest.approx(-forward, abs=1e-5)
    # A threshold no edit reaches: every pair is rejected by the CLIP filter, with its score recorded.
    settings = FactorySettings(editor="world", world_heads=1, world_size=32, min_clip_direction=1.5)
    make_dataset(
        tmp_path / "out", settings, judges=Judges(IdentityJudge.world(), clip, face=False), progress=False
    )
    (record,) = Store(tmp_path / "out").records()
    assert record["reason"] == "clip" and record["scores"]["clip"] is not None


# --- the ip2p editor ---------------------------------------------------------------------------------


def tiny_ip2p_pipeline():
    from diffusers import (
        AutoencoderKL,
        EulerAncestralDiscreteScheduler,
        StableDiffusionInstructPix2PixPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=8,
        in_channels=8,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
    )
    vae = AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, vocab_size=1000
        )
    )
    return StableDiffusionInstructPix2PixPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=None,
        unet=unet,
        scheduler=EulerAncestralDiscreteScheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def prompt_embeddings(text: str):
    generator = torch.Generator().manual_seed(len(text))
    return torch.randn(1, 77, 32, generator=generator), torch.zeros(1, 77, 32)


@pytest.fixture(scope="module")
def ip2p_editor():
    from ip2n.factory.editors.ip2p import InstructPix2PixEditor

    return InstructPix2PixEditor(tiny_ip2p_pipeline(), steps=1, prompt_encoder=prompt_embeddings)


def test_ip2p_editor_gives_one_deterministic_candidate_per_seed(ip2p_editor, tmp_path):
    edits = [Edit("wear a hat", "wear a hat"), world_edit({"smile": True})]
    settings = FactorySettings(
        editor="ip2p", world_heads=2, world_size=32, seeds_per_pair=2, steps=1, min_identity=-1.0
    )
    make_dataset(tmp_path / "out", settings, edits=edits, editor=ip2p_editor, progress=False)
    records = manifest(tmp_path / "out")
    assert len(records) == 2
    for record in records:
        assert len(record["candidates"]) == 2 and len(set(record["seeds"])) == 2
        assert {c["seed"] for c in record["candidates"]} == set(record["seeds"])
        assert all(c["scores"]["identity"] is not None for c in record["candidates"])
        if record["status"] == "accepted":  # the kept one is the candidate with the best identity
            best = max(record["candidates"], key=lambda c: c["scores"]["identity"])
            assert record["seed"] == best["seed"]
    # Same pair and seed, same image; another seed, another image.
    state = PairState(job=_job(seeds=(1, 1, 2)), edit=edits[0], source_image=_noise(32))
    first, again, other = ip2p_editor.edit(state)
    assert first.image.shape == (32, 32, 3) and first.image.dtype == np.uint8
    assert np.array_equal(first.image, again.image) and not np.array_equal(first.image, other.image)


def test_photos_are_aligned_and_bad_sources_rejected_with_reasons(ip2p_editor, portrait_paths, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a_face.jpg").write_bytes(portrait_paths[0].read_bytes())
    Image.fromarray(np.full((200, 200, 3), 90, np.uint8)).save(photos / "b_no_face.png")
    (photos / "c_broken.jpg").write_bytes(b"not an image")
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(photos / "d_tiny.png")
    (tmp_path / "edits.txt").write_text("# portrait edits\nput sunglasses on him\neyeglasses=true\n")
    settings = FactorySettings(
        editor="ip2p",
        resolution=64,
        seeds_per_pair=1,
        steps=1,
        identity_weights=str(_world_identity_dir()),
        skip_filters=("face",),
    )
    edits = read_instruction_file(tmp_path / "edits.txt")
    make_dataset(
        tmp_path / "out", settings, sources=[photos], edits=edits, editor=ip2p_editor, progress=False
    )
    by_source = {r["source"]: r for r in manifest(tmp_path / "out")}
    assert by_source["b_no_face.png"]["reason"] == "no_face"
    assert by_source["c_broken.jpg"]["reason"] == "unreadable"
    assert by_source["d_tiny.png"]["reason"] == "too_small"
    face = by_source["a_face.jpg"]
    assert face["candidates"] and abs(face["source_meta"]["yaw_deg"]) < 45  # aligned, with a pose
    assert face["edit"] in {e.id for e in edits}


def _job(seeds):
    from ip2n.factory.spec import Job, SourceRef

    return Job(0, "00000", SourceRef("world", "test"), None, seeds)


def _noise(size):
    return np.random.default_rng(1).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _world_identity_dir():
    from ip2n.builtin import WEIGHTS_DIR

    return WEIGHTS_DIR


# --- instructions ---------------------------------------------------------------------------------


def test_phrasings_are_distinct_and_drawn_per_pair():
    edit = world_edit({"eyeglasses": True})
    pool = grammar_phrasings(edit)
    assert len(pool) >= 30 and len({p.lower() for p in pool}) == len(pool)
    picks = pick_phrasings(pool, 0, "00001", 20, 30)
    assert 20 <= len(picks) <= 30 and len(set(picks)) == len(picks) and set(picks) <= set(pool)
    assert picks == pick_phrasings(pool, 0, "00001", 20, 30)
    free = paraphrase_text("Put a cowboy hat on him.")
    assert free[0] == "Put a cowboy hat on him." and len(free) >= 20
    assert "put a cowboy hat on her" in free and "could you put a cowboy hat on them?" in free
    assert len({" ".join(p.lower().rstrip(".!?").split()) for p in free}) == len(free)


def test_a_language_model_paraphraser_is_parsed_and_topped_up():
    from ip2n.factory.phrasing import phrasing_pools

    calls = []

    def generate(prompt, **options):
        calls.append((prompt, options))
        return [
            {
                "generated_text": "1. Give him a hat.\n2) give him a hat\n- Add a hat to his head\n\n"
                '"Crown him with a hat"\n'
            }
        ]

    paraphraser = LMParaphraser(generate, count=5)
    assert paraphraser("put a hat on him") == [
        "Give him a hat.",
        "Add a hat to his head",
        "Crown him with a hat",
    ]
    assert "put a hat on him" in calls[0][0] and calls[0][1]["do_sample"] is False
    pool = phrasing_pools([Edit("hat", "put a hat on him")], paraphraser, minimum=20, maximum=25)["hat"]
    assert pool[:4] == [
        "put a hat on him",
        "Give him a hat.",
        "Add a hat to his head",
        "Crown him with a hat",
    ]
    assert len(pool) == 25


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("give him a hat\n\nmake him smile\n", "line 2 is empty"),
        ("give him a hat\nGive him a  hat.\n", "line 2 repeats line 1"),
        ("eyeglasses=maybe\n", "takes true or false"),
        ("wings=true\n", "unknown attribute 'wings'"),
        ("# only a comment\n", "holds no edits"),
    ],
)
def test_bad_instruction_files_are_refused_before_anything_is_written(tmp_path, capsys, text, message):
    path = tmp_path / "edits.txt"
    path.write_text(text)
    out = tmp_path / "out"
    argv = [
        "data",
        "make",
        "--editor",
        "ip2p",
        "--world-heads",
        "2",
        "--instructions",
        str(path),
        "-o",
        str(out),
    ]
    assert main(argv + ["--ip2p-weights", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


# --- bad input on the command line ------------------------------------------------------------------


def test_bad_sources_and_missing_weights_are_clear_errors(tmp_path, capsys):
    out = tmp_path / "out"
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 truncated")
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tiny / "a.png")
    faceless = tmp_path / "faceless.png"
    Image.fromarray(np.full((200, 200, 3), 90, np.uint8)).save(faceless)
    edits = tmp_path / "edits.txt"
    edits.write_text("give him a hat\n")
    base = ["data", "make", "-o", str(out), "--editor", "ip2p", "--instructions", str(edits)]
    cases = [
        (base + [str(broken), "--ip2p-weights", str(tmp_path)], "none of the 1 source images can be used"),
        (base + [str(tiny), "--ip2p-weights", str(tmp_path)], "16×16 px"),
        (base + [str(faceless), "--ip2p-weights", str(tmp_path)], "no face found in faceless.png"),
        (base + [str(tmp_path / "missing")], "does not exist"),
        (base + ["--world-heads", "2"], "needs --ip2p-weights"),
        (base + ["--world-heads", "2", "--ip2p-weights", str(tmp_path)], "holds no model_index.json"),
        (base + ["--world-heads", "2", "--ip2p-weights", "./nowhere"], "no such folder"),
        (["data", "make", "-o", str(out), "--editor", "world", str(tiny)], "synthetic world only"),
        (
            [
                "data",
                "make",
                "-o",
                str(out),
                "--editor",
                "world",
                "--world-heads",
                "2",
                "--identity-weights",
                str(tmp_path / "no_weights"),
            ],
            "identity weights",
        ),
        (["data", "make", "-o", str(out), "--editor", "world"], "no sources"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err, argv
        assert not out.exists(), argv


def test_the_cli_and_the_package_import_no_heavy_optional_packages():
    code = (
        "import sys, ip2n.cli, ip2n.factory; ip2n.cli.build_parser();"
        "print(sorted(m for m in ('ray', 'diffusers', 'transformers', 'torch') if m in sys.modules))"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"
    # No module of the factory imports the optional packages at its top level (only inside functions).
    for path in (REPO / "src" / "ip2n" / "factory").rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not [n for n in names if n.split(".")[0] in ("ray", "diffusers", "transformers")], path


@pytest.mark.system
def test_a_ray_run_accepts_the_same_pairs_as_one_process(tmp_path):
    """Local Ray with 2 CPUs, world editor; about 45 s (Ray's start and its actors' imports)."""
    ray = pytest.importorskip("ray")
    settings = FactorySettings(editor="world", world_heads=6, world_size=64, min_identity=0.96)
    make_dataset(tmp_path / "local", settings, progress=False)
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        make_dataset(tmp_path / "ray", settings, ray_address="local", progress=False)
    finally:
        ray.shutdown()
    local, on_ray = Store(tmp_path / "local").latest(), Store(tmp_path / "ray").latest()
    assert {r["status"] for r in local.values()} == {"accepted", "rejected"}  # the threshold splits them
    assert {k: (r["status"], r["reason"], r["edit"]) for k, r in local.items()} == {
        k: (r["status"], r["reason"], r["edit"]) for k, r in on_ray.items()
    }
    for name, record in local.items():
        assert on_ray[name]["scores"] == pytest.approx(record["scores"], abs=1e-5)
        if record["status"] == "accepted":
            for side in ("_0.png", "_1.png", ".txt"):
                assert (tmp_path / "ray" / name / f"{name}{side}").read_bytes() == (
                    tmp_path / "local" / name / f"{name}{side}"
                ).read_bytes()
    assert (tmp_path / "ray" / "dataset.json").read_bytes() == (
        tmp_path / "local" / "dataset.json"
    ).read_bytes()
