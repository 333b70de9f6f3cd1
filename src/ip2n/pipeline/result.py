"""`EditResult`: the source and edited W+ latents of one edit, rendered on demand and saved as files.

Rendering goes through `LatentScene`, so the tri-planes of each latent are synthesized once and
every further view, orbit frame or mesh query only pays for volume rendering. `save` writes the
files the `ip2n edit` command promises, each atomically, `result.json` last: a folder holding
`result.json` is complete, and a failed save removes what it had written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import platform
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ip2n import __version__
from ip2n.atomic import atomic_path, write_text_atomic
from ip2n.export.images import depth_to_pil, make_grid, save_image, to_pil
from ip2n.export.mesh import DEFAULT_DENSITY_LEVEL, MESH_FORMATS, marching_cubes, save_mesh
from ip2n.export.video import VIDEO_FORMATS, write_video
from ip2n.generator.eg3d import TriPlaneGenerator
from ip2n.rendering.cameras import camera_labels
from ip2n.scene import LatentScene

if TYPE_CHECKING:
    from ip2n.synthetic.generator import SyntheticHeadGenerator

Which = Literal["source", "edited"]

# The paper evaluates 4 views with yaw in [−30°, 30°]; views.png uses the same spread.
VIEW_YAW_RANGE = math.radians(30)
DEFAULT_VIEWS = 4
DEFAULT_ORBIT_FRAMES = 60
DEFAULT_FPS = 24
DEFAULT_MESH_RESOLUTION = 256
MIN_MESH_RESOLUTION = 16
RESULT_NAME = "result.json"


@dataclass(frozen=True)
class EditSettings:
    """Everything that determined an edit; recorded in result.json."""

    instructions: tuple[str, ...]  # as the user gave them
    prompts: tuple[str, ...]  # what the text encoder saw: one combined prompt, or one per chained step
    num_inference_steps: int  # length of the DDIM schedule (the edit runs int(strength · steps) of them)
    strength: float
    guidance_scale: float  # text guidance s_T
    image_guidance_scale: float  # image guidance s_I
    identity_conditioning: bool
    chain: bool
    align: bool
    token_position_randomization: bool
    seed: int  # initial seed of the torch.Generator the noise came from

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class EditResult:
    """One edit of one portrait.

    - `source_latent`, `edited_latent`: absolute W+ latents (1, num_ws, w_dim) (w_avg added), float32.
    - `input_image`: the RGB image the encoder saw (the aligned crop when alignment was used).
    - `input_camera`: (25,) camera label estimated by alignment, else None.
    - `notes`: things the user should know (e.g. which of several faces was used).
    - `timings`: seconds per pipeline step.
    Views are rendered on first use; images are (N, 3, H, W) in [-1, 1], depth (N, 1, h, w).
    """

    def __init__(
        self,
        generator: TriPlaneGenerator | SyntheticHeadGenerator,
        source_latent: torch.Tensor,
        edited_latent: torch.Tensor,
        settings: EditSettings,
        *,
        input_image: Image.Image,
        input_camera: torch.Tensor | None = None,
        notes: Sequence[str] = (),
        timings: Mapping[str, float] | None = None,
        model: str = "",
    ) -> None:
        self.generator = generator
        self.source_latent = source_latent
        self.edited_latent = edited_latent
        self.settings = settings
        self.input_image = input_image
        self.input_camera = input_camera
        self.notes = tuple(notes)
        self.timings = dict(timings or {})
        self.model = model
        self._scenes: dict[str, LatentScene] = {}
        self._frontal: dict[str, dict[str, torch.Tensor]] = {}

    def scene(self, which: Which = "edited") -> LatentScene:
        """The `LatentScene` of the source or edited latent (tri-planes cached inside)."""
        if which not in self._scenes:
            latent = {"source": self.source_latent, "edited": self.edited_latent}[which]
            self._scenes[which] = LatentScene(self.generator, latent)
        return self._scenes[which]

    def render(self, cameras: torch.Tensor, which: Which = "edited", **options) -> dict[str, torch.Tensor]:
        """Render camera labels (N, 25) → `LatentScene.render` outputs, (N, ...) CPU tensors."""
        return self.scene(which).render(cameras, **options)

    def view(self, yaw: float = 0.0, pitch: float = 0.0, which: Which = "edited") -> dict[str, torch.Tensor]:
        """One view at yaw/pitch radians from the frontal view (the frontal view is cached)."""
        if yaw == 0.0 and pitch == 0.0:
            if which not in self._frontal:
                self._frontal[which] = self.scene(which).view(0.0, 0.0)
            return self._frontal[which]
        return self.scene(which).view(yaw, pitch)

    def image(self, which: Which = "edited") -> Image.Image:
        """The frontal view as a PIL image."""
        return to_pil(self.view(which=which)["image"][0])

    def views(self, count: int, which: Which = "edited") -> torch.Tensor:
        """`count` views spread over yaw −30° … 30° at pitch 0 → images (count, 3, H, W) in [-1, 1]."""
        yaws = torch.linspace(-VIEW_YAW_RANGE, VIEW_YAW_RANGE, count) if count > 1 else torch.zeros(1)
        return self.render(camera_labels(yaws, torch.zeros_like(yaws)), which)["image"]

    def save(
        self,
        out_dir: str | os.PathLike,
        *,
        views: int = DEFAULT_VIEWS,
        video: bool = False,
        video_frames: int = DEFAULT_ORBIT_FRAMES,
        video_format: str = "mp4",
        fps: int = DEFAULT_FPS,
        mesh: str | None = None,
        mesh_resolution: int = DEFAULT_MESH_RESOLUTION,
        mesh_level: float | str = DEFAULT_DENSITY_LEVEL,
        metadata: Mapping[str, Any] | None = None,
    ) -> list[Path]:
        """Write the result files into `out_dir` and return their paths (result.json last).

        Files: source.png (frontal reconstruction of the input), edited.png (frontal edit),
        depth.png (its depth, near = bright), edited_latent.npy ((1, num_ws, w_dim) float32),
        views.png (`views` edited views, yaw −30° … 30°; not written for views=0), orbit.mp4 (with
        `video`: `video_frames` frames), mesh.<ply|obj|glb> (with `mesh`: marching cubes of the
        density on a `mesh_resolution`³ grid at `mesh_level`, or "auto" = the middle of the density
        range), result.json (settings, seed, versions, timings, `metadata`). Every file is written
        atomically; if anything fails, the files written so far are removed again.
        """
        _check_save_options(views, video, video_frames, video_format, fps, mesh, mesh_resolution, mesh_level)
        out_dir = Path(out_dir)
        if out_dir.exists() and not out_dir.is_dir():
            raise ValueError(f"{out_dir} exists and is not a folder; choose another output folder")
        created = not out_dir.exists()
        out_dir.mkdir(parents=True, exist_ok=True)
        timings: dict[str, float] = {}
        written: list[Path] = []
        try:
            self._write_files(
                out_dir,
                written,
                timings,
                views,
                video,
                video_frames,
                video_format,
                fps,
                mesh,
                mesh_resolution,
                mesh_level,
            )
            written.append(out_dir / RESULT_NAME)
            outputs = {
                "views": views,
                "video": video,
                "video_frames": video_frames if video else None,
                "fps": fps if video else None,
                "mesh": mesh,
                "mesh_resolution": mesh_resolution if mesh else None,
                "mesh_level": timings.pop("mesh_level", None),
            }
            record = self._record(outputs, timings, written, metadata)
            write_text_atomic(written[-1], json.dumps(record, indent=2) + "\n")
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            if created and not any(out_dir.iterdir()):
                out_dir.rmdir()
            raise
        return written

    def _write_files(
        self,
        out_dir: Path,
        written: list[Path],
        timings: dict[str, float],
        views: int,
        video: bool,
        video_frames: int,
        video_format: str,
        fps: int,
        mesh: str | None,
        mesh_resolution: int,
        mesh_level: float | str,
    ) -> None:
        with timed(timings, "render_source"):
            source = self.view(which="source")
        with timed(timings, "render_edited"):
            edited = self.view(which="edited")
        for name, image in (
            ("source.png", to_pil(source["image"][0])),
            ("edited.png", to_pil(edited["image"][0])),
            ("depth.png", depth_to_pil(edited["image_depth"][0])),
        ):
            written.append(out_dir / name)
            save_image(image, written[-1])
        written.append(out_dir / "edited_latent.npy")
        with atomic_path(written[-1]) as tmp, open(tmp, "wb") as handle:
            np.save(handle, self.edited_latent.detach().cpu().numpy().astype(np.float32))
        if views > 0:
            with timed(timings, "views"):
                images = self.views(views)
            written.append(out_dir / "views.png")
            save_image(make_grid([to_pil(image) for image in images], columns=views), written[-1])
        if video:
            with timed(timings, "orbit"):
                frames = self.scene("edited").orbit_video_frames(video_frames, progress=False)
            written.append(out_dir / f"orbit.{video_format}")
            write_video(frames, written[-1], fps=fps)
        if mesh:
            with timed(timings, "mesh"):
                vertices, faces, colors, level = self._mesh(mesh_resolution, mesh_level)
            timings["mesh_level"] = level
            written.append(out_dir / f"mesh.{mesh}")
            save_mesh(written[-1], vertices, faces, colors)

    def _mesh(self, resolution: int, level: float | str) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        scene = self.scene("edited")
        density = scene.density_grid(resolution)
        iso_level = float((density.min() + density.max()) / 2) if level == "auto" else float(level)
        vertices, faces = marching_cubes(density, self.generator.config.rendering.box_warp, iso_level)
        return vertices, faces, scene.vertex_colors(vertices), iso_level

    def _record(
        self,
        outputs: dict[str, Any],
        save_timings: dict[str, float],
        written: list[Path],
        metadata: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        camera = (
            None if self.input_camera is None else [float(value) for value in self.input_camera.reshape(-1)]
        )
        return {
            **software_versions(),
            "model": self.model,
            **dict(metadata or {}),
            "settings": self.settings.to_dict(),
            "seed": self.settings.seed,
            "input_image_size": list(self.input_image.size),
            "input_camera": camera,
            "notes": list(self.notes),
            "outputs": outputs,
            "seconds": {**self.timings, **save_timings},
            "files": [path.name for path in written],
        }


def _check_save_options(
    views: int,
    video: bool,
    video_frames: int,
    video_format: str,
    fps: int,
    mesh: str | None,
    mesh_resolution: int,
    mesh_level: float | str,
) -> None:
    """Refuse bad output options before anything is rendered or written."""
    if views < 0:
        raise ValueError(f"views must be 0 or more, got {views}")
    if video and video_frames < 2:
        raise ValueError(f"an orbit video needs at least 2 frames, got {video_frames}")
    if video and video_format not in VIDEO_FORMATS:
        raise ValueError(f"video format must be one of {', '.join(VIDEO_FORMATS)}, got {video_format!r}")
    if video and fps < 1:
        raise ValueError(f"fps must be at least 1, got {fps}")
    if mesh is not None and mesh not in MESH_FORMATS:
        raise ValueError(f"mesh format must be one of {', '.join(MESH_FORMATS)}, got {mesh!r}")
    if mesh and mesh_resolution < MIN_MESH_RESOLUTION:
        raise ValueError(f"mesh resolution must be at least {MIN_MESH_RESOLUTION}, got {mesh_resolution}")
    if mesh and mesh_level != "auto":
        try:
            float(mesh_level)
        except (TypeError, ValueError):
            raise ValueError(f"mesh level must be a number or 'auto', got {mesh_level!r}") from None


@contextlib.contextmanager
def timed(timings: dict[str, float], key: str) -> Iterator[None]:
    """Add the seconds spent in the block to `timings[key]` (rounded to ms)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = round(timings.get(key, 0.0) + time.perf_counter() - start, 3)


def software_versions() -> dict[str, str]:
    """Versions that decide the numbers of a result (recorded in every result.json)."""
    import open_clip
    import PIL

    return {
        "ip2n_version": __version__,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "pillow_version": PIL.__version__,
        "open_clip_version": open_clip.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
    }


# --- comparison grids (strength / guidance sweeps) --------------------------------------------------------

_SWEPT = (("strength", "strength"), ("guidance_scale", "text"), ("image_guidance_scale", "image"))


def comparison_grid(results: Sequence[EditResult], columns: int | None = None) -> Image.Image:
    """Frontal views side by side: the reconstruction of the input, then each result, captioned with
    the settings that differ between the results (e.g. "strength 0.2")."""
    if not results:
        raise ValueError("a comparison grid needs at least one result")
    varying = [
        (field, label)
        for field, label in _SWEPT
        if len({getattr(result.settings, field) for result in results}) > 1
    ]
    tiles = [_captioned(results[0].image("source"), "reconstruction")]
    for result in results:
        caption = (
            ", ".join(f"{label} {getattr(result.settings, field):g}" for field, label in varying) or "edit"
        )
        tiles.append(_captioned(result.image("edited"), caption))
    return make_grid(tiles, columns=columns or len(tiles))


def _captioned(image: Image.Image, caption: str) -> Image.Image:
    font_size = max(10, image.height // 16)
    band = font_size + font_size // 2
    tile = Image.new("RGB", (image.width, image.height + band), "white")
    tile.paste(image, (0, 0))
    font = ImageFont.load_default(size=font_size)
    ImageDraw.Draw(tile).text((4, image.height + font_size // 4), caption, fill="black", font=font)
    return tile
