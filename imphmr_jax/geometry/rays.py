"""Ray geometry that is not tied to one camera model: ray / axis-aligned box intersection.

A ray is origin + t · direction with t >= 0; directions need not be unit length, and every
parameter t below is in units of the direction's length (with directions K⁻¹[u, v, 1] rotated to
the world, t is the camera-frame depth z).
"""
import jax
import jax.numpy as jnp

# Smallest near parameter returned: the segment starts just in front of the origin, never at it.
MIN_NEAR = 1e-4


def ray_box_intersection(origins: jax.Array, directions: jax.Array, box_lo: jax.Array,
                         box_hi: jax.Array, *, min_near: float = MIN_NEAR):
    """Where rays enter and leave an axis-aligned box (slab method).

    Per axis a, the ray is inside the slab box_lo[a] <= x_a <= box_hi[a] for t between
    (box_lo[a] - o_a) / d_a and (box_hi[a] - o_a) / d_a; the ray is inside the box on the
    intersection of the three intervals [max entry, min exit], clipped to t >= min_near. A zero
    direction component is handled exactly, without dividing by it: the ray is then inside that
    slab for every t if o_a lies in [box_lo[a], box_hi[a]] (boundary included) and never
    otherwise. An origin inside the box gives near = min_near.

    Args:
      origins: (..., 3) ray origins.
      directions: (..., 3) ray directions (any length; an all-zero direction never hits).
      box_lo, box_hi: (3,) or broadcastable, box corners in the frame of the rays, lo <= hi.
      min_near: smallest near parameter (> 0).
    Returns:
      near: (...,) entry parameter, >= min_near; min_near for rays that miss.
      far: (...,) exit parameter, > near for rays that hit; min_near for rays that miss.
      hit: (...,) bool, the ray meets the box in a segment of positive length in front of
        min_near.
      Differentiable in origins, directions and the box where the entry / exit face is unique.
    """
    origins, directions = jnp.asarray(origins), jnp.asarray(directions)
    dtype = jnp.result_type(origins, directions, float)
    lo, hi = jnp.asarray(box_lo, dtype), jnp.asarray(box_hi, dtype)
    parallel = directions == 0
    d = jnp.where(parallel, 1.0, directions)  # double where: never divide by 0
    t_lo, t_hi = (lo - origins) / d, (hi - origins) / d
    in_slab = (origins >= lo) & (origins <= hi)
    inf = jnp.asarray(jnp.inf, dtype)
    enter = jnp.where(parallel, jnp.where(in_slab, -inf, inf), jnp.minimum(t_lo, t_hi))
    leave = jnp.where(parallel, jnp.where(in_slab, inf, -inf), jnp.maximum(t_lo, t_hi))
    near = jnp.maximum(jnp.max(enter, axis=-1), min_near)
    far = jnp.min(leave, axis=-1)
    hit = (far > near) & jnp.isfinite(far)
    near = jnp.where(hit, near, min_near)
    far = jnp.where(hit, far, min_near)
    return near, far, hit
