"""Claims checked (neuhmr_jax.joint_matching): project equals K x / z; in a hand-built scene (a box
of depth 2.0 m) a joint behind the box is invisible and one in front of or just inside it is
visible, while out-of-image, behind-camera, background and low-occupancy joints are invisible, with
the maps read at the pixel containing the joint; registered features equal a hand-computed
normalised mean over the anchors that see the joint (zero and unregistered where none does);
candidates are Gaussian around the joints with std σ; matching finds the one candidate whose
feature equals the registered one (hard argmax, and soft at a low temperature), equals the
softmax-weighted mean of a numpy computation at the default temperature, and never picks a
candidate outside the image; Geman–McClure and the matching loss equal their formulas with finite
gradients at zero residual and NaN targets of invisible joints; everything runs under jit/vmap."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imphmr_jax.cli import InputError
from neuhmr_jax import joint_matching as jm

K = np.array([[10.0, 0, 8], [0, 10.0, 8], [0, 0, 1]], np.float32)  # 16 x 16 image


def test_project_matches_pinhole():
    pts = np.random.default_rng(0).uniform([-1, -1, 1], [1, 1, 3], (7, 3)).astype(np.float32)
    px, z = jm.project(pts, K)
    truth = (K @ pts.T).T
    np.testing.assert_allclose(np.asarray(px), truth[:, :2] / truth[:, 2:], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(z), pts[:, 2])


def _scene():
    """16 x 16 maps: a 'torso' box at depth 2.0 m over rows/cols 4..11 (occupancy 1) and a faint
    band at depth 2.0 m over cols 12..13 (occupancy 0.3); nothing rendered elsewhere."""
    depth = np.zeros((16, 16), np.float32)
    occ = np.zeros((16, 16), np.float32)
    depth[4:12, 4:12], occ[4:12, 4:12] = 2.0, 1.0
    depth[4:12, 12:14], occ[4:12, 12:14] = 2.0, 0.3
    return depth, occ


def _at(u, v, z):
    """The camera point at depth z that projects to pixel (u, v) under K."""
    return [(u - 8) / 10 * z, (v - 8) / 10 * z, z]


def test_visibility_in_a_constructed_scene():
    depth, occ = _scene()
    joints = np.asarray([
        _at(8.5, 8.5, 2.4),   # 0 behind the torso: occluded
        _at(8.5, 8.5, 1.9),   # 1 in front of it
        _at(8.5, 8.5, 2.1),   # 2 just inside the body (within τ = 0.15)
        _at(18.5, 8.5, 1.9),  # 3 right of the image
        _at(8.5, -0.5, 1.9),  # 4 above the image
        [0.0, 0.0, -2.0],     # 5 behind the camera (its mirrored pixel is the image centre)
        _at(1.5, 1.5, 1.9),   # 6 background: nothing rendered
        _at(12.5, 8.5, 1.9),  # 7 low occupancy
        _at(4.05, 8.5, 2.0),  # 8 just inside the box's left column (col 4)
        _at(3.95, 8.5, 2.0),  # 9 just outside it (col 3, background)
        _at(15.9, 15.9, 0.5),  # 10 last pixel, nothing rendered
    ], np.float32)
    vis = jax.jit(jm.joint_visibility)(joints, K, depth, occ)
    assert vis.dtype == jnp.bool_
    np.testing.assert_array_equal(np.asarray(vis), [0, 1, 1, 0, 0, 0, 0, 0, 1, 0, 0])
    # τ and the occupancy threshold are honoured.
    vis = jm.joint_visibility(joints, K, depth, occ, tau=0.5, min_occupancy=0.2)
    np.testing.assert_array_equal(np.asarray(vis), [1, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0])
    # Frames batch with vmap (per-frame maps).
    maps = np.stack([depth, np.where(occ > 0, 3.0, 0.0).astype(np.float32)])
    vis = jax.vmap(jm.joint_visibility, (0, None, 0, None))(np.stack([joints, joints]), K, maps,
                                                           occ)
    np.testing.assert_array_equal(np.asarray(vis[1]), [1, 1, 1, 0, 0, 0, 0, 0, 1, 0, 0])
    with pytest.raises(InputError, match="same"):
        jm.joint_visibility(joints, K, depth, occ[:8])


def test_sample_feature_at_is_the_ghn_lookup():
    F = np.random.default_rng(1).normal(size=(4, 4, 3)).astype(np.float32)
    # Half-resolution element (i, j) sits at image position (2j + 1, 2i + 1) of the 8 x 8 image.
    feats, valid = jm.sample_feature_at(F, np.array([[3.0, 5.0], [9.0, 1.0]], np.float32), (8, 8))
    np.testing.assert_array_equal(np.asarray(feats[0]), F[2, 1])
    np.testing.assert_array_equal(np.asarray(valid), [True, False])
    np.testing.assert_array_equal(np.asarray(feats[1]), 0.0)
    _, valid = jm.sample_feature_at(F, np.array([[3.0, 5.0]], np.float32), (8, 8),
                                    depth=np.array([-1.0], np.float32))
    assert not bool(valid[0])


def _centre(i, j):
    """Image position of half-resolution element (i, j)."""
    return [2 * j + 1.0, 2 * i + 1.0]


def test_register_joint_features_is_the_normalised_mean():
    rng = np.random.default_rng(2)
    maps = rng.normal(size=(3, 4, 4, 5)).astype(np.float32)  # 3 anchors, images 8 x 8
    cells = rng.integers(0, 4, size=(3, 4, 2))  # (anchor, joint) -> element (i, j)
    px = np.asarray([[_centre(*cells[a, j]) for j in range(4)] for a in range(3)], np.float32)
    px[0, 3] = [-3.0, 2.0]  # anchor 0 "sees" joint 3 but its pixel is outside the image
    vis = np.array([[1, 0, 0, 1],
                    [1, 0, 0, 1],
                    [0, 1, 0, 0]], bool)
    reg, ok = jax.jit(jm.register_joint_features, static_argnames="image_size")(
        maps, px, vis, image_size=(8, 8))
    f = lambda a, j: maps[a, cells[a, j, 0], cells[a, j, 1]].astype(np.float64)  # noqa: E731
    expected = [(f(0, 0) + f(1, 0)) / 2, f(2, 1), np.zeros(5), f(1, 3)]
    expected = [e / np.linalg.norm(e) if np.any(e) else e for e in expected]
    np.testing.assert_allclose(np.asarray(reg), np.stack(expected), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(ok), [True, True, False, True])


def test_joint_candidates_are_gaussian_around_the_joints():
    joints = np.array([[0.1, -0.2, 2.0], [0.5, 0.3, 3.0]], np.float32)
    key = jax.random.PRNGKey(3)
    x = np.asarray(jm.joint_candidates(key, joints, sigma=0.05, num_candidates=4096))
    assert x.shape == (2, 4096, 3)
    np.testing.assert_allclose(x.mean(1), joints, atol=4e-3)  # 5 std errors of the mean
    np.testing.assert_allclose(x.std(1), 0.05, rtol=0.05)
    np.testing.assert_array_equal(np.asarray(jm.joint_candidates(key, joints, num_candidates=8)),
                                  np.asarray(jm.joint_candidates(key, joints, num_candidates=8)))
    assert jm.joint_candidates(key, joints).shape == (2, 128, 3)


@pytest.fixture(scope="module")
def matching_scene():
    """An 8 x 8 feature map (image 16 x 16) whose features all have a small cosine with e0 except
    one element, (5, 2), which equals e0; joint 0's candidates include that element."""
    rng = np.random.default_rng(4)
    F = rng.normal(size=(8, 8, 4)).astype(np.float32)
    F[..., 0] = 0.2 * np.abs(F[..., 0])  # cos with e0 below ~0.2 everywhere ...
    F[5, 2] = [1.0, 0.0, 0.0, 0.0]        # ... except at the target element
    cells = [(0, 0), (7, 7), (5, 2), (3, 6), (1, 4), (6, 1)]
    px = np.asarray([[_centre(i, j) for i, j in cells]] * 2, np.float32)  # (J = 2, S = 6, 2)
    return F, cells, px


def test_matching_finds_the_registered_feature(matching_scene):
    F, cells, px = matching_scene
    registered = np.array([[1.0, 0, 0, 0], [1.0, 0, 0, 0]], np.float32)
    match = jax.jit(jm.match_candidates, static_argnames=("image_size", "soft"))
    hard = match(F, px, registered, image_size=(16, 16), soft=False)
    np.testing.assert_array_equal(np.asarray(hard.target_px), [_centre(5, 2)] * 2)
    np.testing.assert_allclose(np.asarray(hard.score), 1.0, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(hard.valid), True)
    soft = match(F, px, registered, image_size=(16, 16), temperature=0.01)
    np.testing.assert_allclose(np.asarray(soft.target_px), [_centre(5, 2)] * 2, atol=1e-4)


def test_soft_argmax_matches_numpy(matching_scene):
    F, cells, px = matching_scene
    reg = np.random.default_rng(5).normal(size=(2, 4))
    reg /= np.linalg.norm(reg, axis=1, keepdims=True)
    feats = np.stack([F[i, j] for i, j in cells]).astype(np.float64)
    cos = (feats / np.linalg.norm(feats, axis=1, keepdims=True)) @ reg.T  # (S, J)
    w = np.exp(cos / 0.05)
    w /= w.sum(0)
    out = jm.match_candidates(F, px, reg.astype(np.float32), (16, 16))
    np.testing.assert_allclose(np.asarray(out.target_px), w.T @ px[0], atol=1e-3)
    np.testing.assert_allclose(np.asarray(out.score), cos.max(0), atol=1e-6)


def test_matching_ignores_candidates_outside_the_image(matching_scene):
    F, cells, px = matching_scene
    # Against -e0 every in-image candidate scores below 0; an outside one (zero feature, cos 0)
    # would win if it were not excluded.
    reg = np.array([[-1.0, 0, 0, 0], [1.0, 0, 0, 0]], np.float32)
    px = px.copy()
    px[0, 2] = [-4.0, 3.0]
    px[1, :] = [40.0, 3.0]  # joint 1: nothing in the image
    feats = np.stack([F[i, j] for i, j in cells]).astype(np.float64)
    cos = -feats[:, 0] / np.linalg.norm(feats, axis=1)
    cos[2] = -np.inf
    for soft in (False, True):
        out = jm.match_candidates(F, px, reg, (16, 16), soft=soft, temperature=1e-3)
        np.testing.assert_allclose(np.asarray(out.target_px[0]), px[0, np.argmax(cos)],
                                   atol=1e-3)
        np.testing.assert_allclose(float(out.score[0]), cos.max(), atol=1e-6)
        np.testing.assert_array_equal(np.asarray(out.valid), [True, False])
        assert float(out.score[1]) == -np.inf and np.all(np.isfinite(np.asarray(out.target_px)))
    # Candidates behind the camera are excluded when their depth is given: hide the best one.
    cos_all = -feats[:, 0] / np.linalg.norm(feats, axis=1)
    best = np.argmax(cos_all)
    depth = np.ones((2, 6), np.float32)
    depth[0, best] = -1.0
    out = jm.match_candidates(F, matching_scene[2], reg, (16, 16), soft=False,
                              candidates_depth=depth)
    cos_all[best] = -np.inf
    np.testing.assert_array_equal(np.asarray(out.target_px[0]),
                                  matching_scene[2][0, np.argmax(cos_all)])


def test_geman_mcclure_values():
    x = np.array([0.0, 0.01, 0.1, 0.5, 3.0, 100.0], np.float32)
    s = 0.5
    np.testing.assert_allclose(np.asarray(jm.geman_mcclure(x, s)),
                               s**2 * x.astype(np.float64)**2 / (s**2 + x.astype(np.float64)**2),
                               rtol=1e-6)
    np.testing.assert_allclose(float(jm.geman_mcclure(jnp.float32(1e-3), s)), 1e-6, rtol=1e-5)
    np.testing.assert_allclose(float(jm.geman_mcclure(jnp.float32(1e4), s)), s**2, rtol=1e-6)
    np.testing.assert_allclose(float(jm.geman_mcclure(jnp.float32(-0.5), s)), s**2 / 2)


def test_matching_loss_formula_and_gradients():
    joints = np.array([[10.0, 20.0], [30.0, 40.0], [50.0, 60.0]], np.float32)
    targets = np.array([[13.0, 24.0], [np.nan, np.nan], [50.0, 60.0]], np.float32)
    visible = np.array([True, False, True])
    diag, s = 50.0, 0.1
    rho = lambda x: s**2 * x**2 / (s**2 + x**2)  # noqa: E731
    expected = (rho(5.0 / diag) + rho(0.0)) / 2
    loss = jax.jit(jm.matching_loss)
    np.testing.assert_allclose(float(loss(joints, targets, visible, diag)), expected, rtol=1e-5)
    g = np.asarray(jax.grad(jm.matching_loss)(jnp.asarray(joints), targets, visible, diag))
    assert np.all(np.isfinite(g))
    np.testing.assert_array_equal(g[1:], 0.0)  # invisible, and zero residual
    assert np.all(g[0] < 0)  # pulls joint 0 towards (13, 24)
    assert float(jm.matching_loss(joints, targets, np.zeros(3, bool), diag)) == 0.0
    # Frames batch: per-frame diagonals; the normaliser counts visible joints over all frames.
    both = jm.matching_loss(np.stack([joints, joints]), np.stack([targets, targets]),
                            np.stack([visible, np.array([True, False, False])]),
                            np.array([diag, 2 * diag], np.float32))
    np.testing.assert_allclose(float(both), (rho(5.0 / diag) + rho(2.5 / diag)) / 3, rtol=1e-5)
