"""The diffusers-style API of `EditPipeline`: `from ip2n import EditPipeline`, `from_pretrained` /
`save_pretrained`, `.to(device)` and automatic device choice, `pipe(image=..., prompt=...)` with lists,
`callback_on_step_end` and `set_progress_bar_config`.

Device handling is checked under `FakeTensorMode`: there "cuda" tensors exist on a CPU-only machine
(no data), and an operation mixing a CPU tensor with a CUDA one raises
`FakeTensorDeviceMismatchError`, as it would on a GPU.
"""

import copy
import io
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch._subclasses.fake_tensor import FakeTensorDeviceMismatchError, FakeTensorMode

import ip2n
from helpers.official_files import TINY_SIZES, WIDE_TEXT, WIDE_TEXT_CONFIG, official_weights
from ip2n.builtin import builtin_edit_defaults, render_portrait, sample_head
from ip2n.checkpoints.editing_weights import check_weights_dir
from ip2n.devices import default_device
from ip2n.diffusion.guidance import DualGuidanceDenoiser
from ip2n.diffusion.latent_packing import pack_latent
from ip2n.diffusion.sampling import decode_timesteps
from ip2n.encoding.identity import extract_identity
from ip2n.pipeline import DeviceError, EditPipeline, EditPipelineOutput, ImageInputError, edit_schedule
from ip2n.pipeline import edit as edit_module
from ip2n.pipeline.pretrained import INDEX_NAME, hub_file_patterns
from ip2n.synthetic.world.marks import world_mark
from ip2n.text import TEXT_ENCODER_PRESETS
from ip2n.text.tokens import tokenize
from ip2n.training.distributed import init_distributed

# Few steps keep the edits fast; the built-in model's strength (0.6) runs int(0.6 × 10) = 6 of them.
STEPS = 10


@pytest.fixture(scope="module")
def pipeline() -> EditPipeline:
    return EditPipeline.from_pretrained("builtin")


@pytest.fixture(scope="module")
def head() -> Image.Image:
    identity, attributes = sample_head(5)
    return render_portrait(identity, attributes, seed=5)


@pytest.fixture(scope="module")
def other_head() -> Image.Image:
    identity, attributes = sample_head(6)
    return render_portrait(identity, attributes, seed=6)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- import and loading --------------------------------------------------------------------------------


def test_import_ip2n_stays_light_and_exports_the_pipeline_lazily():
    code = (
        "import sys, ip2n; light = 'torch' not in sys.modules; "
        "from ip2n import EditPipeline; from ip2n.pipeline import EditPipeline as Same; "
        "print(light, EditPipeline is Same, 'torch' in sys.modules)"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert output.stdout.split() == ["True", "True", "True"]
    assert ip2n.EditPipelineOutput is EditPipelineOutput
    assert {"EditPipeline", "EditPipelineOutput", "EditResult"} <= set(dir(ip2n))
    with pytest.raises(AttributeError, match="no attribute 'Pipeline'"):
        ip2n.Pipeline  # noqa: B018


def test_from_pretrained_names_the_built_in_model(pipeline, monkeypatch):
    assert pipeline.world_model and pipeline.defaults == builtin_edit_defaults()
    assert pipeline.device == default_device() == torch.device("cpu")  # no GPU on the test machine
    loaded = []
    monkeypatch.setattr(
        EditPipeline, "from_preset", classmethod(lambda cls, name, device, progress: loaded.append(name))
    )
    for name in ("builtin", "built-in", "synthetic"):
        EditPipeline.from_pretrained(name)
    assert loaded == ["synthetic"] * 3


def test_from_pretrained_says_what_a_name_is_not(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"not a built-in model \(built-in, builtin, synthetic\)"):
        EditPipeline.from_pretrained(str(tmp_path / "missing"))
    (tmp_path / "file.pt").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="is a file; pass the folder"):
        EditPipeline.from_pretrained(tmp_path / "file.pt")


def test_automatic_device_follows_ip2n_train(monkeypatch):
    assert default_device() == init_distributed(None).device == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)  # no GPU to select here
    assert default_device() == torch.device("cuda")
    assert init_distributed(None).device.type == "cuda"


def test_from_pretrained_loads_on_the_automatic_device(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr("ip2n.pipeline.edit.default_device", lambda: torch.device("meta"))
    monkeypatch.setattr(
        "ip2n.pipeline.pretrained.load_folder", lambda cls, folder, *, device, **options: seen.append(device)
    )
    EditPipeline.from_pretrained(tmp_path)
    EditPipeline.from_pretrained(tmp_path, device="cpu")
    assert seen == [torch.device("meta"), "cpu"]


@pytest.mark.slow  # the README's script in a fresh interpreter: 17 s
def test_the_readme_example_runs_as_written(tmp_path):
    """README's Python example, run in a folder holding `ip2n demo`'s input.png (as the demo writes it)."""
    from ip2n.builtin import EXAMPLES, example_heads
    from ip2n.commands.demo import DEMO_EXAMPLE, DEMO_YAW_DEG
    from ip2n.export.images import save_image

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    example = readme.split("## Python", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert len([line for line in example.splitlines() if line.strip()]) == 5
    identity, attributes, _ = example_heads()[DEMO_EXAMPLE]
    portrait = render_portrait(identity, attributes, yaw_deg=DEMO_YAW_DEG, seed=EXAMPLES[DEMO_EXAMPLE][0])
    save_image(portrait, tmp_path / "ip2n-demo" / "input.png")
    subprocess.run([sys.executable, "-c", example], cwd=tmp_path, check=True, capture_output=True)
    edited = Image.open(tmp_path / "beard.png")
    assert edited.size == (128, 128)
    assert not np.array_equal(np.asarray(edited.convert("RGB")), np.asarray(portrait.convert("RGB")))


# --- calling it -----------------------------------------------------------------------------------------


def test_diffusers_style_call_is_the_same_edit(pipeline, head):
    output = pipeline(image=head, prompt="make him smile", num_inference_steps=STEPS, generator=seeded(1))
    result = pipeline.edit(head, "make him smile", num_inference_steps=STEPS, generator=seeded(1))
    assert isinstance(output, EditPipelineOutput) and len(output.images) == len(output.results) == 1
    assert torch.equal(output.results[0].edited_latent, result.edited_latent)
    # The old positional call is `edit`.
    assert torch.equal(
        pipeline(head, "make him smile", num_inference_steps=STEPS, generator=seeded(1)).edited_latent,
        result.edited_latent,
    )
    image = output.images[0]
    assert isinstance(image, Image.Image)
    assert np.array_equal(np.asarray(image), np.asarray(result.image()))
    # Marked as a head of the world, so the output can be edited again.
    assert world_mark(image) is not None
    again = pipeline(image=image, prompt="give him a beard", num_inference_steps=STEPS, generator=seeded(2))
    assert not again.results[0].outside_world


def test_settings_reach_the_edit(pipeline, head):
    output = pipeline(
        image=head,
        prompt="make him smile",
        num_inference_steps=20,
        strength=0.5,
        guidance_scale=3.0,
        image_guidance_scale=1.5,
        generator=seeded(4),
        output_type="latent",
    )
    settings = output.results[0].settings
    assert (settings.num_inference_steps, settings.strength) == (20, 0.5)
    assert (settings.guidance_scale, settings.image_guidance_scale, settings.seed) == (3.0, 1.5, 4)


def test_a_list_of_images_and_prompts(pipeline, head, other_head):
    output = pipeline(
        image=[head, other_head],
        prompt=["make him smile", "give her blond hair"],
        num_inference_steps=STEPS,
        generator=[seeded(5), seeded(6)],
    )
    assert [result.settings.instructions for result in output.results] == [
        ("make him smile",),
        ("give her blond hair",),
    ]
    assert [result.settings.seed for result in output.results] == [5, 6]
    one = pipeline.edit(other_head, "give her blond hair", num_inference_steps=STEPS, generator=seeded(6))
    assert torch.equal(output.results[1].edited_latent, one.edited_latent)
    assert all(isinstance(image, Image.Image) for image in output.images)
    # One prompt for every image; one generator shared in turn.
    shared = pipeline(
        image=(head, other_head), prompt="make him smile", num_inference_steps=STEPS, generator=seeded(7)
    )
    assert [result.settings.instructions for result in shared.results] == [("make him smile",)] * 2
    assert not torch.equal(shared.results[0].edited_latent, shared.results[1].edited_latent)


def test_latent_output_renders_nothing(pipeline, head):
    output = pipeline(
        image=head,
        prompt="make him smile",
        num_inference_steps=STEPS,
        generator=seeded(0),
        output_type="latent",
    )
    assert output.images[0] is output.results[0].edited_latent
    assert output.images[0].shape == (1, 14, 64)
    assert not output.results[0]._frontal  # no view was rendered


def test_inputs_are_all_checked_before_any_model_runs(pipeline, head, tmp_path, monkeypatch):
    def no_run(*args, **kwargs):
        raise AssertionError("a model ran before every input was checked")

    monkeypatch.setattr(pipeline, "_run", no_run)
    (tmp_path / "broken.png").write_bytes(b"not a picture")
    with pytest.raises(ImageInputError, match="broken.png"):
        pipeline(image=[head, tmp_path / "broken.png"], prompt="make him smile")
    with pytest.raises(ValueError, match="1 prompts for 2 image"):
        pipeline(image=[head, head], prompt=["make him smile"])
    with pytest.raises(ValueError, match="a list of 2"):
        pipeline(image=[head, head], prompt="make him smile", generator=[seeded()])
    with pytest.raises(ValueError, match="empty list"):
        pipeline(image=[], prompt="make him smile")
    with pytest.raises(ValueError, match="output_type must be one of pil, latent"):
        pipeline(image=head, prompt="make him smile", output_type="np")
    with pytest.raises(TypeError, match="either as prompt"):
        pipeline(head, "make him smile", prompt="make him smile")
    with pytest.raises(TypeError, match="say what to edit"):
        pipeline(image=head)


# --- the step callback ----------------------------------------------------------------------------------


def test_callback_sees_every_step_and_changes_nothing_by_itself(pipeline, head):
    calls = []

    def record(pipe, step_index, timestep, callback_kwargs):
        calls.append((pipe, step_index, timestep, callback_kwargs["latents"].clone()))
        return callback_kwargs

    options = {"num_inference_steps": STEPS, "output_type": "latent"}
    plain = pipeline(image=head, prompt="make him smile", generator=seeded(3), **options)
    watched = pipeline(
        image=head, prompt="make him smile", generator=seeded(3), callback_on_step_end=record, **options
    )
    assert torch.equal(plain.images[0], watched.images[0])
    strength = pipeline.defaults.strength
    assert [call[1] for call in calls] == list(range(int(strength * STEPS)))
    assert [call[2] for call in calls] == decode_timesteps(strength, edit_schedule(STEPS, strength))
    assert all(call[0] is pipeline and call[3].shape == (1, 64, 4, 4) for call in calls)
    # The last step's latents are the edit: W+ = unpacked latents / latent scale + w_avg.
    assert torch.equal(pipeline.w_plus_from_latents(calls[-1][3]), watched.images[0])


def test_callback_can_replace_the_latents(pipeline, head):
    def zero_at_the_end(pipe, step_index, timestep, callback_kwargs):
        if timestep == 0:
            return {"latents": torch.zeros_like(callback_kwargs["latents"])}
        return None

    output = pipeline(
        image=head,
        prompt="make him smile",
        num_inference_steps=STEPS,
        generator=seeded(0),
        callback_on_step_end=zero_at_the_end,
        output_type="latent",
    )
    assert torch.equal(output.images[0], pipeline.latent_avg)  # zero offsets from w_avg


def test_callback_steps_run_on_across_chained_prompts(pipeline, head):
    steps = []
    pipeline.edit(
        head,
        ["make him smile", "give him a beard"],
        chain=True,
        num_inference_steps=STEPS,
        generator=seeded(0),
        callback_on_step_end=lambda pipe, step, timestep, kwargs: steps.append(step),
    )
    assert steps == list(range(2 * int(pipeline.defaults.strength * STEPS)))


def test_bad_callbacks_are_refused(pipeline, head):
    with pytest.raises(TypeError, match="must be callable"):
        pipeline(image=head, prompt="make him smile", callback_on_step_end="print")
    with pytest.raises(ValueError, match="must be a list of latents"):
        pipeline(
            image=head,
            prompt="make him smile",
            callback_on_step_end=lambda *args: None,
            callback_on_step_end_tensor_inputs=["noise_pred"],
        )
    with pytest.raises(TypeError, match="must return a dict"):
        pipeline(
            image=head, prompt="make him smile", num_inference_steps=STEPS, callback_on_step_end=lambda *a: 1
        )
    with pytest.raises(ValueError, match=r"latents of shape \(1, 64\)"):
        pipeline(
            image=head,
            prompt="make him smile",
            num_inference_steps=STEPS,
            callback_on_step_end=lambda *args: {"latents": torch.zeros(1, 64)},
        )


# --- progress bars --------------------------------------------------------------------------------------


def test_progress_bar_config(head, pipeline, capsys):
    pipe = copy.copy(pipeline)  # its own bar settings, the same networks
    pipe(image=head, prompt="make him smile", num_inference_steps=STEPS, output_type="latent")
    assert "editing (diffusion)" in capsys.readouterr().err
    pipe.set_progress_bar_config(disable=True)
    pipe(image=head, prompt="make him smile", num_inference_steps=STEPS, output_type="latent")
    pipe.edit(head, "make him smile", num_inference_steps=STEPS, progress=True)
    assert capsys.readouterr().err == ""
    bars = io.StringIO()
    pipe.set_progress_bar_config(file=bars, ncols=60)
    pipe(image=head, prompt="make him smile", num_inference_steps=STEPS, output_type="latent")
    assert "editing (diffusion)" in bars.getvalue() and capsys.readouterr().err == ""
    with pytest.raises(TypeError, match=r"unknown progress bar option\(s\) \['colour_scheme'\]"):
        pipe.set_progress_bar_config(colour_scheme="dark")


# --- saving and loading ---------------------------------------------------------------------------------


def _same_networks(first: EditPipeline, second: EditPipeline) -> None:
    for name, network in first.components.items():
        mine, theirs = network.state_dict(), second.components[name].state_dict()
        assert mine.keys() == theirs.keys(), name
        assert all(torch.equal(mine[key], theirs[key]) for key in mine), name
    assert torch.equal(first.latent_avg, second.latent_avg)
    assert first.defaults == second.defaults and first.world_model == second.world_model


def test_save_pretrained_round_trip_of_the_built_in_model(pipeline, head, tmp_path):
    pipeline.defaults, tuned = replace(pipeline.defaults, strength=0.5), pipeline.defaults
    try:
        written = pipeline.save_pretrained(tmp_path / "saved")
    finally:
        pipeline.defaults = tuned
    assert written[-1].name == INDEX_NAME
    index = json.loads(written[-1].read_text())
    assert index["kind"] == "synthetic-world" and index["edit_defaults"]["strength"] == 0.5
    loaded = EditPipeline.from_pretrained(tmp_path / "saved")
    assert loaded.defaults.strength == 0.5 and loaded.model_name == pipeline.model_name
    loaded.defaults = pipeline.defaults
    _same_networks(pipeline, loaded)
    # The same edit. (Memory-mapped weights can take other CPU kernels than the built-in model's
    # copies, so the numbers agree to float32 rounding, not bit for bit.)
    mine = pipeline(image=head, prompt="make him smile", num_inference_steps=STEPS, generator=seeded(0))
    theirs = loaded(image=head, prompt="make him smile", num_inference_steps=STEPS, generator=seeded(0))
    latents = mine.results[0].edited_latent, theirs.results[0].edited_latent
    assert torch.allclose(*latents, atol=1e-5, rtol=0)
    pixels = [np.asarray(image, dtype=int) for image in (mine.images[0], theirs.images[0])]
    assert np.abs(pixels[0] - pixels[1]).max() <= 1


@pytest.fixture(scope="module")
def official_pipeline(tmp_path_factory, fixtures_dir):
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(TEXT_ENCODER_PRESETS, WIDE_TEXT, WIDE_TEXT_CONFIG)
        return EditPipeline.from_pretrained(
            official_weights(tmp_path_factory, fixtures_dir), sizes=TINY_SIZES
        )


def test_save_pretrained_round_trip_of_official_weights(official_pipeline, tmp_path):
    assert official_pipeline.generator_source["kind"] == "eg3d" and not official_pipeline.world_model
    official_pipeline.save_pretrained(tmp_path / "converted")
    assert all(report.ok for report in check_weights_dir(tmp_path / "converted"))
    loaded = EditPipeline.from_pretrained(tmp_path / "converted")  # converted files carry their sizes
    _same_networks(official_pipeline, loaded)
    assert loaded.generator_source == {"kind": "eg3d", "weights": str((tmp_path / "converted").resolve())}
    face = Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8))
    mine, theirs = (
        pipe(image=face, prompt="make her smile", generator=seeded(0), output_type="latent")
        for pipe in (official_pipeline, loaded)
    )
    assert torch.allclose(mine.images[0], theirs.images[0], atol=1e-4, rtol=0)


def test_from_pretrained_fetches_a_hub_model_id(pipeline, tmp_path, monkeypatch):
    import huggingface_hub

    pipeline.save_pretrained(tmp_path / "snapshot")
    requests = []

    def snapshot_download(repo_id, **options):
        requests.append((repo_id, options))
        return str(tmp_path / "snapshot")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    loaded = EditPipeline.from_pretrained("someone/ip2n-heads", revision="v1", device="cpu")
    assert loaded.world_model
    _same_networks(pipeline, loaded)
    [(repo_id, options)] = requests
    assert repo_id == "someone/ip2n-heads" and options["revision"] == "v1"
    patterns = options["allow_patterns"]
    assert patterns == hub_file_patterns()
    assert {INDEX_NAME, "dit.safetensors", "G_ema.pkl", "model_ir_se50.pth", "world.json"} <= set(patterns)


# --- devices ----------------------------------------------------------------------------------------------


def test_to_returns_the_pipeline_and_refuses_missing_devices(pipeline):
    assert pipeline.to("cpu") is pipeline and pipeline.device == torch.device("cpu")
    with pytest.raises(DeviceError, match="CUDA was requested but is not available"):
        pipeline.to("cuda")


def _tensors(root: object) -> list[tuple[str, torch.Tensor]]:
    """Every tensor reachable from `root`: parameters, buffers, plain tensor attributes, caches."""
    found, seen = [], set()

    def visit(value: object, path: str) -> None:
        if id(value) in seen:
            return
        seen.add(id(value))
        if isinstance(value, torch.Tensor):
            found.append((path, value))
        elif isinstance(value, torch.nn.Module):
            for name, tensor in [*value.named_parameters(), *value.named_buffers()]:
                found.append((f"{path}.{name}", tensor))
            for name, module in value.named_modules():
                for key, attribute in vars(module).items():
                    if key not in ("_parameters", "_buffers", "_modules"):
                        visit(attribute, f"{path}.{name}.{key}")
        elif isinstance(value, dict):
            for key, item in value.items():
                visit(item, f"{path}[{key!r}]")
        elif isinstance(value, (list, tuple)):
            for number, item in enumerate(value):
                visit(item, f"{path}[{number}]")
        elif type(value).__module__.startswith("ip2n"):
            for key, attribute in vars(value).items():
                visit(attribute, f"{path}.{key}")

    visit(root, "pipe")
    return found


@pytest.mark.parametrize("which", ["builtin", "official"])
def test_to_cuda_moves_every_tensor(which, pipeline, official_pipeline, monkeypatch):
    pipe = copy.deepcopy(pipeline if which == "builtin" else official_pipeline)
    pipe.prompt_encoder.encode_prompts(["make him smile"])  # a cached prompt moves too
    # The test machine has no GPU: only the availability check is skipped, the move is real.
    monkeypatch.setattr(edit_module, "resolve_device", torch.device)
    with FakeTensorMode(allow_non_fake_inputs=True):
        assert pipe.to("cuda") is pipe
        left = [(path, tensor.device) for path, tensor in _tensors(pipe) if tensor.device.type != "cuda"]
        assert not left
        assert pipe.device.type == "cuda"
        resolution = pipe.encoder.config.resolution
        pixels = torch.zeros(1, 3, resolution, resolution, device="cuda")
        # The networks run on CUDA inputs without meeting a CPU tensor anywhere inside.
        codes = pipe.encoder(pixels)
        identity = extract_identity(pipe.identity_encoder, pixels)
        contexts = pipe.text_encoder(tokenize(["make him smile", ""]).to("cuda"))
        source = pack_latent(codes) * pipe.dit.config.latent_scale
        denoiser = DualGuidanceDenoiser(
            pipe.dit, source, contexts[:1], contexts[1:], 2.5, 1.5, identity, timesteps=[280, 260]
        )
        runs = len(denoiser.branches)
        raw = pipe.dit(
            torch.cat([source.repeat(runs, 1, 1, 1), denoiser.branch_sources], dim=1),
            torch.full((runs,), 280, device="cuda"),
            denoiser.labels,
            denoiser.context_cache,
            denoiser.identity,
            conditioning=denoiser.conditioning_by_timestep[280],
        )
        planes = pipe.generator.synthesize_planes(codes + pipe.latent_avg)
        assert {tensor.device.type for tensor in (codes, identity, contexts, raw, planes)} == {"cuda"}
        # A tensor left on the CPU would have been caught (convolutions say so in a plain RuntimeError).
        with pytest.raises(RuntimeError, match="same device"):
            pipe.encoder(torch.zeros(1, 3, resolution, resolution))
        with pytest.raises(FakeTensorDeviceMismatchError):
            pipe.generator.synthesize_planes(codes + torch.zeros(pipe.latent_avg.shape))


def test_a_pipeline_built_on_the_cpu_is_caught_on_cuda_inputs(pipeline):
    with FakeTensorMode(allow_non_fake_inputs=True), pytest.raises(RuntimeError, match="same device"):
        resolution = pipeline.encoder.config.resolution
        pipeline.encoder(torch.zeros(1, 3, resolution, resolution, device="cuda"))
