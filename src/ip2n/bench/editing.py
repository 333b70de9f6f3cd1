"""Editing-models benchmark: build, convert, load and run the full-size DiT, text encoder, PREIM3D
encoder and IR-SE50 with random weights (costs depend on sizes, not values).

Converted files are written to a temporary folder (≈ 3 GB) so that loading is timed the way a user
loads converted weights; the folder is removed afterwards.
"""

from __future__ import annotations

import dataclasses
import gc
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ip2n.bench.timing import StageTimer, current_rss_mb
from ip2n.checkpoints.editing_weights import (
    WEIGHT_FILES,
    load_dit,
    load_identity,
    load_preim3d_encoder,
    load_text_encoder,
)
from ip2n.checkpoints.safetensors_io import save_weights
from ip2n.diffusion.dit import DiT, dit_config
from ip2n.diffusion.editing import edit_codes
from ip2n.diffusion.latent_packing import pack_latent
from ip2n.diffusion.schedule import make_schedule
from ip2n.encoding.identity import IdentityEncoder, extract_identity
from ip2n.encoding.identity import preset as identity_preset
from ip2n.encoding.preim3d import build_encoder
from ip2n.encoding.preim3d import preset as encoder_preset
from ip2n.text.encoder import PromptEncoder, TextEncoder, text_encoder_config

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

PROMPTS = ("put glasses on her", "make her smile")
NEW_INSTRUCTION = "give him a bushy beard"


def _random_models(generator: torch.Generator) -> dict[str, tuple[torch.nn.Module, DataclassInstance]]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        dit_cfg = dit_config("DiT-B_G/1_pair")
        dit = DiT(dit_cfg)
        dit.initialize_weights(generator)
        text_cfg = text_encoder_config("ViT-H-14")
        text = TextEncoder(text_cfg, device="cpu")
        text.reset_parameters(generator)
        enc_cfg = encoder_preset("ir_se50", "Encoder4Editing")
        encoder = build_encoder(enc_cfg)
        id_cfg = identity_preset("ir_se50")
        identity = IdentityEncoder(id_cfg)
    return {
        "dit": (dit, dit_cfg),
        "text_encoder": (text, text_cfg),
        "encoder": (encoder, enc_cfg),
        "identity": (identity, id_cfg),
    }


def write_random_editing_weights(weights_dir: Path, generator: torch.Generator, timer: StageTimer) -> None:
    """Full-size editing models with random weights, written as converted files into `weights_dir`."""
    with timer.stage("build 4 full-size models (random init)"):
        models = _random_models(generator)
    with timer.stage("write converted safetensors"):
        for component, (module, config) in models.items():
            files = WEIGHT_FILES[component]
            save_weights(
                weights_dir / files.converted,
                module.state_dict(),
                {"kind": files.kind, "config": dataclasses.asdict(config), "source": "random"},
            )


def run_editing_benchmark(steps: int = 15) -> StageTimer:
    timer = StageTimer()
    generator = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="ip2n-bench-") as tmp:
        weights_dir = Path(tmp)
        write_random_editing_weights(weights_dir, generator, timer)
        gc.collect()
        baseline = current_rss_mb()

        with timer.stage("load dit (converted)"):
            dit = load_dit(weights_dir)
        with timer.stage("load text_encoder (converted)"):
            text = load_text_encoder(weights_dir)
        with timer.stage("load encoder (converted)"):
            encoder, _ = load_preim3d_encoder(weights_dir)
        with timer.stage("load identity (converted)"):
            identity = load_identity(weights_dir)

        with torch.inference_mode():
            image = torch.rand(1, 3, 256, 256, generator=generator) * 2 - 1
            with timer.stage("PREIM3D encoder forward 256² (first call)"):
                codes = encoder(image)
            with timer.stage("PREIM3D encoder forward 256²"):
                codes = encoder(image)
            with timer.stage("IR-SE50 identity features"):
                identity_features = extract_identity(identity, image)
            prompts = PromptEncoder(text)
            with timer.stage(f"text encoding of {len(PROMPTS)} prompts + empty prompt"):
                context = prompts.encode_prompts(list(PROMPTS[:1]) + [""] + list(PROMPTS[1:]))
            source = pack_latent(codes)  # (1, 512, 4, 4)
            x3 = torch.cat([source] * 3)
            cond = torch.cat([source, source, torch.zeros_like(source)])
            t3 = torch.full((3,), 280, dtype=torch.int64)
            y3 = torch.ones(3, dtype=torch.int64)
            context3 = torch.cat([context[:1], context[1:2], context[1:2]])
            dit(torch.cat([x3, cond], 1), t3, y3, context3, None)  # warm-up
            with timer.stage("DiT forward, batch 3"):
                dit(torch.cat([x3, cond], 1), t3, y3, context3, None)
            schedule = make_schedule("ddim50")
            strength = steps / schedule.num_steps + 1e-9
            # Per edit: the new instruction is encoded, the empty prompt comes from the per-process cache.
            with timer.stage(f"{steps}-step guided partial DDIM incl. encoding a new instruction"):
                encoded = prompts.encode_prompts([NEW_INSTRUCTION, ""])
                noise = torch.randn(source.shape, generator=generator)
                edit_codes(
                    dit,
                    codes,
                    encoded[:1],
                    encoded[1],
                    schedule,
                    strength=strength,
                    text_scale=2.5,
                    image_scale=1.0,
                    noise=noise,
                    identity=identity_features,
                )
        timer.rows.append(
            {
                "stage": "resident memory of the 4 loaded models + activations (MB)",
                "seconds": 0.0,
                "peak_rss_mb": round(current_rss_mb() - baseline),
            }
        )
    return timer
