"""Max-abs errors of ip2n's EG3D against the official code's outputs in tests/fixtures/eg3d_small.

    python benchmarks/eg3d_parity.py            # a markdown table, as in docs/results.md

The tests assert bounds (tests/test_eg3d_generator.py, tests/test_cameras.py); this prints the
figures themselves, with the share of ray-direction components that differ from the official ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from ip2n.generator.config import EG3DConfig
from ip2n.generator.eg3d import TriPlaneGenerator
from ip2n.rendering.cameras import unpack_camera_label
from ip2n.rendering.rays import ray_bundle

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "eg3d_small"


def main() -> None:
    kwargs = json.loads((FIXTURES / "config.json").read_text())["init_kwargs"]
    generator = TriPlaneGenerator(EG3DConfig.from_official(kwargs, 32)).eval()
    generator.load_state_dict(load_file(FIXTURES / "state_dict.safetensors"))
    io = load_file(FIXTURES / "io.safetensors")
    errors: dict[str, float] = {}
    with torch.no_grad():
        errors["mapping (ws)"] = _error(generator.mapping(io["z"], io["c"]), io["ws"])
        rendered = generator.synthesis(io["ws"], io["c"])
        for name in ("image", "image_raw", "image_depth", "feature_image"):
            errors[name] = _error(rendered[name], io[name])
        swapped = generator.synthesis(io["ws_trunc07"], io["c"][[1, 0]])["image"]
        errors["image, truncated, cameras swapped"] = _error(swapped, io["image_trunc07_swapped_cams"])
        mixed = generator.sample_mixed(io["points"], io["ws"])
        errors["density query sigma"] = _error(mixed["sigma"], io["sigma"])
        errors["density query features"] = _error(mixed["rgb"], io["rgb_features"])
    cam2world, intrinsics = unpack_camera_label(io["c"])
    _origins, directions = ray_bundle(cam2world, intrinsics, 32)
    errors["ray directions"] = _error(directions, io["ray_directions"])
    differing = (directions != io["ray_directions"]).float().mean().item()

    print("| output | max abs error |\n| --- | --- |")
    for name, error in errors.items():
        print(f"| {name} | {error:.2g} |")
    print(f"\nray direction components that differ from the official ones: {differing:.1%}")


def _error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return (actual - expected).abs().max().item()


if __name__ == "__main__":
    main()
