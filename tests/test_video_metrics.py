"""Video metric primitives (MPJAE, jitter, acceleration error, PA transform of other points) and
the EMDB / 3DPW video protocols against independent NumPy/SciPy computations written here:
Procrustes by SVD (Umeyama's derivation), jitter by its formula, geodesic angles by SciPy."""
import json
import os

import jax
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

import smpl_jax
from imphmr_jax import metrics
from neuhmr_jax import evaluation
from neuhmr_jax.data import emdb, threedpw

from test_emdb import PARENTS, chain_rotations, write_threedpw, threedpw_data, write_two_sequences

MPJAE_JOINTS = [0, 1, 2, 4, 5, 16, 17, 18, 19]
IGNORED = [0, 7, 8, 10, 11, 20, 21, 22, 23]


@pytest.fixture(scope="module")
def body():
    return smpl_jax.load("default-small")


# ------------------------------------------------------------------------------ independent truth
def umeyama(x, y):
    """Similarity (s, R, t) minimising ||s R x + t - y||² (Umeyama 1991), one frame (J, 3)."""
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    u, sig, vt = np.linalg.svd(xc.T @ yc)
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(vt.T @ u.T))])
    r = vt.T @ d @ u.T
    s = np.trace(np.diag(sig) @ d) / (xc ** 2).sum()
    return s, r, my - s * r @ mx


def angle_deg(a, b):
    """Geodesic angle between rotation matrices by SciPy, degrees."""
    rel = np.einsum("...ij,...kj->...ik", a, b).reshape(-1, 3, 3)
    return np.degrees(Rotation.from_matrix(rel).magnitude()).reshape(a.shape[:-2])


def jitter_numpy(joints, fps, ignored):
    x = np.array(joints, np.float64)
    x[:, ignored] = 0.0  # EMDB's zeroing of positions
    jerk = (x[3:] - 3 * x[2:-1] + 3 * x[1:-2] - x[:-3]) * fps ** 3
    return np.linalg.norm(jerk, axis=-1).mean(-1)


_forward = jax.jit(smpl_jax.forward)


def posed(body, pose_aa, betas, transl=None):
    n = pose_aa.shape[0]
    out = _forward(body, pose_aa.reshape(n, 24, 3).astype(np.float32),
                           np.broadcast_to(betas, (n, 10)).astype(np.float32),
                           None if transl is None else transl.astype(np.float32))
    return np.asarray(out.vertices, np.float64), np.asarray(out.joints[:, :24], np.float64)


def camera_pose(seq):
    """Every frame's ground-truth pose with the root in the camera frame, (n, 72)."""
    root = Rotation.from_matrix(np.einsum("nij,njk->nik", seq.extrinsics[:, :3, :3],
                                          Rotation.from_rotvec(seq.poses_root).as_matrix()))
    return np.concatenate([root.as_rotvec(), seq.poses_body], 1)


def emdb_numpy(seq, body, pred_pose, pred_betas, fps=30.0):
    """EMDB's metrics of a sequence, recomputed in NumPy from the posed bodies."""
    f = seq.good_frames
    gv, gj = posed(body, seq.poses[f], seq.betas, seq.trans[f])
    r_ext, t_ext = seq.extrinsics[f, :3, :3], seq.extrinsics[f, :3, 3]
    gv = np.einsum("nij,nkj->nki", r_ext, gv) + t_ext[:, None]
    gj = np.einsum("nij,nkj->nki", r_ext, gj) + t_ext[:, None]
    g_rot = np.einsum("nij,nkjl->nkil", r_ext, chain_rotations(seq.poses[f]))
    pv, pj = posed(body, pred_pose[f], pred_betas)
    p_rot = chain_rotations(pred_pose[f])
    out = {k: [] for k in ("mpjpe", "pa_mpjpe", "pve", "pa_pve", "mpjae", "pa_mpjae")}
    for i in range(len(f)):
        gp = (gj[i, 1] + gj[i, 2]) / 2
        pp = (pj[i, 1] + pj[i, 2]) / 2
        a, b, av, bv = pj[i] - pp, gj[i] - gp, pv[i] - pp, gv[i] - gp
        s, r, t = umeyama(a, b)
        out["mpjpe"].append(np.linalg.norm(a - b, axis=-1).mean() * 1000)
        out["pve"].append(np.linalg.norm(av - bv, axis=-1).mean() * 1000)
        out["pa_mpjpe"].append(np.linalg.norm(s * a @ r.T + t - b, axis=-1).mean() * 1000)
        out["pa_pve"].append(np.linalg.norm(s * av @ r.T + t - bv, axis=-1).mean() * 1000)
        out["mpjae"].append(angle_deg(p_rot[i, MPJAE_JOINTS], g_rot[i, MPJAE_JOINTS]).mean())
        out["pa_mpjae"].append(angle_deg(r @ p_rot[i, MPJAE_JOINTS], g_rot[i, MPJAE_JOINTS])
                               .mean())
    out = {k: np.array(v) for k, v in out.items()}
    out["jitter"] = jitter_numpy(pj, fps, IGNORED).mean() / 10
    out["jitter_gt"] = jitter_numpy(gj, fps, IGNORED).mean() / 10
    return out


# ------------------------------------------------------------------------------ primitives
def test_mpjae_matches_scipy_and_selects_joints():
    rng = np.random.default_rng(0)
    a = Rotation.random(5 * 24, random_state=1).as_matrix().reshape(5, 24, 3, 3)
    b = Rotation.random(5 * 24, random_state=2).as_matrix().reshape(5, 24, 3, 3)
    np.testing.assert_allclose(metrics.mpjae(a, b), angle_deg(a, b).mean(-1), atol=1e-3)
    np.testing.assert_allclose(metrics.mpjae(a, b, MPJAE_JOINTS),
                               angle_deg(a, b)[:, MPJAE_JOINTS].mean(-1), atol=1e-3)
    # Angles near 0 and near 180 degrees are accurate.
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    for deg in (1e-2, 0.5, 90.0, 179.9, 180.0):
        r = Rotation.from_rotvec(np.radians(deg) * axis).as_matrix()
        got = metrics.mpjae(r[None, None] @ a[:1, :1], a[:1, :1])
        np.testing.assert_allclose(got, [deg], atol=2e-2)
    with pytest.raises(ValueError, match="mpjae"):
        metrics.mpjae(a, b[:, :5])


def test_jitter_formula_and_zeroed_joints():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(10, 24, 3))
    np.testing.assert_allclose(metrics.jitter(x, 30), jitter_numpy(x, 30, []), rtol=1e-5)
    got = np.asarray(metrics.jitter(x, 25, IGNORED))
    np.testing.assert_allclose(got, jitter_numpy(x, 25, IGNORED), rtol=1e-5)
    # "Zeroed" joints count in the denominator: the mean is over all 24 joints.
    kept = [j for j in range(24) if j not in IGNORED]
    jerk = np.linalg.norm(x[3:, kept] - 3 * x[2:-1, kept] + 3 * x[1:-2, kept] - x[:-3, kept],
                          axis=-1) * 25 ** 3
    np.testing.assert_allclose(got, jerk.sum(-1) / 24, rtol=1e-5)
    # A motion with constant acceleration has no jerk (quadratic in t).
    t = np.arange(8.0)[:, None, None]
    quad = 0.5 * t ** 2 * np.ones((1, 24, 3)) * 0.01 + 0.2 * t
    np.testing.assert_allclose(metrics.jitter(quad, 30), np.zeros(5), atol=1e-2)
    with pytest.raises(ValueError, match="at least 4"):
        metrics.jitter(x[:3])


def test_accel_error_matches_numpy():
    rng = np.random.default_rng(2)
    p, g = rng.normal(size=(2, 9, 14, 3))
    want = np.linalg.norm((p[:-2] - 2 * p[1:-1] + p[2:]) - (g[:-2] - 2 * g[1:-1] + g[2:]),
                          axis=-1).mean(-1) * 1000
    np.testing.assert_allclose(metrics.accel_error(p, g), want, rtol=1e-5)
    valid = np.ones(9, bool)
    valid[4] = False  # windows 2, 3, 4 contain frame 4
    np.testing.assert_allclose(metrics.accel_error(p, g, valid), want[[0, 1, 5, 6]], rtol=1e-5)


def test_pa_transform_points_matches_umeyama():
    rng = np.random.default_rng(3)
    gt = rng.normal(scale=0.3, size=(3, 24, 3))
    pred = gt @ Rotation.random(random_state=4).as_matrix().T * 1.2 + 0.5
    pred += rng.normal(scale=0.02, size=pred.shape)
    pts = rng.normal(scale=0.4, size=(3, 50, 3))
    got = np.asarray(metrics.pa_transform_points(pred.astype(np.float32), gt.astype(np.float32),
                                                 pts.astype(np.float32)))
    for i in range(3):
        s, r, t = umeyama(pred[i], gt[i])
        np.testing.assert_allclose(got[i], s * pts[i] @ r.T + t, atol=2e-5)


# ------------------------------------------------------------------------------ EMDB protocol
@pytest.fixture(scope="module")
def emdb_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("emdb"))
    write_two_sequences(root)
    return root


def noisy_prediction(seq, rng, scale=0.1):
    pose = camera_pose(seq) + rng.normal(scale=scale, size=(seq.n_frames, 72))
    return pose, seq.betas + rng.normal(scale=0.5, size=10)


def test_evaluate_sequence_matches_numpy(emdb_root, body):
    rng = np.random.default_rng(10)
    for seq in emdb.find_sequences(emdb_root):
        pose, betas = noisy_prediction(seq, rng)
        got = evaluation.evaluate_sequence(pose.reshape(-1, 24, 3), betas, seq, body)
        want = emdb_numpy(seq, body, pose, betas)
        np.testing.assert_array_equal(got["frames"], seq.good_frames)
        for k in ("mpjpe", "pa_mpjpe", "pve", "pa_pve"):
            assert got[k].shape == (seq.good_frames.size,)
            np.testing.assert_allclose(got[k], want[k], rtol=1e-3, atol=0.02, err_msg=k)
        for k in ("mpjae", "pa_mpjae"):
            np.testing.assert_allclose(got[k], want[k], atol=0.02, err_msg=k)
        for k in ("jitter", "jitter_gt"):
            np.testing.assert_allclose(got[k], want[k], rtol=1e-3, err_msg=k)
        assert got["gt_body"] == "same body for all genders" and got["protocol"] == "emdb"
        # Predictions of the good frames only give the same numbers; per-frame betas too.
        f = seq.good_frames
        again = evaluation.evaluate_sequence(pose[f], np.tile(betas, (f.size, 1)), seq, body)
        np.testing.assert_allclose(again["mpjpe"], got["mpjpe"], rtol=1e-5)


def test_perfect_prediction_is_zero_and_rotation_only_hits_non_pa(emdb_root, body):
    seq = emdb.find_sequences(emdb_root)[0]
    pose = camera_pose(seq)
    res = evaluation.evaluate_sequence(pose, seq.betas, seq, body)
    for k in ("mpjpe", "pa_mpjpe", "pve", "pa_pve"):
        assert np.all(res[k] < 0.01), (k, res[k])  # float32: far below a hundredth of a mm
    for k in ("mpjae", "pa_mpjae"):
        assert np.all(res[k] < 0.01), (k, res[k])
    # The translation of the ground truth does not reach the prediction: jitter differs, the
    # others do not care.
    assert np.isfinite(res["jitter"]) and np.isfinite(res["jitter_gt"])
    # A global rotation Q of the whole prediction: PA-* stay 0, the others grow; every joint's
    # global rotation is off by exactly the angle of Q.
    q = Rotation.from_rotvec(np.radians(20.0) * np.array([0.6, 0.8, 0.0]))
    rotated = pose.copy()
    rotated[:, :3] = (q * Rotation.from_rotvec(pose[:, :3])).as_rotvec()
    res = evaluation.evaluate_sequence(rotated, seq.betas, seq, body)
    for k in ("pa_mpjpe", "pa_pve", "pa_mpjae"):
        assert np.all(res[k] < 0.01), (k, res[k])
    assert np.all(res["mpjpe"] > 10) and np.all(res["pve"] > 10)
    np.testing.assert_allclose(res["mpjae"], 20.0, atol=1e-3)


def test_pool_is_frame_weighted_and_jitter_per_sequence(emdb_root, body, tmp_path):
    rng = np.random.default_rng(11)
    results = {}
    for seq in emdb.find_sequences(emdb_root):
        pose, betas = noisy_prediction(seq, rng, scale=0.05 if seq.n_frames == 6 else 0.25)
        results[seq.name] = evaluation.evaluate_sequence(pose, betas, seq, body)
    pooled = evaluation.pool(results)
    a, b = results["P0_01_walk"], results["P1_05_run"]
    assert (a["mpjpe"].size, b["mpjpe"].size) == (5, 7)  # unequal lengths
    assert pooled["num_frames"] == 12 and pooled["num_sequences"] == 2
    for k in ("mpjpe", "pa_mpjpe", "pve", "pa_pve", "mpjae", "pa_mpjae"):
        frame_weighted = np.concatenate([a[k], b[k]]).mean()
        sequence_weighted = (a[k].mean() + b[k].mean()) / 2
        np.testing.assert_allclose(pooled["metrics"][k], frame_weighted, rtol=1e-9)
        np.testing.assert_allclose(pooled["sequence_weighted"][k], sequence_weighted, rtol=1e-9)
        assert abs(frame_weighted - sequence_weighted) > 1e-3 * frame_weighted, k
        np.testing.assert_allclose(pooled["per_sequence"]["P1_05_run"][k], b[k].mean())
    np.testing.assert_allclose(pooled["metrics"]["jitter"], (a["jitter"] + b["jitter"]) / 2)
    assert pooled["units"]["mpjpe"] == "mm" and pooled["units"]["jitter"] == "10 m/s^3"
    table = evaluation.format_table(pooled)
    assert "| P0_01_walk | 5 |" in table and "PA-MPJPE (mm)" in table
    assert f"**{pooled['metrics']['mpjpe']:.1f}**" in table
    paths = evaluation.write_results(str(tmp_path / "out"), results, pooled, meta={"run": "x"})
    with open(paths["summary"]) as f:
        summary = json.load(f)
    assert summary["meta"] == {"run": "x"}
    np.testing.assert_allclose(summary["metrics"]["mpjpe"], pooled["metrics"]["mpjpe"])
    with open(paths["per_frame"]) as f:
        per_frame = json.load(f)
    assert per_frame["P0_01_walk"]["frames"] == [0, 1, 3, 4, 5]
    assert len(per_frame["P1_05_run"]["mpjae"]) == 7
    assert os.path.isfile(paths["table"])


def test_evaluate_emdb_runs_the_split(emdb_root, body, tmp_path):
    seqs = emdb.find_sequences(emdb_root, "all")
    preds = {s.name: {"pose": camera_pose(s), "betas": s.betas} for s in seqs}
    out = str(tmp_path / "emdb_out")
    pooled = evaluation.evaluate_emdb(emdb_root, preds, body, out_dir=out)
    assert sorted(pooled["per_sequence"]) == ["P0_01_walk", "P1_05_run"]  # EMDB1 only
    assert pooled["metrics"]["mpjpe"] < 0.01
    assert os.path.isfile(os.path.join(out, "summary.json"))
    pooled = evaluation.evaluate_emdb(emdb_root, lambda s: (camera_pose(s), s.betas), body,
                                      split="emdb2")
    assert list(pooled["per_sequence"]) == ["P1_07_global"]
    with pytest.raises(KeyError, match="P0_01_walk"):
        evaluation.evaluate_emdb(emdb_root, {}, body)
    with pytest.raises(ValueError, match="frames"):
        evaluation.evaluate_sequence(camera_pose(seqs[0])[:3], seqs[0].betas, seqs[0], body)
    with pytest.raises(ValueError, match="gender 'male'"):
        evaluation.evaluate_sequence(camera_pose(seqs[0]), seqs[0].betas, seqs[0], body,
                                     {"female": body})


# ------------------------------------------------------------------------------ 3DPW protocol
@pytest.fixture(scope="module")
def pw3d(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("pw3d"))
    rng = np.random.default_rng(20)
    data = threedpw_data(rng, "outdoors_fencing_01", 9)
    write_threedpw(root, "test", data)
    return root, threedpw.find_sequences(root)[0]


def pw3d_numpy(body, who, cam, pred_pose, pred_betas, reg=None):
    f = who.valid_frames
    pose = who.poses[f].copy()
    root = np.einsum("nij,njk->nik", cam[f, :3, :3], Rotation.from_rotvec(pose[:, :3]).as_matrix())
    pose[:, :3] = Rotation.from_matrix(root).as_rotvec()
    gv, gj = posed(body, pose, who.betas)
    pv, pj = posed(body, pred_pose[f], pred_betas)
    if reg is not None:
        h36m_to_j14 = [6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10]
        gj = np.einsum("kv,nvc->nkc", reg, gv)[:, h36m_to_j14]
        pj = np.einsum("kv,nvc->nkc", reg, pv)[:, h36m_to_j14]
        hips = (2, 3)
    else:
        hips = (1, 2)
    gj = gj - (gj[:, hips[0]] + gj[:, hips[1]])[:, None] / 2
    pj = pj - (pj[:, hips[0]] + pj[:, hips[1]])[:, None] / 2
    out = {"mpjpe": np.linalg.norm(pj - gj, axis=-1).mean(-1) * 1000,
           "pve": np.linalg.norm(pv - gv, axis=-1).mean(-1) * 1000}
    pa = []
    for i in range(len(f)):
        s, r, t = umeyama(pj[i], gj[i])
        pa.append(np.linalg.norm(s * pj[i] @ r.T + t - gj[i], axis=-1).mean() * 1000)
    out["pa_mpjpe"] = np.array(pa)
    acc = []
    for i in range(len(f) - 2):
        if f[i + 2] - f[i] == 2:
            ap = pj[i] - 2 * pj[i + 1] + pj[i + 2]
            ag = gj[i] - 2 * gj[i + 1] + gj[i + 2]
            acc.append(np.linalg.norm(ap - ag, axis=-1).mean() * 1000)
    out["accel_error"] = np.array(acc)
    return out


@pytest.mark.parametrize("use_regressor", [False, True])
def test_threedpw_track_matches_numpy(pw3d, body, use_regressor):
    _, seq = pw3d
    rng = np.random.default_rng(21)
    reg = None
    if use_regressor:
        v = body.v_template.shape[0]
        reg = np.zeros((17, v))
        for k in range(17):
            ids = rng.choice(v, size=20, replace=False)
            reg[k, ids] = rng.uniform(0.1, 1.0, size=20)
        reg /= reg.sum(1, keepdims=True)
    who = seq.people[0]  # frames 1 and 6 invalid
    pred_pose = who.poses.copy()
    pred_pose[:, :3] = (Rotation.from_matrix(seq.cam_poses[:, :3, :3])
                        * Rotation.from_rotvec(who.poses[:, :3])).as_rotvec()
    pred_pose += rng.normal(scale=0.1, size=pred_pose.shape)
    betas = who.betas + rng.normal(scale=0.5, size=10)
    got = evaluation.evaluate_threedpw_track(pred_pose, betas, seq, 0, body, j_regressor=reg)
    want = pw3d_numpy(body, who, seq.cam_poses, pred_pose, betas, reg)
    assert got["joints"] == ("lsp14" if use_regressor else "smpl24")
    assert got["name"] == "outdoors_fencing_01_0" and got["protocol"] == "3dpw"
    np.testing.assert_array_equal(got["frames"], [0, 2, 3, 4, 5, 7, 8])
    assert got["accel_error"].shape == (2,)  # the windows of consecutive frames: 2-4 and 3-5
    for k in ("mpjpe", "pa_mpjpe", "pve", "accel_error"):
        np.testing.assert_allclose(got[k], want[k], rtol=1e-3, atol=0.02, err_msg=k)


def test_threedpw_perfect_prediction_and_runner(pw3d, body, tmp_path):
    root, seq = pw3d
    preds = {}
    for p, who in enumerate(seq.people):
        pose = who.poses.copy()
        pose[:, :3] = (Rotation.from_matrix(seq.cam_poses[:, :3, :3])
                       * Rotation.from_rotvec(who.poses[:, :3])).as_rotvec()
        preds[seq.track_name(p)] = (pose, who.betas)
    pooled = evaluation.evaluate_threedpw(root, preds, body, out_dir=str(tmp_path / "o"))
    assert sorted(pooled["per_sequence"]) == ["outdoors_fencing_01_0", "outdoors_fencing_01_1"]
    assert pooled["num_frames"] == 7 + 9
    for k in ("mpjpe", "pa_mpjpe", "pve", "accel_error"):
        assert pooled["metrics"][k] < 0.01, (k, pooled["metrics"][k])
    assert pooled["units"]["accel_error"] == "mm/frame^2"
    # The translation-free camera-oriented ground truth of the protocol equals the world ->
    # camera ground truth up to a translation.
    gt = threedpw.gt_camera_frame(seq, 1, body, frames=[0, 4])
    pose, _ = preds[seq.track_name(1)]
    _, j = posed(body, pose[[0, 4]], seq.people[1].betas)
    np.testing.assert_allclose(gt.joints - gt.joints[:, :1], j - j[:, :1], atol=2e-5)


def test_global_rotations_chain_matches_parents():
    rng = np.random.default_rng(30)
    pose = rng.normal(scale=0.5, size=(3, 72))
    from neuhmr_jax.data.common import global_rotations, pose_rotmats
    np.testing.assert_allclose(global_rotations(pose_rotmats(pose), PARENTS),
                               chain_rotations(pose), atol=1e-12)
