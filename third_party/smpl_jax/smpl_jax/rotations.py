"""Rotation conversions with exact values and finite, correct gradients at 0 and near pi.

Conventions:
  * axis-angle: (..., 3), direction = unit axis, norm = angle in radians (right-hand rule).
  * matrix: (..., 3, 3) rotation acting on column vectors (x' = R @ x).
  * quaternion: (..., 4) as (w, x, y, z), scalar FIRST (scipy is scalar-last), unit norm;
    q and -q are the same rotation; matrix_to_quaternion returns the w >= 0 one (as does
    axis_angle_to_quaternion for angles <= pi).
  * 6D: (..., 6) in SPIN's interleaved layout [a1x, a2x, a1y, a2y, a1z, a2z], i.e. the first two
    matrix columns a1, a2 read from a (3, 2) reshape (NOT the contiguous [a1, a2] of pytorch3d).
All functions broadcast over arbitrary leading dims and are jit/vmap/grad safe.
"""
import jax.numpy as jnp

from smpl_jax.numerics import safe_norm

# Below this squared angle Taylor series replace sin(t)/t-style ratios: the closed forms and their
# derivatives are 0/0 at t = 0. A constant branch would zero the gradient at the identity, so the
# series keep the correct first-order terms; the "double where" keeps the unused branch NaN-free.
# Series are taken to t^4 so the switch is invisible even in float64.
_SMALL_ANGLE_SQ = 1e-6
# Floor on squared norms in 6D Gram-Schmidt so zero-length input gives finite values and gradients.
_NORM_EPS_SQ = 1e-12


def _skew(v):
    """(..., 3) -> (..., 3, 3) cross-product matrix [v]x."""
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    zero = jnp.zeros_like(x)
    return jnp.stack(
        [jnp.stack([zero, -z, y], -1), jnp.stack([z, zero, -x], -1), jnp.stack([-y, x, zero], -1)],
        axis=-2,
    )


def _split_small(theta_sq):
    """Small-angle mask and a sqrt that is never taken at 0 (its gradient there is inf)."""
    small = theta_sq < _SMALL_ANGLE_SQ
    return small, jnp.sqrt(jnp.where(small, 1.0, theta_sq))


def axis_angle_to_matrix(axis_angle):
    """Rodrigues' formula. (..., 3) axis-angle in radians -> (..., 3, 3) rotation matrices."""
    theta_sq = jnp.sum(axis_angle * axis_angle, axis=-1)
    small, theta = _split_small(theta_sq)
    half_sinc = jnp.sin(0.5 * theta) / theta  # sin(t/2)/t
    a = jnp.where(small, 1.0 - theta_sq / 6.0 + theta_sq**2 / 120.0, jnp.sin(theta) / theta)
    # (1 - cos t)/t^2 written as 2 sin^2(t/2)/t^2: no cancellation for small t in float32.
    b = jnp.where(small, 0.5 - theta_sq / 24.0 + theta_sq**2 / 720.0, 2.0 * half_sinc**2)
    k = _skew(axis_angle)
    eye = jnp.eye(3, dtype=axis_angle.dtype)
    return eye + a[..., None, None] * k + b[..., None, None] * (k @ k)


def axis_angle_to_quaternion(axis_angle):
    """(..., 3) axis-angle in radians -> (..., 4) unit quaternion (w, x, y, z).

    w = cos(angle / 2), so w >= 0 for angles in [0, pi].
    """
    theta_sq = jnp.sum(axis_angle * axis_angle, axis=-1)
    small, theta = _split_small(theta_sq)
    w = jnp.where(small, 1.0 - theta_sq / 8.0 + theta_sq**2 / 384.0, jnp.cos(0.5 * theta))
    s = jnp.where(small, 0.5 - theta_sq / 48.0 + theta_sq**2 / 3840.0, jnp.sin(0.5 * theta) / theta)
    return jnp.concatenate([w[..., None], s[..., None] * axis_angle], axis=-1)


def quaternion_to_axis_angle(quaternion):
    """(..., 4) quaternion (w, x, y, z) -> (..., 3) axis-angle, angle in [0, pi] radians.

    The input need not be unit norm (only its direction matters) and q, -q give the same result.
    Uses angle = 2 atan2(|v|, w), which stays well conditioned near pi, unlike 2 acos(w).
    """
    q = jnp.where(quaternion[..., :1] < 0, -quaternion, quaternion)  # w >= 0 <=> angle <= pi
    w, v = q[..., 0], q[..., 1:]
    s_sq = jnp.sum(v * v, axis=-1)
    w_sq = w * w
    # Relative test (|v|/w small), so non-unit quaternions take the series only where it is exact.
    small = s_sq < _SMALL_ANGLE_SQ * w_sq
    s = jnp.sqrt(jnp.where(small, 1.0, s_sq))
    w_safe = jnp.where(small, w, 1.0)  # w may be 0 (angle pi) where the series is not used
    t_sq = s_sq / (w_safe * w_safe)
    # 2 atan2(s, w)/s = (2/w) atan(t)/t with t = s/w.
    factor = jnp.where(
        small, 2.0 / w_safe * (1.0 - t_sq / 3.0 + t_sq**2 / 5.0), 2.0 * jnp.arctan2(s, w) / s
    )
    return factor[..., None] * v


def quaternion_to_matrix(quaternion):
    """(..., 4) quaternion (w, x, y, z) -> (..., 3, 3) rotation matrix.

    Scales by 2/|q|^2, so a non-unit (but non-zero) quaternion gives the rotation of q/|q|.
    """
    w, x, y, z = (quaternion[..., i] for i in range(4))
    s = 2.0 / jnp.sum(quaternion * quaternion, axis=-1)
    rows = [
        [1 - s * (y * y + z * z), s * (x * y - z * w), s * (x * z + y * w)],
        [s * (x * y + z * w), 1 - s * (x * x + z * z), s * (y * z - x * w)],
        [s * (x * z - y * w), s * (y * z + x * w), 1 - s * (x * x + y * y)],
    ]
    return jnp.stack([jnp.stack(r, axis=-1) for r in rows], axis=-2)


def matrix_to_quaternion(matrix):
    """(..., 3, 3) rotation matrix -> (..., 4) unit quaternion (w, x, y, z) with w >= 0.

    Shepperd's method: of the four formulas (each dividing by one of 4w^2, 4x^2, 4y^2, 4z^2),
    use the one with the largest divisor (>= 1 for a rotation), so nothing cancels near pi.
    """
    m = matrix
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    # Row i equals 4 q_i q (so it is +-q up to scale); its i-th entry is 4 q_i^2.
    candidates = jnp.stack(
        [
            jnp.stack([1 + m00 + m11 + m22, m21 - m12, m02 - m20, m10 - m01], -1),
            jnp.stack([m21 - m12, 1 + m00 - m11 - m22, m01 + m10, m02 + m20], -1),
            jnp.stack([m02 - m20, m01 + m10, 1 - m00 + m11 - m22, m12 + m21], -1),
            jnp.stack([m10 - m01, m02 + m20, m12 + m21, 1 - m00 - m11 + m22], -1),
        ],
        axis=-2,
    )
    diag = jnp.diagonal(candidates, axis1=-2, axis2=-1)
    best = jnp.argmax(diag, axis=-1)
    # Select first, normalise second: the selected row has norm >= 1, so no 0/0 gradient leaks in.
    c = jnp.take_along_axis(candidates, best[..., None, None], axis=-2)[..., 0, :]
    q = c / jnp.sqrt(jnp.sum(c * c, axis=-1, keepdims=True))
    return jnp.where(q[..., :1] < 0, -q, q)


def matrix_to_axis_angle(matrix):
    """(..., 3, 3) rotation matrix -> (..., 3) axis-angle in radians, angle in [0, pi].

    Goes through Shepperd's quaternion and the atan2 log (no arccos(trace), whose gradient is
    infinite at 0 and pi). At exactly pi the sign of the axis is arbitrary (both are correct).
    """
    return quaternion_to_axis_angle(matrix_to_quaternion(matrix))


def _normalize(x):
    return x / safe_norm(x, _NORM_EPS_SQ, keepdims=True)


def rot6d_to_matrix(x):
    """(..., 6) SPIN-layout 6D rotation -> (..., 3, 3) rotation matrix (Zhou et al. 2019).

    The 6-vector is reshaped to (3, 2); its columns a1, a2 are Gram-Schmidt orthonormalised into
    the first two matrix columns b1, b2 and b3 = b1 x b2, so any non-degenerate input gives det +1.
    """
    a = x.reshape(x.shape[:-1] + (3, 2))
    a1, a2 = a[..., 0], a[..., 1]
    b1 = _normalize(a1)
    b2 = _normalize(a2 - jnp.sum(b1 * a2, axis=-1, keepdims=True) * b1)
    b3 = jnp.cross(b1, b2)
    return jnp.stack([b1, b2, b3], axis=-1)


def matrix_to_rot6d(matrix):
    """(..., 3, 3) rotation matrix -> (..., 6) SPIN-layout 6D: first two columns, row-major."""
    return matrix[..., :, :2].reshape(matrix.shape[:-2] + (6,))
