"""`neuhmr_jax.baselines.fit_keypoints` on a synthetic video: the ground-truth pose with two joints
rotated by 20° as the initialisation, its exact joint projections (plus 0.5 px noise and one
outlier per frame) as keypoints. Fitting reduces the 2D error to near the noise and the
pelvis-aligned 3D error (mostly at the perturbed limbs), ignores the outlier, gives the same
result whatever the batching, compiles once per batch shape, is deterministic; the bend prior
matches the body's flexion directions; bad keypoints are refused."""
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

import smpl_jax
from imphmr_jax.cli import InputError
from neuhmr_jax import baselines
from neuhmr_jax.data.inits import Init

T = 6
K = np.array([[500.0, 0, 128], [0, 500.0, 128], [0, 0, 1]])
PERTURBED = {18: 20, 5: 22}  # left elbow -> left wrist (20), hand (22); right knee -> 8, 11
OUTLIER = 10  # left foot


@pytest.fixture(scope="module")
def body():
    return smpl_jax.load("default-small")


@pytest.fixture(scope="module")
def scene(body):
    rng = np.random.default_rng(0)
    gt = rng.normal(0, 0.15, (T, 24, 3))
    gt[:, 0] = [np.pi, 0, 0]  # upright, facing the camera
    gt[:, 4, 0], gt[:, 5, 0], gt[:, 18, 1], gt[:, 19, 1] = 0.4, 0.3, -0.5, 0.6
    transl = np.stack([rng.normal(0, 0.1, T), rng.normal(0, 0.1, T), 4 + rng.normal(0, 0.2, T)],
                      axis=1)
    truth = Init(gt, np.zeros((T, 10)), transl, source="ground truth")
    poses = gt.copy()
    for j in PERTURBED:  # 20° about the parent's z axis: a visible, in-image-plane error
        poses[:, j] = (Rotation.from_rotvec([0, 0, np.radians(20)])
                       * Rotation.from_rotvec(gt[:, j])).as_rotvec()
    init = Init(poses, truth.betas, transl, source="perturbed")
    px = np.asarray(baselines._project_jit(body, truth.poses, truth.betas, truth.transl,
                                           jnp.asarray(K, jnp.float32)), np.float64)
    keypoints = px + rng.normal(0, 0.5, px.shape)
    keypoints[:, OUTLIER] += [60.0, -50.0]
    return truth, init, keypoints


def _aligned_joints(body, init):
    j = np.asarray(smpl_jax.forward(body, init.poses, init.betas, return_vertices=False)
                   .joints[:, :24], np.float64)
    return j - j[:, 1:3].mean(axis=1, keepdims=True)  # pelvis = mean of the hips, as EMDB


def _errors_mm(body, init, truth):
    return 1000 * np.linalg.norm(_aligned_joints(body, init) - _aligned_joints(body, truth),
                                 axis=-1)


@pytest.fixture(scope="module")
def fitted(body, scene):
    _, init, keypoints = scene
    before = baselines._fit_batch._cache_size()
    fit = baselines.fit_keypoints(body, init, keypoints, np.ones((T, 24)), K, steps=100,
                                  batch_frames=4, progress=False)
    return fit, baselines._fit_batch._cache_size() - before


def test_fit_reduces_2d_and_3d_error(body, scene, fitted):
    truth, init, keypoints = scene
    fit, _ = fitted
    assert fit.source == "perturbed + keypoint fit" and fit.num_frames == T
    np.testing.assert_array_equal(fit.betas, init.betas)
    inliers = np.ones((T, 24))
    inliers[:, OUTLIER] = 0
    err0 = baselines.reprojection_error(body, init, keypoints, inliers, K)
    err1 = baselines.reprojection_error(body, fit, keypoints, inliers, K)
    assert err0.mean() > 2.5 and err1.mean() < 0.3 * err0.mean()  # noise floor ~0.6 px
    e0, e1 = _errors_mm(body, init, truth), _errors_mm(body, fit, truth)
    assert e1.mean() < 0.8 * e0.mean()
    moved = [8, 11, 20, 22]  # the perturbed limbs' ends: large errors, fixed by the fit
    assert e0[:, moved].mean() > 100 and e1[:, moved].mean() < 0.25 * e0[:, moved].mean()
    # the outlier keypoint (78 px off) barely pulls its joint
    assert e1[:, OUTLIER].mean() < 30
    out_px = baselines.reprojection_error(body, fit, keypoints,
                                          np.eye(24)[OUTLIER][None].repeat(T, 0), K)
    assert out_px.min() > 50


def test_batching_gives_the_same_result_and_compiles_once(body, scene, fitted):
    _, init, keypoints = scene
    fit4, compiles = fitted
    assert compiles == 1  # two batches of 4 (the second padded): one program
    before = baselines._fit_batch._cache_size()
    fit8 = baselines.fit_keypoints(body, init, keypoints, None, K, steps=100, batch_frames=8,
                                   progress=False)
    assert baselines._fit_batch._cache_size() - before == 1  # one batch of 8
    np.testing.assert_allclose(fit8.poses, fit4.poses, atol=2e-5)
    np.testing.assert_allclose(fit8.transl, fit4.transl, atol=2e-5)
    # other weights or learning rate: the same program; the same inputs: the same numbers
    before = baselines._fit_batch._cache_size()
    again = baselines.fit_keypoints(body, init, keypoints, np.ones((T, 24)), K, steps=100,
                                    batch_frames=4, progress=False)
    baselines.fit_keypoints(body, init, keypoints, None, K, steps=100, batch_frames=4,
                            lr=0.02, weights={"pose": 1e-2}, progress=False)
    assert baselines._fit_batch._cache_size() == before
    np.testing.assert_array_equal(again.poses, fit4.poses)


def test_translation_can_stay_fixed(body, scene):
    _, init, keypoints = scene
    fit = baselines.fit_keypoints(body, init, keypoints, None, K, steps=5, batch_frames=8,
                                  fit_transl=False, progress=False)
    np.testing.assert_array_equal(fit.transl, init.transl)
    assert not np.allclose(fit.poses, init.poses)


def test_bend_prior_follows_the_body(body):
    """Positive knee rotation about x and negative / positive left / right elbow rotation about y
    bend the limb forward-backward the natural way on this body; the prior is zero there and
    positive for the opposite rotation (hyper-extension)."""
    zero = np.zeros((1, 24, 3), np.float32)

    def joints(p):
        return np.asarray(smpl_jax.forward(body, p, np.zeros((1, 10), np.float32),
                                           return_vertices=False).joints[0])

    rest = joints(zero)
    for (joint, axis, sign), child in zip(zip(baselines.BEND_JOINTS, baselines.BEND_AXES,
                                              baselines.BEND_SIGNS), (7, 8, 20, 21)):
        natural = zero.copy()
        natural[0, joint, axis] = 0.5 * sign
        shift = joints(natural)[child] - rest[child]
        # knees: the ankle goes backward (-z); elbows: the wrist goes forward (+z)
        assert (shift[2] < -0.1) if joint in (4, 5) else (shift[2] > 0.05)
        assert float(baselines.bend_penalty(natural)[0]) == 0.0
        assert float(baselines.bend_penalty(-natural)[0]) == pytest.approx(0.25)


def test_bad_keypoints_are_refused(body, scene):
    _, init, keypoints = scene
    with pytest.raises(InputError, match=r"keypoints must have shape \(6, 24, 2\)"):
        baselines.fit_keypoints(body, init, keypoints[:5], None, K, progress=False)
    bad = keypoints.copy()
    bad[3, 7] = np.nan
    with pytest.raises(InputError, match="frame 3 joint 7 is not finite"):
        baselines.fit_keypoints(body, init, bad, None, K, progress=False)
    conf = np.ones((T, 24))
    conf[3, 7] = 0.0  # a missing joint: ignored
    fit = baselines.fit_keypoints(body, init, bad, conf, K, steps=2, batch_frames=8,
                                  progress=False)
    assert np.all(np.isfinite(fit.poses))
    conf[1, 2] = -1.0
    with pytest.raises(InputError, match="frame 1 joint 2"):
        baselines.fit_keypoints(body, init, keypoints, conf, K, progress=False)
    with pytest.raises(ValueError, match="unknown weights"):
        baselines.fit_keypoints(body, init, keypoints, None, K, weights={"shape": 1.0})
    with pytest.raises(InputError, match="focal"):
        baselines.fit_keypoints(body, init, keypoints, None, "0,500,128,128")
