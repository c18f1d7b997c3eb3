"""Claims checked (imphmr_jax.render.image_sampling): the align-corners resize keeps corner elements
and resamples index-linear maps exactly (up- and down-sizing, odd sizes, length-1 axes) and matches
a direct numpy formula; bilinear_sample is exact at element centres, interpolates linearly inside a
cell, clamps to the border outside the grid of centres with zero gradient there, and survives huge
coordinates."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imphmr_jax.render.image_sampling import bilinear_sample, resize_bilinear_align_corners

resize = jax.jit(resize_bilinear_align_corners, static_argnames=("size",))
sample = jax.jit(bilinear_sample)


def _numpy_resize_align_corners(x, size):
    """torch's align_corners=True bilinear resize written per output element, float64."""
    h, w = x.shape[-3:-1]
    H, W = size
    out = np.zeros(x.shape[:-3] + (H, W, x.shape[-1]))
    for i in range(H):
        sy = 0.0 if H == 1 else i * (h - 1) / (H - 1)
        for j in range(W):
            sx = 0.0 if W == 1 else j * (w - 1) / (W - 1)
            y0, x0 = min(int(np.floor(sy)), h - 1), min(int(np.floor(sx)), w - 1)
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            fy, fx = sy - y0, sx - x0
            out[..., i, j, :] = ((1 - fy) * ((1 - fx) * x[..., y0, x0, :] + fx * x[..., y0, x1, :])
                                 + fy * ((1 - fx) * x[..., y1, x0, :] + fx * x[..., y1, x1, :]))
    return out


@pytest.mark.parametrize("src,dst", [((4, 6), (8, 12)), ((3, 5), (7, 4)), ((1, 4), (3, 9)),
                                     ((5, 5), (1, 2))])
def test_resize_matches_numpy_formula_and_keeps_corners(src, dst):
    x = np.random.default_rng(0).normal(size=(2,) + src + (3,)).astype(np.float32)
    out = np.asarray(resize(jnp.asarray(x), dst))
    assert out.shape == (2,) + dst + (3,)
    np.testing.assert_allclose(out, _numpy_resize_align_corners(x.astype(np.float64), dst),
                               atol=1e-5)
    if min(dst) > 1 and min(src) > 1:
        for i, j in ((0, 0), (0, -1), (-1, 0), (-1, -1)):
            np.testing.assert_array_equal(out[:, i, j], x[:, i, j])


def test_resize_is_exact_on_index_linear_maps():
    h, w, H, W = 4, 8, 7, 15
    i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    x = np.stack([2.0 * i - 3.0 * j + 1.0, 0.5 * j], -1).astype(np.float32)
    I, J = np.meshgrid(np.arange(H) * (h - 1) / (H - 1), np.arange(W) * (w - 1) / (W - 1),
                       indexing="ij")
    expect = np.stack([2.0 * I - 3.0 * J + 1.0, 0.5 * J], -1)
    np.testing.assert_allclose(np.asarray(resize(jnp.asarray(x), (H, W))), expect, atol=1e-5)


def test_bilinear_sample_centres_interior_and_border():
    rng = np.random.default_rng(1)
    img = rng.normal(size=(5, 7, 2)).astype(np.float32)
    ii, jj = np.meshgrid(np.arange(5), np.arange(7), indexing="ij")
    centres = np.stack([jj, ii], -1).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(sample(img, centres)), img)
    # Halfway between four centres: their average.
    mid = np.asarray(sample(img, np.array([[2.5, 1.5]], np.float32)))[0]
    np.testing.assert_allclose(mid, img[1:3, 2:4].mean((0, 1)), atol=1e-6)
    # Outside the grid of centres: the nearest border value, for any distance (and no overflow).
    out = np.asarray(sample(img, np.array([[-0.4, 2.0], [6.7, 3.0], [1e12, -1e12],
                                           [3.0, 4.9]], np.float32)))
    np.testing.assert_allclose(out, np.stack([img[2, 0], img[3, 6], img[0, 6], img[4, 3]]),
                               atol=1e-6)


def test_bilinear_sample_gradient_is_the_cell_slope_and_zero_when_clamped():
    img = jnp.asarray(np.random.default_rng(2).normal(size=(4, 4, 1)).astype(np.float32))
    g = jax.jit(jax.grad(lambda p: bilinear_sample(img, p).sum()))
    gx, gy = np.asarray(g(jnp.array([[1.25, 2.0]])))[0]
    np.testing.assert_allclose(gx, img[2, 2, 0] - img[2, 1, 0], atol=1e-6)  # along x in row 2
    np.testing.assert_allclose(gy, 0.75 * (img[3, 1, 0] - img[2, 1, 0])
                               + 0.25 * (img[3, 2, 0] - img[2, 2, 0]), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(g(jnp.array([[-0.3, -0.2]]))), 0.0)
