"""InstructPix2Pix (diffusers' `StableDiffusionInstructPix2PixPipeline`) as the factory's 2-D editor.

The paper made 18 K of its pairs with InstructPix2Pix. Each pair is edited with `seeds_per_pair`
seeds (the pair's own, derived from the run seed); the filters keep the best candidate. The knobs
are InstructPix2Pix's: `steps` (denoising steps), `text_guidance` (guidance_scale) and
`image_guidance` (image_guidance_scale).

Weights: a local folder in diffusers' format (`model_index.json`, e.g. a download of
timbrooks/instruct-pix2pix) or a Hugging Face model id, which diffusers downloads on first use.
Any pipeline object with the same call can be given instead (`InstructPix2PixEditor(pipeline)`);
`prompt_encoder` then turns an instruction into `(prompt_embeds, negative_prompt_embeds)` for
pipelines without a tokenizer (the tests build a tiny random pipeline that way).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ip2n.factory.spec import Candidate, FactorySettings, MissingWeightsError, PairState

INSTALL_HINT = "pip install 'instructpix2nerf[factory]'"
_MODEL_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def check_ip2p_weights(weights: str | None) -> str:
    """Validate `--ip2p-weights` before anything is written → "local" or "hub"."""
    if not weights:
        raise MissingWeightsError(
            "the ip2p editor needs --ip2p-weights: a local folder in diffusers' format (with "
            "model_index.json) or a Hugging Face model id such as timbrooks/instruct-pix2pix"
        )
    path = Path(weights).expanduser()
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise MissingWeightsError(
                f"{path} holds no model_index.json: --ip2p-weights takes an InstructPix2Pix pipeline "
                "saved in diffusers' format (pipeline.save_pretrained(DIR), or a downloaded model repository)"
            )
        return "local"
    if _MODEL_ID.match(weights) and not weights.startswith((".", "/", "~")):
        return "hub"
    raise MissingWeightsError(
        f"--ip2p-weights {weights}: no such folder, and not a Hugging Face model id (owner/name)"
    )


def load_ip2p_pipeline(weights: str, device: str = "cpu") -> Any:
    """The InstructPix2Pix pipeline from a local folder or a model id, on `device` (float16 on CUDA)."""
    where = check_ip2p_weights(weights)
    try:
        from diffusers import StableDiffusionInstructPix2PixPipeline
    except ImportError:
        raise ImportError(f"the ip2p editor needs diffusers and transformers: {INSTALL_HINT}") from None
    dtype = torch.float16 if str(device).startswith("cuda") else torch.float32
    source = str(Path(weights).expanduser()) if where == "local" else weights
    pipeline = StableDiffusionInstructPix2PixPipeline.from_pretrained(
        source,
        torch_dtype=dtype,
        safety_checker=None,
        requires_safety_checker=False,
        local_files_only=where == "local",
    )
    return pipeline.to(device)


class InstructPix2PixEditor:
    """Candidates from an InstructPix2Pix pipeline, one per seed of the pair."""

    name = "ip2p"

    def __init__(
        self,
        pipeline: Any,
        *,
        steps: int = 50,
        text_guidance: float = 7.5,
        image_guidance: float = 1.5,
        prompt_encoder: Callable[[str], tuple[torch.Tensor, torch.Tensor]] | None = None,
        weights: str | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.steps = steps
        self.text_guidance = text_guidance
        self.image_guidance = image_guidance
        self.prompt_encoder = prompt_encoder
        self.weights = weights
        if hasattr(pipeline, "set_progress_bar_config"):
            pipeline.set_progress_bar_config(disable=True)

    @classmethod
    def from_settings(cls, settings: FactorySettings) -> InstructPix2PixEditor:
        assert settings.ip2p_weights is not None
        return cls(
            load_ip2p_pipeline(settings.ip2p_weights, settings.device),
            steps=settings.steps,
            text_guidance=settings.text_guidance,
            image_guidance=settings.image_guidance,
            weights=settings.ip2p_weights,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "weights": self.weights or type(self.pipeline).__name__,
            "steps": self.steps,
            "text_guidance": self.text_guidance,
            "image_guidance": self.image_guidance,
        }

    def edit(self, state: PairState) -> list[Candidate]:
        assert state.source_image is not None and state.edit is not None
        source = Image.fromarray(state.source_image)
        prompt: dict[str, Any]
        if self.prompt_encoder is not None:
            embeds, negative = self.prompt_encoder(state.edit.prompt)
            prompt = {"prompt_embeds": embeds, "negative_prompt_embeds": negative}
        else:
            prompt = {"prompt": state.edit.prompt}
        device = getattr(self.pipeline, "device", torch.device("cpu"))
        candidates = []
        for seed in state.job.seeds:
            generator = torch.Generator(device=device).manual_seed(int(seed) % 2**63)
            output = self.pipeline(
                image=source,
                num_inference_steps=self.steps,
                guidance_scale=self.text_guidance,
                image_guidance_scale=self.image_guidance,
                generator=generator,
                output_type="np",
                **prompt,
            )
            image = np.asarray(output.images[0], dtype=np.float32)  # (H, W, 3) in [0, 1]
            candidates.append(Candidate(seed=int(seed), image=_to_uint8(image, source.size)))
        return candidates


def _to_uint8(image: np.ndarray, size: tuple[int, int]) -> np.ndarray | None:
    if not np.isfinite(image).all():
        return None
    array = np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
    if (array.shape[1], array.shape[0]) != size:  # the pipeline rounds sizes to multiples of 8
        array = np.asarray(Image.fromarray(array).resize(size, Image.Resampling.BICUBIC))
    return array
