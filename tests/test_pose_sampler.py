"""The pose sampler: deterministic, within its joint limits, and each family looks like its name on
the default body (checked geometrically from joint positions, not from the sampler's own angles)."""
import jax
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

import smpl_jax
from imphmr_jax.data import pose_sampler as ps

N_PER_FAMILY = 8  # 7 families x 8 = 56 bodies: one jitted forward pass with batch <= 64
HEAD, PELVIS = 15, 0
FEET = (7, 8, 10, 11)
LEGS = ((1, 4, 7), (2, 5, 8))  # (hip, knee, ankle) left and right


def _euler_in_limits(pose):
    """Recover XYZ Euler angles with scipy; a rotation is within limits if either of its two Euler
    triples, (x, y, z) or (x + pi, pi - y, z + pi), lies inside the table."""
    aa = pose[:, 1:].reshape(-1, 3).astype(np.float64)
    e1 = Rotation.from_rotvec(aa).as_euler("XYZ").reshape(-1, 23, 3)
    wrap = lambda a: (a + np.pi) % (2 * np.pi) - np.pi  # noqa: E731
    e2 = np.stack([wrap(e1[..., 0] + np.pi), wrap(np.pi - e1[..., 1]), wrap(e1[..., 2] + np.pi)], -1)
    lim = ps.JOINT_LIMITS[1:]
    inside = lambda e: ((e >= lim[..., 0] - 1e-4) & (e <= lim[..., 1] + 1e-4)).all(-1)  # noqa: E731
    return inside(e1) | inside(e2)


@pytest.fixture(scope="module")
def posed():
    """{family: (pose (N, 24, 3), joints (N, 24, 3))} on the default-small body at mean shape."""
    rng = np.random.default_rng(7)
    poses = {f: ps.sample_family(rng, f, N_PER_FAMILY) for f in ps.FAMILIES}
    batch = np.concatenate([poses[f] for f in ps.FAMILIES])
    model = smpl_jax.load("default-small")
    fwd = jax.jit(smpl_jax.forward, static_argnames=("extra_joints", "return_vertices"))
    joints = np.asarray(fwd(model, batch, np.zeros((len(batch), 10), np.float32), extra_joints=()).joints)
    joints = joints[:, :24].astype(np.float64).reshape(len(ps.FAMILIES), N_PER_FAMILY, 24, 3)
    return {f: (poses[f], joints[i]) for i, f in enumerate(ps.FAMILIES)}


def test_deterministic_for_a_seed_and_different_for_another():
    a, fa = ps.sample_poses(np.random.default_rng(3), 40)
    b, fb = ps.sample_poses(np.random.default_rng(3), 40)
    c, _ = ps.sample_poses(np.random.default_rng(4), 40)
    assert a.shape == (40, 24, 3) and a.dtype == np.float32 and fa.shape == (40,)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(fa, fb)
    assert np.abs(a - c).max() > 0.1


def test_every_family_appears_with_default_weights_and_weights_select():
    _, fam = ps.sample_poses(np.random.default_rng(0), 500)
    assert set(np.unique(fam)) == set(range(len(ps.FAMILIES)))
    _, fam = ps.sample_poses(np.random.default_rng(0), 50, weights={"sitting": 1.0})
    assert (fam == ps.FAMILIES.index("sitting")).all()
    with pytest.raises(ValueError, match="jumping"):
        ps.sample_poses(np.random.default_rng(0), 5, weights={"jumping": 1.0})


def test_body_joint_angles_within_limit_table_and_finite():
    pose, _ = ps.sample_poses(np.random.default_rng(1), 600)
    assert np.isfinite(pose).all()
    ok = _euler_in_limits(pose)
    assert ok.all(), f"joints out of limits: {sorted(set(np.argwhere(~ok)[:, 1] + 1))}"


def test_limit_table_is_anatomical():
    lim = ps.JOINT_LIMITS
    assert lim[4, 0, 0] == 0 and lim[5, 0, 0] == 0, "knees flex only (x >= 0)"
    assert lim[18, 1, 1] == 0 and lim[19, 1, 0] == 0, "elbows flex only (left y <= 0, right y >= 0)"
    # Right side mirrors the left: (x, y, z) -> (x, -y, -z).
    for left, right in ((1, 2), (16, 17), (18, 19)):
        np.testing.assert_allclose(lim[right, 0], lim[left, 0])
        np.testing.assert_allclose(lim[right, 1:], -lim[left, 1:, ::-1])


@pytest.mark.parametrize("family", ["standing", "walking"])
def test_upright_families_head_above_pelvis_feet_lowest(posed, family):
    _, j = posed[family]
    assert (j[:, HEAD, 1] > j[:, PELVIS, 1] + 0.3).all()
    assert np.isin(j[:, :, 1].argmin(1), FEET).all()


def test_sitting_thighs_horizontal_shanks_vertical(posed):
    _, j = posed["sitting"]
    for hip, knee, ankle in LEGS:
        thigh, shank = j[:, knee] - j[:, hip], j[:, ankle] - j[:, knee]
        assert (np.abs(thigh[:, 1]) / np.linalg.norm(thigh, axis=1) < 0.4).all()
        assert (-shank[:, 1] / np.linalg.norm(shank, axis=1) > 0.85).all()


def _pelvis_height_fraction(j):
    y = j[..., 1]
    feet = y[:, list(FEET)].min(1)
    return (y[:, PELVIS] - feet) / (y[:, HEAD] - feet)


def test_crouching_pelvis_much_lower_than_standing(posed):
    crouch = _pelvis_height_fraction(posed["crouching"][1])
    stand = _pelvis_height_fraction(posed["standing"][1])
    assert crouch.max() < stand.min() - 0.1, (crouch, stand)


def test_lying_long_axis_horizontal(posed):
    _, j = posed["lying"]
    axis = j[:, HEAD] - j[:, PELVIS]
    assert (np.abs(axis[:, 1]) / np.linalg.norm(axis, axis=1) < 0.5).all()


def test_knees_never_hyperextend(posed):
    """Knee flexion >= 0 from geometry: the shank turns backwards about the knee's x axis."""
    for family, (pose, j) in posed.items():
        root = Rotation.from_rotvec(pose[:, 0])
        for hip, knee, ankle in LEGS:
            axis = (root * Rotation.from_rotvec(pose[:, hip])).apply([1.0, 0.0, 0.0])
            thigh, shank = j[:, knee] - j[:, hip], j[:, ankle] - j[:, knee]
            sin_flex = np.einsum("bi,bi->b", np.cross(thigh, shank), axis)
            sin_flex /= np.linalg.norm(thigh, axis=1) * np.linalg.norm(shank, axis=1)
            assert (sin_flex > -0.05).all(), (family, sin_flex)


def test_articulation_spreads_wider_than_standing():
    rng = np.random.default_rng(5)
    spread = {}
    for f in ("articulation", "standing"):
        # Spread of each joint's rotation matrix entries over samples (no Euler wrap issues).
        mats = Rotation.from_rotvec(ps.sample_family(rng, f, 300)[:, 1:].reshape(-1, 3)).as_matrix()
        spread[f] = mats.reshape(300, 23, 9).std(0).mean()
    assert spread["articulation"] > 2 * spread["standing"], spread
