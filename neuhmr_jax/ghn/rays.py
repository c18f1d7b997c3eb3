"""Rays of the GHN's target camera: generation, box clipping, samples, pixel selection, chunking.

Frames and units: world frame (ZJU-MoCap's), metres; world -> camera x_cam = R x_world + t; camera
frame x right, y down, z forward; image coordinates (u, v) as `imphmr_jax.geometry.camera` (pixel
(row i, col j) centred at (j + 0.5, i + 0.5)). Ray directions are NOT normalised: direction =
Rᵀ K⁻¹ [u, v, 1], so the ray parameter of a point is its camera-frame depth z, and the distance
between samples at parameters d_j is (d_{j+1} - d_j)·|direction|, which is what
`imphmr_jax.render.volume.integrate(..., ray_norm=|direction|)` expects.
"""
import math
from typing import Any, Callable, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp

from imphmr_jax.geometry import camera
from imphmr_jax.geometry import rays as generic_rays
from imphmr_jax.render.volume import sample_depths

MIN_NEAR = generic_rays.MIN_NEAR


class Rays(NamedTuple):
    """R rays of one camera; a pytree, so it passes through jit / vmap / `render_chunked`."""
    origins: jax.Array  # (R, 3) world-frame camera centre -Rᵀt, metres
    directions: jax.Array  # (R, 3) world-frame Rᵀ K⁻¹ [u, v, 1] (camera z component 1)
    pixels: jax.Array  # (R, 2) image coordinates (u, v) the rays pass through, pixels


def camera_rays_world(K: jax.Array, R: jax.Array, t: jax.Array, pixels: jax.Array) -> Rays:
    """World-frame rays through image positions (`camera.unproject` at depth 1, then to world).

    The point at parameter z on the ray of pixel (u, v) is the world point whose camera-frame
    coordinates are z·K⁻¹[u, v, 1], i.e. the point at camera depth z projecting to (u, v).

    Args:
      K: (3, 3) calibration matrix (zero skew) or (4,) [fx, fy, cx, cy], pixels.
      R: (3, 3) world-to-camera rotation.
      t: (3,) world-to-camera translation, metres.
      pixels: (R, 2) image coordinates (u, v).
    Returns:
      Rays with origins (R, 3), directions (R, 3), pixels (R, 2).
    """
    pixels = jnp.asarray(pixels)
    R, t = jnp.asarray(R), jnp.asarray(t)
    dirs_cam = camera.unproject(pixels, jnp.ones(pixels.shape[:-1], pixels.dtype),
                                camera.as_intrinsics(K))
    r_inv = jnp.swapaxes(R, -1, -2)  # camera -> world rotation
    directions = camera.transform(dirs_cam, r_inv, jnp.zeros_like(t))
    origin = -(r_inv @ t)
    return Rays(jnp.broadcast_to(origin, directions.shape), directions, pixels)


def ray_box_intersection(rays: Rays, box_lo: jax.Array, box_hi: jax.Array, *,
                         min_near: float = MIN_NEAR) -> Tuple[jax.Array, jax.Array, jax.Array]:
    """Entry / exit depths of the rays in a world-frame axis-aligned box (e.g. the posed body's
    bounding box), by `imphmr_jax.geometry.rays.ray_box_intersection` (slab method).

    Returns:
      near: (R,) >= min_near; far: (R,) > near where hit; hit: (R,) bool. Both parameters are
      camera depths (see the module docstring); rays that miss get near = far = min_near.
    """
    return generic_rays.ray_box_intersection(rays.origins, rays.directions, box_lo, box_hi,
                                             min_near=min_near)


def sample_points(rays: Rays, near: jax.Array, far: jax.Array, num_samples: int,
                  key: Optional[jax.Array] = None) -> Tuple[jax.Array, jax.Array]:
    """Samples along each ray between near and far (`imphmr_jax.render.volume.sample_depths`:
    evenly spaced with both ends without `key`, one stratified draw per stratum with it).

    Args:
      rays: R rays.
      near, far: (R,) ray parameters (camera depths), near <= far.
      num_samples: S.
      key: optional PRNG key for stratified jitter.
    Returns:
      points: (R, S, 3) world points origin + d·direction.
      depths: (R, S) their parameters d (camera depths), non-decreasing along S.
    """
    depths = sample_depths(near, far, num_samples, key=key,
                           batch_shape=rays.origins.shape[:-1])
    points = rays.origins[..., None, :] + depths[..., None] * rays.directions[..., None, :]
    return points, depths


def _mask_box(mask: jax.Array, dilation: int):
    """Inclusive (row0, row1, col0, col1) of the mask's bounding box grown by `dilation` pixels
    and clipped to the image; the whole image for an empty mask."""
    h, w = mask.shape
    rows, cols = jnp.any(mask, axis=1), jnp.any(mask, axis=0)
    empty = ~jnp.any(rows)
    r0 = jnp.where(empty, 0, jnp.argmax(rows) - dilation)
    r1 = jnp.where(empty, h - 1, h - 1 - jnp.argmax(rows[::-1]) + dilation)
    c0 = jnp.where(empty, 0, jnp.argmax(cols) - dilation)
    c1 = jnp.where(empty, w - 1, w - 1 - jnp.argmax(cols[::-1]) + dilation)
    return (jnp.clip(r0, 0, h - 1), jnp.clip(r1, 0, h - 1), jnp.clip(c0, 0, w - 1),
            jnp.clip(c1, 0, w - 1))


def sample_pixels(key: jax.Array, mask: jax.Array, num_rays: int, *,
                  fraction_inside: float = 0.8, box_dilation: int = 16) -> jax.Array:
    """Random training pixels in and around the person (jit-friendly: the output size is static).

    The first round(fraction_inside·num_rays) pixels are drawn uniformly, with replacement, from
    the mask's pixels; the others uniformly from the mask's bounding box grown by `box_dilation`
    pixels on each side (clipped to the image), mask pixels included. An empty mask makes both
    draws uniform over the whole image.

    Args:
      key: PRNG key.
      mask: (H, W) bool person mask.
      num_rays: total number of pixels (static).
      fraction_inside: share drawn from the mask, in [0, 1] (static).
      box_dilation: margin around the mask's box, pixels (static or traced int).
    Returns:
      (num_rays, 2) float32 image coordinates (u, v) of pixel centres, (col + 0.5, row + 0.5);
      the pixel's row is floor(v), its column floor(u).
    """
    if not 0.0 <= fraction_inside <= 1.0:
        raise ValueError(f"fraction_inside must be in [0, 1], got {fraction_inside}")
    mask = jnp.asarray(mask, bool)
    h, w = mask.shape
    n_in = int(round(fraction_inside * num_rays))
    n_box = num_rays - n_in
    k_in, k_row, k_col = jax.random.split(key, 3)
    flat = mask.reshape(-1)
    weights = jnp.where(jnp.any(flat), flat.astype(jnp.float32), 1.0)
    # choice with p and replacement is an inverse-CDF lookup (cumsum + searchsorted): O(H·W + n).
    idx = jax.random.choice(k_in, h * w, (n_in,), replace=True, p=weights / jnp.sum(weights))
    r0, r1, c0, c1 = _mask_box(mask, box_dilation)
    rows = jnp.concatenate([idx // w, jax.random.randint(k_row, (n_box,), r0, r1 + 1)])
    cols = jnp.concatenate([idx % w, jax.random.randint(k_col, (n_box,), c0, c1 + 1)])
    return jnp.stack([cols, rows], axis=-1).astype(jnp.float32) + 0.5


def render_chunked(fn: Callable[[Any], Any], rays_tree: Any, chunk: int) -> Any:
    """fn over the rays in chunks of `chunk`, with bounded memory, as one program.

    Every leaf of `rays_tree` has the rays on axis 0 (R of them, the same R for all leaves). The
    rays are padded to a multiple of `chunk` by repeating the last ray (finite inputs, unlike
    zeros: a zero direction could give NaN), split into chunks, mapped with `jax.lax.map`
    (sequential) over `jax.checkpoint(fn)` (the backward pass recomputes each chunk's
    intermediates instead of storing all of them), and the padding is stripped. Values and
    gradients (w.r.t. the rays and anything fn closes over) equal those of fn on all rays at once,
    provided fn treats rays independently.

    Args:
      fn: chunk of rays (same pytree, leaves (chunk, ...)) -> pytree of per-ray arrays
        (leaves (chunk, ...)).
      rays_tree: pytree of (R, ...) arrays.
      chunk: rays per chunk (> 0); a chunk larger than R becomes R.
    Returns:
      fn's pytree with leaves (R, ...).
    """
    leaves = jax.tree_util.tree_leaves(rays_tree)
    if not leaves:
        raise ValueError("render_chunked needs at least one array of rays")
    n = leaves[0].shape[0]
    if any(leaf.shape[0] != n for leaf in leaves):
        raise ValueError(f"every leaf needs the same number of rays on axis 0, got "
                         f"{[leaf.shape[0] for leaf in leaves]}")
    if chunk <= 0:
        raise ValueError(f"chunk must be positive, got {chunk}")
    chunk = min(chunk, n)
    n_chunks = math.ceil(n / chunk)
    pad = n_chunks * chunk - n

    def split(x):
        if pad:
            x = jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)], axis=0)
        return x.reshape((n_chunks, chunk) + x.shape[1:])

    out = jax.lax.map(jax.checkpoint(fn), jax.tree_util.tree_map(split, rays_tree))
    return jax.tree_util.tree_map(
        lambda y: y.reshape((n_chunks * chunk,) + y.shape[2:])[:n], out)
