"""Training triplets in the official on-disk layout, and the tiny frozen networks that encode them."""

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ip2n.rendering.cameras import frontal_camera
from ip2n.training.config import ModelConfig

TINY_MODELS = ModelConfig(
    dit="tiny",
    dit_overrides={"context_dim": 8},
    text_encoder="tiny",
    encoder="small",
    encoder_type="WPlusEncoder",
    identity="small",
    generator="eg3d-small",
    weights_dir=None,
)


def write_triplets(root: Path, instructions: dict[str, str], seed: int = 0, size: int = 32) -> Path:
    """Pair folders `<name>/<name>_{0,1}.png` + `<name>.txt` (text given per name) and dataset.json."""
    rng = np.random.default_rng(seed)
    labels = []
    for name, text in instructions.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for k in (0, 1):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
                folder / f"{name}_{k}.png"
            )
        (folder / f"{name}.txt").write_text(text, encoding="utf-8")
        labels.append([f"{name}/{name}_0.png", frontal_camera()[0].tolist()])
    (root / "dataset.json").write_text(json.dumps({"labels": labels}), encoding="utf-8")
    return root
