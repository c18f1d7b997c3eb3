"""Procedural 3D textures on the body's canonical surface (``SyntheticConfig.texture =
'procedural'``): per-person garment prints, fabric grain, skin mottling and hair strands, evaluated
per pixel at the rest-pose surface point the pixel sees.

Why the canonical point: the rasterizer gives each pixel the face it sees and perspective-correct
barycentrics; interpolating the body's template vertices (``v_template``: mean shape, rest pose,
metres, y up, facing +z) with them gives the same surface point whatever the pose, camera or
shape. A texture that is a function of that point alone makes a person look the same in every
frame and every view (up to shading), and its local detail (a few pixels) gives image features
something to match across views and frames, which flat per-region colours do not.

Host side (numpy): :class:`Texture` and :func:`sample_texture` (one person's draws). Device side
(jax, batched over a leading axis, jit-able): :func:`value_noise`, :func:`fbm`, :func:`albedo`
and :func:`shade`.
"""
from __future__ import annotations

import colorsys
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from imphmr_jax.render import rasterize as _raster
from imphmr_jax.render import shading as _shading

# Print kinds of a garment.
PRINT_PLAIN, PRINT_BANDS, PRINT_CHECKS, PRINT_DOTS = 0, 1, 2, 3
# Print frequency ranges (cycles per metre of the canonical surface) by kind (a plain garment's is
# drawn too, to keep one draw order, and unused), and the kind probabilities of the top (shirt)
# and the bottom (trousers) garment.
_PRINT_FREQ = {PRINT_PLAIN: (5.0, 5.0), PRINT_BANDS: (6.0, 20.0), PRINT_CHECKS: (5.0, 14.0),
               PRINT_DOTS: (8.0, 20.0)}
_PRINT_PROBS = ((0.2, 0.3, 0.25, 0.25), (0.45, 0.25, 0.15, 0.15))
FBM_OCTAVES = 4
# Region indices of appearance.REGIONS (kept literal here to avoid an import cycle).
_SKIN, _HAIR, _SHIRT, _LOWER_SLEEVE, _TROUSERS, _LOWER_LEG, _SHOES = range(7)


class Texture(NamedTuple):
    """One person's procedural texture (numpy; stacked along a leading batch axis to render).

    prints (2, 8): the top garment (shirt, and the lower sleeves when long-sleeved) and the bottom
      garment (trousers, and the lower legs when long-legged), each [kind (PRINT_*), frequency
      (cycles per metre of the canonical surface), phase (3, cycles), contrast (0..1), dot radius
      (fraction of the period), unused].
    print_axes (2, 3): unit axis of each garment's bands in the canonical frame (stripes run
      across it; near the vertical, i.e. horizontal stripes, tilted up to ~30 degrees).
    print_colors (2, 3): sRGB 0..1 colour of each print.
    garment (2,): [long_sleeve, long_legs] 0/1: whether the lower sleeve / lower leg regions wear
      the garment (and its print) or show skin.
    grain (4,): [base frequency of the fBm (cycles/m), fabric amplitude, skin amplitude, hair
      amplitude]; amplitudes are relative brightness (albedo * (1 + a * noise), noise in [-1, 1]).
    offset (3,): offset of this person's noise domain (lattice units), decorrelating people.
    """

    prints: np.ndarray
    print_axes: np.ndarray
    print_colors: np.ndarray
    garment: np.ndarray
    grain: np.ndarray
    offset: np.ndarray


def _print_color(rng) -> np.ndarray:
    """A saturated or a neutral colour, sRGB 0..1 (3,)."""
    if rng.random() < 0.3:
        return np.full(3, rng.uniform(0.05, 0.95)) + rng.normal(0, 0.02, 3)
    return np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.3, 1.0),
                                        rng.uniform(0.2, 1.0)))


def sample_texture(rng: np.random.Generator, long_sleeve: bool, long_legs: bool) -> Texture:
    """Draw one person's :class:`Texture` (prints of the two garments, grain, noise offset)."""
    prints = np.zeros((2, 8))
    axes = np.zeros((2, 3))
    colors = np.zeros((2, 3))
    for g, probs in enumerate(_PRINT_PROBS):
        kind = int(rng.choice(4, p=probs))
        tilt_x, tilt_z = rng.uniform(-0.5, 0.5, 2)  # radians
        axis = np.array([math.sin(tilt_z), math.cos(tilt_z) * math.cos(tilt_x),
                         math.cos(tilt_z) * math.sin(tilt_x)])
        prints[g, :7] = [kind, rng.uniform(*_PRINT_FREQ[kind]), *rng.uniform(0, 1, 3),
                         rng.uniform(0.6, 1.0), rng.uniform(0.18, 0.32)]
        axes[g] = axis / np.linalg.norm(axis)
        colors[g] = np.clip(_print_color(rng), 0, 1)
    grain = np.array([rng.uniform(12.0, 28.0), rng.uniform(0.15, 0.35), rng.uniform(0.04, 0.1),
                      rng.uniform(0.2, 0.4)])
    return Texture(prints=prints.astype(np.float32), print_axes=axes.astype(np.float32),
                   print_colors=colors.astype(np.float32),
                   garment=np.array([long_sleeve, long_legs], np.float32),
                   grain=grain.astype(np.float32),
                   offset=rng.uniform(0, 256, 3).astype(np.float32))


# ----------------------------------------------------------------------------- device side
def _hash01(ix, iy, iz, salt):
    """Uniform [0, 1) float32 of integer lattice points (int32 arrays of one shape; ``salt`` an
    int or a uint32 array broadcasting against them): a spatial hash (three large odd
    multipliers, xor) finished by murmur3's avalanche mix, in wrapping uint32 arithmetic."""
    u = lambda a: jax.lax.bitcast_convert_type(a, jnp.uint32)  # noqa: E731 - two's complement
    h = (u(ix) * jnp.uint32(0x8DA6B343)) ^ (u(iy) * jnp.uint32(0xD8163841)) \
        ^ (u(iz) * jnp.uint32(0xCB1AB31F)) ^ (jnp.asarray(salt, jnp.uint32)
                                              * jnp.uint32(0x9E3779B9))
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    h = h ^ (h >> 16)
    return (h >> 8).astype(jnp.float32) * (1.0 / (1 << 24))


def value_noise(q, salt=0):
    """3D value noise in [-1, 1] at points q (..., 3) in lattice units: random values at the
    integer lattice, interpolated trilinearly with smoothstep weights (C1, period-free). ``salt``
    (an int, or a uint32 array broadcasting against q[..., 0]) picks independent fields."""
    cell = jnp.floor(q)
    f = q - cell
    w = f * f * (3.0 - 2.0 * f)
    i = cell.astype(jnp.int32)
    out = 0.0
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                v = _hash01(i[..., 0] + dx, i[..., 1] + dy, i[..., 2] + dz, salt)
                wx = w[..., 0] if dx else 1.0 - w[..., 0]
                wy = w[..., 1] if dy else 1.0 - w[..., 1]
                wz = w[..., 2] if dz else 1.0 - w[..., 2]
                out = out + wx * wy * wz * v
    return 2.0 * out - 1.0


def fbm(q, salt=0, octaves: int = FBM_OCTAVES):
    """Fractal sum of value noise (..., 3) -> (...,) in [-1, 1]: octave k at frequency 2^k with
    weight 2^-k, normalised by the sum of the weights; ``salt`` as for :func:`value_noise`."""
    total, norm = 0.0, 0.0
    salt = jnp.asarray(salt, jnp.uint32)
    for k in range(octaves):
        total = total + value_noise(q * (2.0 ** k), salt * jnp.uint32(131) + jnp.uint32(k)) \
            * (0.5 ** k)
        norm += 0.5 ** k
    return total / norm


def _garment_print(points, params, axis):
    """Print coverage in [0, 1] (B, H, W) of one garment at canonical points (B, H, W, 3), metres;
    params (B, 8) and axis (B, 3) as Texture.prints / print_axes rows."""
    p = lambda i: params[:, i, None, None]  # noqa: E731
    kind, contrast, radius = p(0), p(5), p(6)
    q = points * params[:, None, None, None, 1] + params[:, None, None, 2:5]
    s = jnp.sin(2 * jnp.pi * jnp.einsum("bhwc,bc->bhw", q, axis))
    bands = jnp.clip(0.5 + 2.0 * s, 0.0, 1.0)
    c = jnp.prod(jnp.sin(2 * jnp.pi * q), axis=-1)  # a 3D checkerboard cut by the surface
    checks = jnp.clip(0.5 + 4.0 * c, 0.0, 1.0)
    d = jnp.linalg.norm(q - jnp.floor(q) - 0.5, axis=-1)  # distance to the cell centre
    dots = jnp.clip((radius - d) * 10.0, 0.0, 1.0)
    cover = jnp.where(kind == PRINT_BANDS, bands,
                      jnp.where(kind == PRINT_CHECKS, checks,
                                jnp.where(kind == PRINT_DOTS, dots, 0.0)))
    return cover * contrast


def albedo(points, region_weights, region_colors, texture: Texture):
    """Per-pixel albedo of textured people.

    Args:
      points: (B, H, W, 3) canonical (template rest-pose) surface points, metres.
      region_weights: (B, H, W, 7) REGIONS weights of those points (interpolated per vertex).
      region_colors: (B, 7, 3) sRGB 0..1 base colours (appearance.Appearance.region_colors).
      texture: a :class:`Texture` of (B, ...) arrays.
    Returns:
      (B, H, W, 3) albedo in [0, 1]: the region colours blended by weight; each garment's print
      blended towards its print colour where it covers the garment; then fBm brightness grain:
      fine on fabric, low-frequency on skin, stretched along the vertical on hair (strands).
    """
    rw, tex = region_weights, texture
    base = jnp.einsum("bhwr,brc->bhwc", rw, region_colors)
    long_sleeve = tex.garment[:, 0, None, None]
    long_legs = tex.garment[:, 1, None, None]
    top = rw[..., _SHIRT] + long_sleeve * rw[..., _LOWER_SLEEVE]
    bottom = rw[..., _TROUSERS] + long_legs * rw[..., _LOWER_LEG]
    for g, (cover, region) in enumerate(((top, _SHIRT), (bottom, _TROUSERS))):
        w = cover * _garment_print(points, tex.prints[:, g], tex.print_axes[:, g])
        delta = tex.print_colors[:, g] - region_colors[:, region]
        base = base + w[..., None] * delta[:, None, None, :]
    f0 = tex.grain[:, 0, None, None, None]
    # Three independent fields in one evaluation: fabric grain at f0, skin mottling at 0.35 f0,
    # hair strands stretched along the vertical (3 f0 across, 0.3 f0 along).
    freq = jnp.stack([f0 * jnp.ones(3), 0.35 * f0 * jnp.ones(3),
                      f0 * jnp.array([3.0, 0.3, 3.0])])  # (3, B, 1, 1, 3)
    q = points[None] * freq + tex.offset[None, :, None, None, :]
    fabric, skin_noise, strands = fbm(q, salt=jnp.arange(1, 4, dtype=jnp.uint32)[:, None, None,
                                                                                  None])
    cloth = top + bottom + rw[..., _SHOES]
    skin = rw[..., _SKIN] + (1.0 - long_sleeve) * rw[..., _LOWER_SLEEVE] \
        + (1.0 - long_legs) * rw[..., _LOWER_LEG]
    amp = lambda i: tex.grain[:, i, None, None]  # noqa: E731
    gain = 1.0 + amp(1) * cloth * fabric + amp(2) * skin * skin_noise \
        + amp(3) * rw[..., _HAIR] * strands
    return jnp.clip(base * gain[..., None], 0.0, 1.0)


def canonical_points(fragments, rest_vertices, faces):
    """(B, H, W, 3) canonical surface point of each pixel from the rasterizer's fragments and the
    (V, 3) template vertices (0 where empty)."""
    batch = fragments.mask.shape[0]
    rest = jnp.broadcast_to(rest_vertices, (batch,) + rest_vertices.shape)
    return _raster.interpolate(fragments, rest, faces)


def shade(fragments, verts_cam, faces, rest_vertices, region_weights, region_colors,
          texture: Texture, *, light, ambient, diffuse, background):
    """Textured Lambert shading of rasterized people over a background.

    Args:
      fragments: rasterizer Fragments of (B, V, 3) camera-frame ``verts_cam`` and (F, 3) faces.
      rest_vertices: (V, 3) template vertices; region_weights: (V, 7) per-vertex REGIONS weights.
      region_colors: (B, 7, 3); texture: Texture of (B, ...) arrays.
      light: (B, 1, 1, 3) direction towards the light (camera frame); ambient, diffuse: (B, 1, 1).
      background: (B, H, W, 3) in [0, 1].
    Returns:
      (B, H, W, 3) in [0, 1]: albedo * min(1, ambient + diffuse * max(0, n . l)) on the person
      (the light factor is :func:`imphmr_jax.render.shading.shade` of a white body), background
      elsewhere.
    """
    batch = fragments.mask.shape[0]
    points = canonical_points(fragments, rest_vertices, faces)
    rw = _raster.interpolate(fragments, jnp.broadcast_to(region_weights,
                                                         (batch,) + region_weights.shape), faces)
    color = albedo(points, rw, region_colors, texture)
    light_factor = _shading.shade(fragments, verts_cam, faces, jnp.ones_like(verts_cam),
                                  light=light, ambient=ambient, diffuse=diffuse)
    return jnp.where(fragments.mask[..., None], color * light_factor, background)
