"""Differentiable soft silhouette (SoftRas, Liu et al. 2019, eq. 1 and the silhouette aggregate).

Per pixel p and face f, D_f(p) = sigmoid(δ · d²(p, f) / sigma), with d the 2D distance from the
pixel centre to the projected triangle and δ = +1 inside, -1 outside; the silhouette is
1 - Π_f (1 - D_f(p)). The product is accumulated in log space, log(1 - D) = log_sigmoid(-δ d²/σ),
by a scatter-add over the same static tile schedule as the hard rasterizer, with every face's
bbox widened by the reach of its sigmoid (`reach`·sqrt(sigma), beyond which D < sigmoid(-reach²)).

Units: distances are in NORMALISED screen units, pixels divided by max(H, W)/2 (the long image side
spans 2, as in SoftRas' NDC), so sigma is in those units squared and means the same blur at any
resolution: sigma = 1e-4 is a transition half-width of about 0.01·max(H, W)/2 pixels (0.64 px at
128²). As sigma -> 0 the result tends to the hard silhouette (`rasterize.silhouette`).

Limitation: faces with any vertex closer than `near` are dropped (no near-plane clipping here);
the soft silhouette is meant for bodies in front of the camera.
"""
from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp

from imphmr_jax.render.rasterize import (_as_intrinsics, clipped_screen_bbox, image_rows,
                                         pixel_range, pixel_slots, required_tiles,
                                         schedule_tiles)
from smpl_jax.numerics import nonzero_denominator


def _soft_silhouette(vertices, faces, intrinsics, height, width, sigma, near, tile, max_tiles,
                     reach):
    b = vertices.shape[0]
    intr = _as_intrinsics(intrinsics, b)
    scale = max(height, width) / 2.0  # pixels per normalised unit
    margin = reach * jnp.sqrt(sigma) * scale  # traced: annealing sigma does not recompile
    tri = vertices[:, faces]  # (B, F, 3, 3)
    z = tri[..., 2]
    in_front = jnp.all(z >= near, axis=-1)
    zs = jnp.where(in_front[..., None], z, 1.0)  # keeps dropped faces' gradients finite
    fx, fy, cx, cy = (intr[:, i, None, None] for i in range(4))
    uv = jnp.stack([fx * tri[..., 0] / zs + cx, fy * tri[..., 1] / zs + cy], -1)  # (B, F, 3, 2)

    umin, umax, vmin, vmax, _ = clipped_screen_bbox(jax.lax.stop_gradient(tri), intr, near)
    j0, nj = pixel_range(umin - margin, umax + margin, width)
    i0, ni = pixel_range(vmin - margin, vmax + margin, height)
    live = in_front & (ni > 0) & (nj > 0)
    face, rows, cols, valid, overflow = schedule_tiles(i0, ni, j0, nj, live, tile, max_tiles)

    q = jnp.take_along_axis(uv, face[..., None, None], axis=1) / scale  # (B, T, 3, 2)
    qx = [q[:, :, i, 0, None, None] for i in range(3)]  # (B, T, 1, 1) each
    qy = [q[:, :, i, 1, None, None] for i in range(3)]
    px = ((cols.astype(jnp.float32) + 0.5) / scale)[..., None, :]  # (B, T, 1, tile)
    py = ((rows.astype(jnp.float32) + 0.5) / scale)[..., :, None]  # (B, T, tile, 1)
    # Unrolled over the three edges so every array is (B, T, tile, tile): trailing axes of size
    # 2 or 3 defeat XLA's vectorisation on CPU.
    d2, pos, neg = None, True, True
    for i in range(3):
        ex, ey = qx[(i + 1) % 3] - qx[i], qy[(i + 1) % 3] - qy[i]
        ax, ay = px - qx[i], py - qy[i]
        ee = ex * ex + ey * ey
        t = jnp.clip((ax * ex + ay * ey) / nonzero_denominator(ee), 0.0, 1.0)
        dx, dy = ax - t * ex, ay - t * ey
        di = dx * dx + dy * dy  # squared distance to edge i (segment)
        d2 = di if d2 is None else jnp.minimum(d2, di)
        cross = ex * ay - ey * ax  # edge function; inside = same sign on all edges, either winding
        pos, neg = pos & (cross > 0), neg & (cross < 0)
    x = jnp.where(pos | neg, d2, -d2) / sigma
    log_outside = jax.nn.log_sigmoid(-x)  # log(1 - D), exact even where D ~ 1
    log_outside = jnp.where(valid, log_outside, 0.0)

    n_pix = height * width
    pix = jnp.where(valid, rows[..., :, None] * width + cols[..., None, :], n_pix)
    acc = jnp.zeros((b * (n_pix + 1),), log_outside.dtype).at[pixel_slots(pix, n_pix)].add(
        log_outside.reshape(-1))
    acc = image_rows(acc, b, n_pix)
    return -jnp.expm1(acc).reshape(b, height, width), overflow


_soft_silhouette_jit = jax.jit(_soft_silhouette, static_argnums=(3, 4, 6, 7, 8, 9))


def soft_silhouette(vertices, faces, intrinsics, height: int, width: int, *, sigma: float = 1e-4,
                    near: float = 1e-3, max_tiles: Optional[int] = None, tile: int = 4,
                    reach: float = 3.0, return_overflow: bool = False):
    """Soft silhouette in [0, 1], differentiable w.r.t. the vertices.

    Args:
      vertices: (B, V, 3) camera-space vertices (x right, y down, z forward).
      faces: (F, 3) int.
      intrinsics: (B, 4) or (4,) [fx, fy, cx, cy] in pixels.
      height, width: image size (static).
      sigma: sigmoid sharpness in normalised screen units squared (pixels / (max(H, W)/2)); may be
        traced (not static), but the tile budget must cover the reach of the largest sigma used.
      near: faces with a vertex at z < near are dropped.
      max_tiles, tile: static tile budget / tile edge as in `rasterize.rasterize`; max_tiles=None
        sizes it from the concrete inputs (raises under jit).
      reach: each face influences pixels within reach·sqrt(sigma) of it (D < sigmoid(-reach²)
        beyond; 3 -> 1.2e-4).
      return_overflow: also return (B,) int32 faces cut by the tile budget.
    Returns:
      (B, H, W) float32, or (silhouette, overflow) if return_overflow.
    """
    if max_tiles is None:
        try:
            margin = reach * math.sqrt(float(sigma)) * max(height, width) / 2.0
        except jax.errors.ConcretizationTypeError as e:
            raise ValueError("max_tiles=None needs a concrete sigma and vertices; under jit pass "
                             "a static max_tiles= (see rasterize.required_tiles)") from e
        max_tiles = required_tiles(vertices, faces, intrinsics, height, width, near=near,
                                   tile=tile, margin=margin)
    sil, overflow = _soft_silhouette_jit(jnp.asarray(vertices), jnp.asarray(faces, jnp.int32),
                                         jnp.asarray(intrinsics), int(height), int(width),
                                         jnp.asarray(sigma), float(near), int(tile),
                                         int(max_tiles),
                                         float(reach))
    return (sil, overflow) if return_overflow else sil
