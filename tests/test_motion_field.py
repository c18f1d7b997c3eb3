"""Claims checked (neuhmr_jax.motion_field): phase is linspace(0, 1, T) (0 for T = 1); the Fourier
features equal their formula; at initialisation Φ^MLP's residuals are exactly R' = I and T' = 0,
so the composed motion equals the HMR initialisation exactly for random poses (B = 5), jitted too;
NeMo's small-gain init is near but not exactly the identity; gradients w.r.t. the parameters are
finite and reach the heads; compose equals the manual matrix product R' · R⁰ (axis-angle and
matrix inputs alike); residual_regulariser equals Σ‖R' − I‖² + ‖T'‖² averaged over frames."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from imphmr_jax.cli import InputError
from neuhmr_jax import motion_field as mf
from smpl_jax.rotations import axis_angle_to_matrix, rot6d_to_matrix

HIDDEN = 16


@pytest.fixture(scope="module")
def model_and_params():
    model = mf.MotionField(hidden=HIDDEN, fourier_octaves=3)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1,)))
    return model, params


def _init_motion(B=5, seed=0):
    rng = np.random.default_rng(seed)
    pose = rng.normal(0, 0.7, (B, 24, 3)).astype(np.float32)
    transl = (rng.normal(0, 1.0, (B, 3)) + [0, 0, 4]).astype(np.float32)
    return pose, transl


def test_phase():
    np.testing.assert_allclose(np.asarray(mf.phase(np.arange(5), 5)), [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_array_equal(np.asarray(mf.phase(np.array([0]), 1)), [0.0])
    assert mf.phase(np.arange(3), 3).dtype == jnp.float32
    with pytest.raises(InputError, match="num_frames"):
        mf.phase(np.arange(3), 0)


def test_fourier_features_formula():
    g = np.asarray(mf.fourier_features(jnp.asarray([0.25, 1.0]), 2))
    t = np.array([0.25, 1.0])[:, None]
    arg = t * np.pi * np.array([1.0, 2.0])
    # [t, sin(π t), cos(π t), sin(2π t), cos(2π t)] (the positional encoding's octave order)
    want = np.concatenate([t, np.stack([np.sin(arg), np.cos(arg)], -1).reshape(2, -1)], 1)
    np.testing.assert_allclose(g, want, atol=1e-6)
    assert mf.fourier_features(jnp.zeros(4), 0).shape == (4, 1)


def test_layer_shapes(model_and_params):
    _, params = model_and_params
    p = params["params"]
    assert p["fcnn_0"]["kernel"].shape == (1 + 2 * 3, HIDDEN)
    assert sorted(p) == ["fcnn_0", "fcnn_1", "fcnn_2", "linear_out", "rot_out"]
    assert p["rot_out"]["kernel"].shape == (HIDDEN, 24 * 6)
    np.testing.assert_array_equal(np.asarray(p["rot_out"]["bias"]), np.tile(mf.IDENTITY_6D, 24))
    np.testing.assert_array_equal(np.asarray(rot6d_to_matrix(jnp.asarray(mf.IDENTITY_6D))),
                                  np.eye(3))


def test_step_zero_is_the_initialisation_exactly(model_and_params):
    model, params = model_and_params
    pose, transl = _init_motion()
    t = mf.phase(np.array([0, 3, 7, 8, 12]), 13)

    @jax.jit
    def refine(params, t, pose, transl):
        R, T = model.apply(params, t)
        return R, T, mf.compose(R, T, pose, transl)

    R, T, (rot, tr) = refine(params, t, pose, transl)
    assert R.shape == (5, 24, 3, 3) and T.shape == (5, 3)
    np.testing.assert_array_equal(np.asarray(R), np.broadcast_to(np.eye(3), (5, 24, 3, 3)))
    np.testing.assert_array_equal(np.asarray(T), 0.0)
    np.testing.assert_allclose(np.asarray(rot), np.asarray(axis_angle_to_matrix(pose)), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(tr), transl)
    assert float(mf.residual_regulariser(R, T)) == 0.0


def test_nemo_gain_is_near_identity_not_exact():
    model = mf.MotionField(hidden=HIDDEN, fourier_octaves=3, head_gain=1e-5)
    params = model.init(jax.random.PRNGKey(1), jnp.zeros((1,)))
    R, T = model.apply(params, jnp.linspace(0, 1, 4))
    dev = np.abs(np.asarray(R) - np.eye(3)).max()
    assert 0 < dev < 1e-4 and 0 < np.abs(np.asarray(T)).max() < 1e-4


def test_gradients_are_finite_and_reach_the_heads(model_and_params):
    model, params = model_and_params
    pose, transl = _init_motion(seed=1)
    t = mf.phase(np.arange(5), 5)
    target = np.asarray(axis_angle_to_matrix(jnp.asarray(pose[::-1].copy())))

    def loss(params):
        R, T = model.apply(params, t)
        rot, tr = mf.compose(R, T, pose, transl)
        return (jnp.sum((rot - target) ** 2) + jnp.sum((tr - 1.0) ** 2)
                + 1e-2 * mf.residual_regulariser(R, T))

    grads = jax.jit(jax.grad(loss))(params)
    leaves = jax.tree_util.tree_leaves(grads)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in leaves)
    g = grads["params"]
    assert np.abs(np.asarray(g["rot_out"]["kernel"])).max() > 0
    assert np.abs(np.asarray(g["linear_out"]["kernel"])).max() > 0
    # After one step the heads are non-zero and the trunk receives gradient too.
    stepped = jax.tree_util.tree_map(lambda p, d: p - 1e-2 * d, params, grads)
    g2 = jax.grad(loss)(stepped)["params"]
    assert np.abs(np.asarray(g2["fcnn_0"]["kernel"])).max() > 0
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree_util.tree_leaves(g2))
    assert float(loss(stepped)) < float(loss(params))


def test_compose_matches_manual_product():
    rng = np.random.default_rng(2)
    B, J = 3, 24
    R_res = Rotation.random(B * J, random_state=3).as_matrix().reshape(B, J, 3, 3)
    pose = rng.normal(0, 0.7, (B, J, 3))
    R0 = Rotation.from_rotvec(pose.reshape(-1, 3)).as_matrix().reshape(B, J, 3, 3)
    T_res, transl = rng.normal(size=(B, 3)), rng.normal(size=(B, 3))
    truth = np.einsum("bjik,bjkl->bjil", R_res, R0)
    for init in (pose, R0):  # axis-angle and matrix initial poses
        rot, tr = mf.compose(jnp.asarray(R_res, jnp.float32), jnp.asarray(T_res, jnp.float32),
                             jnp.asarray(init, jnp.float32), jnp.asarray(transl, jnp.float32))
        np.testing.assert_allclose(np.asarray(rot), truth, atol=1e-5)
        np.testing.assert_allclose(np.asarray(tr), transl + T_res, atol=1e-6)


def test_residual_regulariser_formula():
    rng = np.random.default_rng(4)
    R = rng.normal(size=(4, 24, 3, 3))
    T = rng.normal(size=(4, 3))
    truth = np.mean([np.sum((R[b] - np.eye(3)) ** 2) + np.sum(T[b] ** 2) for b in range(4)])
    np.testing.assert_allclose(float(mf.residual_regulariser(jnp.asarray(R, jnp.float32),
                                                             jnp.asarray(T, jnp.float32))),
                               truth, rtol=1e-5)
