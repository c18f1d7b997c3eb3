"""Claims checked: conversions agree with scipy / SPIN's rule, round-trip (also at 0, tiny angles
and near pi), and have finite gradients that match finite differences at those same hard points."""
from functools import partial
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from smpl_jax import rotations

PI = np.pi
N = 256  # one batch size throughout, so each jitted conversion compiles once per dtype
_NAMES = [
    "axis_angle_to_matrix", "matrix_to_axis_angle", "axis_angle_to_quaternion",
    "quaternion_to_axis_angle", "quaternion_to_matrix", "matrix_to_quaternion",
    "rot6d_to_matrix", "matrix_to_rot6d",
]
# Tests call jitted versions: eager mode compiles every primitive separately and is ~10x slower.
# test_jit_and_vmap_match_eager_over_leading_dims checks that eager gives the same values.
rot = SimpleNamespace(**{name: jax.jit(getattr(rotations, name)) for name in _NAMES})


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    """Runs a test in both precisions; float64 via a context that restores the global flag."""
    if request.param == "float64":
        with jax.enable_x64(True):
            yield np.float64
    else:
        yield np.float32


def atol_for(dtype, f32, f64):
    return f32 if dtype == np.float32 else f64


def random_axes(rng, n):
    v = rng.standard_normal((n, 3))
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def random_axis_angles(rng, n, max_angle=PI - 1e-3):
    return random_axes(rng, n) * rng.uniform(0.0, max_angle, (n, 1))


AXIS = np.array([1.0, 2.0, 3.0]) / np.sqrt(14.0)  # generic: no ties in Shepperd's branch choice
# The hard points of every conversion, as axis-angles.
POINTS = {
    "zero": np.zeros(3),
    "tiny": 1e-8 * AXIS,
    "generic": np.array([0.3, -1.2, 0.7]),
    "near_pi": (PI - 1e-3) * AXIS,
}


# ----------------------------------------------------------------------------- axis-angle <-> matrix


def test_axis_angle_to_matrix_agrees_with_scipy(dtype):
    aa = random_axis_angles(np.random.default_rng(0), N, max_angle=PI)
    expected = Rotation.from_rotvec(aa).as_matrix()
    got = rot.axis_angle_to_matrix(jnp.asarray(aa, dtype))
    assert got.dtype == dtype
    np.testing.assert_allclose(got, expected, atol=atol_for(dtype, 1e-6, 1e-13))


def test_matrix_to_axis_angle_agrees_with_scipy(dtype):
    r = Rotation.random(N, random_state=1)
    aa = rot.matrix_to_axis_angle(jnp.asarray(r.as_matrix(), dtype))
    np.testing.assert_allclose(aa, r.as_rotvec(), atol=atol_for(dtype, 2e-6, 1e-12))


@pytest.mark.parametrize(
    "angle", [0.0, 1e-8, 1e-4, 1.0, 2.5, PI - 1e-3, PI - 1e-4], ids=lambda a: f"{a:.8g}"
)
def test_axis_angle_round_trip_through_matrix(dtype, angle):
    aa = angle * random_axes(np.random.default_rng(2), N)
    back = rot.matrix_to_axis_angle(rot.axis_angle_to_matrix(jnp.asarray(aa, dtype)))
    # Scaled by the angle: small rotations must keep their relative precision (0 must stay exactly
    # 0 and 1e-8 must not be flushed to 0 or swamped by float eps).
    tol = atol_for(dtype, 1e-5, 1e-11) * min(angle, 1.0)
    np.testing.assert_allclose(back, aa, atol=tol)


def test_random_axis_angle_round_trip(dtype):
    aa = random_axis_angles(np.random.default_rng(3), N)
    back = rot.matrix_to_axis_angle(rot.axis_angle_to_matrix(jnp.asarray(aa, dtype)))
    np.testing.assert_allclose(back, aa, atol=atol_for(dtype, 1e-5, 1e-11))


@pytest.mark.parametrize("module", [rotations, rot], ids=["eager", "jit"])
def test_zero_rotation_is_exact(module):
    assert np.array_equal(module.axis_angle_to_matrix(jnp.zeros(3)), np.eye(3))
    assert np.array_equal(module.matrix_to_axis_angle(jnp.eye(3)), np.zeros(3))
    assert np.array_equal(module.matrix_to_quaternion(jnp.eye(3)), [1.0, 0.0, 0.0, 0.0])


def test_angle_exactly_pi_gives_same_rotation_with_angle_pi(dtype):
    aa = PI * random_axes(np.random.default_rng(4), N)
    mats = rot.axis_angle_to_matrix(jnp.asarray(aa, dtype))
    back = rot.matrix_to_axis_angle(mats)
    tol = atol_for(dtype, 1e-5, 1e-11)
    np.testing.assert_allclose(np.linalg.norm(back, axis=-1), PI, atol=tol)
    # The axis sign is arbitrary at pi, so compare rotations, and the axis up to sign.
    np.testing.assert_allclose(rot.axis_angle_to_matrix(back), mats, atol=tol)
    np.testing.assert_allclose(np.abs(np.sum(back * aa, -1)), PI**2, atol=10 * tol)


def test_matrix_to_axis_angle_angle_is_in_zero_pi():
    r = Rotation.random(N - 56, random_state=5)
    half_turns = Rotation.from_rotvec(PI * random_axes(np.random.default_rng(5), 56))
    mats = np.concatenate([r.as_matrix(), half_turns.as_matrix()]).astype(np.float32)
    angle = np.linalg.norm(rot.matrix_to_axis_angle(jnp.asarray(mats)), axis=-1)
    assert np.all(angle <= np.float32(PI) * (1 + 1e-6))


# ----------------------------------------------------------------------------- quaternions


def scipy_quat(q_scalar_first):
    return Rotation.from_quat(np.roll(q_scalar_first, -1, axis=-1))  # scipy is scalar-last


def test_axis_angle_to_quaternion_agrees_with_scipy(dtype):
    aa = random_axis_angles(np.random.default_rng(6), N, max_angle=PI)
    expected = np.roll(Rotation.from_rotvec(aa).as_quat(), 1, axis=-1)  # -> (w, x, y, z)
    got = rot.axis_angle_to_quaternion(jnp.asarray(aa, dtype))
    np.testing.assert_allclose(got, expected, atol=atol_for(dtype, 1e-6, 1e-13))


def test_quaternion_to_matrix_agrees_with_scipy_and_ignores_scale(dtype):
    q = np.random.default_rng(7).standard_normal((N, 4))
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    expected = scipy_quat(q).as_matrix()
    tol = atol_for(dtype, 1e-6, 1e-13)
    np.testing.assert_allclose(rot.quaternion_to_matrix(jnp.asarray(q, dtype)), expected, atol=tol)
    np.testing.assert_allclose(rot.quaternion_to_matrix(jnp.asarray(3 * q, dtype)), expected, atol=tol)


def test_matrix_to_quaternion_agrees_with_scipy_with_w_nonnegative(dtype):
    r = Rotation.random(N, random_state=8)
    expected = np.roll(r.as_quat(canonical=True), 1, axis=-1)
    got = np.asarray(rot.matrix_to_quaternion(jnp.asarray(r.as_matrix(), dtype)))
    assert np.all(got[:, 0] >= 0)
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1), 1.0, atol=atol_for(dtype, 1e-6, 1e-14))
    np.testing.assert_allclose(got, expected, atol=atol_for(dtype, 1e-6, 1e-13))


def test_quaternion_to_axis_angle_agrees_with_scipy_for_either_sign(dtype):
    q = np.random.default_rng(9).standard_normal((N, 4))
    expected = scipy_quat(q).as_rotvec()  # scipy normalises and returns angle <= pi
    tol = atol_for(dtype, 2e-6, 1e-12)
    for sign_and_scale in (1.0, -1.0, 0.5):
        got = rot.quaternion_to_axis_angle(jnp.asarray(sign_and_scale * q, dtype))
        np.testing.assert_allclose(got, expected, atol=tol)


def test_matrix_quaternion_round_trip_including_half_turns(dtype):
    rng = np.random.default_rng(10)
    aa = np.concatenate(
        [random_axis_angles(rng, N - 40), PI * random_axes(rng, 20), (PI - 1e-4) * random_axes(rng, 20)]
    )
    mats = np.asarray(rot.axis_angle_to_matrix(jnp.asarray(aa, dtype)))
    back = rot.quaternion_to_matrix(rot.matrix_to_quaternion(jnp.asarray(mats)))
    np.testing.assert_allclose(back, mats, atol=atol_for(dtype, 2e-6, 1e-13))


def test_axis_angle_quaternion_round_trip(dtype):
    rng = np.random.default_rng(11)
    aa = np.concatenate(
        [random_axis_angles(rng, N - 6), 1e-8 * random_axes(rng, 5), np.zeros((1, 3))]
    )
    back = rot.quaternion_to_axis_angle(rot.axis_angle_to_quaternion(jnp.asarray(aa, dtype)))
    np.testing.assert_allclose(back, aa, atol=atol_for(dtype, 2e-6, 1e-12))
    np.testing.assert_allclose(back[-6:-1], aa[-6:-1], rtol=atol_for(dtype, 1e-6, 1e-12))


# ----------------------------------------------------------------------------- 6D (SPIN layout)


def spin_rot6d_to_rotmat_numpy(x):
    """SPIN's rule: (3, 2) reshape, its columns are a1, a2; Gram-Schmidt; b3 = b1 x b2."""
    a = x.reshape(-1, 3, 2)
    a1, a2 = a[:, :, 0], a[:, :, 1]
    b1 = a1 / np.linalg.norm(a1, axis=-1, keepdims=True)
    b2 = a2 - np.sum(b1 * a2, -1, keepdims=True) * b1
    b2 = b2 / np.linalg.norm(b2, axis=-1, keepdims=True)
    return np.stack([b1, b2, np.cross(b1, b2)], axis=-1)


def test_rot6d_to_matrix_follows_spin_layout(dtype):
    x = np.random.default_rng(12).standard_normal((N, 6))
    got = rot.rot6d_to_matrix(jnp.asarray(x, dtype))
    np.testing.assert_allclose(got, spin_rot6d_to_rotmat_numpy(x), atol=atol_for(dtype, 2e-6, 1e-12))


def test_matrix_to_rot6d_is_interleaved_first_two_columns():
    m = np.arange(9.0).reshape(3, 3)  # any matrix: the layout is pure indexing
    expected = [m[0, 0], m[0, 1], m[1, 0], m[1, 1], m[2, 0], m[2, 1]]
    np.testing.assert_array_equal(rot.matrix_to_rot6d(jnp.asarray(m)), expected)


def test_rot6d_to_matrix_gives_proper_rotations_for_arbitrary_input():
    x = 5.0 * np.random.default_rng(13).standard_normal((N, 6)).astype(np.float32)
    r = np.asarray(rot.rot6d_to_matrix(jnp.asarray(x)), np.float64)
    eye = np.broadcast_to(np.eye(3), r.shape)
    np.testing.assert_allclose(np.swapaxes(r, -1, -2) @ r, eye, atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-5)


def test_matrix_rot6d_round_trip(dtype):
    mats = Rotation.random(N, random_state=14).as_matrix()
    back = rot.rot6d_to_matrix(rot.matrix_to_rot6d(jnp.asarray(mats, dtype)))
    np.testing.assert_allclose(back, mats, atol=atol_for(dtype, 1e-6, 1e-13))


def test_rot6d_zero_input_has_finite_value_and_gradient():
    x = jnp.zeros(6)
    assert np.all(np.isfinite(rot.rot6d_to_matrix(x)))
    assert np.all(np.isfinite(jax.grad(lambda v: jnp.sum(rot.rot6d_to_matrix(v)))(x)))


# ----------------------------------------------------------------------------- gradients (float64)


@partial(jax.jit, static_argnums=0)
def _grad_and_central_differences(f, x, w, eps):
    """Gradient of sum(w * f(x)) and its central differences along every coordinate of x."""

    def scalar(v):
        return jnp.sum(w * f(v))

    steps = eps * jnp.eye(x.size, dtype=x.dtype).reshape((x.size,) + x.shape)
    values = jax.vmap(scalar)(jnp.concatenate([x + steps, x - steps]))
    fd = (values[: x.size] - values[x.size :]) / (2 * eps)
    return jax.grad(scalar)(x), fd.reshape(x.shape)


def assert_grad_matches_central_differences(f, x, eps=1e-6, atol=1e-7):
    """jax.grad of sum(w * f(x)) for random w is finite and equals central finite differences."""
    x = jnp.asarray(x, jnp.float64)
    w = jnp.asarray(np.random.default_rng(0).standard_normal(jax.eval_shape(f, x).shape))
    grad, fd = _grad_and_central_differences(f, x, w, eps)
    assert np.all(np.isfinite(grad)), grad
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=atol)


@pytest.mark.parametrize("point", list(POINTS))
def test_grad_axis_angle_to_matrix_matches_fd(x64, point):
    assert_grad_matches_central_differences(rot.axis_angle_to_matrix, POINTS[point])


@pytest.mark.parametrize("point", list(POINTS))
def test_grad_axis_angle_to_quaternion_matches_fd(x64, point):
    assert_grad_matches_central_differences(rot.axis_angle_to_quaternion, POINTS[point])


@pytest.mark.parametrize("point", list(POINTS))
def test_grad_quaternion_maps_match_fd(x64, point):
    q = rot.axis_angle_to_quaternion(jnp.asarray(POINTS[point]))
    assert_grad_matches_central_differences(rot.quaternion_to_axis_angle, q)
    assert_grad_matches_central_differences(rot.quaternion_to_matrix, q)
    assert_grad_matches_central_differences(rot.quaternion_to_matrix, 1.7 * q)  # off the unit sphere


@pytest.mark.parametrize("point", list(POINTS))
def test_grad_matrix_maps_wrt_raw_entries_match_fd(x64, point):
    mat = rot.axis_angle_to_matrix(jnp.asarray(POINTS[point]))
    assert_grad_matches_central_differences(rot.matrix_to_quaternion, mat)
    assert_grad_matches_central_differences(rot.matrix_to_axis_angle, mat)


@jax.jit
def _log_exp_jacobians(aa):
    return (
        jax.jacfwd(lambda a: rot.matrix_to_axis_angle(rot.axis_angle_to_matrix(a)))(aa),
        jax.jacrev(lambda a: rot.quaternion_to_axis_angle(rot.axis_angle_to_quaternion(a)))(aa),
    )


@pytest.mark.parametrize("point", list(POINTS))
def test_matrix_to_axis_angle_inverts_exp_to_first_order(x64, point):
    """Along the tangent of SO(3), log(exp(aa)) = aa, so its Jacobian is the identity."""
    via_matrix, via_quaternion = _log_exp_jacobians(jnp.asarray(POINTS[point]))
    np.testing.assert_allclose(via_matrix, np.eye(3), atol=1e-9)
    np.testing.assert_allclose(via_quaternion, np.eye(3), atol=1e-9)


def test_gradients_are_finite_at_exactly_pi(x64):
    """Only finiteness: at pi the log map jumps between +-pi*axis, so differences are meaningless."""
    aa = jnp.asarray(PI * AXIS)
    mat = rot.axis_angle_to_matrix(aa)
    q = rot.matrix_to_quaternion(mat)
    for f, x in [
        (rot.axis_angle_to_matrix, aa),
        (rot.matrix_to_axis_angle, mat),
        (rot.matrix_to_quaternion, mat),
        (rot.quaternion_to_axis_angle, q),
    ]:
        w = jnp.ones(jax.eval_shape(f, x).shape)
        grad, _ = _grad_and_central_differences(f, x, w, 1e-6)  # compiled by the tests above
        assert np.all(np.isfinite(grad)), f.__name__


def test_grad_of_axis_angle_to_matrix_at_zero_is_the_skew_generator():
    """dR/d(aa_k) at aa = 0 is [e_k]x: neither zero (a stalled optimiser) nor NaN."""
    jac = jax.jacfwd(rot.axis_angle_to_matrix)(jnp.zeros(3))  # (3, 3, 3), last axis = k
    generators = np.asarray(rotations._skew(jnp.eye(3)))  # (k, 3, 3)
    np.testing.assert_array_equal(np.moveaxis(np.asarray(jac), -1, 0), generators)


@pytest.mark.parametrize("seed", [0, 1])
def test_grad_rot6d_to_matrix_matches_fd(x64, seed):
    x = np.random.default_rng(seed).standard_normal(6)
    assert_grad_matches_central_differences(rot.rot6d_to_matrix, x)
    identity_6d = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    assert_grad_matches_central_differences(rot.rot6d_to_matrix, identity_6d)


# ----------------------------------------------------------------------------- batching / transforms

_RNG = np.random.default_rng(15)
CASES = {
    "axis_angle_to_matrix": random_axis_angles(_RNG, 6).reshape(2, 3, 3),
    "axis_angle_to_quaternion": random_axis_angles(_RNG, 6).reshape(2, 3, 3),
    "quaternion_to_axis_angle": _RNG.standard_normal((2, 3, 4)),
    "quaternion_to_matrix": _RNG.standard_normal((2, 3, 4)),
    "matrix_to_quaternion": Rotation.random(6, random_state=16).as_matrix().reshape(2, 3, 3, 3),
    "matrix_to_axis_angle": Rotation.random(6, random_state=17).as_matrix().reshape(2, 3, 3, 3),
    "rot6d_to_matrix": _RNG.standard_normal((2, 3, 6)),
    "matrix_to_rot6d": Rotation.random(6, random_state=18).as_matrix().reshape(2, 3, 3, 3),
}


@pytest.mark.parametrize("name", list(CASES))
def test_jit_and_vmap_match_eager_over_leading_dims(name):
    x = jnp.asarray(CASES[name], jnp.float32)
    f = getattr(rotations, name)  # the plain, un-jitted function
    eager = f(x)
    assert eager.shape[:2] == (2, 3)
    np.testing.assert_allclose(jax.jit(f)(x), eager, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(jax.jit(jax.vmap(jax.vmap(f)))(x), eager, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(f(x[0, 0]), eager[0, 0], rtol=1e-6, atol=1e-6)  # no leading dims
