"""EG3D generator configuration: one frozen dataclass, named presets, and the official kwargs mapping.

`EG3DConfig.from_official(init_kwargs, neural_rendering_resolution)` reads the init kwargs stored in
an official pickle (see fixtures/manifests/eg3d_ffhq512_generator.json) so users never hand-copy them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, cast

from ip2n.limits import config_from_dict
from ip2n.rendering.volume import RenderingConfig

# Official super-resolution class name → our module name (and its upsampling factor).
SUPERRESOLUTION_CLASSES = {
    "SuperresolutionHybrid2X": "hybrid2x",
    "SuperresolutionHybrid4X": "hybrid4x",
    "SuperresolutionHybrid8XDC": "hybrid8xdc",
}
SUPERRESOLUTION_OUTPUT = {"hybrid2x": 128, "hybrid4x": 256, "hybrid8xdc": 512}


@dataclass(frozen=True)
class EG3DConfig:
    """Everything needed to build a `TriPlaneGenerator` (sizes, super-resolution, rendering)."""

    z_dim: int = 512
    w_dim: int = 512
    c_dim: int = 25
    mapping_layers: int = 2
    mapping_hidden: int | None = None  # None → w_dim, as in StyleGAN2
    c_scale: float = 1.0
    channel_base: int = 32768
    channel_max: int = 512
    plane_resolution: int = 256
    plane_channels: int = 32
    img_resolution: int = 512
    neural_rendering_resolution: int = 128
    superresolution: str = "hybrid8xdc"
    sr_antialias: bool = True
    # The official SR layers are "fp16" layers (sr_num_fp16_res > 0) and therefore clamp at 256,
    # even when they run in fp32 on a CPU.
    sr_conv_clamp: float | None = 256.0
    sr_noise_mode: str = "none"
    decoder_hidden: int = 64
    decoder_lr_multiplier: float = 1.0
    avg_camera_radius: float = 2.7
    avg_camera_pivot: tuple[float, float, float] = (0.0, 0.0, 0.2)
    rendering: RenderingConfig = field(
        default_factory=lambda: RenderingConfig(
            depth_resolution=48, depth_resolution_importance=48, ray_start=2.25, ray_end=3.3, box_warp=1.0
        )
    )

    def __post_init__(self) -> None:
        if self.superresolution not in SUPERRESOLUTION_OUTPUT:
            raise ValueError(
                f"unknown super-resolution '{self.superresolution}'; known: {sorted(SUPERRESOLUTION_OUTPUT)}"
            )
        if SUPERRESOLUTION_OUTPUT[self.superresolution] != self.img_resolution:
            raise ValueError(
                f"super-resolution '{self.superresolution}' produces "
                f"{SUPERRESOLUTION_OUTPUT[self.superresolution]}² images, "
                f"but img_resolution is {self.img_resolution}"
            )

    @property
    def num_ws(self) -> int:
        """Number of W+ style vectors of the tri-plane backbone (14 for 256² planes)."""
        return 2 * (self.plane_resolution.bit_length() - 1) - 2

    @classmethod
    def from_official(
        cls, init_kwargs: dict[str, Any], neural_rendering_resolution: int | None = None
    ) -> EG3DConfig:
        """Build from an official `TriPlaneGenerator` init-kwargs dict (EasyDicts given as dicts).

        `sr_kwargs` channel widths are ignored: the official super-resolution classes hard-code theirs.
        """
        rendering_kwargs = dict(init_kwargs["rendering_kwargs"])
        sr_class = rendering_kwargs["superresolution_module"].rsplit(".", 1)[-1]
        if sr_class not in SUPERRESOLUTION_CLASSES:
            raise ValueError(
                f"unsupported super-resolution module '{sr_class}'; known: {sorted(SUPERRESOLUTION_CLASSES)}"
            )
        mapping_kwargs = dict(init_kwargs.get("mapping_kwargs", {}))
        return cls(
            z_dim=init_kwargs["z_dim"],
            w_dim=init_kwargs["w_dim"],
            c_dim=init_kwargs["c_dim"],
            mapping_layers=mapping_kwargs.get("num_layers", 8),
            mapping_hidden=mapping_kwargs.get("layer_features"),
            c_scale=float(rendering_kwargs.get("c_scale", 1.0)),
            channel_base=init_kwargs.get("channel_base", 32768),
            channel_max=init_kwargs.get("channel_max", 512),
            img_resolution=init_kwargs["img_resolution"],
            # The constructor sets 64; the 128 fine-tune leaves 128 on G_ema as a pickled attribute.
            neural_rendering_resolution=neural_rendering_resolution or 64,
            superresolution=SUPERRESOLUTION_CLASSES[sr_class],
            sr_antialias=bool(rendering_kwargs.get("sr_antialias", True)),
            sr_conv_clamp=256.0
            if init_kwargs.get("sr_num_fp16_res", 0) > 0
            else init_kwargs.get("conv_clamp"),
            sr_noise_mode=rendering_kwargs.get("superresolution_noise_mode", "none"),
            decoder_lr_multiplier=float(rendering_kwargs.get("decoder_lr_mul", 1.0)),
            avg_camera_radius=float(rendering_kwargs.get("avg_camera_radius", 2.7)),
            # A 3-vector (x, y, z) in every official rendering_kwargs.
            avg_camera_pivot=cast(
                "tuple[float, float, float]",
                tuple(float(v) for v in rendering_kwargs.get("avg_camera_pivot", (0, 0, 0.2))),
            ),
            rendering=RenderingConfig.from_official(rendering_kwargs),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> EG3DConfig:
        """The config stored in a weights file, every value checked (`ip2n.limits.config_from_dict`)."""
        return config_from_dict(cls, data)


def _ffhq512() -> EG3DConfig:
    return EG3DConfig()


def _fixture_small() -> EG3DConfig:
    """The scaled-down official generator of fixtures/eg3d_small (used by the parity tests)."""
    return EG3DConfig(
        mapping_hidden=64,
        channel_base=1024,
        channel_max=16,
        img_resolution=128,
        neural_rendering_resolution=32,
        superresolution="hybrid2x",
        rendering=RenderingConfig(
            depth_resolution=12, depth_resolution_importance=12, ray_start=2.25, ray_end=3.3, box_warp=1.0
        ),
    )


PRESETS = {"ffhq512": _ffhq512, "eg3d-small": _fixture_small}


def preset(name: str) -> EG3DConfig:
    """Named generator configuration ("ffhq512", "eg3d-small")."""
    if name not in PRESETS:
        raise ValueError(f"unknown generator preset '{name}'; known presets: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]()
