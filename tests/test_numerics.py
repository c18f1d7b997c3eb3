"""Claims checked for smpl_jax.numerics and the pelvis helpers of smpl_jax.joint_sets: each guard
equals the plain formula away from its boundary and keeps value and gradient finite at it (where
the plain formula gives inf/NaN); a pelvis is a row or the midpoint of two rows, and centring
subtracts it from every joint."""
import jax
import jax.numpy as jnp
import numpy as np

from smpl_jax import joint_sets, numerics

X = jnp.asarray([[3.0, 4.0, 0.0], [0.0, 0.0, 0.0]])


def test_guards_match_the_plain_formula_away_from_the_boundary():
    np.testing.assert_allclose(numerics.safe_div(6.0, jnp.asarray([2.0, 0.0]), 1e-3),
                               [3.0, 6000.0], rtol=1e-6)
    np.testing.assert_array_equal(numerics.nonzero_denominator(jnp.asarray([2.0, 0.0, -1.0])),
                                  [2.0, 1.0, 1.0])
    np.testing.assert_array_equal(
        numerics.nonzero_denominator(jnp.asarray([2.0, 0.0]), jnp.asarray([False, True])),
        [1.0, 0.0])
    np.testing.assert_allclose(numerics.safe_norm(X, 1e-12), [5.0, 1e-6])
    np.testing.assert_allclose(numerics.safe_normalize(X, 1e-12), [[0.6, 0.8, 0.0], [0, 0, 0]])


def test_gradients_are_finite_at_the_boundary():
    for fn in (lambda x: numerics.safe_norm(x, 1e-12),
               lambda x: numerics.safe_normalize(x, 1e-12),
               lambda x: 1.0 / numerics.nonzero_denominator(jnp.sum(x, -1)),
               lambda x: numerics.safe_div(1.0, jnp.sum(x * x, -1), 1e-6)):
        g = jax.grad(lambda x: jnp.sum(fn(x)))(X)
        assert np.all(np.isfinite(g))
    # the plain formula is not: 0/0 in the value and the gradient
    assert not np.all(np.isfinite(jax.grad(lambda x: jnp.sum(x / jnp.linalg.norm(
        x, axis=-1, keepdims=True)))(X)))


def test_pelvis_row_pair_and_centring():
    j = jnp.asarray(np.random.default_rng(0).normal(size=(2, 24, 3)), jnp.float32)
    np.testing.assert_array_equal(joint_sets.pelvis_of(j, joint_sets.J24_PELVIS), j[:, 14])
    np.testing.assert_array_equal(joint_sets.pelvis_of(j, joint_sets.LSP_HIPS),
                                  0.5 * (j[:, 2] + j[:, 3]))
    centred = joint_sets.pelvis_centred(j, joint_sets.LSP_HIPS)
    np.testing.assert_allclose(centred[:, 2] + centred[:, 3], 0.0, atol=1e-6)
    np.testing.assert_array_equal(joint_sets.centre_at(j, j[:, 0]), j - j[:, :1])
    # SPIN's names agree with the indices
    names24 = joint_sets.SPIN49_NAMES[joint_sets.NUM_OPENPOSE:]
    assert names24[joint_sets.J24_PELVIS] == "Pelvis (MPII)"
    assert [names24[i] for i in joint_sets.LSP_HIPS] == ["Right Hip", "Left Hip"]
    assert joint_sets.H36M17_NAMES[joint_sets.H36M_PELVIS] == "pelvis"
