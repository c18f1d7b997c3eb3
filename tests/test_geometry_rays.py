"""Claims checked (imphmr_jax.geometry.rays, camera.intrinsics_from_matrix / as_intrinsics): the
slab intersection gives the analytic entry/exit depths for axis-aligned and diagonal rays, misses
rays that pass beside, point away from, or run parallel outside the box, includes rays on a face,
returns near = min_near from inside, agrees with a brute-force inside test on random rays, and has
finite gradients with zero direction components; calibration matrices convert to [fx, fy, cx, cy]
that project like K·x / z."""
import jax
import jax.numpy as jnp
import numpy as np

from imphmr_jax.geometry import camera
from imphmr_jax.geometry.rays import MIN_NEAR, ray_box_intersection

intersect = jax.jit(ray_box_intersection)
LO, HI = np.array([-1.0, -1.0, -1.0], np.float32), np.array([1.0, 1.0, 1.0], np.float32)


def test_analytic_cases():
    o = np.array([[0.2, 0.3, -5.0],     # along +z through the box: [4, 6]
                  [0.0, 0.0, 5.0],      # along -z, direction length 2: [2, 3]
                  [-5.0, -5.0, -5.0],   # diagonal through the corners: [4, 6]
                  [2.0, 0.0, -5.0],     # parallel to z, outside the x slab: miss
                  [0.0, 0.0, 5.0],      # pointing away: miss
                  [0.0, 0.5, 0.0],      # inside, along +y: exit at 0.5
                  [1.0, 0.0, -5.0],     # on the face x = 1, parallel to it: hit [4, 6]
                  [0.0, 3.0, -5.0]],    # passes beside the box (y too large): miss
                 np.float32)
    d = np.array([[0, 0, 1], [0, 0, -2], [1, 1, 1], [0, 0, 1], [0, 0, 1], [0, 1, 0], [0, 0, 1],
                  [0, -0.1, 1]], np.float32)
    near, far, hit = map(np.asarray, intersect(o, d, LO, HI))
    np.testing.assert_array_equal(hit, [1, 1, 1, 0, 0, 1, 1, 0])
    np.testing.assert_allclose(near[hit], [4, 2, 4, MIN_NEAR, 4], atol=1e-5)
    np.testing.assert_allclose(far[hit], [6, 3, 6, 0.5, 6], atol=1e-5)
    np.testing.assert_array_equal(near[~hit], np.float32(MIN_NEAR))
    np.testing.assert_array_equal(far[~hit], np.float32(MIN_NEAR))


def test_random_rays_against_brute_force_inside_test():
    rng = np.random.default_rng(0)
    n = 300
    lo, hi = np.array([-1.0, -0.5, -2.0], np.float32), np.array([0.5, 1.5, 0.0], np.float32)
    o = rng.uniform(-3, 3, (n, 3)).astype(np.float32)
    # Aim at points around the box so that about half the rays hit it.
    d = (rng.uniform(lo - 1.0, hi + 1.0, (n, 3)) - o).astype(np.float32)
    d[: n // 4, 1] = 0.0  # zero components on a quarter of the rays
    near, far, hit = map(np.asarray, intersect(o, d, lo, hi))
    assert hit.sum() > 60 and (~hit).sum() > 60
    t = np.linspace(0.0, 4.0, 8001)  # step 5e-4 in t; every ray leaves the box before t = 4
    for k in range(n):
        pts = o[k] + t[:, None] * d[k]
        ts = t[np.all((pts >= lo) & (pts <= hi), axis=-1) & (t >= MIN_NEAR)]
        if not hit[k]:
            assert ts.size == 0 or ts.max() - ts.min() < 1e-3, k
            continue
        assert far[k] < 4.0
        assert abs(ts.min() - near[k]) < 6e-4 and abs(ts.max() - far[k]) < 6e-4, k


def test_gradients_finite_with_zero_direction_components():
    o = jnp.array([[0.2, 0.3, -5.0], [3.0, 0.0, -5.0]])
    d = jnp.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 1.0]])

    def loss(o, d):
        near, far, _ = ray_box_intersection(o, d, LO, HI)
        return jnp.sum(near) + jnp.sum(far)

    go, gd = jax.jit(jax.grad(loss, argnums=(0, 1)))(o, d)
    assert np.all(np.isfinite(go)) and np.all(np.isfinite(gd))
    # First ray: near = 4 = (-1 - o_z) / d_z, far = 6; d near/d o_z = -1 = d far/d o_z.
    np.testing.assert_allclose(np.asarray(go[0]), [0, 0, -2], atol=1e-6)


def test_intrinsics_from_matrix_projects_like_the_matrix():
    K = np.array([[500.0, 0.0, 320.0], [0.0, 480.0, 240.0], [0.0, 0.0, 1.0]], np.float32)
    np.testing.assert_array_equal(np.asarray(camera.intrinsics_from_matrix(K)),
                                  [500, 480, 320, 240])
    np.testing.assert_array_equal(np.asarray(camera.as_intrinsics(np.stack([K, K]))),
                                  [[500, 480, 320, 240]] * 2)
    vec = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    np.testing.assert_array_equal(np.asarray(camera.as_intrinsics(vec)), vec)
    p = np.random.default_rng(1).uniform([-1, -1, 2], [1, 1, 5], (10, 3)).astype(np.float32)
    h = p @ K.T
    pix, _ = camera.project(jnp.asarray(p), camera.as_intrinsics(K))
    np.testing.assert_allclose(np.asarray(pix), h[:, :2] / h[:, 2:], rtol=1e-6)
