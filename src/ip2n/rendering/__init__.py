"""The weight-free parts of EG3D: cameras, rays, tri-plane lookup and the volume renderer."""

from ip2n.rendering.cameras import (
    FFHQ_FOCAL,
    FFHQ_PIVOT,
    FFHQ_RADIUS,
    camera_labels,
    focal_to_intrinsics,
    fov_to_intrinsics,
    frontal_camera,
    latent_avg_camera,
    lookat_cam2world,
    orbit_cameras,
    pack_camera_label,
    unpack_camera_label,
    yaw_pitch_cam2world,
)
from ip2n.rendering.rays import ray_bundle
from ip2n.rendering.triplane import mean_over_planes, sample_triplane
from ip2n.rendering.volume import RenderedRays, RenderingConfig, query_density, render_rays

__all__ = [
    "FFHQ_FOCAL",
    "FFHQ_PIVOT",
    "FFHQ_RADIUS",
    "RenderedRays",
    "RenderingConfig",
    "camera_labels",
    "focal_to_intrinsics",
    "fov_to_intrinsics",
    "frontal_camera",
    "latent_avg_camera",
    "lookat_cam2world",
    "mean_over_planes",
    "orbit_cameras",
    "pack_camera_label",
    "query_density",
    "ray_bundle",
    "render_rays",
    "sample_triplane",
    "unpack_camera_label",
    "yaw_pitch_cam2world",
]
