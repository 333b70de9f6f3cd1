"""One W+ latent as a 3-D scene: tri-planes synthesized once, then any camera, orbit or mesh.

This is the rendering API the CLI, the edit pipeline and the web app share. The tri-planes are the
expensive part (the StyleGAN2 backbone); every view after the first only pays for volume rendering
and super-resolution. Angles are in degrees (`yaw_deg`, `pitch_deg`); camera labels (N, 25) follow
docs/cameras.md.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from ip2n.export.images import to_uint8_frames
from ip2n.export.mesh import DEFAULT_DENSITY_LEVEL, marching_cubes
from ip2n.generator.eg3d import TriPlaneGenerator
from ip2n.heap import release_free_heap
from ip2n.rendering.cameras import ORBIT_PITCH_RANGE, ORBIT_YAW_RANGE, camera_labels, orbit_cameras

if TYPE_CHECKING:
    from ip2n.synthetic.world.generator import SyntheticHeadGenerator


class LatentScene:
    """Renders a single latent `ws` (1, num_ws, w_dim) from any camera; tri-planes are cached."""

    def __init__(self, generator: TriPlaneGenerator | SyntheticHeadGenerator, ws: torch.Tensor) -> None:
        if ws.ndim == 2:
            ws = ws[None]
        if ws.shape[0] != 1 or ws.shape[1:] != (generator.num_ws, generator.config.w_dim):
            raise ValueError(
                f"expected one W+ latent of shape (1, {generator.num_ws}, {generator.config.w_dim}), "
                f"got {tuple(ws.shape)}"
            )
        self.generator = generator
        self.ws = ws.to(generator.backbone.mapping.w_avg.device, torch.float32)
        self._planes: torch.Tensor | None = None

    @property
    def planes(self) -> torch.Tensor:
        """Tri-planes (1, 3, C, H, W), synthesized on first use."""
        if self._planes is None:
            with torch.inference_mode():
                self._planes = self.generator.synthesize_planes(self.ws)
        return self._planes

    def render(
        self,
        cameras: torch.Tensor,
        *,
        superresolution: bool = True,
        progress: bool = False,
        keys: Sequence[str] | None = None,
        description: str = "rendering views",
    ) -> dict[str, torch.Tensor]:
        """Render cameras (N, 25) one at a time → dict of (N, ...) CPU tensors (see `render_planes`).

        `keys` keeps only those outputs: a long orbit that keeps every feature map and depth costs
        hundreds of MB it never uses. `progress` shows a bar labelled `description` (stderr).
        """
        collected: dict[str, torch.Tensor] = {}
        for index, outputs in enumerate(self._render_each(cameras, superresolution, progress, description)):
            unknown = set(keys or ()) - set(outputs)
            if unknown:
                raise ValueError(f"unknown render output(s) {sorted(unknown)}; available: {sorted(outputs)}")
            for key in keys if keys is not None else outputs:
                value = outputs[key]
                if (
                    key not in collected
                ):  # preallocated, so that no list of frames is concatenated (2× memory)
                    collected[key] = torch.empty((len(cameras), *value.shape[1:]), dtype=value.dtype)
                collected[key][index] = value[0]
        return collected

    def view(
        self,
        *,
        yaw_deg: float = 0.0,
        pitch_deg: float = 0.0,
        yaw: float | None = None,
        pitch: float | None = None,
        **options,
    ) -> dict[str, torch.Tensor]:
        """One view at `yaw_deg` / `pitch_deg` degrees from the frontal view (0, 0) → dict of (1, ...)
        tensors. Positive yaw: the camera moves to the subject's left; positive pitch: it moves down
        and looks up at the face (docs/cameras.md). `yaw` / `pitch` (radians) are deprecated."""
        yaw_radians, pitch_radians = radians_of(yaw_deg, pitch_deg, yaw, pitch)
        return self.render(camera_labels(yaw_radians, pitch_radians), **options)

    def orbit(
        self,
        n_frames: int,
        *,
        yaw_range_deg: float | None = None,
        pitch_range_deg: float | None = None,
        progress: bool = True,
        superresolution: bool = True,
    ) -> torch.Tensor:
        """Frames (n_frames, 3, H, W) in [-1, 1] along a closed orbit around the face: yaw swings by
        ±`yaw_range_deg`, pitch by ±`pitch_range_deg` (default: EG3D's orbit, ±0.35 and ±0.25 radians,
        about 20° and 14°)."""
        key = "image" if superresolution else "image_raw"
        cameras = orbit_cameras(n_frames, *_orbit_ranges(yaw_range_deg, pitch_range_deg))
        return self.render(
            cameras,
            superresolution=superresolution,
            progress=progress,
            keys=(key,),
            description="orbit frames",
        )[key]

    def orbit_video_frames(
        self,
        n_frames: int,
        *,
        yaw_range_deg: float | None = None,
        pitch_range_deg: float | None = None,
        progress: bool = True,
    ) -> np.ndarray:
        """The orbit as video frames (n_frames, H, W, 3) uint8, each converted as soon as it is rendered.

        A quarter of the memory of `orbit`'s float frames, and no full-length float temporaries.
        """
        cameras = orbit_cameras(n_frames, *_orbit_ranges(yaw_range_deg, pitch_range_deg))
        frames: np.ndarray | None = None
        for index, outputs in enumerate(self._render_each(cameras, True, progress, "orbit frames")):
            frame = to_uint8_frames(outputs["image"])[0]
            if frames is None:
                frames = np.empty((n_frames, *frame.shape), dtype=np.uint8)
            frames[index] = frame
        assert frames is not None, "orbit_cameras returns at least one camera"
        return frames

    def _render_each(
        self, cameras: torch.Tensor, superresolution: bool, progress: bool, description: str
    ) -> Iterator[dict]:
        """Outputs of one camera at a time, as (1, ...) CPU tensors."""
        cameras = cameras.to(self.ws.device)
        for camera in tqdm(cameras, desc=description, unit="view", disable=not progress, file=sys.stderr):
            with torch.inference_mode():
                outputs = self.generator.render_planes(
                    self.planes, self.ws, camera[None], superresolution=superresolution
                )
            # The view's feature maps are freed now; handing their pages back keeps them out of the
            # next stage's peak (`ip2n.heap`).
            release_free_heap()
            yield {key: value.cpu() for key, value in outputs.items()}

    def density_grid(self, resolution: int = 256) -> np.ndarray:
        """Raw decoder density on a resolution³ lattice over the tri-plane box → (R, R, R) indexed [z, y, x].

        Lattice points are `ip2n.export.mesh.grid_points(resolution, box_warp)`.
        """
        with torch.inference_mode():
            return self.generator.density_lattice(self.planes, resolution).cpu().numpy()

    def mesh(
        self, resolution: int = 256, level: float = DEFAULT_DENSITY_LEVEL, with_colors: bool = True
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Marching-cubes surface of the density → (vertices (V, 3), faces (F, 3),
        colours (V, 3) in [0, 1])."""
        box_size = self.generator.config.rendering.box_warp
        vertices, faces = marching_cubes(self.density_grid(resolution), box_size, level)
        return vertices, faces, self.vertex_colors(vertices) if with_colors else None

    def vertex_colors(self, vertices: np.ndarray) -> np.ndarray:
        """Colours (V, 3) in [0, 1] at mesh vertices (V, 3)."""
        # The first 3 decoder features are the colour the raw image composites (before ·2 − 1).
        points = torch.from_numpy(vertices).to(self.ws.device)
        with torch.inference_mode():
            rgb = self.generator.query_planes(self.planes, points[None])["rgb"][0, :, :3]
        return rgb.clamp(0, 1).cpu().numpy()


def radians_of(
    yaw_deg: float, pitch_deg: float, yaw: float | None = None, pitch: float | None = None
) -> tuple[float, float]:
    """(yaw, pitch) in radians from the degree arguments, or from the deprecated radian ones."""
    if yaw is not None or pitch is not None:
        warnings.warn(
            "yaw= and pitch= (radians) are deprecated: pass yaw_deg= and pitch_deg= in degrees",
            DeprecationWarning,
            stacklevel=3,
        )
        if yaw_deg or pitch_deg:
            raise TypeError(
                "pass the angles in degrees (yaw_deg, pitch_deg) or radians (yaw, pitch), not both"
            )
        return float(yaw or 0.0), float(pitch or 0.0)
    return math.radians(yaw_deg), math.radians(pitch_deg)


def _orbit_ranges(yaw_range_deg: float | None, pitch_range_deg: float | None) -> tuple[float, float]:
    yaw = ORBIT_YAW_RANGE if yaw_range_deg is None else math.radians(yaw_range_deg)
    pitch = ORBIT_PITCH_RANGE if pitch_range_deg is None else math.radians(pitch_range_deg)
    return yaw, pitch
