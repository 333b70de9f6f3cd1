"""The procedural head: decoded latent coordinates → density and shaded colour at any 3-D point.

World units and axes are EG3D's (docs/cameras.md): y up, the face looks along +z, the face surface
sits near z ≈ 0.23, close to the cameras' pivot (0, 0, 0.2); the frontal image spans about ±0.32.

The head is a set of *parts*, each a signed-distance shape with an albedo. Skin parts (skull, jaw,
cheeks, nose, ears, neck) are blended with smooth unions into one surface; hair, brows, eyes, lips,
facial hair and glasses sit on it. An optional part is switched by growing its surface in or out
(`presence`), so every attribute acts continuously and gradients reach its latent coordinate.
Density: `DENSITY_SCALE · sigmoid(−d / SURFACE_WIDTH)` of the nearest surface, handed to the
renderer as a raw value whose softplus(σ − 1) is that density. Colour: albedo of the nearest parts
(soft arg-min of the distances), lit by one fixed directional light — fixed in the world, so the
shading is the same from every view.
"""

from __future__ import annotations

import math

import torch

from ip2n.synthetic.world.latent import COORDINATE_INDEX
from ip2n.synthetic.world.shapes import (
    Shape,
    capsule,
    ellipsoid,
    grow,
    halfspace,
    intersect,
    smooth_subtract,
    smooth_union,
    subtract,
    torus_z,
    union,
    unit,
)

DENSITY_SCALE = 400.0  # density per world unit deep inside an opaque part
LENS_DENSITY = 25.0  # glass lenses: about 15 % opacity through their thickness
SURFACE_WIDTH = 0.004  # world units over which density rises at a surface
# softplus(x − 1) ≈ 1e-4 at x = −8: empty space stays transparent over the whole ray.
_EMPTY_RAW_DENSITY = -8.0
COLOR_SHARPNESS = 0.004  # distance scale of the soft arg-min that picks a point's colour
LIGHT_DIRECTION = (-0.45, 0.55, 0.7)  # towards the light: upper image-left, in front
AMBIENT = 0.4
HIDDEN_OFFSET = 0.08  # larger than the thickness of any optional part

HAIR_COLORS = {
    "black": (0.07, 0.06, 0.06),
    "brown": (0.33, 0.2, 0.11),
    "blond": (0.86, 0.71, 0.42),
    "gray": (0.66, 0.66, 0.66),
    "red": (0.62, 0.2, 0.07),
    "pink": (0.95, 0.5, 0.72),
    "blue": (0.2, 0.35, 0.88),
}
STYLES = ("none", "bronze_statue", "cartoon", "marble")


class HeadParams:
    """Read access to decoded coordinates (N, K) as (N, 1, 1) tensors that broadcast over points."""

    def __init__(self, coordinates: torch.Tensor) -> None:
        self.coordinates = coordinates

    def value(self, name: str) -> torch.Tensor:
        """Raw coordinate (identity value or ±1 code)."""
        index = COORDINATE_INDEX[name]
        return self.coordinates[:, index, None, None]

    def presence(self, name: str) -> torch.Tensor:
        """Attribute strength in [0, 1]: code −1 → 0, +1 → 1, linear in between."""
        return ((self.value(name) + 1) / 2).clamp(0, 1)

    def choice_weights(self, name: str, values: tuple[str, ...]) -> list[torch.Tensor]:
        """Normalised non-negative weights of a categorical attribute's values, each (N, 1, 1)."""
        weights = [self.presence(f"{name}={value}") for value in values]
        total = sum(weights) + 1e-4
        return [w / total for w in weights]


def _vec(*components, like: torch.Tensor) -> torch.Tensor:
    """Stack scalars / (N, 1, 1) tensors into (N, 1, 3) vectors."""
    parts = [c if torch.is_tensor(c) else torch.full_like(like, float(c)) for c in components]
    return torch.cat(parts, dim=-1)


def _color(rgb: tuple[float, float, float], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(rgb, dtype=like.dtype, device=like.device).view(1, 1, 3)


def _lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return a + (b - a) * t


def _optional(shape: Shape, presence: torch.Tensor) -> Shape:
    """The shape at presence 1, sunk out of sight (shrunk by HIDDEN_OFFSET) at presence 0."""
    return grow(shape, HIDDEN_OFFSET * (presence - 1))


def _mask(distance: torch.Tensor, width: float = 0.01) -> torch.Tensor:
    """Soft inside-indicator of a distance (1 inside, 0 outside)."""
    return torch.sigmoid(-distance / width)


def head_field(coordinates: torch.Tensor, points: torch.Tensor) -> dict[str, torch.Tensor]:
    """The radiance field of N heads.

    coordinates (N, K) decoded latents (`latent.decode`), points (N, M, 3) world units →
    {"sigma": (N, M, 1) raw density (the renderer applies softplus(σ − 1)), "rgb": (N, M, 3) shaded
    colour in [0, 1]}. Differentiable with respect to the coordinates.

    Points outside `BOUNDS` (which hold every part of every head) are empty space and skip the
    shapes altogether: about half of a ray's samples, and the field is the cost of a render.
    """
    low = torch.tensor(BOUNDS[0], dtype=points.dtype, device=points.device)
    high = torch.tensor(BOUNDS[1], dtype=points.dtype, device=points.device)
    inside = ((points > low) & (points < high)).all(dim=-1)  # (N, M)
    sigma = torch.full_like(points[..., :1], _EMPTY_RAW_DENSITY)
    rgb = torch.zeros_like(points)
    for n in range(points.shape[0]):
        index = inside[n].nonzero().squeeze(1)
        if index.numel() == 0:
            continue
        out = _head_field(coordinates[n : n + 1], points[n : n + 1, index])
        sigma = sigma.index_put((torch.full_like(index, n), index), out["sigma"][0])
        rgb = rgb.index_put((torch.full_like(index, n), index), out["rgb"][0])
    return {"sigma": sigma, "rgb": rgb}


# Box (low, high corners) around every part of every head, with a margin for the soft surfaces.
BOUNDS = ((-0.5, -0.86, -0.34), (0.5, 0.45, 0.4))


def _head_field(coordinates: torch.Tensor, points: torch.Tensor) -> dict[str, torch.Tensor]:
    """`head_field` without the bounding-box shortcut."""
    q = HeadParams(coordinates)
    one = q.value("head_width") * 0 + 1  # (N, 1, 1) ones that carry dtype, device and batch
    parts, lens = _geometry(q, points, one)
    albedo = _albedos(q, points, one, parts)

    distances = torch.cat([shape.distance for shape, _ in parts], dim=-1)  # (N, M, P)
    nearest = distances.min(dim=-1, keepdim=True).values
    weights = torch.softmax(-distances / COLOR_SHARPNESS, dim=-1).unsqueeze(-1)  # (N, M, P, 1)
    colors = torch.stack([color.expand_as(points) for color in albedo], dim=-2)  # (N, M, P, 3)
    normals = torch.stack([unit(shape.normal) for shape, _ in parts], dim=-2)
    surface_color = (weights * colors).sum(dim=-2)
    normal = unit((weights * normals).sum(dim=-2))

    opaque = DENSITY_SCALE * torch.sigmoid(-nearest / SURFACE_WIDTH)
    glass = LENS_DENSITY * torch.sigmoid(-lens.distance / SURFACE_WIDTH)
    lens_share = glass / (opaque + glass + 1e-6)
    surface_color = _lerp(surface_color, _color((0.55, 0.65, 0.75), one), lens_share)
    rgb = _shade(q, points, surface_color, normal, one)
    return {"sigma": opaque + glass + _EMPTY_RAW_DENSITY, "rgb": rgb.clamp(0, 1)}


def _geometry(q: HeadParams, p: torch.Tensor, one: torch.Tensor) -> tuple[list[tuple[Shape, str]], Shape]:
    """The parts as (shape, material name), and the glass lenses (a separate, translucent shape)."""
    chubby, old = q.presence("chubby"), q.choice_weights("age", ("young", "old"))[1]
    cartoon = q.choice_weights("style", STYLES)[2]
    head_rx = 0.2 * (1 + 0.05 * q.value("head_width")) * (1 + 0.08 * chubby)
    head_ry = 0.27 * (1 + 0.04 * q.value("head_height"))
    head_rz = 0.24 * (1 + 0.04 * q.value("head_depth"))

    # Skin: skull, jaw, cheeks, nose, ears, neck and shoulders, smoothly joined.
    skull = ellipsoid(p, _vec(0, 0.05, -0.02, like=one), _vec(head_rx, head_ry, head_rz, like=one))
    chin_drop = 0.015 * q.value("chin_length")
    jaw = ellipsoid(
        p,
        _vec(0, -0.11 - chin_drop, 0.06, like=one),
        _vec(
            0.15 * (1 + 0.07 * q.value("jaw_width")) * (1 + 0.15 * chubby), 0.16 + chin_drop, 0.17, like=one
        ),
    )
    skin = smooth_union(skull, jaw, 0.06)
    cheek_x = 0.11 * (1 + 0.05 * q.value("cheekbone_width")) + 0.02 * chubby
    for side in (-1, 1):
        cheek = ellipsoid(
            p,
            _vec(side * cheek_x, -0.04 - 0.03 * old, 0.12, like=one),
            _vec(0.06 + 0.05 * chubby, 0.055 + 0.03 * chubby, 0.07 + 0.03 * chubby, like=one),
        )
        skin = smooth_union(skin, cheek, 0.04)
    double_chin = _optional(
        ellipsoid(p, _vec(0, -0.27, 0.1, like=one), _vec(0.1, 0.05, 0.08, like=one)), chubby
    )
    skin = smooth_union(skin, double_chin, 0.03)

    big_nose = 1 + 0.45 * q.presence("big_nose")
    nose_y = -0.035 - 0.008 * q.value("nose_length")
    nose_bridge = ellipsoid(
        p,
        _vec(0, nose_y, 0.22 + 0.006 * q.value("nose_projection"), like=one),
        _vec(
            0.024 * (1 + 0.1 * q.value("nose_width")) * big_nose,
            0.065 * (1 + 0.06 * q.value("nose_length")) * (1 + 0.2 * (big_nose - 1)),
            0.05 * big_nose,
            like=one,
        ),
    )
    nose_tip = ellipsoid(
        p,
        _vec(0, nose_y - 0.045, 0.245 + 0.008 * q.value("nose_projection") + 0.02 * (big_nose - 1), like=one),
        _vec(
            0.03 * (1 + 0.1 * q.value("nose_width")) * big_nose, 0.025 * big_nose, 0.028 * big_nose, like=one
        ),
    )
    skin = smooth_union(skin, smooth_union(nose_bridge, nose_tip, 0.02), 0.02)

    ear_size = 1 + 0.1 * q.value("ear_size")
    for side in (-1, 1):
        ear = ellipsoid(
            p,
            _vec(side * (head_rx - 0.005 + 0.008 * q.value("ear_angle")), 0.0, -0.02, like=one),
            _vec(0.025, 0.065 * ear_size, 0.04 * ear_size, like=one),
        )
        skin = smooth_union(skin, ear, 0.015)
    neck = capsule(
        p, _vec(0, -0.2, -0.04, like=one), _vec(0, -0.5, -0.06, like=one), 0.095 * (1 + 0.15 * chubby)
    )
    skin = smooth_union(skin, neck, 0.04)

    # Old age: forehead wrinkles (a ripple of the surface) and bags under the eyes.
    eye_x = 0.063 * (1 + 0.06 * q.value("eye_spacing"))
    eye_y = 0.055 + 0.008 * q.value("eye_height")
    forehead = (
        _mask(0.12 - p[..., 1:2], 0.01) * _mask(p[..., 1:2] - 0.22, 0.01) * _mask(0.08 - p[..., 2:3], 0.02)
    )
    skin = grow(skin, old * forehead * 0.005 * torch.sin(p[..., 1:2] * 150))
    for side in (-1, 1):
        bag = ellipsoid(
            p, _vec(side * eye_x, eye_y - 0.035, 0.195, like=one), _vec(0.03, 0.016, 0.025, like=one)
        )
        skin = smooth_union(skin, _optional(bag, old), 0.01)

    # Mouth: lips bent up at the corners by the smile, parted when open, a dark cavity behind.
    smile, mouth_open = q.presence("smile"), q.presence("mouth_open")
    mouth_y = -0.135
    gap = 0.02 * mouth_open + 0.004 * smile
    mouth_width = 0.05 * (1 + 0.08 * q.value("mouth_width")) * (1 + 0.12 * smile)
    bent = torch.cat([p[..., :1], p[..., 1:2] - (9 * smile - 1.5) * p[..., :1] ** 2, p[..., 2:]], dim=-1)
    lip_t = 0.011 * (1 + 0.15 * q.value("lip_thickness")) * (1 - 0.25 * old)
    cavity = ellipsoid(
        bent, _vec(0, mouth_y, 0.23, like=one), _vec(mouth_width * 0.95, 0.002 + gap, 0.045, like=one)
    )
    skin = smooth_subtract(skin, cavity, 0.008)
    upper_lip = ellipsoid(
        bent, _vec(0, mouth_y + 0.011 + gap, 0.222, like=one), _vec(mouth_width, lip_t, 0.02, like=one)
    )
    lower_lip = ellipsoid(
        bent,
        _vec(0, mouth_y - 0.013 - gap, 0.22, like=one),
        _vec(mouth_width * 0.9, lip_t * 1.2, 0.02, like=one),
    )
    lips = subtract(union(upper_lip, lower_lip), cavity)
    teeth = ellipsoid(
        bent, _vec(0, mouth_y + 0.006, 0.198, like=one), _vec(mouth_width * 0.75, 0.012, 0.012, like=one)
    )
    throat = ellipsoid(p, _vec(0, mouth_y, 0.16, like=one), _vec(0.05, 0.04, 0.05, like=one))

    torso = ellipsoid(
        p, _vec(0, -0.64, -0.06, like=one), _vec(0.42 * (1 + 0.1 * chubby), 0.18, 0.2, like=one)
    )

    eye_r = 0.028 * (1 + 0.06 * q.value("eye_size")) * (1 + 0.3 * cartoon)
    eyes: Shape | None = None
    for side in (-1, 1):
        centre = _vec(side * eye_x, eye_y, 0.19, like=one)
        socket = ellipsoid(
            p, centre + _vec(0, 0, 0.025, like=one), _vec(eye_r * 1.5, eye_r * 1.05, eye_r, like=one)
        )
        skin = smooth_subtract(skin, socket, 0.01)
        eyeball = ellipsoid(p, centre, _vec(eye_r, eye_r, eye_r, like=one))
        eyes = eyeball if eyes is None else union(eyes, eyeball)
    assert eyes is not None  # the loop ran for both sides

    # Hair: a shell over the skull above a tilted hairline plane; bald shrinks it under the skin.
    hair_presence = 1 - q.presence("bald")
    thickness = (0.03 + 0.008 * q.value("hair_volume")) * hair_presence - 0.03 * (1 - hair_presence)
    shell = ellipsoid(
        p,
        _vec(0, 0.05, -0.03, like=one),
        _vec(head_rx + thickness, head_ry + thickness, head_rz + thickness, like=one),
    )
    # Hair above y = h at the front (z = 0.2), reaching 0.32 lower at the back (z = −0.2).
    hairline_front = 0.16 + 0.015 * q.value("hairline_height")
    hairline = halfspace(p, (0.0, -1.0, 0.8), (0.16 - hairline_front) / math.sqrt(1.64))
    hair = intersect(shell, hairline)
    bangs = ellipsoid(p, _vec(0, 0.175, 0.18, like=one), _vec(0.16, 0.075, 0.07, like=one))
    hair = union(hair, _optional(bangs, q.presence("bangs") * hair_presence))

    bushy = q.presence("bushy_eyebrows")
    brows: Shape | None = None
    for side in (-1, 1):
        brow_y = eye_y + 0.048 + 0.008 * q.value("brow_height")
        inner = _vec(side * 0.028, brow_y, 0.222, like=one)
        outer = _vec(side * (eye_x + 0.045), brow_y + 0.008 * q.value("brow_tilt") + 0.004, 0.2, like=one)
        brow = capsule(p, inner, outer, 0.0065 + 0.007 * bushy)
        brows = brow if brows is None else union(brows, brow)
    assert brows is not None  # the loop ran for both sides

    beard_shell = ellipsoid(
        p,
        _vec(0, -0.12 - chin_drop, 0.055, like=one),
        _vec(0.175 * (1 + 0.15 * chubby), 0.18 + chin_drop, 0.195, like=one),
    )
    beard = intersect(beard_shell, halfspace(p, (0.0, 1.0, 0.0), mouth_y - 0.02))
    beard = intersect(beard, halfspace(p, (0.0, 0.0, -1.0), -0.02))
    beard = subtract(
        beard,
        ellipsoid(
            p, _vec(0, mouth_y - 0.005, 0.24, like=one), _vec(mouth_width + 0.012, 0.03, 0.05, like=one)
        ),
    )
    facial_hair = _optional(beard, q.presence("beard"))
    mustache = ellipsoid(
        bent, _vec(0, mouth_y + 0.035, 0.235, like=one), _vec(mouth_width + 0.008, 0.012, 0.018, like=one)
    )
    facial_hair = union(facial_hair, _optional(mustache, q.presence("mustache")))
    goatee = ellipsoid(
        p, _vec(0, mouth_y - 0.065 - chin_drop, 0.215, like=one), _vec(0.035, 0.045, 0.04, like=one)
    )
    facial_hair = union(facial_hair, _optional(goatee, q.presence("goatee")))

    glasses_on = q.presence("eyeglasses")
    rim_r = 0.045 * (1 + 0.3 * cartoon)
    frame: Shape | None = None
    lenses: Shape | None = None
    for side in (-1, 1):
        centre = _vec(side * eye_x, eye_y, 0.262, like=one)
        rim = torus_z(p, centre, rim_r, 0.006)
        temple = capsule(
            p,
            _vec(side * (eye_x + rim_r), eye_y, 0.255, like=one),
            _vec(side * (head_rx + 0.012), eye_y + 0.01, -0.03, like=one),
            0.005,
        )
        piece = union(rim, temple)
        frame = piece if frame is None else union(frame, piece)
        lens = ellipsoid(p, centre, _vec(rim_r, rim_r, 0.004, like=one))
        lenses = lens if lenses is None else union(lenses, lens)
    assert frame is not None and lenses is not None  # the loop ran for both sides
    bridge = capsule(
        p,
        _vec(-(eye_x - rim_r), eye_y + 0.008, 0.262, like=one),
        _vec(eye_x - rim_r, eye_y + 0.008, 0.262, like=one),
        0.005,
    )
    frame = _optional(union(frame, bridge), glasses_on)
    lenses = _optional(lenses, glasses_on)

    parts = [
        (skin, "skin"),
        (lips, "lips"),
        (teeth, "teeth"),
        (throat, "throat"),
        (torso, "clothes"),
        (eyes, "eyes"),
        (hair, "hair"),
        (brows, "brows"),
        (facial_hair, "facial_hair"),
        (frame, "frame"),
    ]
    return parts, lenses


def _albedos(
    q: HeadParams, p: torch.Tensor, one: torch.Tensor, parts: list[tuple[Shape, str]]
) -> list[torch.Tensor]:
    """Albedo (N, 1 or M, 3) of every part, in the order of `parts`."""
    old = q.choice_weights("age", ("young", "old"))[1]
    tone = torch.sigmoid(0.9 * q.value("skin_tone"))
    skin = _lerp(_color((0.93, 0.76, 0.64), one), _color((0.42, 0.27, 0.19), one), tone)
    skin = skin + 0.04 * q.value("skin_warmth") * _color((1.0, 0.2, -0.6), one)
    skin = _lerp(skin, _color((0.97, 0.9, 0.88), one), 0.7 * q.presence("pale_skin"))
    skin = _lerp(skin, skin.mean(dim=-1, keepdim=True) * _color((1.02, 0.98, 0.92), one), 0.5 * old) * (
        1 - 0.12 * old
    )
    lips = (
        skin
        * _color((0.88, 0.58, 0.58), one)
        * (1 + 0.05 * q.value("lip_redness") * _color((1.0, -1.0, -1.0), one))
    )

    hair_weights = q.choice_weights("hair_color", tuple(HAIR_COLORS))
    hair = sum(w * _color(rgb, one) for w, rgb in zip(hair_weights, HAIR_COLORS.values()))
    assert isinstance(hair, torch.Tensor)  # HAIR_COLORS is not empty
    # Strands: a fine stripe pattern fixed in the world (so it is the same from every view).
    strands = 0.9 + 0.1 * torch.sin(220 * p[..., :1] + 40 * p[..., 2:3])
    hair_textured = hair * strands

    eye_x = 0.063 * (1 + 0.06 * q.value("eye_spacing"))
    eye_y = 0.055 + 0.008 * q.value("eye_height")
    hue = torch.softmax(torch.cat([-q.value("eye_hue"), 0 * one, q.value("eye_hue")], dim=-1) * 1.5, dim=-1)
    iris = hue[..., :1] * _color((0.36, 0.2, 0.1), one) + hue[..., 1:2] * _color((0.3, 0.45, 0.22), one)
    iris = (iris + hue[..., 2:] * _color((0.25, 0.45, 0.75), one)) * (
        1 - 0.15 * q.value("eye_darkness").clamp(-2, 2)
    )
    # Distance from the eye's optical axis (parallel to +z through the eyeball centre).
    axis_distance = torch.minimum(
        torch.sqrt((p[..., :1] - eye_x) ** 2 + (p[..., 1:2] - eye_y) ** 2 + 1e-8),
        torch.sqrt((p[..., :1] + eye_x) ** 2 + (p[..., 1:2] - eye_y) ** 2 + 1e-8),
    )
    eye = _lerp(_color((0.95, 0.94, 0.92), one), iris, _mask(axis_distance - 0.013, 0.002))
    eye = _lerp(eye, _color((0.02, 0.02, 0.03), one), _mask(axis_distance - 0.0055, 0.0015))

    hue_angle = 1.3 * q.value("background_hue")
    clothes = 0.3 + 0.12 * torch.cat(
        [torch.cos(hue_angle + 2.0), torch.cos(hue_angle + 4.1), torch.cos(hue_angle)], dim=-1
    )
    by_material = {
        "skin": skin,
        "lips": lips,
        "teeth": _color((0.93, 0.92, 0.86), one),
        "throat": _color((0.3, 0.06, 0.07), one),
        "clothes": clothes,
        "eyes": eye,
        "hair": hair_textured,
        "brows": hair * 0.6,
        "facial_hair": hair_textured * 0.9,
        "frame": _color((0.05, 0.05, 0.06), one),
    }
    return [by_material[material] for _, material in parts]


def _shade(
    q: HeadParams, p: torch.Tensor, albedo: torch.Tensor, normal: torch.Tensor, one: torch.Tensor
) -> torch.Tensor:
    """Lit colour (N, M, 3): Lambert + ambient, restyled as bronze, cartoon or marble."""
    none, bronze, cartoon, marble = q.choice_weights("style", STYLES)
    light = unit(torch.tensor(LIGHT_DIRECTION, dtype=p.dtype, device=p.device)).view(1, 1, 3)
    lambert = (normal * light).sum(dim=-1, keepdim=True).clamp_min(0)
    lit = albedo * (AMBIENT + (1 - AMBIENT) * lambert)

    luminance = (albedo * _color((0.3, 0.59, 0.11), one)).sum(dim=-1, keepdim=True)
    # Specular highlight for a viewer in front of the face, baked into the surface: view-consistent.
    half = unit(light + _color((0.0, 0.0, 1.0), one))
    highlight = (normal * half).sum(dim=-1, keepdim=True).clamp_min(0) ** 24
    bronze_rgb = (0.35 + 0.9 * luminance) * _color((0.72, 0.45, 0.2), one) * (
        0.3 + 0.8 * lambert
    ) + 0.5 * highlight
    toon = 0.55 + 0.45 * torch.sigmoid((lambert - 0.35) * 14)
    cartoon_rgb = (luminance + 1.6 * (albedo - luminance)).clamp(0, 1) * toon
    veins = torch.exp(
        -(
            torch.sin(14 * p[..., :1] + 9 * p[..., 1:2] + 4 * torch.sin(11 * p[..., 2:3] + 7 * p[..., 1:2]))
            ** 2
        )
        / 0.02
    )
    marble_rgb = (
        _color((0.93, 0.92, 0.9), one) * (1 - 0.3 * veins) * (0.45 + 0.6 * lambert) + 0.25 * highlight
    )
    return none * lit + bronze * bronze_rgb + cartoon * cartoon_rgb + marble * marble_rgb


def background_color(coordinates: torch.Tensor) -> torch.Tensor:
    """Plain backdrop colour (N, 3) in [0, 1] from the identity's background values."""
    q = HeadParams(coordinates)
    angle = q.value("background_hue")[:, 0] * 1.3  # (N, 1)
    brightness = 0.62 + 0.12 * torch.tanh(q.value("background_brightness")[:, 0])
    phases = torch.tensor(
        [0.0, 2 * math.pi / 3, 4 * math.pi / 3], dtype=coordinates.dtype, device=coordinates.device
    )
    return (brightness + 0.18 * torch.cos(angle + phases)).clamp(0, 1)
