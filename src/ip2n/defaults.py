"""Default settings and choices shared by the library and the command line's help texts.

Importable without torch: the `ip2n` parser reads its defaults from here (so that `ip2n --help`
answers at once and quotes the values the code uses), and the modules that use them import them
from here.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

# The paper's sampling settings (the official weights'; a built-in model brings its own, see
# `ip2n.builtin.builtin_edit_default_values`).
DEFAULT_STEPS = 50
DEFAULT_STRENGTH = 0.3
DEFAULT_TEXT_SCALE = 2.5
DEFAULT_IMAGE_SCALE = 1.0


@dataclass(frozen=True)
class EditDefaults:
    """The sampling settings of an edit when the caller passes none: the paper's for the official
    model; a built-in model carries the ones it was tuned with (its world.json `edit_defaults`)."""

    num_inference_steps: int = DEFAULT_STEPS
    strength: float = DEFAULT_STRENGTH
    guidance_scale: float = DEFAULT_TEXT_SCALE
    image_guidance_scale: float = DEFAULT_IMAGE_SCALE

    @classmethod
    def from_dict(cls, values: dict) -> EditDefaults:
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown edit default(s) {sorted(unknown)}")
        return cls(**values)


PAPER_DEFAULTS = EditDefaults()

# What `ip2n edit` and `EditResult.save` write unless told otherwise.
DEFAULT_VIEWS = 4
DEFAULT_ORBIT_FRAMES = 60
DEFAULT_FPS = 24
DEFAULT_MESH_RESOLUTION = 256
MIN_MESH_RESOLUTION = 16
MESH_FORMATS = ("ply", "obj", "glb")
# EG3D's own shape extraction thresholds the raw decoder density at 10; we keep its default.
DEFAULT_DENSITY_LEVEL = 10.0

# `ip2n demo`: a shorter orbit and a coarser mesh than `ip2n edit`, so that it finishes quickly.
DEMO_VIEWS = 4
DEMO_ORBIT_FRAMES = 48
DEMO_MESH_RESOLUTION = 192
