"""`EditPipeline`: edit a portrait in 3-D with an instruction — image in, W+ latents out.

The one public entry point for editing: the CLI, the web app, evaluation and benchmarks call it and
never re-implement it. An edit runs these steps (see `EditPipeline.__call__`):

1. validate the settings, the instructions and the image (`ip2n.pipeline.inputs`);
2. align the face (optional; `ip2n.align`);
3. encode: PREIM3D codes relative to w_avg (1, 14, 512) and IR-SE50 identity features (1, 512);
4. embed the text, each distinct prompt once (the empty prompt included);
5. guided partial DDIM on the packed codes, once per prompt (several with `chain`);
6. the `EditResult`: absolute source and edited W+ latents, rendered on demand.

Defaults follow the paper and the official inference: the ddim50 schedule, strength 0.3 (noise to
step 15, then 15 denoising steps), text scale 2.5, image scale 1.0, label 1 in every branch. A
built-in model brings the sampling settings it was tuned with instead (`EditDefaults`).
Identity conditioning is on, as in the paper and training (the shipped inference script leaves it
off: `identity_conditioning=False` reproduces that).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast, overload

import numpy as np
import torch
from PIL import Image
from torch import nn

from ip2n.checkpoints.editing_weights import (
    WEIGHT_FILES,
    EditingPresets,
    find_weights_file,
    load_dit,
    load_identity,
    load_preim3d_encoder,
    load_text_encoder,
)
from ip2n.checkpoints.generator_weights import load_generator, load_latent_avg
from ip2n.checkpoints.safe_unpickle import CheckpointError
from ip2n.defaults import PAPER_DEFAULTS, EditDefaults
from ip2n.devices import default_device
from ip2n.diffusion.dit import DiT
from ip2n.diffusion.editing import edit_codes, edit_schedule
from ip2n.diffusion.latent_packing import GRID_SIZE, NUM_STYLES, unpack_latent
from ip2n.diffusion.sampling import StepEndFn, decode_timesteps
from ip2n.diffusion.schedule import DiffusionSchedule
from ip2n.encoding.identity import IdentityEncoder, extract_identity
from ip2n.encoding.preprocess import encoder_input
from ip2n.generator.eg3d import TriPlaneGenerator
from ip2n.limits import MAX_GUIDANCE_SCALE
from ip2n.pipeline.inputs import (
    check_instructions,
    check_square_crop,
    edit_prompts,
    load_image,
    prepare_image,
)
from ip2n.pipeline.result import EditResult, EditSettings, timed
from ip2n.pipeline.scope import world_scope_notes
from ip2n.progress import check_bar_options, stage_bar
from ip2n.registry import MODEL_PRESETS
from ip2n.text.encoder import PromptEncoder, TextEncoder
from ip2n.text.tokens import randomize_token_positions, tokenize

if TYPE_CHECKING:
    from ip2n.encoding.preim3d import PREIM3DEncoderConfig
    from ip2n.synthetic.world.generator import SyntheticHeadGenerator

logger = logging.getLogger(__name__)


# Sizes official files are read with when `from_weights` is not told otherwise: the released models.
RELEASED_SIZES = EditingPresets()


# Models known by name (`ip2n.registry`): "synthetic", the built-in synthetic 3-D heads world
# (registered by ip2n.builtin), is the default of `ip2n edit` and `ip2n demo` without --weights.
DEFAULT_PRESET = "synthetic"

ImageInput = Image.Image | np.ndarray | str | os.PathLike

# What `pipe(image=..., prompt=...)` returns in `.images`: rendered frontal views, or the W+ latents.
OutputType = Literal["pil", "latent"]
OUTPUT_TYPES: tuple[str, ...] = ("pil", "latent")
# The tensors a `callback_on_step_end` can ask for (diffusers' `callback_on_step_end_tensor_inputs`).
CALLBACK_TENSOR_INPUTS: tuple[str, ...] = ("latents",)
# callback(pipe, step_index, timestep, callback_kwargs) → None or a dict whose "latents" replace the sample.
StepEndCallback = Callable[["EditPipeline", int, int, dict[str, torch.Tensor]], "Mapping[str, Any] | None"]


@dataclass
class EditPipelineOutput:
    """What `pipe(image=..., prompt=...)` returns: one entry per input image, in order.

    - `images`: the frontal edited views as PIL images (`output_type="pil"`; a built-in model's carry
      the mark of its world, so they can be edited again), or the edited W+ latents (1, 14, w_dim)
      (`output_type="latent"`);
    - `results`: the `EditResult`s (latents, settings, seed, notes; any view, orbit, mesh, `save`).
    """

    images: list[Image.Image] | list[torch.Tensor]
    results: list[EditResult]


@dataclass
class _EditRequest:
    """An edit whose inputs `EditPipeline._prepare` checked: what `_run` needs."""

    image: Image.Image
    name: str
    instructions: tuple[str, ...]
    prompts: tuple[str, ...]
    schedule: DiffusionSchedule
    num_inference_steps: int
    strength: float
    guidance_scale: float
    image_guidance_scale: float
    chain: bool
    align: bool
    outside: tuple[str, ...]
    notes: list[str]
    timings: dict[str, float]


class PresetError(ValueError):
    """An unknown or unavailable built-in model name."""


class DeviceError(ValueError):
    """A device that does not exist on this machine."""


class IncompatibleWeightsError(ValueError):
    """Weight files that load individually but do not fit together."""


def resolve_device(device: str | torch.device) -> torch.device:
    """A usable torch device, or `DeviceError` saying why not and what to use instead."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise DeviceError(
            f"unknown device {device!r}; use 'cpu' or 'cuda' (or 'cuda:N' for GPU number N)"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            reason = (
                "this PyTorch build has no CUDA support"
                if torch.version.cuda is None
                else "no CUDA GPU is visible (no NVIDIA driver, or CUDA_VISIBLE_DEVICES hides them)"
            )
            raise DeviceError(
                f"CUDA was requested but is not available: {reason}. Run on the CPU (--device cpu), or "
                "install a CUDA build of PyTorch on a machine with an NVIDIA GPU"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(
                f"{device} was requested but only {torch.cuda.device_count()} CUDA GPU(s) are visible"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("Apple's MPS device was requested but is not available here; use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"device type '{device.type}' is not supported; use 'cpu' or 'cuda'")
    return device


def preset_edit_defaults(name: str) -> EditDefaults:
    """The sampling defaults of built-in model `name`, without loading it (the CLI needs them first)."""
    check_preset(name)
    return MODEL_PRESETS[name].edit_defaults()


def check_preset(name: str) -> None:
    """Raise `PresetError` (listing the built-in models) unless `name` is one of them."""
    if name not in MODEL_PRESETS:
        available = ", ".join(sorted(MODEL_PRESETS)) or "none"
        raise PresetError(
            f"unknown model '{name}' (built-in models: {available}). For the official InstructPix2NeRF "
            "weights, pass their folder with --weights DIR (EditPipeline.from_weights)"
        )


class EditPipeline:
    """Instruction-guided 3-D portrait editing with five networks and the generator's average latent.

    - generator: EG3D tri-plane generator, or the synthetic world's (renders W+ latents);
    - dit: conditional DiT (denoises packed codes);
    - text_encoder: OpenCLIP text tower (its width = the DiT's context width);
    - encoder: PREIM3D inversion encoder, image (N, 3, R, R) in [-1, 1] → codes (N, 14, w_dim);
    - identity_encoder: IR-SE50 ArcFace network (features of the DiT's identity conditioning);
    - latent_avg: (1, 14, w_dim) w_avg the codes are relative to.
    All must be on one device, in eval mode.

    `world_model`: the models were trained on the synthetic heads world (the built-in model): edits
    are then limited to the world's heads and to instructions that name its attributes, unless the
    caller opts in (`ip2n.pipeline.scope`). `generator_source` says where the generator comes from
    (recorded with the latents, so that `ip2n render` can render them with the right generator):
    {"kind": "synthetic-world", "preset": NAME} or {"kind": "eg3d", "weights": FOLDER}.

    Two ways to call it: `pipe(image=..., prompt=...)`, diffusers-style (one image or a list →
    `EditPipelineOutput` with `.images` and `.results`), and `pipe(image, instructions)` = `pipe.edit`
    (one image → its `EditResult`). Load it with `from_pretrained` (or `from_weights` / `from_preset`),
    move it with `to`, write it with `save_pretrained`.
    """

    def __init__(
        self,
        generator: TriPlaneGenerator | SyntheticHeadGenerator,
        dit: DiT,
        text_encoder: TextEncoder,
        encoder: nn.Module,
        identity_encoder: IdentityEncoder,
        latent_avg: torch.Tensor,
        *,
        model_name: str = "",
        defaults: EditDefaults = PAPER_DEFAULTS,
        world_model: bool = False,
        generator_source: Mapping[str, str] | None = None,
    ) -> None:
        _check_compatible(generator, dit, text_encoder, encoder, identity_encoder, latent_avg)
        self.generator = generator
        self.dit = dit
        self.text_encoder = text_encoder
        self.encoder = encoder
        self.identity_encoder = identity_encoder
        self.latent_avg = latent_avg
        self.model_name = model_name
        self.defaults = defaults
        self.world_model = world_model
        self.generator_source = dict(generator_source or {})
        self.prompt_encoder = PromptEncoder(text_encoder)
        # The empty prompt is every edit's "no text" context: encoding it belongs to construction
        # (like w_avg), not to whichever edit happens to come first.
        self.prompt_encoder.encode_prompts([""])
        self.load_seconds: float | None = None
        self._progress_bar_config: dict[str, Any] = {}

    @property
    def device(self) -> torch.device:
        """The device every network, `latent_avg` and the cached prompt encodings are on."""
        return self.latent_avg.device

    @property
    def components(self) -> dict[str, nn.Module]:
        """The five networks by name (as diffusers' `components`; `latent_avg` is a tensor beside them)."""
        return {
            "generator": self.generator,
            "dit": self.dit,
            "text_encoder": self.text_encoder,
            "encoder": self.encoder,
            "identity_encoder": self.identity_encoder,
        }

    def to(self, device: str | torch.device) -> EditPipeline:
        """Move every network, `latent_avg` and the cached prompt encodings to `device`; returns the
        pipeline. Raises `DeviceError` for a device this machine does not have."""
        target = resolve_device(device)
        for network in self.components.values():
            network.to(target)
        self.latent_avg = self.latent_avg.to(target)
        self.prompt_encoder.to(target)
        return self

    def set_progress_bar_config(self, **options: Any) -> None:
        """Options for this pipeline's progress bars (tqdm's: `disable`, `leave`, `position`, `file`,
        ...), as in diffusers. `disable=True` turns every bar of the pipeline off; without it,
        `pipe(image=..., prompt=...)` shows its bars (stderr) and `pipe.edit` shows them when asked
        (`progress=True`). Each call replaces the previous options; TypeError for an option tqdm lacks."""
        self._progress_bar_config = check_bar_options(options)

    def _bar(self, description: str, total: int | None, enabled: bool, unit: str = "step") -> Any:
        options = dict(self._progress_bar_config)
        enabled = enabled and not options.pop("disable", False)
        return stage_bar(description, total, enabled, unit=unit, options=options)

    def w_plus_from_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Absolute W+ latents (N, 14, w_dim) of the sampler's latents (N, w_dim, 4, 4), e.g. those a
        `callback_on_step_end` receives: unpacked, divided by the DiT's latent scale, w_avg added."""
        return unpack_latent(latents / self.dit.config.latent_scale) + self.latent_avg

    # --- construction ------------------------------------------------------------------------------

    @classmethod
    def from_weights(
        cls,
        weights_dir: str | os.PathLike,
        device: str | torch.device = "cpu",
        *,
        sizes: EditingPresets | None = None,
        progress: bool = False,
    ) -> EditPipeline:
        """Load every model from a weights folder holding the official files or converted safetensors.

        Expected (converted name first, then official): generator.safetensors / G_ema.pkl,
        dit.safetensors / instructpix2nerf.pt, text_encoder.safetensors / the OpenCLIP file (not
        needed when instructpix2nerf.pt embeds it), encoder.safetensors / preim3d.pt,
        identity.safetensors / model_ir_se50.pth; latent_avg.safetensors is used when present
        (else w_avg is recomputed, ~1 s per start on the real generator's mapping network).
        Official files carry no sizes: they are read with `sizes` (default: the released models)
        and checked against them. Raises `CheckpointError` naming every missing file, or the file
        that is wrong, and `IncompatibleWeightsError` when the models do not fit together.
        `progress` shows a bar over the files as they load (stderr).
        """
        sizes = sizes or RELEASED_SIZES
        device = resolve_device(device)
        weights_dir = Path(weights_dir)
        _check_weights_dir(weights_dir)
        start = time.perf_counter()
        with stage_bar("loading models", 6, progress, unit="model") as bar:
            bar.set_postfix_str("generator")
            generator = load_generator(weights_dir, device)
            bar.update()
            bar.set_postfix_str("DiT")
            dit = load_dit(weights_dir, device, preset=sizes.dit)
            bar.update()
            bar.set_postfix_str("text encoder")
            text_encoder = load_text_encoder(weights_dir, device, preset=sizes.text_encoder)
            bar.update()
            bar.set_postfix_str("encoder")
            encoder, _ = load_preim3d_encoder(weights_dir, device, preset=sizes.encoder)
            bar.update()
            bar.set_postfix_str("identity")
            identity_encoder = load_identity(weights_dir, device, preset=sizes.identity)
            bar.update()
            bar.set_postfix_str("w_avg")
            latent_avg = load_latent_avg(weights_dir, generator).to(device)
            bar.update()
        pipeline = cls(
            generator,
            dit,
            text_encoder,
            encoder,
            identity_encoder,
            latent_avg,
            model_name=f"weights {weights_dir}",
            generator_source={"kind": "eg3d", "weights": str(weights_dir.resolve())},
        )
        pipeline.load_seconds = round(time.perf_counter() - start, 3)
        logger.info("loaded the models from %s in %.1f s", weights_dir, pipeline.load_seconds)
        return pipeline

    @classmethod
    def from_preset(
        cls, name: str, device: str | torch.device = "cpu", *, progress: bool = False
    ) -> EditPipeline:
        """A built-in trained model by name (see `MODEL_PRESETS`); `progress` shows a loading bar."""
        check_preset(name)
        start = time.perf_counter()
        pipeline = MODEL_PRESETS[name].load(resolve_device(device), progress)
        pipeline.load_seconds = round(time.perf_counter() - start, 3)
        return pipeline

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        device: str | torch.device | None = None,
        sizes: EditingPresets | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        token: str | bool | None = None,
        local_files_only: bool = False,
        progress: bool = False,
    ) -> EditPipeline:
        """Load a pipeline by name, from a folder, or from the Hugging Face Hub (as diffusers does).

        `pretrained_model_name_or_path` is, in the order tried:
        - a built-in model's name: "builtin" or "synthetic" (the synthetic 3-D heads world);
        - a folder: one `save_pretrained` wrote, official files or `ip2n weights convert`'s converted
          ones (as `from_weights`; official files are read at `sizes`), or a synthetic world
          `ip2n synth train-all` trained;
        - a Hugging Face model id ("owner/name"): its files are fetched with
          `huggingface_hub.snapshot_download(revision=, cache_dir=, token=, local_files_only=)` (only
          the file names ip2n reads), then loaded as a folder.
        `device`: None picks the CUDA GPU when there is one, else the CPU (as `ip2n train` does).
        Raises `FileNotFoundError` for a name that is none of these, `CheckpointError` naming a missing
        or wrong file, `DeviceError` for a device this machine does not have.
        """
        from ip2n.pipeline.pretrained import load_pretrained

        return load_pretrained(
            cls,
            pretrained_model_name_or_path,
            device=default_device() if device is None else device,
            sizes=sizes,
            revision=revision,
            cache_dir=cache_dir,
            token=token,
            local_files_only=local_files_only,
            progress=progress,
        )

    def save_pretrained(self, save_directory: str | os.PathLike) -> list[Path]:
        """Write the pipeline as converted safetensors + JSON into `save_directory` (created if needed),
        which `from_pretrained` (and `ip2n weights check`) read back: the same networks, defaults and
        kind of model. Returns the written files, `ip2n_pipeline.json` (the folder's index) last."""
        from ip2n.pipeline.pretrained import save_pretrained

        return save_pretrained(self, save_directory)

    # --- editing -----------------------------------------------------------------------------------

    @overload
    def __call__(
        self, image: ImageInput, instructions: str | Sequence[str], **options: Any
    ) -> EditResult: ...

    @overload
    def __call__(
        self,
        image: ImageInput | Sequence[ImageInput],
        instructions: None = None,
        *,
        prompt: str | Sequence[str],
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        image_guidance_scale: float | None = None,
        strength: float | None = None,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        output_type: OutputType = "pil",
        callback_on_step_end: StepEndCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = CALLBACK_TENSOR_INPUTS,
        **options: Any,
    ) -> EditPipelineOutput: ...

    def __call__(
        self,
        image: ImageInput | Sequence[ImageInput] | None = None,
        instructions: str | Sequence[str] | None = None,
        *,
        prompt: str | Sequence[str] | None = None,
        **options: Any,
    ) -> EditResult | EditPipelineOutput:
        """Edit portraits, in either of two styles:

        - `pipe(image=..., prompt=..., ...)`, as diffusers pipelines are called: one image or a list,
          one prompt for all or one per image → `EditPipelineOutput` (`.images`, `.results`). The
          options are those of `edit_images`; progress bars show unless `set_progress_bar_config
          (disable=True)`.
        - `pipe(image, instructions, ...)`: one image → its `EditResult` (`edit`, whose options apply).
        """
        if prompt is not None:
            if instructions is not None:
                raise TypeError("pass the instruction either as prompt=... or after the image, not both")
            if image is None:
                raise TypeError("pipe(image=..., prompt=...) needs an image (or a list of images)")
            return self.edit_images(image, prompt, **options)
        if image is None or instructions is None:
            raise TypeError(
                "say what to edit and how: pipe(image=IMAGE, prompt=INSTRUCTION) or pipe(IMAGE, INSTRUCTION)"
            )
        return self.edit(cast(ImageInput, image), instructions, **options)

    def edit_images(
        self,
        image: ImageInput | Sequence[ImageInput],
        prompt: str | Sequence[str],
        *,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        image_guidance_scale: float | None = None,
        strength: float | None = None,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        output_type: OutputType = "pil",
        callback_on_step_end: StepEndCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = CALLBACK_TENSOR_INPUTS,
        identity_conditioning: bool = True,
        align: bool = False,
        token_position_randomization: bool = False,
        source_conditioning: bool = True,
        allow_any_image: bool = False,
        allow_any_instruction: bool = False,
    ) -> EditPipelineOutput:
        """Edit one portrait or several, one after another → `EditPipelineOutput`; `pipe(image=...,
        prompt=...)` calls this.

        Args:
            image: a portrait (PIL image, uint8 array (H, W, 3) or file path; see `edit`), or a list.
            prompt: the instruction for every image, or a list with one per image.
            num_inference_steps, guidance_scale (text), image_guidance_scale, strength: as in `edit`;
                None = the model's defaults (`self.defaults`).
            generator: one `torch.Generator` the images draw their noise from in turn, or a list with
                one per image; None draws fresh seeds (each result records its seed).
            output_type: "pil" → `.images` are the frontal edited views as PIL images (a built-in
                model's are marked as heads of its world, so they can be edited again); "latent" →
                `.images` are the edited W+ latents (1, 14, w_dim) and nothing is rendered.
            callback_on_step_end: `callback(pipe, step_index, timestep, callback_kwargs)` after each
                denoising step, as in diffusers: `step_index` counts an image's steps from 0 (on
                across chained prompts), `timestep` is the original timestep (int) the DiT saw,
                `callback_kwargs` holds the tensors named in `callback_on_step_end_tensor_inputs`
                ("latents": the sample (1, w_dim, 4, 4) after the step, in the DiT's units;
                `w_plus_from_latents` turns it into W+). It returns None or a dict; a "latents" entry
                in it replaces the sample the edit continues from.
            identity_conditioning, align, token_position_randomization, source_conditioning,
            allow_any_image, allow_any_instruction: as in `edit`.

        Every image and prompt is checked before any model runs. Raises what `edit` raises, and
        ValueError when the lists do not match.
        """
        images = _as_list(image)
        if not images:
            raise ValueError("image is an empty list; pass at least one image")
        prompts = [prompt] * len(images) if isinstance(prompt, str) else list(prompt)
        if len(prompts) != len(images):
            raise ValueError(
                f"{len(prompts)} prompts for {len(images)} image(s): pass one prompt for every image, or a "
                "single string for all (to combine instructions for one image, write them in one prompt: "
                "'put glasses on him and make him smile')"
            )
        generators = _generators(generator, len(images))
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")
        _check_step_callback(callback_on_step_end, callback_on_step_end_tensor_inputs)
        # Every input is checked before any model runs.
        requests = [
            self._prepare(
                item,
                text,
                num_inference_steps=num_inference_steps,
                strength=strength,
                guidance_scale=guidance_scale,
                image_guidance_scale=image_guidance_scale,
                chain=False,
                align=align,
                allow_any_image=allow_any_image,
                allow_any_instruction=allow_any_instruction,
            )
            for item, text in zip(images, prompts)
        ]
        results = [
            self._run(
                request,
                generator=item_generator,
                identity_conditioning=identity_conditioning,
                token_position_randomization=token_position_randomization,
                source_conditioning=source_conditioning,
                progress=True,
                callback=callback_on_step_end,
                tensor_inputs=callback_on_step_end_tensor_inputs,
            )
            for request, item_generator in zip(requests, generators)
        ]
        if output_type == "latent":
            return EditPipelineOutput(images=[result.edited_latent for result in results], results=results)
        return EditPipelineOutput(images=[result.image(marked=True) for result in results], results=results)

    def edit(
        self,
        image: ImageInput,
        instructions: str | Sequence[str],
        *,
        num_inference_steps: int | None = None,
        strength: float | None = None,
        guidance_scale: float | None = None,
        image_guidance_scale: float | None = None,
        identity_conditioning: bool = True,
        generator: torch.Generator | None = None,
        chain: bool = False,
        align: bool = False,
        token_position_randomization: bool = False,
        source_conditioning: bool = True,
        allow_any_image: bool = False,
        allow_any_instruction: bool = False,
        progress: bool = False,
        callback_on_step_end: StepEndCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = CALLBACK_TENSOR_INPUTS,
    ) -> EditResult:
        """Edit one portrait (`pipe(image, instructions)` calls this).

        Args:
            image: a portrait (PIL image, uint8 array (H, W, 3), or a file path). Without `align` it
                must already be an EG3D/FFHQ-style crop: square (else `ImageInputError`; it is
                resized to the encoder's input as in the official code).
            instructions: one instruction, or several: combined into one prompt ("a, b and c", as
                the TPR-trained model expects) or, with `chain`, applied one after another.
            num_inference_steps: length of the DDIM schedule; the edit runs int(strength · steps)
                of its steps.
            strength: how far the source is noised, 0 < strength < 1 (more = bigger changes).
            guidance_scale: text guidance s_T; image_guidance_scale: image guidance s_I.
                These four default (None) to `self.defaults`: the paper's 50 / 0.3 / 2.5 / 1.0 for
                official weights, the tuned values of a built-in model.
            identity_conditioning: condition on the input's ArcFace features (False = the official
                inference script's default).
            generator: source of the diffusion noise (and of TPR offsets); None draws a fresh seed,
                recorded in the result.
            align: detect and crop the face first, and estimate its camera (`ip2n.align`).
            token_position_randomization: shift the prompts' tokens by random offsets as the
                official code does at inference (once per edit here, not per step; off by default:
                it only adds randomness).
            source_conditioning: False runs the paper's img2img baseline (for models trained without
                the paired source, e.g. the synthetic world's "img2img" ablation).
            allow_any_image, allow_any_instruction: for a model of the synthetic world
                (`world_model`, e.g. the built-in one), which edits only heads of its world (marked
                images, `ip2n.synthetic.world.marks`) and instructions that name its attributes
                (`ip2n.synthetic.world.vocabulary`): run it on anything else instead of raising
                `NotAWorldHeadError` / `UnknownInstructionError`. The result's `notes` and
                `outside_world` then say that it is not an edit of the input.
            progress: show progress bars (stderr) for encoding and the diffusion steps
                (`set_progress_bar_config` sets their options).
            callback_on_step_end, callback_on_step_end_tensor_inputs: called after each denoising
                step, as described in `edit_images`.

        Returns:
            `EditResult` with source and edited W+ latents (1, 14, w_dim).

        Raises:
            `ImageInputError`, `InstructionError`, `NotAWorldHeadError`, `UnknownInstructionError`
            (all ValueErrors with a message for people) and ValueError for bad settings.
        """
        _check_step_callback(callback_on_step_end, callback_on_step_end_tensor_inputs)
        request = self._prepare(
            image,
            instructions,
            num_inference_steps=num_inference_steps,
            strength=strength,
            guidance_scale=guidance_scale,
            image_guidance_scale=image_guidance_scale,
            chain=chain,
            align=align,
            allow_any_image=allow_any_image,
            allow_any_instruction=allow_any_instruction,
        )
        return self._run(
            request,
            generator=generator,
            identity_conditioning=identity_conditioning,
            token_position_randomization=token_position_randomization,
            source_conditioning=source_conditioning,
            progress=progress,
            callback=callback_on_step_end,
            tensor_inputs=callback_on_step_end_tensor_inputs,
        )

    def _prepare(
        self,
        image: ImageInput,
        instructions: str | Sequence[str],
        *,
        num_inference_steps: int | None,
        strength: float | None,
        guidance_scale: float | None,
        image_guidance_scale: float | None,
        chain: bool,
        align: bool,
        allow_any_image: bool,
        allow_any_instruction: bool,
    ) -> _EditRequest:
        """Step 1 of an edit: check the settings, the instructions and the image; no model runs."""
        timings: dict[str, float] = {}
        notes: list[str] = []
        num_inference_steps = (
            self.defaults.num_inference_steps if num_inference_steps is None else num_inference_steps
        )
        strength = self.defaults.strength if strength is None else strength
        guidance_scale = self.defaults.guidance_scale if guidance_scale is None else guidance_scale
        image_guidance_scale = (
            self.defaults.image_guidance_scale if image_guidance_scale is None else image_guidance_scale
        )
        with timed(timings, "validate"):
            checked = check_instructions(instructions)
            prompts = edit_prompts(checked, chain)
            schedule = edit_schedule(num_inference_steps, strength)
            check_guidance_scales(guidance_scale, image_guidance_scale)
            name = os.fspath(image) if isinstance(image, (str, os.PathLike)) else "the image"
            resolution = _encoder_config(self.encoder).resolution
            picture = (
                load_image(image, resolution)
                if isinstance(image, (str, os.PathLike))
                else prepare_image(image, name, resolution)
            )
            outside: tuple[str, ...] = ()
            if self.world_model:
                outside, world_notes = world_scope_notes(
                    picture,
                    name,
                    checked,
                    allow_any_image=allow_any_image,
                    allow_any_instruction=allow_any_instruction,
                )
                for world_note in world_notes:
                    logger.warning("%s", world_note)
                notes += world_notes
            if not align:
                check_square_crop(picture, name)
        return _EditRequest(
            image=picture,
            name=name,
            instructions=checked,
            prompts=prompts,
            schedule=schedule,
            num_inference_steps=num_inference_steps,
            strength=strength,
            guidance_scale=guidance_scale,
            image_guidance_scale=image_guidance_scale,
            chain=chain,
            align=align,
            outside=outside,
            notes=notes,
            timings=timings,
        )

    def _run(
        self,
        request: _EditRequest,
        *,
        generator: torch.Generator | None,
        identity_conditioning: bool,
        token_position_randomization: bool,
        source_conditioning: bool,
        progress: bool,
        callback: StepEndCallback | None,
        tensor_inputs: Sequence[str],
    ) -> EditResult:
        """Steps 2–6 of an edit that `_prepare` checked."""
        timings, notes, image = request.timings, list(request.notes), request.image
        if generator is None:
            generator = torch.Generator()
            generator.seed()
        # 2. Align the face (optional).
        camera = None
        if request.align:
            with timed(timings, "align"):
                image, camera, note = _align(image, request.name)
            if note:
                notes.append(note)
        with torch.no_grad(), self._bar("encoding", 3, progress) as bar:
            # 3. Encode: codes relative to w_avg, and the identity features.
            with timed(timings, "encode"):
                bar.set_postfix_str("image")
                pixels = encoder_input(image, _encoder_config(self.encoder).resolution)[None].to(
                    self.device
                )  # (1, 3, R, R)
                source_codes = self.encoder(pixels)  # (1, 14, w_dim)
                bar.update()
                bar.set_postfix_str("identity")
                identity = extract_identity(self.identity_encoder, pixels) if identity_conditioning else None
                bar.update()
            # 4. Embed the text: each distinct prompt once.
            with timed(timings, "text"):
                bar.set_postfix_str("instruction")
                contexts, null_context = self._embed(request.prompts, token_position_randomization, generator)
                bar.update()
        steps_per_prompt = len(decode_timesteps(request.strength, request.schedule))
        with (
            torch.no_grad(),
            self._bar("editing (diffusion)", steps_per_prompt * len(contexts), progress) as bar,
        ):
            # 5. Guided partial DDIM, once per prompt.
            with timed(timings, "diffusion"):
                codes = source_codes
                for number, context in enumerate(contexts):
                    # Drawn on the generator's device, so a seed gives the same edit on every device.
                    shape = (codes.shape[0], codes.shape[2], GRID_SIZE, GRID_SIZE)  # packed: (N, C, 4, 4)
                    noise = torch.randn(shape, generator=generator, device=generator.device)
                    codes = edit_codes(
                        self.dit,
                        codes,
                        context,
                        null_context,
                        request.schedule,
                        strength=request.strength,
                        text_scale=request.guidance_scale,
                        image_scale=request.image_guidance_scale,
                        noise=noise.to(self.device),
                        identity=identity,
                        source_conditioning=source_conditioning,
                        on_step=bar.update,
                        on_step_end=(
                            None
                            if callback is None
                            else self._step_end_hook(callback, tensor_inputs, number * steps_per_prompt)
                        ),
                    )
        # 6. The result: absolute latents, rendered on demand.
        settings = EditSettings(
            instructions=request.instructions,
            prompts=request.prompts,
            num_inference_steps=request.num_inference_steps,
            strength=request.strength,
            guidance_scale=request.guidance_scale,
            image_guidance_scale=request.image_guidance_scale,
            identity_conditioning=identity_conditioning,
            chain=request.chain,
            align=request.align,
            token_position_randomization=token_position_randomization,
            seed=generator.initial_seed(),
        )
        return EditResult(
            self.generator,
            source_codes + self.latent_avg,
            codes + self.latent_avg,
            settings,
            input_image=image,
            input_camera=camera,
            notes=notes,
            timings=timings,
            model=self.model_name,
            world_model=self.world_model,
            outside_world=request.outside,
            generator_source=self.generator_source,
        )

    def _step_end_hook(
        self, callback: StepEndCallback, tensor_inputs: Sequence[str], offset: int
    ) -> StepEndFn:
        """The sampler's step-end hook that calls a diffusers-style `callback_on_step_end`."""

        def hook(step: int, timestep: int, latents: torch.Tensor) -> torch.Tensor | None:
            available = {"latents": latents}
            outputs = callback(
                self, offset + step, timestep, {name: available[name] for name in tensor_inputs}
            )
            if outputs is None:
                return None
            if not isinstance(outputs, Mapping):
                raise TypeError(
                    "callback_on_step_end must return a dict (its callback_kwargs, maybe changed) or None, "
                    f"not {type(outputs).__name__}"
                )
            return outputs.get("latents")

        return hook

    def sweep(
        self,
        image: ImageInput,
        instructions: str | Sequence[str],
        *,
        strengths: Sequence[float] | None = None,
        guidance_scales: Sequence[float] | None = None,
        image_guidance_scales: Sequence[float] | None = None,
        seed: int = 0,
        **options,
    ) -> list[EditResult]:
        """One edit per combination of the values (strength slowest, image scale fastest), all with the
        same noise (`seed`), so that the results differ only by the swept setting.

        The other keyword arguments are those of `edit`; a value list left out is the model's
        default alone. Show them with `comparison_grid`.
        """
        strengths = strengths or (self.defaults.strength,)
        guidance_scales = guidance_scales or (self.defaults.guidance_scale,)
        image_guidance_scales = image_guidance_scales or (self.defaults.image_guidance_scale,)
        results = []
        for strength in strengths:
            for text_scale in guidance_scales:
                for image_scale in image_guidance_scales:
                    results.append(
                        self.edit(
                            image,
                            instructions,
                            strength=strength,
                            guidance_scale=text_scale,
                            image_guidance_scale=image_scale,
                            generator=torch.Generator().manual_seed(seed),
                            **options,
                        )
                    )
        return results

    def _embed(
        self, prompts: Sequence[str], randomize: bool, generator: torch.Generator
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Prompt contexts [(1, 77, D) per prompt] and the empty prompt's context (1, 77, D)."""
        if not randomize:
            distinct = list(dict.fromkeys([*prompts, ""]))
            encoded = dict(zip(distinct, self.prompt_encoder.encode_prompts(distinct)))
            return [encoded[prompt][None] for prompt in prompts], encoded[""][None]
        # The official code shifts every text-encoder input, the empty prompt included; the image-only
        # and unconditional branches share one shifted empty prompt here.
        tokens = randomize_token_positions(
            tokenize([*prompts, ""]), training=False, at_inference=True, generator=generator
        )
        contexts = self.text_encoder(tokens.to(self.device))  # (P + 1, 77, D)
        return [context[None] for context in contexts[:-1]], contexts[-1:]


def _as_list(image: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
    """One image or a list/tuple of them → a list (a path string or an array is one image)."""
    if isinstance(image, (list, tuple)):
        return list(image)
    return [cast(ImageInput, image)]


def _generators(
    generator: torch.Generator | Sequence[torch.Generator] | None, count: int
) -> list[torch.Generator | None]:
    """One generator shared by `count` edits in turn, a list with one per edit, or None (fresh seeds)."""
    if generator is None or isinstance(generator, torch.Generator):
        return [generator] * count
    generators = list(generator)
    if len(generators) != count or not all(isinstance(item, torch.Generator) for item in generators):
        raise ValueError(
            f"generator must be one torch.Generator or a list of {count} (one per image), got "
            f"{len(generators)} item(s)"
        )
    return list(generators)


def _check_step_callback(callback: object, tensor_inputs: Sequence[str]) -> None:
    if callback is not None and not callable(callback):
        raise TypeError(f"callback_on_step_end must be callable, got {type(callback).__name__}")
    unknown = [name for name in tensor_inputs if name not in CALLBACK_TENSOR_INPUTS]
    if isinstance(tensor_inputs, str) or unknown:
        raise ValueError(
            f"callback_on_step_end_tensor_inputs must be a list of {', '.join(CALLBACK_TENSOR_INPUTS)}; "
            f"got {tensor_inputs!r}"
        )


def check_guidance_scales(text_scale: float, image_scale: float) -> None:
    """Guidance scales are finite and from 0 to `MAX_GUIDANCE_SCALE` (the paper: 2.5 and 1.0); far
    larger ones drive the latent to NaN, which would render as a black image."""
    for name, value in (("guidance_scale (text)", text_scale), ("image_guidance_scale", image_scale)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
        if not 0 <= value <= MAX_GUIDANCE_SCALE:
            raise ValueError(
                f"{name} must be from 0 to {MAX_GUIDANCE_SCALE:g} (the paper uses 2.5 and 1.0), got {value!r}"
            )


def _align(image: Image.Image, name: str) -> tuple[Image.Image, torch.Tensor, str | None]:
    """The aligned 512² crop, its camera label (25,) and a note for the user (or None)."""
    try:
        from ip2n.align import align_face
    except ImportError as exc:
        raise ValueError(
            f"face alignment is not available in this installation of ip2n ({exc}); pass an already aligned "
            "FFHQ-style crop without --align, or reinstall ip2n with its dependencies"
        ) from None
    aligned = align_face(image, name=name)
    message = getattr(aligned, "message", None)
    if message:
        logger.warning("%s", message)
    return aligned.image, torch.as_tensor(aligned.camera, dtype=torch.float32), message


def _check_weights_dir(weights_dir: Path) -> None:
    """Fail early, naming every missing file at once, before spending time loading the others."""
    if not weights_dir.is_dir():
        what = "is a file, not a folder" if weights_dir.exists() else "does not exist"
        raise CheckpointError(
            f"weights folder {weights_dir} {what}; pass the folder that holds G_ema.pkl, "
            "instructpix2nerf.pt, preim3d.pt and model_ir_se50.pth (or their converted .safetensors)"
        )
    missing = []
    for component in WEIGHT_FILES:
        try:
            find_weights_file(component, weights_dir)
        except CheckpointError as exc:
            missing.append(str(exc))
    if missing:
        raise CheckpointError(
            f"the weights folder {weights_dir} is incomplete:\n  - "
            + "\n  - ".join(missing)
            + f"\nPut the missing files into {weights_dir} "
            f"(`ip2n weights check {weights_dir}` shows what is found)."
        )


def _encoder_config(encoder: nn.Module) -> PREIM3DEncoderConfig:
    """The sizes every inversion encoder class (`ip2n.encoding.preim3d.ENCODER_CLASSES`) keeps."""
    return cast("PREIM3DEncoderConfig", encoder.config)


def _check_compatible(
    generator: TriPlaneGenerator | SyntheticHeadGenerator,
    dit: DiT,
    text_encoder: TextEncoder,
    encoder: nn.Module,
    identity_encoder: IdentityEncoder,
    latent_avg: torch.Tensor,
) -> None:
    w_dim, num_ws = generator.config.w_dim, generator.num_ws
    problems = []
    if num_ws != NUM_STYLES:
        problems.append(f"the generator takes {num_ws} style vectors; the latent packing needs {NUM_STYLES}")
    encoder_config = _encoder_config(encoder)
    if (encoder_config.num_styles, encoder_config.style_dim) != (num_ws, w_dim):
        problems.append(
            f"the encoder predicts {encoder_config.num_styles}×{encoder_config.style_dim} codes, "
            f"the generator takes {num_ws}×{w_dim}"
        )
    if tuple(latent_avg.shape) != (1, num_ws, w_dim):
        problems.append(f"latent_avg has shape {tuple(latent_avg.shape)}, expected (1, {num_ws}, {w_dim})")
    config = dit.config
    if (config.in_channels, config.out_channels, config.input_size) != (2 * w_dim, w_dim, GRID_SIZE):
        problems.append(
            f"the DiT works on {config.out_channels}-channel {config.input_size}×{config.input_size} "
            f"latents, the generator's pack into {w_dim}-channel {GRID_SIZE}×{GRID_SIZE} ones"
        )
    if config.context_dim != text_encoder.config.width:
        problems.append(
            f"the DiT cross-attends to {config.context_dim}-wide text, the text encoder is "
            f"{text_encoder.config.width} wide"
        )
    if config.identity_dim != identity_encoder.config.feature_dim:
        problems.append(
            f"the DiT takes {config.identity_dim}-d identity features, the identity network gives "
            f"{identity_encoder.config.feature_dim}"
        )
    if problems:
        raise IncompatibleWeightsError(
            "the model files do not fit together: "
            + "; ".join(problems)
            + ". Use files from one release (or one conversion), see docs/checkpoints.md"
        )
