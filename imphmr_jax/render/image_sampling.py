"""Reading images and feature maps at continuous positions: bilinear lookup and bilinear resizing.

Both are gathers plus linear interpolation (no matmuls, so no reduced-precision matmul on GPU/TPU
changes a value) and are differentiable in the values and, for `bilinear_sample`, in the
coordinates: the interpolation weights are linear in the position inside a cell, which is what
pose gradients of pixel-aligned features flow through.

Index coordinates, used by both: in a map of h rows and w columns, position (x, y) = (j, i) is the
centre of the element in row i, column j; x runs along columns (right), y along rows (down). The
project's image coordinates (`imphmr_jax.geometry.camera`: centre of pixel (i, j) at
(j + 0.5, i + 0.5)) are index coordinates + 0.5; converting between an image and a map of another
size is the caller's business (e.g. `neuhmr_jax.ghn.features.sample_features`).
"""
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def bilinear_sample(image: jax.Array, xy: jax.Array) -> jax.Array:
    """Bilinear interpolation of `image` at index coordinates `xy`, clamped to the border.

    value(x, y) = sum over the 4 neighbours (i, j) in {y0, y0+1} x {x0, x0+1} of
    (1 - |x - j|)(1 - |y - i|) image[i, j], with x0 = floor(x), y0 = floor(y). Outside the grid of
    element centres ([0, w-1] x [0, h-1]) the value is that of the nearest border position
    (torch grid_sample's padding_mode='border'), with zero gradient in the clamped direction.
    Exact at element centres: value(j, i) = image[i, j].

    Args:
      image: (h, w, C) values.
      xy: (..., 2) index coordinates (x = column, y = row), float. Non-finite entries give
        non-finite values; mask them before calling (with a "double where") if gradients matter.
    Returns:
      (..., C) in the dtype of `image` (interpolation weights in xy's float dtype).
    """
    image, xy = jnp.asarray(image), jnp.asarray(xy)
    h, w = image.shape[0], image.shape[1]
    # Clamping the position to the grid of centres is the border rule itself; it also keeps the
    # int conversion in range for huge xy and makes the clamped gradient exactly 0.
    x = jnp.clip(xy[..., 0], 0.0, float(w - 1))
    y = jnp.clip(xy[..., 1], 0.0, float(h - 1))
    x0, y0 = jnp.floor(x), jnp.floor(y)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
    xa, xb = jnp.clip(x0, 0, w - 1), jnp.clip(x0 + 1, 0, w - 1)
    ya, yb = jnp.clip(y0, 0, h - 1), jnp.clip(y0 + 1, 0, h - 1)
    top = image[ya, xa] * (1.0 - fx) + image[ya, xb] * fx
    bottom = image[yb, xa] * (1.0 - fx) + image[yb, xb] * fx
    return (top * (1.0 - fy) + bottom * fy).astype(image.dtype)


def _align_corners_taps(n_in: int, n_out: int):
    """Static (n_out,) lower taps, upper taps and upper weights of an align-corners resize."""
    if n_out == 1 or n_in == 1:
        src = np.zeros(n_out)
    else:
        src = np.arange(n_out) * ((n_in - 1) / (n_out - 1))
    lo = np.minimum(np.floor(src).astype(np.int32), max(n_in - 2, 0))
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, src - lo


def resize_bilinear_align_corners(x: jax.Array, size: Sequence[int]) -> jax.Array:
    """Bilinear resize with align_corners=True semantics (torch F.interpolate(...,
    mode='bilinear', align_corners=True)), separable over rows and columns.

    Output element i along an axis of length n_out reads input position i (n_in - 1) / (n_out - 1)
    (index coordinates), so the corner elements of input and output coincide and a function that is
    linear in the index is resampled exactly. (`jax.image.resize` uses the half-pixel mapping of
    align_corners=False instead.) A length-1 axis on either side reads input position 0.

    Args:
      x: (..., h, w, C) maps, channels last.
      size: (H_out, W_out).
    Returns:
      (..., H_out, W_out, C) in the dtype of x.
    """
    h_out, w_out = int(size[0]), int(size[1])
    for axis, n_out in ((-3, h_out), (-2, w_out)):
        lo, hi, f = _align_corners_taps(x.shape[axis], n_out)
        shape = [1] * x.ndim
        shape[axis] = n_out
        f = jnp.asarray(f.reshape(shape), jnp.result_type(x, jnp.float32))
        a = jnp.take(x, jnp.asarray(lo), axis=axis)
        b = jnp.take(x, jnp.asarray(hi), axis=axis)
        x = (a * (1.0 - f) + b * f).astype(x.dtype)
    return x
