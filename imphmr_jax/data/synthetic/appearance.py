"""How a person and the scene look: skin, hair and clothing colours per body region, light,
procedural backgrounds and occluder shapes (host-side random draws; the renderer draws them).

Shapes (background shapes and occluders) are rows of 14 numbers in normalised image coordinates
([0, 1]^2, x right, y down): [cx, cy, rx, ry, angle, kind (0 ellipse, 1 rectangle, 2 triangle),
on, stripe frequency (cycles per image side, 0 = plain)] + colour (3) + second colour (3).
"""
from __future__ import annotations

import colorsys
from typing import NamedTuple, Optional

import numpy as np

from imphmr_jax.data.synthetic.texture import Texture, sample_texture

# Skin tones (sRGB, 0..1) from light to deep; a sample interpolates between neighbours.
_SKIN_TONES = np.array([
    [0.98, 0.84, 0.74], [0.93, 0.75, 0.62], [0.85, 0.64, 0.50], [0.74, 0.53, 0.38],
    [0.60, 0.41, 0.28], [0.45, 0.30, 0.20], [0.32, 0.21, 0.15],
])
_HAIR = np.array([[0.05, 0.04, 0.03], [0.20, 0.13, 0.08], [0.40, 0.26, 0.14], [0.65, 0.50, 0.30],
                  [0.55, 0.25, 0.12], [0.60, 0.60, 0.60]])
_NEUTRALS = np.array([[0.05, 0.05, 0.06], [0.92, 0.92, 0.90], [0.45, 0.45, 0.47],
                      [0.10, 0.14, 0.30], [0.22, 0.32, 0.52], [0.40, 0.32, 0.22]])
# Body regions coloured independently: which region each SMPL joint's skinned vertices belong to.
REGIONS = ("skin", "hair", "shirt", "lower_sleeve", "trousers", "lower_leg", "shoes")
JOINT_REGION = np.array([
    4, 4, 4, 2, 5, 5, 2, 6, 6, 2, 6, 6,  # pelvis hips spine1 knees spine2 ankles spine3 feet
    0, 2, 2, 0, 2, 2, 3, 3, 0, 0, 0, 0,  # neck collars head shoulders elbows wrists hands
])
NUM_OCCLUDERS = 2
_NUM_BG_SHAPES = 6
_NUM_WAVES = 5


class Appearance(NamedTuple):
    """One person's look (numpy; stacked along a leading batch axis for the renderer).

    region_colors (7, 3) in REGIONS order; stripe (4,) [on, frequency cycles/m along the rest-pose
    height, phase, long_sleeve]; stripe_color (3,); light (3,) unit direction towards the light in
    the camera frame; shade (3,) [ambient, diffuse, grain]; noise_seed () uint32 of the grain;
    texture: None (flat colours) or the person's procedural :class:`~.texture.Texture` (then the
    renderer ignores the stripes and paints the texture; see SyntheticConfig.texture).
    """

    region_colors: np.ndarray
    stripe: np.ndarray
    stripe_color: np.ndarray
    light: np.ndarray
    shade: np.ndarray
    noise_seed: np.ndarray
    texture: Optional[Texture] = None


class Background(NamedTuple):
    """One procedural background (see :func:`sample_background`).

    colors (4, 3) [gradient a, gradient b, pattern a, pattern b]; params (8,) [gradient angle,
    pattern kind, pattern frequency (cycles per side), pattern angle, pattern phase, pattern
    opacity, grain, unused]; waves (5, 3) [kx, ky, phase]; shapes (6, 14).
    """

    colors: np.ndarray
    params: np.ndarray
    waves: np.ndarray
    shapes: np.ndarray


class Look(NamedTuple):
    """Everything the renderer draws besides the body: appearance, background and the (2, 14)
    occluder rows over the person (leading batch axis when stacked)."""

    appearance: Appearance
    background: Background
    occluders: np.ndarray


def _random_color(rng, neutral_prob=0.35):
    if rng.random() < neutral_prob:
        c = _NEUTRALS[rng.integers(len(_NEUTRALS))] + rng.normal(0, 0.03, 3)
    else:
        c = np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.2, 0.9),
                                         rng.uniform(0.25, 0.95)))
    return np.clip(c, 0.0, 1.0)


def sample_appearance(rng: np.random.Generator, config) -> Appearance:
    """Skin, hair and clothing colours per region, shirt stripes, light and grain for one person
    (``config``: a SyntheticConfig, for the light and grain ranges, and its texture).

    With ``config.texture == 'procedural'`` the person also gets a :class:`~.texture.Texture`,
    drawn from a child stream of ``rng`` (``rng.spawn``), which leaves ``rng``'s own sequence, and
    so every other draw of the record, unchanged."""
    t = rng.uniform(0, len(_SKIN_TONES) - 1)
    k = min(int(t), len(_SKIN_TONES) - 2)
    skin = (1 - (t - k)) * _SKIN_TONES[k] + (t - k) * _SKIN_TONES[k + 1]
    skin = np.clip(skin * rng.uniform(0.95, 1.05) + rng.normal(0, 0.015, 3), 0, 1)
    hair = np.clip(_HAIR[rng.integers(len(_HAIR))] * rng.uniform(0.8, 1.2), 0, 1)
    if rng.random() < 0.15:  # bald or very short hair
        hair = skin * 0.9
    shirt, trousers = _random_color(rng), _random_color(rng, neutral_prob=0.55)
    shoes = _random_color(rng, neutral_prob=0.7)
    long_sleeve = rng.random() < 0.5
    long_legs = rng.random() < 0.75
    colors = np.stack([skin, hair, shirt, shirt if long_sleeve else skin, trousers,
                       trousers if long_legs else skin, shoes])
    stripe = np.array([float(rng.random() < 0.3), rng.uniform(8.0, 30.0),
                       rng.uniform(0, 2 * np.pi), float(long_sleeve)])
    light = np.array([rng.uniform(-1, 1), rng.uniform(-1, 0.4), -rng.uniform(0.4, 1.5)])
    light /= np.linalg.norm(light)
    shade = np.array([rng.uniform(*config.light_ambient_range),
                      rng.uniform(*config.light_diffuse_range), rng.uniform(*config.grain_range)])
    stripe_color = _random_color(rng)  # after light and shade: the draw order defines the data
    texture = None
    if config.texture == "procedural":
        texture = sample_texture(rng.spawn(1)[0], long_sleeve, long_legs)
    return Appearance(region_colors=colors.astype(np.float32), stripe=stripe.astype(np.float32),
                      stripe_color=stripe_color.astype(np.float32),
                      light=light.astype(np.float32), shade=shade.astype(np.float32),
                      noise_seed=np.uint32(rng.integers(2**32)), texture=texture)


def _sample_shapes(rng, n, centre_lo, centre_hi, radius_lo, radius_hi, on_prob):
    """(n, 14) float32 random shape rows (see the module doc)."""
    rows = np.zeros((n, 14), np.float32)
    for i in range(n):
        c = rng.uniform(np.broadcast_to(centre_lo, (2,)), np.broadcast_to(centre_hi, (2,)))
        r = rng.uniform(radius_lo, radius_hi, 2)
        freq = rng.uniform(6, 30) if rng.random() < 0.3 else 0.0
        rows[i, :8] = [c[0], c[1], r[0], r[1], rng.uniform(0, np.pi), rng.integers(3),
                       float(rng.random() < on_prob), freq]
        rows[i, 8:11] = _random_color(rng, 0.2)
        rows[i, 11:14] = _random_color(rng, 0.2)
    return rows


def sample_background(rng: np.random.Generator, clutter: float = 1.0) -> Background:
    """Parameters of one procedural background.

    clutter in [0, 1] scales the pattern opacity and the probability of each shape (1 = the full
    procedural variety; 0 = a plain two-colour gradient). The random draws do not depend on it.

    A linear gradient between two colours, blended with a pattern (0 stripes, 1 checker,
    2 smooth noise from random plane waves, 3 none) and overlaid by up to 6 random shapes.
    """
    colors = np.stack([_random_color(rng, 0.3) for _ in range(4)])
    if rng.random() < 0.5:  # a softer gradient: the second colour near the first
        colors[1] = np.clip(colors[0] + rng.normal(0, 0.15, 3), 0, 1)
    params = np.array([rng.uniform(0, 2 * np.pi), rng.integers(4), rng.uniform(2, 16),
                       rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi),
                       clutter * rng.uniform(0.2, 0.9), rng.uniform(0, 0.05), 0.0])
    waves = np.concatenate([rng.normal(0, 4.0, (_NUM_WAVES, 2)),
                            rng.uniform(0, 2 * np.pi, (_NUM_WAVES, 1))], 1)
    shapes = _sample_shapes(rng, _NUM_BG_SHAPES, -0.1, 1.1, 0.04, 0.35, 0.45 * clutter)
    return Background(colors=colors.astype(np.float32), params=params.astype(np.float32),
                      waves=waves.astype(np.float32), shapes=shapes)


def sample_occluders(rng: np.random.Generator, on: bool, box, size: int) -> np.ndarray:
    """(2, 14) occluder shapes over the person's box.

    ``box`` = (umin, umax, vmin, vmax) in pixels (clipped to the image); the first shape is on when
    ``on``, the second half of those times; centres inside the box, radii 15-35% of its sides.
    """
    u0, u1, v0, v1 = (float(b) / size for b in box)
    w, h = max(u1 - u0, 1e-3), max(v1 - v0, 1e-3)
    shapes = _sample_shapes(rng, NUM_OCCLUDERS, (u0 + 0.15 * w, v0 + 0.15 * h),
                            (u1 - 0.15 * w, v1 - 0.15 * h), 0.0, 0.0, 1.0)
    for i in range(NUM_OCCLUDERS):
        shapes[i, 2] = rng.uniform(0.15, 0.35) * w
        shapes[i, 3] = rng.uniform(0.15, 0.35) * h
    shapes[:, 6] = [float(on), float(on and rng.random() < 0.5)]
    return shapes
