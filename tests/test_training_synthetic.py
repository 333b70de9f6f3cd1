"""End to end on the synthetic world: `ip2n synth data` → `ip2n train --config configs/synthetic.yaml`."""

from pathlib import Path

import torch
from PIL import Image

from ip2n.checkpoints.editing_weights import load_dit
from ip2n.synthetic.world.generator import SyntheticHeadGenerator, synthetic_preset
from ip2n.training.checkpoint import load_checkpoint
from ip2n.training.config import load_config
from ip2n.training.models import build_frozen_networks
from ip2n.training.samples import CAPTION_HEIGHT, PADDING

REPO = Path(__file__).resolve().parents[1]
SYNTHETIC_CONFIG = REPO / "configs" / "synthetic.yaml"


def test_synthetic_config_uses_the_synthetic_generator_and_fitting_sizes():
    model = load_config(SYNTHETIC_CONFIG).model
    networks = build_frozen_networks(model, torch.device("cpu"))
    assert isinstance(networks.generator, SyntheticHeadGenerator)
    w_dim = synthetic_preset(model.generator).w_dim
    assert torch.equal(networks.latent_avg, networks.generator.backbone.mapping.w_avg[None])
    assert networks.latent_avg.shape == (1, 14, w_dim)
    dit = model.dit_config()
    assert (dit.in_channels, dit.out_channels, dit.context_dim) == (
        2 * w_dim,
        w_dim,
        networks.text_encoder.config.width,
    )
    codes = networks.encoder(torch.zeros(1, 3, networks.encoder_resolution, networks.encoder_resolution))
    assert codes.shape == (1, 14, w_dim)


def test_synth_data_then_train_writes_every_output(tmp_path, capsys):
    from ip2n.cli import main

    data, run = tmp_path / "synth", tmp_path / "run"
    assert (
        main(["synth", "data", "--out", str(data), "--pairs", "3", "--size", "64", "--instructions", "2"])
        == 0
    )
    assert (
        main(
            [
                "train",
                "--config",
                str(SYNTHETIC_CONFIG),
                "--data",
                str(data),
                "-o",
                str(run),
                "--stop-after",
                "2",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.strip().endswith("dit.safetensors")

    state = load_checkpoint(run / "checkpoint.pt")
    assert state.step == 2 and state.config["model"]["generator_family"] == "synthetic"
    dit = load_dit(run / "dit.safetensors")
    assert dit.config == load_config(SYNTHETIC_CONFIG).model.dit_config()
    assert (run / "loss.png").is_file() and "step 2" in (run / "train.log").read_text()
    side = synthetic_preset("synthetic").img_resolution
    with Image.open(run / "samples" / "step_000002.png") as grid:  # 3 pairs → 3 rows
        assert grid.size == (3 * side + 2 * PADDING, 3 * (side + CAPTION_HEIGHT) + 2 * PADDING)
