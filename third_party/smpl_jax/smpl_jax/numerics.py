"""Numerically safe versions of the few operations that blow up at a boundary (multinerf's
``math.py`` style). Every guard takes its epsilon as an argument: a call site keeps the epsilon it
always had, so its values do not move by a bit.

Why a guard at all: under ``jax.grad`` the operation is differentiated at the guarded input too.
``jnp.where(ok, x / d, 0)`` still evaluates (and differentiates) ``x / d`` at d = 0, and
0 · inf = NaN poisons the whole gradient; ``sqrt`` has an infinite derivative at 0. Each helper
below keeps both the value and the gradient finite there.

This module lives in smpl_jax (the lowest layer: imphmr_jax depends on it, never the reverse) so
that rotations, rendering, losses, metrics and models share one copy.
"""
import jax
import jax.numpy as jnp


def safe_div(numerator, denominator, eps):
    """numerator / max(denominator, eps), for denominators that are >= 0 by construction (sums of
    weights, variances) but may be 0 (nothing selected, a degenerate point set). The clamp changes
    only denominators below eps, so keep eps far below any meaningful value."""
    return numerator / jnp.maximum(denominator, eps)


def nonzero_denominator(denominator, ok=None):
    """`denominator` where `ok` (default: denominator > 0), 1 elsewhere: a divisor that is never 0.

    The "double where": the caller divides by this and then discards (or masks to 0) the results
    where not ok, so the values there are finite and so are their gradients. Unlike `safe_div` it
    leaves every valid denominator unchanged, however small.
    """
    return jnp.where(denominator > 0 if ok is None else ok, denominator, 1.0)


def safe_sqrt(x, eps):
    """sqrt(max(x, eps)): finite value and gradient (0 below eps) at x = 0, where sqrt' = inf."""
    return jnp.sqrt(jnp.maximum(x, eps))


def safe_norm(x, eps, axis=-1, keepdims=False):
    """Euclidean norm sqrt(max(Σ x², eps)) along `axis`; eps is a floor on the SQUARED norm."""
    return safe_sqrt(jnp.sum(x * x, axis=axis, keepdims=keepdims), eps)


def safe_normalize(x, eps, axis=-1):
    """x / |x| along `axis` as x · rsqrt(max(Σ x², eps)) (eps floors the SQUARED norm): a zero
    vector gives 0, with a finite gradient, instead of 0/0 = NaN."""
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=axis, keepdims=True), eps))
