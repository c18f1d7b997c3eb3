"""The embedded default bodies: SMPL conventions, sane anatomy, a working shape space, and files
that any SMPL tool reads."""
import os
import pickle

import jax
import numpy as np
import pytest

import smpl_jax
from smpl_jax import build_default, default_body, joint_sets

NAMES = default_body.NAMES
L_R_JOINT_PAIRS = [(1, 2), (4, 5), (7, 8), (10, 11), (13, 14), (16, 17), (18, 19), (20, 21), (22, 23)]
MIDLINE_JOINTS = [0, 3, 6, 9, 12, 15]


@pytest.fixture(scope="module", params=NAMES)
def body(request):
    return request.param, smpl_jax.load(request.param), default_body.load_arrays(request.param)


@pytest.fixture(scope="module")
def fwd():
    return jax.jit(smpl_jax.forward, static_argnames=("extra_joints", "return_vertices"))


def _rest(fwd, model, betas):
    betas = np.atleast_2d(np.asarray(betas, np.float32))
    pose = np.zeros((betas.shape[0], 24, 3), np.float32)
    out = fwd(model, pose, betas)
    return np.asarray(out.vertices, np.float64), np.asarray(out.joints, np.float64)


def test_sizes_match_the_issue(body):
    name, model, _ = body
    expected = {"default": (12000, 12600), "default-small": (1150, 1300)}[name]
    assert expected[0] <= model.num_vertices <= expected[1]
    assert model.num_betas == 10 and not model.has_pose_correctives
    faces = np.asarray(model.faces)
    assert faces.shape[1] == 3 and faces.min() == 0 and faces.max() == model.num_vertices - 1
    assert len(np.unique(faces)) == model.num_vertices, "every vertex belongs to a triangle"


def test_standing_height_at_mean_shape_is_an_adults(body, fwd):
    _, model, _ = body
    verts, _ = _rest(fwd, model, np.zeros(10))
    height = verts[0, :, 1].max() - verts[0, :, 1].min()
    assert 1.5 <= height <= 1.95, height


def test_rest_pose_is_smpl_t_pose_y_up_facing_plus_z_left_on_plus_x(body, fwd):
    _, model, arrays = body
    verts, joints = _rest(fwd, model, np.zeros(10))
    j = joints[0]
    names = joint_sets.SMPL_JOINT_NAMES
    # y up: head above neck above pelvis above knees above ankles.
    assert j[names.index("head"), 1] > j[names.index("neck"), 1] > j[0, 1] > j[4, 1] > j[7, 1]
    # T-pose: wrists level with the shoulders and far out to the side.
    for s, w in ((16, 20), (17, 21)):
        assert abs(j[w, 1] - j[s, 1]) < 0.03 and abs(j[w, 0]) > abs(j[s, 0]) + 0.4
    # The body's left (SMPL's "left_*" joints) on +x.
    assert j[names.index("left_wrist"), 0] > 0.5 and j[names.index("right_wrist"), 0] < -0.5
    # Facing +z: the nose tip and the toes are in front of the head and ankle joints.
    nose = verts[0, arrays["vertex_joint_ids"][0]]
    assert nose[2] > j[names.index("head"), 2] + 0.05
    assert j[names.index("left_foot"), 2] > j[names.index("left_ankle"), 2] + 0.05


def test_weights_and_regressors_are_convex_combinations(body):
    _, model, arrays = body
    w = np.asarray(model.weights)
    assert w.min() >= 0 and np.allclose(w.sum(1), 1, atol=1e-5)
    for key in ("J_regressor", "J_regressor_extra", "J_regressor_h36m"):
        r = arrays[key]
        assert r.min() >= 0 and np.allclose(r.sum(1), 1, atol=1e-5), key


def test_joints_are_left_right_symmetric(body, fwd):
    _, model, _ = body
    betas = np.concatenate([np.zeros((1, 10)), np.random.default_rng(0).normal(size=(4, 10))])
    _, joints = _rest(fwd, model, betas)
    mirrored = joints * np.array([-1.0, 1.0, 1.0])
    for left, right in L_R_JOINT_PAIRS:
        np.testing.assert_allclose(joints[:, left], mirrored[:, right], atol=2e-3)
    np.testing.assert_allclose(joints[:, MIDLINE_JOINTS, 0], 0.0, atol=2e-3)


def test_betas_change_height_and_girth(body, fwd):
    _, model, _ = body
    betas = np.zeros((21, 10))
    for k in range(10):
        betas[1 + 2 * k, k], betas[2 + 2 * k, k] = -2.0, 2.0
    verts, joints = _rest(fwd, model, betas)
    height = verts[..., 1].max(1) - verts[..., 1].min(1)
    waist_y = joints[:, 3, 1]  # spine1
    band = np.abs(verts[..., 1] - waist_y[:, None]) < 0.02
    torso = band & (np.abs(verts[..., 0]) < 0.25)
    girth = np.array([np.ptp(v[t, 0]) + np.ptp(v[t, 2]) for v, t in zip(verts, torso)])
    height_change = np.abs(height[2::2] - height[1::2])
    girth_change = np.abs(girth[2::2] - girth[1::2]) / girth[0]
    assert height_change.max() > 0.15, height_change        # some component: >= 15 cm over +-2 sd
    assert girth_change.max() > 0.15, girth_change          # some component: >= 15% waist size
    # Components are ordered by variance: the first moves the mesh more than the last.
    motion = np.linalg.norm(verts[2::2] - verts[1::2], axis=-1).mean(1)
    assert motion[0] > motion[-1] * 3


def test_regressor_reproduces_the_rigs_joints_across_shapes(body, fwd):
    _, model, arrays = body
    betas = np.random.default_rng(1).normal(size=(64, 10)).astype(np.float32)
    _, joints = _rest(fwd, model, betas)
    rig = arrays["rig_joints_template"] + np.einsum("jik,bk->bji", arrays["rig_joints_shapedirs"], betas)
    err = np.linalg.norm(joints[:, :24] - rig, axis=-1)
    assert err.mean() < 0.01, err.mean()
    assert np.percentile(err, 95) < 0.03, np.percentile(err, 95)


def test_joints_lie_inside_the_mesh_bounds_in_random_poses(body, fwd):
    _, model, _ = body
    rng = np.random.default_rng(2)
    pose = rng.normal(0, 0.3, (8, 24, 3)).astype(np.float32)
    betas = rng.normal(0, 1, (8, 10)).astype(np.float32)
    out = fwd(model, pose, betas, extra_joints=("h36m17",))
    v, j = np.asarray(out.vertices), np.asarray(out.joints)
    lo, hi = v.min(1, keepdims=True), v.max(1, keepdims=True)
    assert np.all(j >= lo - 1e-4) and np.all(j <= hi + 1e-4)


def test_extra_joint_sets_are_available(body, fwd):
    _, model, _ = body
    for name in ("vertex21", "extra9", "h36m17", "lsp14", "spin49"):
        assert name in model.joint_sets


def test_build_default_writes_official_layout_identically_twice(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert build_default.main(["--out", str(a)]) == 0
    assert build_default.main(["--out", str(b), "--names", "default-small"]) == 0
    for name in NAMES:
        with open(a / f"{name}.pkl", "rb") as f:
            data = pickle.load(f)  # plain pickle, no chumpy, no project code needed
        for key in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f", "J"):
            assert isinstance(data[key], np.ndarray), key
        num_verts = data["v_template"].shape[0]
        assert data["posedirs"].shape == (num_verts, 3, 207) and not data["posedirs"].any()
        assert data["kintree_table"].shape == (2, 24)
        assert (a / "NOTICE.md").read_text().count("CC0") >= 1
    with open(a / "default-small.pkl", "rb") as fa, open(b / "default-small.pkl", "rb") as fb:
        da, db = pickle.load(fa), pickle.load(fb)
    for key in da:
        np.testing.assert_array_equal(np.asarray(da[key]), np.asarray(db[key]), err_msg=key)


def test_the_written_pkl_loads_back_to_the_same_body(tmp_path, fwd):
    path = default_body.write_official_pkl("default-small", tmp_path)
    from_file, packaged = smpl_jax.load(path), smpl_jax.load("default-small")
    rng = np.random.default_rng(3)
    pose = rng.normal(0, 0.4, (2, 24, 3)).astype(np.float32)
    betas = rng.normal(0, 1, (2, 10)).astype(np.float32)
    a = fwd(from_file, pose, betas, extra_joints=("spin49",))
    b = fwd(packaged, pose, betas, extra_joints=("spin49",))
    np.testing.assert_allclose(a.vertices, b.vertices, atol=1e-6)
    np.testing.assert_allclose(a.joints, b.joints, atol=1e-6)
    assert not from_file.has_pose_correctives, "all-zero posedirs are dropped on load"


def test_preview_picture_is_written(tmp_path):
    out = tmp_path / "preview.png"
    assert build_default.main(["--preview", str(out), "--names", "default-small"]) == 0
    assert out.stat().st_size > 20_000
    os.makedirs("tests/_output", exist_ok=True)
    os.replace(out, "tests/_output/default_body_preview.png")


def test_unknown_body_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="default-small"):
        smpl_jax.load("defualt")


def test_smplx_reads_the_written_pkl_and_agrees(tmp_path, fwd):
    torch = pytest.importorskip("torch")
    smplx = pytest.importorskip("smplx")
    path = default_body.write_official_pkl("default-small", tmp_path)
    smplx_names = ["nose", "reye", "leye", "rear", "lear", "LBigToe", "LSmallToe", "LHeel", "RBigToe",
                   "RSmallToe", "RHeel"] + [h + f for h in "lr" for f in ("thumb", "index", "middle", "ring", "pinky")]
    ids = default_body.load_arrays("default-small")["vertex_joint_ids"]
    ref_model = smplx.SMPL(model_path=path, num_betas=10, batch_size=4,
                           vertex_ids=dict(zip(smplx_names, map(int, ids))))
    rng = np.random.default_rng(4)
    pose = rng.normal(0, 0.5, (4, 24, 3)).astype(np.float32)
    betas = rng.normal(0, 1, (4, 10)).astype(np.float32)
    t = lambda x: torch.tensor(x)  # noqa: E731
    with torch.no_grad():
        ref = ref_model(global_orient=t(pose[:, 0]), body_pose=t(pose[:, 1:].reshape(4, -1)), betas=t(betas))
    out = fwd(smpl_jax.load("default-small"), pose, betas, extra_joints=("vertex21",))
    np.testing.assert_allclose(out.vertices, ref.vertices.numpy(), atol=1e-5)
    np.testing.assert_allclose(out.joints, ref.joints.numpy(), atol=1e-5)
