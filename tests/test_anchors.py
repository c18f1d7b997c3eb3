"""Claims checked (neuhmr_jax.anchors): candidate_anchors gives ⌊T/every⌋ (at least 1) centred
frames; pose_descriptor equals scipy's rotation matrices' first two columns (SPIN 6D) of the root
then the body joints; farthest_point_sampling picks the known farthest sets on a line and on a
square with interior points, in the known order, and returns distinct indices; select_anchors
keeps the extreme poses of a monotone motion; reference_anchors picks the nearest anchor in pose
and then a back-facing complement (the nearest back view when there are several, the most
different facing when there is none), never the frame itself while another anchor exists, and
repeats when too few anchors exist; bad input raises InputError."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from imphmr_jax.cli import InputError
from neuhmr_jax import anchors as anc


def test_candidate_anchors_counts_and_spacing():
    np.testing.assert_array_equal(anc.candidate_anchors(100), [5, 15, 25, 35, 45, 55, 65, 75, 85,
                                                               95])
    np.testing.assert_array_equal(anc.candidate_anchors(25), [6, 18])  # N = 2, segments of 12.5
    np.testing.assert_array_equal(anc.candidate_anchors(5), [2])  # T < 10: still one
    np.testing.assert_array_equal(anc.candidate_anchors(1), [0])
    np.testing.assert_array_equal(anc.candidate_anchors(7, every=1), np.arange(7))
    for T in (1, 9, 10, 11, 99, 123, 1000):
        c = anc.candidate_anchors(T)
        assert len(c) == max(T // 10, 1)
        assert c.dtype == np.int64 and c[0] >= 0 and c[-1] < T and np.all(np.diff(c) > 0)
    with pytest.raises(InputError, match="num_frames"):
        anc.candidate_anchors(0)
    with pytest.raises(InputError, match="every"):
        anc.candidate_anchors(10, every=0)


def test_pose_descriptor_matches_scipy():
    poses = np.random.default_rng(0).normal(0, 0.8, (3, 24, 3)).astype(np.float32)
    mats = Rotation.from_rotvec(poses.reshape(-1, 3).astype(np.float64)).as_matrix()
    truth = mats[:, :, :2].reshape(3, 24 * 6)  # per joint [R00, R01, R10, R11, R20, R21]
    d = np.asarray(anc.pose_descriptor(poses))
    assert d.shape == (3, 144)
    np.testing.assert_allclose(d, truth, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(anc.pose_descriptor(np.zeros((1, 24, 3))))[0],
                                  np.tile([1, 0, 0, 1, 0, 0], 24))
    with pytest.raises(InputError, match=r"\(T, 24, 3\)"):
        anc.pose_descriptor(np.zeros((2, 23, 3)))


def test_fps_on_a_line():
    x = np.stack([np.arange(11.0), np.zeros(11)], 1)
    # Start: 0 and 10 are both 5 from the mean; the lower index wins. Then the other end, then 5.
    np.testing.assert_array_equal(anc.farthest_point_sampling(x, 3), [0, 10, 5])
    np.testing.assert_array_equal(anc.farthest_point_sampling(x, 3, start=4), [4, 10, 0])


def test_fps_picks_square_corners_before_interior():
    corners = [[0, 0], [4, 0], [0, 4], [4, 4]]
    interior = [[1, 1], [2, 2], [3, 1], [2, 3], [1, 3]]
    x = np.asarray(corners + interior, float)
    rng = np.random.default_rng(1)
    for start in range(4):
        assert set(anc.farthest_point_sampling(x, 4, start=start).tolist()) == {0, 1, 2, 3}
    # From (0, 0): (4, 4) is farthest, then (4, 0) and (0, 4) tie at 4 (lower index first), then
    # the centre (2, 2) is 2√2 from every corner, farther than any other interior point.
    np.testing.assert_array_equal(anc.farthest_point_sampling(x, 5, start=0), [0, 3, 1, 2, 5])
    # Order of the input does not matter (up to ties): shuffled, the corners still come first.
    perm = rng.permutation(len(x))
    picked = perm[anc.farthest_point_sampling(x[perm], 4)]
    assert set(picked.tolist()) == {0, 1, 2, 3}


def test_fps_returns_distinct_indices_and_checks_input():
    x = np.zeros((5, 3))
    x[3] = 1.0  # four duplicates and one outlier
    picks = anc.farthest_point_sampling(x, 10)
    assert picks[0] == 3 and sorted(picks.tolist()) == [0, 1, 2, 3, 4]
    with pytest.raises(InputError, match=">= 1"):
        anc.farthest_point_sampling(x, 0)
    with pytest.raises(InputError, match="out of range"):
        anc.farthest_point_sampling(x, 2, start=5)
    with pytest.raises(InputError, match=r"\(N, D\)"):
        anc.farthest_point_sampling(np.zeros(4), 2)


def test_select_anchors_keeps_extremes_of_a_monotone_motion():
    T = 40  # candidates 5, 15, 25, 35
    poses = np.zeros((T, 24, 3))
    poses[:, 18, 0] = np.linspace(0.0, 1.5, T)  # one elbow bends steadily through the video
    np.testing.assert_array_equal(anc.select_anchors(poses, num_anchors=2), [5, 35])
    np.testing.assert_array_equal(anc.select_anchors(poses, num_anchors=8), [5, 15, 25, 35])
    np.testing.assert_array_equal(anc.select_anchors(poses[:3], num_anchors=8), [1])
    with pytest.raises(InputError, match="num_anchors"):
        anc.select_anchors(poses, num_anchors=0)


# Root orientations (camera frame) and their facing vectors R·[0, 0, 1].
FRONT = np.array([0.0, np.pi, 0.0])  # facing -z: towards the camera
BACK = np.zeros(3)  # facing +z: away from the camera
SIDE = np.array([0.0, np.pi / 2, 0.0])  # facing +x
HALF = np.array([0.0, 3 * np.pi / 4, 0.0])  # 45° from FRONT, 135° from BACK


def _video(roots, body_seeds):
    """Frames with the given root orientations and body poses drawn from the given seeds."""
    poses = np.zeros((len(roots), 24, 3))
    for t, (root, seed) in enumerate(zip(roots, body_seeds)):
        poses[t, 0] = root
        poses[t, 1:] = np.random.default_rng(seed).normal(0, 0.3, (23, 3))
    return poses


def test_reference_anchors_front_frame_gets_back_complement():
    # Anchors 0..4: front A, front B, back A, side A, back C. Frame 5: front, pose A + noise.
    poses = _video([FRONT, FRONT, BACK, SIDE, BACK, FRONT], [0, 1, 0, 0, 2, 0])
    poses[5, 1:] += np.random.default_rng(9).normal(0, 0.01, (23, 3))
    refs = anc.reference_anchors(poses, [0, 1, 2, 3, 4])
    assert refs.shape == (6, 2) and refs.dtype == np.int64
    # (a) the same-pose front anchor; (b) of the two back views, the one with the nearer pose.
    np.testing.assert_array_equal(refs[5], [0, 2])
    # Back frame 4 (pose C): the back anchor 2, then of the two front views the nearer pose, 1.
    d = np.asarray(anc.pose_descriptor(poses))
    assert np.linalg.norm(d[4] - d[1]) < np.linalg.norm(d[4] - d[0])
    np.testing.assert_array_equal(refs[4], [2, 1])
    # Front frame 1 (an anchor itself): the other front anchor, then the nearer back view.
    np.testing.assert_array_equal(refs[1], [0, 2])
    # An anchor never references itself, and the two references always differ here.
    assert np.all(refs[:5, 0] != np.arange(5)) and np.all(refs[:5, 1] != np.arange(5))
    assert np.all(refs[:, 0] != refs[:, 1])
    # n = 1 is column (a).
    np.testing.assert_array_equal(anc.reference_anchors(poses, [0, 1, 2, 3, 4], n=1),
                                  refs[:, :1])


def test_reference_anchors_without_a_back_view_takes_the_most_different_facing():
    # Anchors: front A (0), half-turned B (1), side C (2). Frame 3: front, pose A.
    poses = _video([FRONT, HALF, SIDE, FRONT], [0, 1, 2, 0])
    np.testing.assert_array_equal(anc.reference_anchors(poses, [0, 1, 2])[3], [0, 2])
    # Widening the "back view" cone: at 100° the side view (90° from the opposite of front)
    # counts and is the only one; at 140° the half-turned view (135°) counts too and the nearer
    # pose wins.
    np.testing.assert_array_equal(
        anc.reference_anchors(poses, [0, 1, 2], facing_angle_deg=100.0)[3], [0, 2])
    refs = anc.reference_anchors(poses, [0, 1, 2], facing_angle_deg=140.0)
    d = np.asarray(anc.pose_descriptor(poses))
    assert np.linalg.norm(d[3] - d[1]) < np.linalg.norm(d[3] - d[2])
    np.testing.assert_array_equal(refs[3], [0, 1])


def test_reference_anchors_repeat_when_too_few():
    poses = _video([FRONT, BACK, FRONT, SIDE], [0, 1, 2, 3])
    refs = anc.reference_anchors(poses, [2])  # one anchor: every frame uses it twice
    np.testing.assert_array_equal(refs, np.full((4, 2), 2))
    refs = anc.reference_anchors(poses, [1, 2])  # two anchors: an anchor frame uses the other
    np.testing.assert_array_equal(refs[1], [2, 2])
    np.testing.assert_array_equal(refs[2], [1, 1])
    assert set(refs[0].tolist()) == {1, 2} and set(refs[3].tolist()) == {1, 2}


def test_reference_anchors_input_errors():
    poses = _video([FRONT, BACK, SIDE], [0, 1, 2])
    with pytest.raises(InputError, match="1 or 2"):
        anc.reference_anchors(poses, [0, 1], n=3)
    with pytest.raises(InputError, match="outside"):
        anc.reference_anchors(poses, [0, 3])
    with pytest.raises(InputError, match="distinct"):
        anc.reference_anchors(poses, [1, 1])
    with pytest.raises(InputError, match="non-empty"):
        anc.reference_anchors(poses, [])
