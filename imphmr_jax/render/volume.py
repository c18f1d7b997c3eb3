"""Volume rendering of the neural feature field (ImpHMR eq. 1 and eq. 4;
docs/method.md#volume-rendering).

Small pure jax.numpy functions on batched arrays; all are jit-, vmap- and grad-friendly. Depths and
interval lengths are in the units of the camera frame (metres in ImpHMR's SPIN-style camera; GIRAFFE
uses its own world units) and density sigma is in 1 / those units.

The sampling and integration follow GIRAFFE (`im2scene/giraffe/models/generator.py`,
`add_noise_to_interval`, `calc_volume_weights`, `volume_render_image`) so that weights converted
from the PyTorch code render the same image; where GIRAFFE's float arithmetic can overflow or give
NaN gradients the same formula is evaluated in a safe form (see `integrate`).
"""
from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp

# GIRAFFE adds 1e-10 to every factor (1 - alpha_k) of the transmittance, so a fully opaque sample
# leaves 1e-10 of the light (never exactly zero). Kept for parity with converted weights.
TRANSMITTANCE_EPS = 1e-10
# GIRAFFE's length of the last interval: "infinity", so the last sample absorbs whatever density
# it has (with sigma > 0 it is opaque).
LAST_DELTA = 1e10


def positional_encoding(x: jax.Array, num_octaves: int, include_input: bool = False) -> jax.Array:
    """Sinusoidal positional encoding gamma of ImpHMR eq. 1 (GIRAFFE `Decoder.transform_points`).

    gamma(t) = (sin(2^0 pi t), cos(2^0 pi t), ..., sin(2^(L-1) pi t), cos(2^(L-1) pi t)), applied to
    every coordinate of x.

    Output ordering (GIRAFFE's, so converted first-layer weights line up): for each octave
    i = 0..L-1 a block [sin(2^i pi x_1..x_D), cos(2^i pi x_1..x_D)], blocks concatenated over i:
      out[..., 2*D*i + d]     = sin(2^i pi x_d)
      out[..., 2*D*i + D + d] = cos(2^i pi x_d)
    With `include_input` the raw x is prepended (GIRAFFE never does this; off by default).

    GIRAFFE divides points and directions by `downscale_p_by` (2) before encoding so that points in
    [-2, 2] map into [-1, 1]; that division is the caller's job, not done here.

    Args:
      x: (..., D) coordinates, unitless (the period of octave 0 is 2, i.e. [-1, 1]).
      num_octaves: L >= 0 (ImpHMR: 10 for points, 4 for ray directions).
      include_input: prepend x to the encoding.

    Returns:
      (..., 2*L*D) encoding, or (..., D + 2*L*D) with `include_input`.
    """
    x = jnp.asarray(x)
    # 2^i * pi is exact in floating point up to the rounding of pi, like GIRAFFE's (2 ** i) * pi.
    scales = (2.0 ** jnp.arange(num_octaves, dtype=x.dtype)) * jnp.pi
    xb = x[..., None, :] * scales[:, None]  # (..., L, D)
    enc = jnp.concatenate([jnp.sin(xb), jnp.cos(xb)], axis=-1)  # (..., L, 2D): per-octave sin|cos
    enc = enc.reshape(x.shape[:-1] + (2 * num_octaves * x.shape[-1],))
    if include_input:
        enc = jnp.concatenate([x, enc], axis=-1)
    return enc


def sample_depths(near, far, num_samples: int, *, key: Optional[jax.Array] = None,
                  batch_shape: Sequence[int] = ()) -> jax.Array:
    """Depths of the samples along each ray (GIRAFFE `add_noise_to_interval`).

    Without `key`: d_j = near + j / (N - 1) * (far - near), j = 0..N-1 (both endpoints included, as
    GIRAFFE's `near + linspace(0, 1, N) * (far - near)`), the same for every ray.
    With `key` (training): stratified jitter. With the mid-points m_j = (d_j + d_{j+1}) / 2 the
    strata are [d_0, m_0], [m_0, m_1], ..., [m_{N-2}, d_{N-1}] and one depth is drawn uniformly in
    each, independently for every ray. The first and last strata are half as long as the others
    (GIRAFFE's choice) so the jittered samples still cover exactly [near, far].

    Args:
      near, far: scalars or arrays broadcastable to `batch_shape`, same units as the ray
        parametrisation (point = origin + d * ray); near <= far.
      num_samples: N >= 1 (ImpHMR: 32).
      key: optional `jax.random` key; None gives the deterministic evaluation depths.
      batch_shape: leading shape of the output (e.g. (B, R) for B images of R rays).

    Returns:
      (*B, N) depths, sorted non-decreasing along the last axis and within [near, far], where
      B = broadcast of `batch_shape`, near.shape and far.shape.
    """
    near, far = jnp.asarray(near), jnp.asarray(far)
    dtype = jnp.result_type(near, far, float)
    shape = jnp.broadcast_shapes(tuple(batch_shape), near.shape, far.shape) + (num_samples,)
    t = jnp.linspace(0.0, 1.0, num_samples, dtype=dtype)
    d = near[..., None].astype(dtype) + t * (far - near)[..., None].astype(dtype)
    d = jnp.broadcast_to(d, shape)
    if key is None:
        return d
    mids = 0.5 * (d[..., 1:] + d[..., :-1])
    lower = jnp.concatenate([d[..., :1], mids], axis=-1)
    upper = jnp.concatenate([mids, d[..., -1:]], axis=-1)
    u = jax.random.uniform(key, shape, dtype=dtype)
    # lower + (upper - lower) * u can round past `upper`; the clip keeps each sample in its stratum,
    # and since upper_j == lower_{j+1} that also keeps the output sorted.
    return jnp.clip(lower + (upper - lower) * u, lower, upper)


class RenderResult(NamedTuple):
    """Output of `integrate`; ... is the batch shape, R rays, S samples per ray, C channels."""
    features: jax.Array  # (..., R, C) rendered feature F = sum_j w_j f_j (ImpHMR eq. 4)
    weights: jax.Array  # (..., R, S) w_j = T_j alpha_j
    depth: jax.Array  # (..., R) expected depth sum_j w_j d_j (not normalised by the opacity)
    opacity: jax.Array  # (..., R) accumulated opacity sum_j w_j


def integrate(sigma: jax.Array, features: jax.Array, depths: jax.Array, ray_norm=1.0, *,
              last_delta: float = LAST_DELTA, occupancy: Optional[jax.Array] = None
              ) -> RenderResult:
    """Numerical volume integration along rays, ImpHMR eq. 4 (GIRAFFE;
    docs/method.md#volume-rendering).

      delta_j = (d_{j+1} - d_j) ||ray||,  delta_{S-1} = last_delta ||ray||
      alpha_j = 1 - exp(-relu(sigma_j) delta_j)
      T_j     = prod_{k<j} (1 - alpha_k + 1e-10)          (exclusive: T_0 = 1)
      w_j     = alpha_j T_j,   F = sum_j w_j f_j

    No background term (no "(1 - sum w) * background"): ImpHMR renders only the subject.

    The same values as GIRAFFE's formula, evaluated so that nothing overflows and all gradients are
    finite: sigma * delta may be huge (1e30 * 1e10 overflows float32 to inf), so alpha is
    -expm1(-x) (exact 1 at inf, gradient exp(-x) = 0) and the product T_j is taken in log space,
    log(1 - alpha_k + 1e-10) = logaddexp(-x_k, log 1e-10), which is bounded below by log 1e-10 and
    has a derivative in [-1, 0]; a plain cumprod of (1 - alpha + eps) would divide by tiny factors
    in its gradient. Because of GIRAFFE's 1e-10 the opacity can exceed 1 by at most about S * 1e-10.

    Args:
      sigma: (..., R, S) raw densities, 1 / depth units; negative values count as 0 (ReLU).
      features: (..., R, S, C) features f_j at the samples.
      depths: (..., R, S) or (S,) sample depths d_j along each ray, non-decreasing; the actual
        distance between samples is (d_{j+1} - d_j) * ||ray|| (rays need not be unit length).
      ray_norm: scalar or (..., R) length ||ray|| of each ray direction.
      last_delta: length (in depth units, before ||ray||) of the interval after the last sample.

    Returns:
      RenderResult(features (..., R, C), weights (..., R, S), depth (..., R), opacity (..., R)),
      computed in float32 or wider (float64 when sigma or depths are float64).
    """
    # At least float32 even for bfloat16 inputs: bfloat16 depth differences and log-transmittance
    # sums lose most of their digits.
    dtype = jnp.result_type(sigma, depths, jnp.float32)
    sigma, depths = jnp.asarray(sigma, dtype), jnp.asarray(depths, dtype)
    # scalar -> (1,), (..., R) -> (..., R, 1): one length per ray, shared by its samples.
    ray_norm = jnp.asarray(ray_norm, dtype)[..., None]
    last = jnp.broadcast_to(jnp.asarray(last_delta, depths.dtype)[..., None],
                            depths.shape[:-1] + (1,))
    delta = jnp.concatenate([depths[..., 1:] - depths[..., :-1], last], axis=-1) * ray_norm
    # relu as in GIRAFFE's F.relu(sigma); its gradient at exactly 0 is 0 in JAX.
    x = jax.nn.relu(sigma) * delta  # optical depth of each interval, may be +inf
    alpha = -jnp.expm1(-x)
    log_eps = jnp.log(jnp.asarray(TRANSMITTANCE_EPS, x.dtype))
    if occupancy is None:
        log_factor = jnp.logaddexp(-x, log_eps)
    else:
        # 1 - w' alpha = (1 - w') + w' exp(-x): a log-sum of two non-negative terms, finite and with
        # bounded derivatives for w' in [0, 1] and any x (x = inf gives log(1 - w')).
        # w' is capped just below 1 inside the logs so that log(1 - w') and its derivative stay
        # finite (a fully opaque sample then leaves 1e-7 of the light instead of 1e-10).
        w = jnp.clip(jnp.asarray(occupancy, dtype), 0.0, 1.0)
        alpha = w * alpha
        log_empty = jnp.log1p(-jnp.minimum(w, 1.0 - 1e-7))
        log_kept = jnp.log(jnp.maximum(w, 1e-30)) - x
        log_factor = jnp.logaddexp(jnp.logaddexp(log_empty, log_kept), log_eps)
    log_t = jnp.cumsum(log_factor, axis=-1)
    # Exclusive product: shift right by one instead of subtracting (inf - inf would be NaN).
    log_t = jnp.concatenate([jnp.zeros_like(log_t[..., :1]), log_t[..., :-1]], axis=-1)
    weights = alpha * jnp.exp(log_t)
    return RenderResult(
        features=jnp.sum(weights[..., None] * features, axis=-2),
        weights=weights,
        depth=jnp.sum(weights * depths, axis=-1),
        opacity=jnp.sum(weights, axis=-1),
    )
