"""Rotation conversions with exact values and finite, correct gradients at 0 and near pi.

Conventions: axis-angle (..., 3) in radians; matrices (..., 3, 3) acting on column vectors.
"""
import jax.numpy as jnp

# Below this squared angle the Taylor series replace sin(t)/t and (1 - cos t)/t^2: both the
# closed forms and their derivatives are 0/0 at t = 0 (the "double where" shim keeps the
# unused branch from producing NaN gradients).
_SMALL_ANGLE_SQ = 1e-6


def _skew(v):
    """(..., 3) -> (..., 3, 3) cross-product matrix [v]x."""
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    zero = jnp.zeros_like(x)
    return jnp.stack(
        [jnp.stack([zero, -z, y], -1), jnp.stack([z, zero, -x], -1), jnp.stack([-y, x, zero], -1)],
        axis=-2,
    )


def axis_angle_to_matrix(axis_angle):
    """Rodrigues' formula. (..., 3) axis-angle in radians -> (..., 3, 3) rotation matrices."""
    theta_sq = jnp.sum(axis_angle * axis_angle, axis=-1)
    small = theta_sq < _SMALL_ANGLE_SQ
    safe_theta_sq = jnp.where(small, 1.0, theta_sq)
    safe_theta = jnp.sqrt(safe_theta_sq)
    a = jnp.where(small, 1.0 - theta_sq / 6.0, jnp.sin(safe_theta) / safe_theta)
    b = jnp.where(small, 0.5 - theta_sq / 24.0, (1.0 - jnp.cos(safe_theta)) / safe_theta_sq)
    k = _skew(axis_angle)
    eye = jnp.eye(3, dtype=axis_angle.dtype)
    return eye + a[..., None, None] * k + b[..., None, None] * (k @ k)
