"""Claims checked (neuhmr_jax.ghn.rays): a world point lies on its pixel's ray at parameter = its
camera depth, and ray origins are the camera centre; the box intersection brackets a box's centre
along the ray through its projection and misses beside it; samples lie on their rays within
[near, far] (endpoints without a key, stratified with one); sample_pixels draws exactly the
requested share from the mask, the rest inside the dilated box, uniformly over the mask's pixels,
under jit; render_chunked equals the unchunked computation in values and gradients (w.r.t. rays and
closed-over parameters) for a ray count that is not a multiple of the chunk."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuhmr_jax.ghn import features, rays as ghn_rays

K = np.array([[60.0, 0.0, 16.0], [0.0, 62.0, 15.0], [0.0, 0.0, 1.0]], np.float32)


def _rotation(rvec):
    angle = np.linalg.norm(rvec)
    k = rvec / angle
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return (np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx).astype(np.float32)


@pytest.fixture(scope="module")
def cam():
    R = _rotation(np.array([0.3, -0.8, 0.2]))
    t = np.array([0.1, 0.2, 3.0], np.float32)
    return R, t


def test_world_point_lies_on_its_pixel_ray_at_its_depth(cam):
    R, t = cam
    X = np.random.default_rng(0).uniform(-0.8, 0.8, (50, 3)).astype(np.float32)
    pixels, depth = features.project_points(X, K, R, t)
    r = jax.jit(ghn_rays.camera_rays_world)(K, R, t, pixels)
    assert r.origins.shape == r.directions.shape == (50, 3) and r.pixels.shape == (50, 2)
    np.testing.assert_allclose(np.asarray(r.origins + depth[:, None] * r.directions), X,
                               atol=1e-5)
    np.testing.assert_allclose(np.asarray(r.origins) @ R.T + t, 0.0, atol=1e-6)  # camera centre
    # Camera-frame direction has z = 1 (parameter = depth), independent of the intrinsics' form.
    np.testing.assert_allclose(np.asarray(r.directions) @ R.T[:, 2], 1.0, atol=1e-6)
    r4 = ghn_rays.camera_rays_world(np.array([60.0, 62.0, 16.0, 15.0], np.float32), R, t, pixels)
    np.testing.assert_allclose(np.asarray(r4.directions), np.asarray(r.directions), atol=1e-7)


def test_box_intersection_and_samples(cam):
    R, t = cam
    lo, hi = np.array([-0.3, -0.5, -0.2], np.float32), np.array([0.3, 0.5, 0.2], np.float32)
    centre_pix, centre_depth = features.project_points(np.zeros((1, 3), np.float32), K, R, t)
    pixels = jnp.concatenate([centre_pix, jnp.array([[0.5, 0.5]])])  # image corner: misses
    r = ghn_rays.camera_rays_world(K, R, t, pixels)
    near, far, hit = map(np.asarray, jax.jit(ghn_rays.ray_box_intersection)(r, lo, hi))
    np.testing.assert_array_equal(hit, [True, False])
    assert near[0] < float(centre_depth[0]) < far[0]
    pts_near = np.asarray(r.origins[0] + near[0] * r.directions[0])
    pts_far = np.asarray(r.origins[0] + far[0] * r.directions[0])
    for p in (pts_near, pts_far):  # on the box surface
        assert np.all(p >= lo - 1e-5) and np.all(p <= hi + 1e-5)
        assert np.min(np.minimum(np.abs(p - lo), np.abs(p - hi))) < 1e-5

    sample = jax.jit(ghn_rays.sample_points, static_argnames=("num_samples",))
    for key in (None, jax.random.key(1)):
        points, depths = map(np.asarray, sample(r, near, far, num_samples=9, key=key))
        assert points.shape == (2, 9, 3) and depths.shape == (2, 9)
        assert np.all(np.diff(depths, axis=-1) >= 0)
        assert np.all(depths >= near[:, None] - 1e-6) and np.all(depths <= far[:, None] + 1e-6)
        np.testing.assert_allclose(points, np.asarray(r.origins)[:, None]
                                   + depths[..., None] * np.asarray(r.directions)[:, None],
                                   atol=1e-6)
        if key is None:
            np.testing.assert_allclose(depths[:, [0, -1]], np.stack([near, far], -1), rtol=1e-6)
        else:
            strata = np.linspace(near[0], far[0], 9)
            bounds = np.concatenate([[near[0]], (strata[1:] + strata[:-1]) / 2, [far[0]]])
            assert np.all((depths[0] >= bounds[:-1] - 1e-6) & (depths[0] <= bounds[1:] + 1e-6))


@pytest.fixture(scope="module")
def mask():
    m = np.zeros((32, 40), bool)
    m[10:14, 12:17] = True  # 20 pixels
    m[11, 12] = False  # 19 pixels, not a full rectangle
    return m


draw = jax.jit(ghn_rays.sample_pixels,
               static_argnames=("num_rays", "fraction_inside", "box_dilation"))


def test_sample_pixels_share_box_and_uniformity(mask):
    pix = np.asarray(draw(jax.random.key(0), mask, num_rays=200, fraction_inside=0.75,
                          box_dilation=3))
    assert pix.shape == (200, 2) and pix.dtype == np.float32
    np.testing.assert_array_equal(pix % 1.0, 0.5)  # pixel centres
    rows, cols = np.floor(pix[:, 1]).astype(int), np.floor(pix[:, 0]).astype(int)
    inside = mask[rows, cols]
    assert np.all(inside[:150])  # exactly round(0.75 * 200) from the mask ...
    box_rows, box_cols = rows[150:], cols[150:]  # ... the rest from the box grown by 3 pixels
    assert box_rows.min() >= 7 and box_rows.max() <= 16
    assert box_cols.min() >= 9 and box_cols.max() <= 19
    assert 0 < np.mean(~inside[150:]) < 1  # the box draws reach outside the mask
    # Uniform over the mask's 19 pixels: each drawn about 8000 / 19 = 421 times (sd ~20).
    many = np.asarray(draw(jax.random.key(1), mask, num_rays=8000, fraction_inside=1.0,
                           box_dilation=3))
    counts = np.zeros(mask.shape, int)
    np.add.at(counts, (np.floor(many[:, 1]).astype(int), np.floor(many[:, 0]).astype(int)), 1)
    assert counts[~mask].sum() == 0
    assert counts[mask].min() > 421 - 100 and counts[mask].max() < 421 + 100


def test_sample_pixels_box_clipped_to_image_and_empty_mask():
    m = np.zeros((32, 40), bool)  # same shapes and settings as above: no new compilation
    m[0:2, 37:40] = True
    pix = np.asarray(draw(jax.random.key(2), m, num_rays=200, fraction_inside=0.75,
                          box_dilation=3))[150:]
    assert np.all(pix[:, 1] < 5) and np.all(pix[:, 0] > 34) and np.all(pix[:, 0] < 40)
    assert pix[:, 1].min() < 1 and pix[:, 0].max() > 39  # the clipped box reaches the corner
    pix = np.asarray(draw(jax.random.key(3), np.zeros((32, 40), bool), num_rays=200,
                          fraction_inside=0.75, box_dilation=3))
    for a, size in ((0, 40), (1, 32)):  # uniform over the whole image
        assert np.all((pix[:, a] > 0) & (pix[:, a] < size))
        assert pix[:, a].min() < 0.2 * size and pix[:, a].max() > 0.8 * size


def test_render_chunked_equals_unchunked_values_and_gradients():
    rng = np.random.default_rng(4)
    n = 37
    rays = ghn_rays.Rays(jnp.asarray(rng.normal(size=(n, 3)), jnp.float32),
                         jnp.asarray(rng.normal(size=(n, 3)), jnp.float32),
                         jnp.asarray(rng.uniform(0, 32, (n, 2)), jnp.float32))
    w = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)

    def fn(w, r):
        h = jnp.tanh(r.origins @ w + jnp.sum(r.directions * r.pixels[:, :1], -1, keepdims=True))
        return {"rgb": jax.nn.sigmoid(h[:, :3]), "depth": jnp.sum(h ** 2, -1)}

    def loss(w, r, chunk):
        out = ghn_rays.render_chunked(lambda c: fn(w, c), r, chunk) if chunk else fn(w, r)
        return jnp.sum(out["rgb"] * jnp.arange(3.0)) + jnp.sum(out["depth"] ** 2), out

    full_grad, full = jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True),
                              static_argnums=2)(w, rays, None)
    chunked_grad, chunked = jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True),
                                    static_argnums=2)(w, rays, 8)
    assert chunked["rgb"].shape == (n, 3) and chunked["depth"].shape == (n,)
    for a, b in zip(jax.tree_util.tree_leaves((chunked, chunked_grad)),
                    jax.tree_util.tree_leaves((full, full_grad))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    # One chunk larger than all the rays is the plain call.
    big = ghn_rays.render_chunked(lambda c: fn(w, c), rays, 100)
    np.testing.assert_allclose(np.asarray(big["depth"]), np.asarray(full["depth"]), rtol=1e-6)
    # The chunks run in a loop with rematerialisation, not unrolled.
    jaxpr = str(jax.make_jaxpr(lambda w: jax.grad(lambda w: loss(w, rays, 8)[0])(w))(w))
    assert "scan" in jaxpr and ("remat" in jaxpr or "checkpoint" in jaxpr)
