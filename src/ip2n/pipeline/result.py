"""`EditResult`: the source and edited W+ latents of one edit, rendered on demand and saved as files.

Rendering goes through `LatentScene`, so the tri-planes of each latent are synthesized once and
every further view, orbit frame or mesh query only pays for volume rendering. `save` writes the
files the `ip2n edit` command promises, each atomically, `result.json` last: a folder holding
`result.json` is complete, and a failed save removes what it had written. Angles are in degrees.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import platform
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ip2n.atomic import atomic_path, write_text_atomic
from ip2n.defaults import (
    DEFAULT_DENSITY_LEVEL,
    DEFAULT_FPS,
    DEFAULT_MESH_RESOLUTION,
    DEFAULT_ORBIT_FRAMES,
    DEFAULT_VIEWS,
    MESH_FORMATS,
    MIN_MESH_RESOLUTION,
)
from ip2n.export.images import depth_to_pil, make_grid, save_image, to_pil
from ip2n.export.mesh import marching_cubes, save_mesh
from ip2n.export.video import VIDEO_FORMATS, write_video
from ip2n.generator.eg3d import TriPlaneGenerator
from ip2n.limits import MAX_FPS, MAX_MESH_RESOLUTION, MAX_VIDEO_FRAMES, MAX_VIEWS
from ip2n.progress import stage_bar
from ip2n.rendering.cameras import camera_labels
from ip2n.scene import LatentScene, radians_of
from ip2n.version import __version__

if TYPE_CHECKING:
    from ip2n.synthetic.world.generator import SyntheticHeadGenerator

Which = Literal["source", "edited"]
ViewsAs = Literal["grid", "files"]

# The paper evaluates 4 views with yaw in [−30°, 30°]; views.png uses the same spread.
VIEW_YAW_RANGE_DEG = 30.0
VIEW_YAW_RANGE = math.radians(VIEW_YAW_RANGE_DEG)
RESULT_NAME = "result.json"
CROP_NAME = "crop.png"
LATENT_NAME = "edited_latent.npy"


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
    - `notes`: things the user should know (e.g. which of several faces was used, or that the result
      is not an edit of the input).
    - `outside_world`: what a model of the synthetic world was run on outside its world, with the
      caller's opt-in: "image" and/or "instruction" (empty for an ordinary edit).
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
        world_model: bool = False,
        outside_world: Sequence[str] = (),
        generator_source: Mapping[str, str] | None = None,
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
        self.world_model = world_model
        self.outside_world = tuple(outside_world)
        self.generator_source = dict(generator_source or {})
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

    def view(
        self,
        *,
        yaw_deg: float = 0.0,
        pitch_deg: float = 0.0,
        which: Which = "edited",
        yaw: float | None = None,
        pitch: float | None = None,
    ) -> dict[str, torch.Tensor]:
        """One view at `yaw_deg` / `pitch_deg` degrees from the frontal view, as `ip2n render --yaw
        --pitch` (the frontal view is cached). `yaw` / `pitch` in radians are deprecated."""
        yaw_radians, pitch_radians = radians_of(yaw_deg, pitch_deg, yaw, pitch)
        if yaw_radians == 0.0 and pitch_radians == 0.0:
            if which not in self._frontal:
                self._frontal[which] = self.scene(which).view()
            return self._frontal[which]
        return self.scene(which).render(camera_labels(yaw_radians, pitch_radians))

    def image(self, which: Which = "edited", *, marked: bool = False) -> Image.Image:
        """The frontal view as a PIL image. `marked`: a model of the synthetic world marks it as a head
        of its world (as `save` marks source.png and edited.png), so that it can be edited again."""
        image = to_pil(self.view(which=which)["image"][0])
        return self._marked(image, which) if marked else image

    def views(self, count: int, which: Which = "edited", *, progress: bool = False) -> torch.Tensor:
        """`count` views spread over yaw −30° … 30° at pitch 0 → images (count, 3, H, W) in [-1, 1]."""
        yaws = torch.linspace(-VIEW_YAW_RANGE, VIEW_YAW_RANGE, count) if count > 1 else torch.zeros(1)
        cameras = camera_labels(yaws, torch.zeros_like(yaws))
        return self.render(cameras, which, progress=progress, description="views", keys=("image",))["image"]

    def save(
        self,
        out_dir: str | os.PathLike,
        *,
        views: int = DEFAULT_VIEWS,
        views_as: ViewsAs = "grid",
        video: bool = False,
        video_frames: int = DEFAULT_ORBIT_FRAMES,
        video_format: str = "mp4",
        fps: int = DEFAULT_FPS,
        mesh: str | None = None,
        mesh_resolution: int = DEFAULT_MESH_RESOLUTION,
        mesh_level: float | str = DEFAULT_DENSITY_LEVEL,
        crop: bool | None = None,
        metadata: Mapping[str, Any] | None = None,
        progress: bool = False,
        on_stage: Callable[[str], None] | None = None,
    ) -> list[Path]:
        """Write the result files into `out_dir` and return their paths (result.json last).

        Files: crop.png (the image the encoder saw: the aligned crop; written when `crop`, by default
        when the face was aligned), source.png (frontal reconstruction of the input), edited.png
        (frontal edit), depth.png (its depth, near = bright), edited_latent.npy ((1, num_ws, w_dim)
        float32), `views` edited views over yaw −30° … 30° — views.png, a grid (`views_as="grid"`), or
        view_0.png … (`"files"`); none for views=0 —, orbit.mp4 (with `video`: `video_frames`
        frames), mesh.<ply|obj|glb> (with `mesh`: marching cubes of the density on a
        `mesh_resolution`³ grid at `mesh_level`, or "auto" = the middle of the density range),
        result.json (settings, seed, versions, timings, notes, the generator the latent belongs to,
        `metadata`). A model of the synthetic world marks its renders (source, edited, views) as
        heads of its world (`ip2n.synthetic.world.marks`), so that they can be edited again.

        Every file is written atomically; if anything fails, the files written so far are removed
        again. `progress` shows a bar per stage (stderr); `on_stage(name)` is called before each
        stage ("frontal", "views", "orbit", "mesh", "files") and may raise to stop the save.
        """
        _check_save_options(views, video, video_frames, video_format, fps, mesh, mesh_resolution, mesh_level)
        if views_as not in ("grid", "files"):
            raise ValueError(f"views_as must be 'grid' or 'files', got {views_as!r}")
        out_dir = Path(out_dir)
        if out_dir.exists() and not out_dir.is_dir():
            raise ValueError(f"{out_dir} exists and is not a folder; choose another output folder")
        created = not out_dir.exists()
        out_dir.mkdir(parents=True, exist_ok=True)
        # Files that were there before: a failed save removes only what it created itself.
        existing = set() if created else {entry.name for entry in os.scandir(out_dir)}
        crop = self.settings.align if crop is None else crop
        outputs: dict[str, Any] = {
            "crop": crop,
            "views": views,
            "views_as": views_as if views else None,
            "video": video,
            "video_frames": video_frames if video else None,
            "fps": fps if video else None,
            "mesh": mesh,
            "mesh_resolution": mesh_resolution if mesh else None,
            "mesh_level": None,
        }
        timings: dict[str, float] = {}
        written: list[Path] = []
        stage = on_stage or (lambda name: None)
        try:
            self._write_files(out_dir, written, timings, outputs, video_format, mesh_level, progress, stage)
            stage("files")
            written.append(out_dir / RESULT_NAME)
            record = self._record(outputs, timings, written, metadata)
            write_text_atomic(written[-1], json.dumps(record, indent=2) + "\n")
        except BaseException:
            for path in written:
                if path.name not in existing:
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
        outputs: dict[str, Any],
        video_format: str,
        mesh_level: float | str,
        progress: bool,
        stage: Callable[[str], None],
    ) -> None:
        if outputs["crop"]:
            written.append(out_dir / CROP_NAME)
            save_image(self.input_image, written[-1])
        stage("frontal")
        with stage_bar("rendering", 2, progress, unit="view") as bar:
            with timed(timings, "render_source"):
                bar.set_postfix_str("reconstruction")
                source = self.view(which="source")
                bar.update()
            with timed(timings, "render_edited"):
                bar.set_postfix_str("edit")
                edited = self.view(which="edited")
                bar.update()
        for name, image in (
            ("source.png", self._marked(to_pil(source["image"][0]), "source")),
            ("edited.png", self._marked(to_pil(edited["image"][0]), "edited")),
            ("depth.png", depth_to_pil(edited["image_depth"][0])),
        ):
            written.append(out_dir / name)
            save_image(image, written[-1])
        written.append(out_dir / LATENT_NAME)
        with atomic_path(written[-1]) as tmp, open(tmp, "wb") as handle:
            np.save(handle, self.edited_latent.detach().cpu().numpy().astype(np.float32))
        views = outputs["views"]
        if views > 0:
            stage("views")
            with timed(timings, "views"):
                images = [to_pil(image) for image in self.views(views, progress=progress)]
            if outputs["views_as"] == "grid":
                written.append(out_dir / "views.png")
                save_image(make_grid(images, columns=views), written[-1])
            else:
                for index, (image, yaw) in enumerate(zip(images, view_yaws_deg(views))):
                    written.append(out_dir / f"view_{index}.png")
                    save_image(self._marked(image, "edited", yaw_deg=yaw), written[-1])
        if outputs["video"]:
            stage("orbit")
            with timed(timings, "orbit"):
                frames = self.scene("edited").orbit_video_frames(outputs["video_frames"], progress=progress)
            written.append(out_dir / f"orbit.{video_format}")
            write_video(frames, written[-1], fps=outputs["fps"])
        if outputs["mesh"]:
            stage("mesh")
            with timed(timings, "mesh"):
                vertices, faces, colors, level = self._mesh(outputs["mesh_resolution"], mesh_level, progress)
            outputs["mesh_level"] = level
            written.append(out_dir / f"mesh.{outputs['mesh']}")
            save_mesh(written[-1], vertices, faces, colors)

    def _marked(self, image: Image.Image, which: Which, yaw_deg: float = 0.0) -> Image.Image:
        """A render of the world's model, marked as a head of its world (other models: unchanged)."""
        if not self.world_model:
            return image
        from ip2n.synthetic.world.marks import mark_world_image

        record = {"rendered_by": "EditResult.save", "latent": which, "model": self.model}
        return mark_world_image(image, {**record, "yaw_deg": yaw_deg, "pitch_deg": 0.0})

    def _mesh(
        self, resolution: int, level: float | str, progress: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        scene = self.scene("edited")
        with stage_bar(f"mesh ({resolution}³ grid)", 3, progress) as bar:
            bar.set_postfix_str("density")
            density = scene.density_grid(resolution)
            bar.update()
            bar.set_postfix_str("surface")
            iso_level = float((density.min() + density.max()) / 2) if level == "auto" else float(level)
            vertices, faces = marching_cubes(density, self.generator.config.rendering.box_warp, iso_level)
            bar.update()
            bar.set_postfix_str("colours")
            colors = scene.vertex_colors(vertices)
            bar.update()
        return vertices, faces, colors, iso_level

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
            "outside_world": list(self.outside_world),
            # Which generator renders edited_latent.npy (`ip2n render` reads it).
            "generator": self.generator_source,
            "outputs": outputs,
            "seconds": {**self.timings, **save_timings},
            "files": [path.name for path in written],
        }


def view_yaws_deg(count: int) -> list[float]:
    """Yaw in degrees of each of `count` views, as `EditResult.views` spreads them."""
    if count == 1:
        return [0.0]
    return [
        round(-VIEW_YAW_RANGE_DEG + 2 * VIEW_YAW_RANGE_DEG * index / (count - 1), 6) for index in range(count)
    ]


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
    if not 0 <= views <= MAX_VIEWS:
        raise ValueError(f"views must be from 0 to {MAX_VIEWS}, got {views}")
    if video and not 2 <= video_frames <= MAX_VIDEO_FRAMES:
        raise ValueError(f"an orbit video needs 2 to {MAX_VIDEO_FRAMES} frames, got {video_frames}")
    if video and video_format not in VIDEO_FORMATS:
        raise ValueError(f"video format must be one of {', '.join(VIDEO_FORMATS)}, got {video_format!r}")
    if video and not 1 <= fps <= MAX_FPS:
        raise ValueError(f"fps must be from 1 to {MAX_FPS}, got {fps}")
    if mesh is not None and mesh not in MESH_FORMATS:
        raise ValueError(f"mesh format must be one of {', '.join(MESH_FORMATS)}, got {mesh!r}")
    if mesh and not MIN_MESH_RESOLUTION <= mesh_resolution <= MAX_MESH_RESOLUTION:
        raise ValueError(
            f"mesh resolution must be from {MIN_MESH_RESOLUTION} to {MAX_MESH_RESOLUTION}, "
            f"got {mesh_resolution}"
        )
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
