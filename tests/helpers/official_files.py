"""Weight files written the way the official tools write them, at tiny sizes.

The tiny editing models fit together like the released ones: the EG3D generator of the eg3d_pickle
fixture (w_dim 512, which fixes the DiT's 1024 input channels), the dit_small fixture DiT (hidden
64, depth 2; cross-attention context 1024, as in the official architecture) inside a train.py
checkpoint that embeds an OpenCLIP text tower of width 1024 with 2 blocks (1 run), a PREIM3D
WPlusEncoder on the narrow IR-SE trunk (14 × 512 codes from 256² images) and the narrow IR-SE
identity network (512-d features).
"""

import argparse
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from helpers import eg3d_files as eg3d
from helpers import randomize_
from ip2n.checkpoints.editing_weights import EditingPresets
from ip2n.encoding import IdentityEncoder, build_encoder, encoder_preset, identity_preset
from ip2n.text import DIT_CHECKPOINT_PREFIX, TextEncoder, TextEncoderConfig

WIDE_TEXT = "test-wide-1024"
# The DiT's cross-attention reads 1024-wide text (hard-coded in the official architecture), so the
# smallest consistent text tower is 1024 wide; 2 blocks of which the last is skipped, as in ViT-H-14.
WIDE_TEXT_CONFIG = TextEncoderConfig(width=1024, heads=16, layers=2)
TINY_SIZES = EditingPresets(dit="tiny", text_encoder=WIDE_TEXT, encoder="small", identity="small")


def _text_tower_weights() -> dict[str, torch.Tensor]:
    """A random 1024-wide OpenCLIP text tower as it sits in a CLIP state dict (all blocks kept)."""
    text = TextEncoder(WIDE_TEXT_CONFIG, device="cpu")
    text.reset_parameters(torch.Generator().manual_seed(7))
    weights = dict(text.state_dict())
    # The file also holds the last block, which the penultimate-layer encoder never runs.
    weights |= {
        key.replace("resblocks.0.", "resblocks.1."): value
        for key, value in text.state_dict().items()
        if key.startswith("transformer.resblocks.0.")
    }
    return weights


def open_clip_state_dict(*, vision: bool = True, text: bool = True) -> dict[str, torch.Tensor]:
    """open_clip's own weight file (`open_clip_pytorch_model.bin`): both towers, as `CLIP.state_dict()`."""
    generator = torch.Generator().manual_seed(3)
    weights = _text_tower_weights() if text else {}
    if text:
        weights["text_projection"] = torch.randn(1024, 16, generator=generator)
        weights["logit_scale"] = torch.tensor(4.6052)
    if vision:
        weights["visual.conv1.weight"] = torch.randn(8, 3, 16, 16, generator=generator)
        weights["visual.class_embedding"] = torch.randn(8, generator=generator)
        weights["visual.ln_post.weight"] = torch.ones(8)
    return weights


def _adamw_state(parameters: dict[str, torch.Tensor], trained: int) -> dict:
    """`torch.optim.AdamW(...).state_dict()` after one step in which the first `trained` got gradients."""
    tensors = [
        torch.nn.Parameter(value.clone()) for value in parameters.values() if value.is_floating_point()
    ]
    optimizer = torch.optim.AdamW(tensors, lr=1e-4, weight_decay=0)
    for tensor in tensors[:trained]:
        tensor.grad = torch.full_like(tensor, 1e-3)
    optimizer.step()
    return optimizer.state_dict()


def dit_checkpoint(fixtures_dir: Path, *, embed_text: bool = True) -> dict:
    """What InstructPix2NeRF's train.py saves: `model`, `ema` (the dit_small fixture weights), `opt`, `args`.

    `model` and `ema` hold the embedded OpenCLIP model under `cond_stage_model.model.` (both towers)
    unless `embed_text` is false; `opt` is a real AdamW state in which the frozen text model has no
    entries; `args` is the run's argparse Namespace with paths and numbers.
    """
    ema = load_file(fixtures_dir / "dit_small" / "state_dict.safetensors")
    generator = torch.Generator().manual_seed(1)
    model = {key: value + 0.01 * torch.randn(value.shape, generator=generator) for key, value in ema.items()}
    opt = _adamw_state(model, trained=len(model))
    if embed_text:
        clip = {DIT_CHECKPOINT_PREFIX + key: value for key, value in open_clip_state_dict().items()}
        # `model` and `ema` share the frozen text tensors, which torch.save stores once.
        model, ema = model | clip, ema | clip
    args = argparse.Namespace(
        data_path="/data/ffhq-triplets",
        results_dir=Path("results"),
        model="DiT-B_G/1_pair",
        image_size=256,
        num_classes=1,
        epochs=1400,
        global_batch_size=80,
        global_seed=0,
        num_workers=4,
        log_every=100,
        ckpt_every=30000,
        lambda_id=0.1,
        ckpt=None,
    )
    return {"model": model, "ema": ema, "opt": opt, "args": args}


def preim3d_checkpoint(
    preset: str = "small", seed: int = 4, *, generator_copy: dict | None = None, training_state: bool = False
) -> dict:
    """What PREIM3D's coach saves: the pSp `state_dict` (encoder, and the generator as `decoder.*`),
    `opts` (the run's options: numbers, numpy values, paths) and `latent_avg`; with `training_state`,
    also the step, the optimizer and the latent discriminator, as `--save_training_data` does."""
    encoder = randomize_(build_encoder(encoder_preset(preset, "WPlusEncoder")), seed)
    state_dict = {"encoder." + key: value for key, value in encoder.state_dict().items()}
    state_dict |= {"decoder." + key: value for key, value in (generator_copy or {}).items()}
    opts = {
        "exp_dir": "/experiments/preim3d_ffhq",
        "encoder_type": "WPlusEncoder",
        "stylegan_size": np.int64(256),
        "input_nc": 3,
        "batch_size": 4,
        "learning_rate": np.float64(1e-4),
        "optim_name": "ranger",
        "train_decoder": False,
        "start_from_latent_avg": True,
        "lpips_lambda": np.float32(0.8),
        "id_lambda": 0.1,
        "w_norm_lambda": 0.0,
        "camera_ranges": np.array([[-0.5, 0.5], [-0.3, 0.3]]),
        "stylegan_weights": Path("pretrained_models/ffhq512-128.pkl"),
        "checkpoint_path": None,
        "max_steps": 500000,
    }
    checkpoint = {"state_dict": state_dict, "opts": opts, "latent_avg": torch.randn(14, 512)}
    if training_state:
        encoder_weights = {key: value for key, value in state_dict.items() if key.startswith("encoder.")}
        checkpoint |= {
            "global_step": 80000,
            "best_val_loss": np.float64(0.0734),
            "optimizer": _adamw_state(encoder_weights, trained=4),
            "discriminator_state_dict": {"net.0.weight": torch.randn(64, 512), "net.0.bias": torch.zeros(64)},
            "discriminator_optimizer_state_dict": {
                "state": {},
                "param_groups": [{"lr": 2e-5, "params": [0, 1]}],
            },
        }
    return checkpoint


def identity_state_dict(seed: int = 5, *, counters: bool = True) -> dict[str, torch.Tensor]:
    """The IR-SE ArcFace weights; without `counters`, as files from old PyTorch (no num_batches_tracked)."""
    state = randomize_(IdentityEncoder(identity_preset("small")), seed).state_dict()
    return {key: value for key, value in state.items() if counters or not key.endswith("num_batches_tracked")}


def write_official_weights(directory: Path, fixtures_dir: Path) -> Path:
    """A weights folder of official-format files as training runs leave them (see each writer)."""
    directory.mkdir(parents=True, exist_ok=True)
    eg3d.write_torch_save(fixtures_dir, directory / "G_ema.pkl")
    torch.save(dit_checkpoint(fixtures_dir), directory / "instructpix2nerf.pt")
    torch.save(preim3d_checkpoint(training_state=True), directory / "preim3d.pt")
    torch.save(identity_state_dict(counters=False), directory / "model_ir_se50.pth")
    return directory


def official_weights(tmp_path_factory, fixtures_dir: Path) -> Path:
    """The tiny official weights folder, written once per test session (~300 MB, mostly the text tower)."""
    directory = tmp_path_factory.getbasetemp() / "official-tiny-weights"
    if not (directory / "complete").exists():
        write_official_weights(directory, fixtures_dir)
        (directory / "complete").touch()
    return directory
