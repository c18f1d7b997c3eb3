"""Evaluation protocols, evaluate_batch and run_evaluation on the 'default-small' body."""
import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import smpl_jax
from smpl_jax import default_body, io as smpl_io, joint_sets
from imphmr_jax import evaluation as ev
from imphmr_jax.models.regressor import spin_default_mean_params
from smpl_jax.rotations import axis_angle_to_matrix

OUT = os.path.join(os.path.dirname(__file__), "_output", "evaluation")
B = 3
_forward = jax.jit(smpl_jax.forward, static_argnames=("extra_joints", "return_vertices"))


@pytest.fixture(scope="module")
def body():
    return smpl_jax.load("default-small")


@pytest.fixture(scope="module")
def shifted_body():
    """A second body (stand-in for a gendered one) whose template is the default-small template
    moved along shape direction 0 by 1.5: posing it with betas b equals posing the default body
    with b + 1.5·e0 (an independent truth for the gendered GT selection)."""
    arrays = default_body.to_official_layout(default_body.load_arrays("default-small"))
    arrays = dict(arrays, v_template=arrays["v_template"] + 1.5 * arrays["shapedirs"][:, :, 0])
    return smpl_io.from_arrays(arrays, source="shifted-default-small")


def _labels(body, seed=0, b=B):
    rng = np.random.default_rng(seed)
    pose = rng.normal(scale=0.25, size=(b, 24, 3)).astype(np.float32)
    pose[:, 0] = [np.pi, 0.0, 0.0]  # upright in SPIN's y-down camera frame
    betas = rng.normal(scale=0.8, size=(b, 10)).astype(np.float32)
    out = _forward(body, pose, betas, extra_joints=("h36m17",))
    h36m = np.asarray(out.joints[:, 24:])
    # SPIN-style 24 GT joints in the camera frame: the 17 H36M joints in the J24 rows they map to
    # (J24_TO_J17 and H36M_TO_J17 list the same joints), far from the origin, confidence 1.
    cam_t = np.array([0.1, -0.2, 5.0], np.float32)
    joints_3d = np.zeros((b, 24, 4), np.float32)
    joints_3d[:, list(joint_sets.J24_TO_J17), :3] = h36m[:, list(joint_sets.H36M_TO_J17)] + cam_t
    joints_3d[:, list(joint_sets.J24_TO_J17), 3] = 1.0
    return {"pose": pose.reshape(b, 72), "betas": betas, "gender": np.full(b, -1, np.int32),
            "joints_3d": joints_3d}, np.asarray(out.vertices)


def test_protocol_table():
    assert set(ev.PROTOCOLS) == {"pw3d", "pw3d_occ", "h36m_p1", "h36m_p2", "mpi_inf_3dhp",
                                 "synthetic"}
    assert ev.PROTOCOLS["pw3d"].metrics == ("mpjpe", "pa_mpjpe", "pve")
    assert ev.PROTOCOLS["h36m_p1"].metrics == ("mpjpe", "pa_mpjpe")
    assert joint_sets.J24_TO_J14 == (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 18)
    with pytest.raises(ValueError, match="PVE needs a GT mesh"):
        ev.Protocol("bad", gt_source="joints_3d", pve=True)
    with pytest.raises(ValueError, match="unknown evaluation protocol"):
        ev.get_protocol("3dpw")


@pytest.mark.parametrize("name", sorted(ev.PROTOCOLS))
def test_gt_equals_pred_gives_zero(body, name):
    labels, _ = _labels(body)
    rot = axis_angle_to_matrix(jnp.asarray(labels["pose"]).reshape(B, 24, 3))
    res = ev.evaluate_batch_jit(name, rot, labels["betas"], labels, {"neutral": body})
    assert set(res) == set(ev.PROTOCOLS[name].metrics)
    for k, v in res.items():
        assert v.shape == (B,)
        np.testing.assert_allclose(v, 0.0, atol=0.05, err_msg=f"{name} {k}")


def test_wrong_prediction_is_measured(body):
    labels, _ = _labels(body)
    other, _ = _labels(body, seed=1)
    rot = axis_angle_to_matrix(jnp.asarray(other["pose"]).reshape(B, 24, 3))
    for name in ("pw3d", "h36m_p1", "mpi_inf_3dhp"):
        res = ev.evaluate_batch_jit(name, rot, other["betas"], labels, {"neutral": body})
        assert np.all(np.asarray(res["mpjpe"]) > 20), (name, res)
        assert np.all(np.asarray(res["pa_mpjpe"]) < np.asarray(res["mpjpe"]))


@pytest.mark.parametrize("pelvis", ev.PELVIS_MODES)
def test_pelvis_alignment_removes_translation(body, pelvis):
    labels, _ = _labels(body)
    other, _ = _labels(body, seed=1)
    rot = axis_angle_to_matrix(jnp.asarray(other["pose"]).reshape(B, 24, 3))
    proto = dataclasses.replace(ev.PROTOCOLS["h36m_p1"], pelvis=pelvis)
    base = ev.evaluate_batch_jit(proto, rot, other["betas"], labels, {"neutral": body})
    moved = dict(labels, joints_3d=labels["joints_3d"] + np.array([0.5, -1.0, 3.0, 0.0],
                                                                  np.float32))
    res = ev.evaluate_batch_jit(proto, rot, other["betas"], moved, {"neutral": body})
    for k in base:
        np.testing.assert_allclose(res[k], base[k], atol=1e-2)
    # The same on the prediction side: centred joints do not move with the body.
    h36m = jnp.asarray(np.random.default_rng(2).normal(size=(2, 17, 3)), jnp.float32)
    a, _ = ev._select_and_centre(h36m, proto)
    b, _ = ev._select_and_centre(h36m + jnp.array([0.3, 2.0, -1.0]), proto)
    np.testing.assert_allclose(a, b, atol=1e-5)
    # And the two modes centre at different points (they are different conventions).
    other_mode = dataclasses.replace(proto, pelvis=[m for m in ev.PELVIS_MODES if m != pelvis][0])
    c, _ = ev._select_and_centre(h36m, other_mode)
    assert float(jnp.abs(a - c).max()) > 1e-3


def test_pa_invariant_to_pred_rotation(body):
    labels, _ = _labels(body)
    rot = axis_angle_to_matrix(jnp.asarray(labels["pose"]).reshape(B, 24, 3))
    turn = axis_angle_to_matrix(jnp.array([0.3, 1.1, -0.4]))
    rot_turned = rot.at[:, 0].set(turn @ rot[:, 0])  # the whole body turns about its root
    for name in ("pw3d", "h36m_p2", "mpi_inf_3dhp"):
        res = ev.evaluate_batch_jit(name, rot_turned, labels["betas"], labels, {"neutral": body})
        np.testing.assert_allclose(res["pa_mpjpe"], 0.0, atol=0.05)
        assert np.all(np.asarray(res["mpjpe"]) > 50)


def test_pve_counts_root_offset(body):
    labels, gt_verts = _labels(body)
    rot = axis_angle_to_matrix(jnp.asarray(labels["pose"]).reshape(B, 24, 3))
    offset = np.array([0.03, 0.0, -0.04], np.float32)  # 50 mm
    res = ev.evaluate_batch_jit("pw3d", rot, labels["betas"], labels, {"neutral": body},
                            pred_vertices=gt_verts + offset)
    np.testing.assert_allclose(res["pve"], 50.0, rtol=1e-3)
    np.testing.assert_allclose(res["mpjpe"], 0.0, atol=0.05)
    # A β change moves the root: plain PVE counts it, root-aligned PVE does not (numpy truth).
    betas2 = labels["betas"] + np.array([2.0] + [0.0] * 9, np.float32)
    out = _forward(body, rot, betas2, extra_joints=("h36m17",))
    pv, pr = np.asarray(out.vertices), np.asarray(out.joints[:, 24])
    gt = _forward(body, rot, labels["betas"], extra_joints=("h36m17",))
    gv, gr = np.asarray(gt.vertices), np.asarray(gt.joints[:, 24])
    plain = ev.evaluate_batch_jit("pw3d", rot, betas2, labels, {"neutral": body})["pve"]
    aligned_proto = dataclasses.replace(ev.PROTOCOLS["pw3d"], pve_root_aligned=True)
    aligned = ev.evaluate_batch_jit(aligned_proto, rot, betas2, labels, {"neutral": body})["pve"]
    np.testing.assert_allclose(plain, np.linalg.norm(pv - gv, axis=-1).mean(-1) * 1000, rtol=1e-4)
    want = np.linalg.norm((pv - pr[:, None]) - (gv - gr[:, None]), axis=-1).mean(-1) * 1000
    np.testing.assert_allclose(aligned, want, rtol=1e-4)
    assert np.all(np.asarray(plain) > np.asarray(aligned))


def test_gendered_ground_truth(body, shifted_body):
    labels, _ = _labels(body)
    with pytest.raises(ValueError, match="gendered ground truth was requested"):
        ev.evaluate_batch_jit("pw3d", jnp.tile(jnp.eye(3), (B, 24, 1, 1)), labels["betas"], labels,
                          {"neutral": body}, gendered_gt=True)
    assert ev.gt_body_choice("pw3d", {"neutral": body}, True, True).startswith("neutral (fallback")
    assert ev.gt_body_choice("h36m_p1", {"neutral": body}, True) == "dataset joints"
    labels = dict(labels, gender=np.array([0, 1, -1], np.int32))
    bodies = {"neutral": body, "male": body, "female": shifted_body}
    rot = axis_angle_to_matrix(jnp.asarray(labels["pose"]).reshape(B, 24, 3))
    # The female sample's GT is the default body with β + 1.5 e0; predict exactly that.
    pred_betas = labels["betas"].copy()
    pred_betas[1, 0] += 1.5
    res = ev.evaluate_batch_jit("pw3d", rot, pred_betas, labels, bodies, gendered_gt=True)
    for k in ("mpjpe", "pa_mpjpe", "pve"):
        np.testing.assert_allclose(res[k], 0.0, atol=0.1, err_msg=k)
    neutral = ev.evaluate_batch_jit("pw3d", rot, pred_betas, labels, bodies)
    assert float(neutral["pve"][1]) > 5.0 and float(neutral["pve"][0]) < 0.1


def test_valid_mask_and_errors(body):
    labels, _ = _labels(body)
    rot = axis_angle_to_matrix(jnp.asarray(labels["pose"]).reshape(B, 24, 3))
    res = ev.evaluate_batch_jit("synthetic", rot, labels["betas"], labels, {"neutral": body},
                            valid=np.array([1, 0, 1]))
    assert np.isnan(res["mpjpe"][1]) and np.isfinite(res["mpjpe"][0])
    with pytest.raises(KeyError, match="joints_3d"):
        ev.evaluate_batch_jit("h36m_p1", rot, labels["betas"], {"pose": labels["pose"]},
                          {"neutral": body})
    with pytest.raises(ValueError, match="neutral"):
        ev.evaluate_batch_jit("pw3d", rot, labels["betas"], labels, {"male": body})


def test_eager_matches_jit(body):
    labels, _ = _labels(body)
    other, _ = _labels(body, seed=1)
    rot = axis_angle_to_matrix(jnp.asarray(other["pose"]).reshape(B, 24, 3))
    eager = ev.evaluate_batch("pw3d", rot, other["betas"], labels, {"neutral": body})
    jitted = ev.evaluate_batch_jit("pw3d", rot, other["betas"], labels, {"neutral": body})
    for k in eager:
        np.testing.assert_allclose(eager[k], jitted[k], rtol=1e-4, atol=1e-3)


def test_mean_pose_predictor():
    mean = spin_default_mean_params()
    fn = ev.mean_pose_predictor(mean["pose"], mean["shape"], mean["cam"])
    out = fn(jnp.zeros((2, 8, 8, 3)))
    assert out["rotmat"].shape == (2, 24, 3, 3) and out["betas"].shape == (2, 10)
    np.testing.assert_allclose(out["rotmat"][1, 0], np.diag([1.0, -1.0, -1.0]), atol=1e-6)
    np.testing.assert_allclose(out["rotmat"][1, 5], np.eye(3), atol=1e-6)
    np.testing.assert_allclose(out["cam"][0], [0.9, 0.0, 0.0])
    with pytest.raises(ValueError, match="mean pose"):
        ev.mean_pose_predictor(np.zeros(10), mean["shape"], mean["cam"])


def test_run_evaluation_writes_files(body, tmp_path):
    res = 64  # as tests/test_figures.py: one compiled rasterizer serves both
    batches = []
    for i, valid in enumerate(([1, 1, 1], [1, 0, 0])):  # the second batch is padded
        labels, _ = _labels(body, seed=10 + i)
        rng = np.random.default_rng(i)
        labels["image"] = rng.normal(size=(B, res, res, 3)).astype(np.float32)
        labels["valid"] = np.array(valid, np.int32)
        labels["index"] = np.arange(3 * i, 3 * i + 3)
        labels["imgname"] = np.array([b"x"] * B, object)  # non-numeric fields are ignored
        batches.append(labels)
    mean = spin_default_mean_params()
    predict = ev.mean_pose_predictor(mean["pose"], mean["shape"], mean["cam"])
    out_dir = os.path.join(OUT, "run")
    summary = ev.run_evaluation(predict, batches, "synthetic", {"neutral": body}, out_dir,
                                max_figures=4, progress=False)
    with open(os.path.join(out_dir, "summary.json")) as f:
        on_disk = json.load(f)
    assert on_disk == json.loads(json.dumps(summary))
    assert summary["count"] == 4 and summary["gt_body"] == "neutral"
    assert summary["protocol_options"]["pve"] is True
    with open(os.path.join(out_dir, "per_sample.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert [r["index"] for r in rows] == [0, 1, 2, 3]
    for k in ("mpjpe", "pa_mpjpe", "pve"):
        np.testing.assert_allclose(summary["metrics"][k], np.mean([r[k] for r in rows]),
                                   rtol=1e-6)
    # Second computation of one sample's numbers.
    rot = jnp.broadcast_to(predict(jnp.zeros((1, 1, 1, 3)))["rotmat"], (B, 24, 3, 3))
    direct = ev.evaluate_batch_jit("synthetic", rot, jnp.zeros((B, 10)), batches[1],
                               {"neutral": body})
    np.testing.assert_allclose(rows[3]["mpjpe"], float(direct["mpjpe"][0]), rtol=1e-5)
    assert rows[3]["mpjpe"] > 20  # the mean pose is far from random poses
    fig = os.path.join(out_dir, "figures", "overlays.png")
    assert summary["figures"] == {"overlays": os.path.join("figures", "overlays.png"),
                                  "indices": [0, 1, 2, 3]}
    # four (crop | overlay) pairs in a row, tiles upsampled to a readable >= 192 px, labelled
    w, h = Image.open(fig).size
    assert w >= 4 * 2 * 192 and 192 <= h < 2 * 192
    table = ev.comparison_table({"mean pose": summary})
    assert "| mean pose | synthetic | 4 |" in table


def test_run_evaluation_gendered_fallback_recorded(body):
    labels, _ = _labels(body)
    labels.update(image=np.zeros((B, 16, 16, 3), np.float32), valid=np.ones(B),
                  index=np.arange(B))
    mean = spin_default_mean_params()
    predict = ev.mean_pose_predictor(mean["pose"], mean["shape"], mean["cam"])
    with pytest.raises(ValueError, match="gendered"):
        ev.run_evaluation(predict, [labels], "pw3d", {"neutral": body},
                          os.path.join(OUT, "gendered"), gendered_gt=True, progress=False)
    s = ev.run_evaluation(predict, [labels], "pw3d", {"neutral": body},
                          os.path.join(OUT, "fallback"), gendered_gt=True,
                          allow_neutral_fallback=True, max_figures=0, progress=False)
    assert s["gt_body"].startswith("neutral (fallback") and s["gendered_gt"] is True
    assert s["count"] == B


def test_run_evaluation_excludes_nonfinite(body, tmp_path):
    labels, _ = _labels(body)
    labels.update(image=np.zeros((B, 16, 16, 3), np.float32), valid=np.ones(B),
                  index=np.arange(10, 10 + B))
    mean = spin_default_mean_params()
    base = ev.mean_pose_predictor(mean["pose"], mean["shape"], mean["cam"])

    def predict(images):
        out = dict(base(images))
        out["betas"] = out["betas"].at[1].set(jnp.nan)  # a broken prediction for sample 11
        return out

    s = ev.run_evaluation(predict, [labels], "synthetic", {"neutral": body}, str(tmp_path),
                          max_figures=0, progress=False)
    assert s["count"] == 2 and s["nonfinite_excluded"] == 1 and s["figures"]["overlays"] is None
    with open(tmp_path / "per_sample.jsonl") as f:
        rows = [json.loads(line, parse_constant=pytest.fail) for line in f]  # no NaN tokens
    assert [r["index"] for r in rows] == [10, 11, 12] and rows[1]["mpjpe"] is None
    np.testing.assert_allclose(s["metrics"]["mpjpe"], (rows[0]["mpjpe"] + rows[2]["mpjpe"]) / 2)


@pytest.mark.parametrize("name, flag", [("synthetic", "has_smpl"), ("h36m_p1", "has_pose_3d")])
def test_run_evaluation_skips_unlabelled(body, tmp_path, name, flag):
    """A sample without the protocol's labels (2D-only, zero-filled pose/joints) is not scored."""
    labels, _ = _labels(body)
    labels.update(image=np.zeros((B, 16, 16, 3), np.float32), valid=np.ones(B),
                  index=np.arange(B), has_smpl=np.ones(B, np.float32),
                  has_pose_3d=np.ones(B, np.float32))
    labels[flag] = np.array([1.0, 0.0, 1.0], np.float32)
    mean = spin_default_mean_params()
    predict = ev.mean_pose_predictor(mean["pose"], mean["shape"], mean["cam"])
    s = ev.run_evaluation(predict, [labels], name, {"neutral": body}, str(tmp_path),
                          max_figures=0, progress=False)
    assert s["count"] == 2 and s["unlabelled_excluded"] == 1
    with open(tmp_path / "per_sample.jsonl") as f:
        assert [json.loads(line)["index"] for line in f] == [0, 2]
    full = ev.evaluate_batch(name, predict(labels["image"])["rotmat"],
                             predict(labels["image"])["betas"], labels, {"neutral": body})
    np.testing.assert_allclose(s["metrics"]["mpjpe"], np.mean(np.asarray(full["mpjpe"])[[0, 2]]),
                               rtol=1e-5)
