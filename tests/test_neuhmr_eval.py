"""`python -m neuhmr_jax.eval` and the synthetic video protocol: a ground-truth prediction scores
0, a perturbed one scores what a direct NumPy computation gives (per-joint MPJPE, MPJPE, PA-MPJPE,
PVE, acceleration error, jitter, pooled), the command line compares two methods end to end
(results.md / .json / errors.png matching the library), errors name the file, and EMDB runs
through the same command on small pickles in EMDB's layout.

The clips are written with `synthetic_clips.write_clips` from random motions built here (tiny
blank frames): the protocol reads only their ground truth, and rendering would cost far more."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import smpl_jax
from imphmr_jax.cli import InputError
from neuhmr_jax import eval as nh_eval
from neuhmr_jax import evaluation
from neuhmr_jax.data import emdb, synthetic_clips, threedpw
from neuhmr_jax.data.inits import Init, save_npz

from test_emdb import threedpw_data, write_threedpw, write_two_sequences
from test_video_metrics import IGNORED, camera_pose, jitter_numpy, posed, umeyama

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LENGTHS = {"test_000": 6, "test_001": 8}
FAMILIES = {"test_000": "walk", "test_001": "reach"}


@pytest.fixture(scope="module")
def body():
    return smpl_jax.load("default-small")


def make_clip(rng, name):
    t = LENGTHS[name]
    poses = rng.normal(scale=0.3, size=(t, 24, 3)) + np.linspace(0, 0.5, t)[:, None, None]
    return synthetic_clips.SyntheticClip(
        name=name, frames=np.zeros((t, 8, 8, 3), np.uint8), masks=np.zeros((t, 8, 8), bool),
        K=np.array([[40.0, 0, 4], [0, 40.0, 4], [0, 0, 1]], np.float32),
        poses=poses.astype(np.float32),
        betas=np.tile(rng.normal(size=10), (t, 1)).astype(np.float32),
        transl=(rng.normal(scale=0.1, size=(t, 3)) + [0, 0, 3]).astype(np.float32),
        family=FAMILIES[name], fps=10.0)


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """(clips folder, clips read back, noisy predictions {name: Init})."""
    rng = np.random.default_rng(0)
    folder = str(tmp_path_factory.mktemp("clips"))
    synthetic_clips.write_clips([make_clip(rng, n) for n in LENGTHS], folder,
                                body="default-small")
    clips = synthetic_clips.read_clips(folder)
    noisy = {c.name: Init(c.poses + rng.normal(scale=0.1, size=c.poses.shape).astype(np.float32),
                          c.betas + rng.normal(scale=0.3, size=10).astype(np.float32),
                          c.transl + 0.05, source=f"noisy {c.name}") for c in clips}
    return folder, clips, noisy


@pytest.fixture(scope="module")
def noisy_results(split, body):
    _, clips, noisy = split
    return evaluation.evaluate_synthetic(clips, noisy, body)


# ------------------------------------------------------------------------------ the protocol
def test_ground_truth_predictions_score_zero(split, body):
    folder, clips, _ = split
    results = evaluation.evaluate_synthetic(folder, {c.name: c.gt_init() for c in clips}, body)
    assert list(results) == list(LENGTHS)
    for name, r in results.items():
        assert r["protocol"] == "synthetic" and r["family"] == FAMILIES[name]
        assert r["joint_mpjpe"].shape == (LENGTHS[name], 24)
        assert r["accel_error"].shape == (LENGTHS[name] - 2,)
        for k in ("mpjpe", "pa_mpjpe", "pve", "pa_pve", "mpjae", "pa_mpjae", "accel_error",
                  "joint_mpjpe"):
            assert np.all(np.abs(r[k]) < 0.01), (name, k, r[k])
        np.testing.assert_allclose(r["jitter"], r["jitter_gt"], rtol=1e-6)
    pooled = evaluation.pool(results)
    assert pooled["num_frames"] == sum(LENGTHS.values()) and len(pooled["joint_mpjpe"]) == 24
    assert pooled["joint_names"][:3] == ["pelvis", "left_hip", "right_hip"]
    assert pooled["per_sequence"]["test_001"]["family"] == "reach"
    assert sorted(evaluation.pool_by(results, "family")) == ["reach", "walk"]


def test_perturbed_prediction_matches_numpy(split, body, noisy_results):
    _, clips, noisy = split
    all_joint_errors, all_mpjpe = [], []
    for clip in clips:
        pred, r = noisy[clip.name], noisy_results[clip.name]
        pv, pj = posed(body, pred.poses, pred.betas)  # no translation on either side
        gv, gj = posed(body, clip.poses, clip.betas)
        pp, gp = (pj[:, 1] + pj[:, 2])[:, None] / 2, (gj[:, 1] + gj[:, 2])[:, None] / 2
        a, b, av, bv = pj - pp, gj - gp, pv - pp, gv - gp
        joint_err = np.linalg.norm(a - b, axis=-1) * 1000  # (T, 24) mm
        np.testing.assert_allclose(r["joint_mpjpe"], joint_err, rtol=1e-4, atol=0.02)
        np.testing.assert_allclose(r["mpjpe"], joint_err.mean(1), rtol=1e-4, atol=0.02)
        np.testing.assert_allclose(r["pve"], np.linalg.norm(av - bv, axis=-1).mean(1) * 1000,
                                   rtol=1e-4, atol=0.02)
        pa = []
        for i in range(clip.num_frames):
            s, rot, t = umeyama(a[i], b[i])
            pa.append(np.linalg.norm(s * a[i] @ rot.T + t - b[i], axis=-1).mean() * 1000)
        np.testing.assert_allclose(r["pa_mpjpe"], pa, rtol=1e-3, atol=0.02)
        acc = lambda x: x[:-2] - 2 * x[1:-1] + x[2:]  # noqa: E731
        np.testing.assert_allclose(
            r["accel_error"], np.linalg.norm(acc(a) - acc(b), axis=-1).mean(1) * 1000,
            rtol=1e-4, atol=0.02)
        np.testing.assert_allclose(r["jitter"], jitter_numpy(pj, 10.0, IGNORED).mean() / 10,
                                   rtol=1e-3)
        all_joint_errors.append(joint_err)
        all_mpjpe.append(joint_err.mean(1))
    pooled = evaluation.pool(noisy_results)
    # Frame-weighted: every frame of every clip counts once.
    np.testing.assert_allclose(pooled["joint_mpjpe"], np.concatenate(all_joint_errors).mean(0),
                               rtol=1e-4, atol=0.02)
    np.testing.assert_allclose(pooled["metrics"]["mpjpe"], np.concatenate(all_mpjpe).mean(),
                               rtol=1e-4, atol=0.02)
    np.testing.assert_allclose(pooled["per_sequence"]["test_000"]["joint_mpjpe"],
                               all_joint_errors[0].mean(0), rtol=1e-4, atol=0.02)
    by_family = evaluation.pool_by(noisy_results, "family")
    np.testing.assert_allclose(by_family["walk"]["metrics"]["mpjpe"], all_mpjpe[0].mean(),
                               rtol=1e-4, atol=0.02)
    table = evaluation.format_joint_table({"noisy": pooled["joint_mpjpe"]})
    assert "| 4 left_knee |" in table and f"**{np.mean(pooled['joint_mpjpe']):.1f}**" in table


# ------------------------------------------------------------------------------ the command line
def _predictions(split, tmp):
    """'gt': a folder (one <clip>.npz, one NeuHMR-workdir <clip>/refined.npz); 'noisy': one .npz
    holding both clips."""
    _, clips, noisy = split
    gt_dir = os.path.join(tmp, "gt")
    save_npz(clips[0].gt_init(), os.path.join(gt_dir, f"{clips[0].name}.npz"))
    save_npz(clips[1].gt_init(), os.path.join(gt_dir, clips[1].name, "refined.npz"))
    bundle = nh_eval.save_predictions(os.path.join(tmp, "noisy.npz"), noisy)
    return gt_dir, bundle


def test_command_line_compares_two_methods(split, noisy_results, tmp_path):
    folder = split[0]
    gt_dir, bundle = _predictions(split, str(tmp_path))
    out = str(tmp_path / "out")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    base = [sys.executable, "-m", "neuhmr_jax.eval", "--dataset=synthetic", f"--data={folder}"]
    procs = {
        "ok": subprocess.Popen(base + [f"--predictions=gt={gt_dir}", f"--predictions={bundle}",
                                       f"--out={out}"], cwd=ROOT, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE),
        "missing": subprocess.Popen(base + [f"--predictions={tmp_path}", "--out=unused"],
                                    cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)}
    runs = {k: (p.communicate(timeout=300), p.returncode) for k, p in procs.items()}
    (stdout, stderr), rc = runs["ok"]
    assert rc == 0, stderr[-3000:]
    assert "| **all (2 sequences)** | noisy |" in stdout
    for name in ("results.md", "results.json", "errors.png", "gt/summary.json",
                 "noisy/per_frame.json", "noisy/table.md"):
        assert os.path.isfile(os.path.join(out, name)), name
    with open(os.path.join(out, "results.json")) as f:
        summary = json.load(f)
    assert list(summary["methods"]) == ["gt", "noisy"] and summary["body"] == "default-small"
    want = evaluation.pool(noisy_results)
    got = summary["methods"]["noisy"]["pooled"]
    for k, v in want["metrics"].items():
        np.testing.assert_allclose(got["metrics"][k], v, rtol=1e-5, err_msg=k)
    np.testing.assert_allclose(got["joint_mpjpe"], want["joint_mpjpe"], rtol=1e-5)
    assert got["num_frames"] == want["num_frames"] == 14
    assert summary["methods"]["gt"]["pooled"]["metrics"]["mpjpe"] < 0.01
    assert sorted(summary["methods"]["noisy"]["by_family"]) == ["reach", "walk"]
    with open(os.path.join(out, "results.md")) as f:
        text = f.read()
    for heading in ("## Pooled", "## By motion family", "## Per joint", "## Per sequence"):
        assert heading in text
    assert f"| test_000 (walk) | noisy | 6 | {want['per_sequence']['test_000']['mpjpe']:.1f} |" \
        in text
    with open(os.path.join(out, "errors.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # A folder without the clips' predictions: one line naming the file expected, status 1.
    (stdout, stderr), rc = runs["missing"]
    assert rc == 1, stderr[-3000:]
    assert "Traceback" not in stderr and stderr.startswith("error: ")
    assert os.path.join(str(tmp_path), "test_000.npz") in stderr


def test_errors_name_the_file(split, tmp_path):
    folder, clips, _ = split
    gt_dir, bundle = _predictions(split, str(tmp_path))
    out = str(tmp_path / "out")

    def run(*predictions):
        return nh_eval.evaluate_command(dataset="synthetic", data=folder,
                                        predictions=list(predictions), out=out, figures=False)

    short = os.path.join(gt_dir, f"{clips[0].name}.npz")
    save_npz(clips[0].gt_init().replace(poses=clips[0].poses[:4], betas=clips[0].betas[:4],
                                        transl=clips[0].transl[:4]), short)
    with pytest.raises(InputError, match="holds 4 frames but sequence test_000 has 6") as e:
        run(f"gt={gt_dir}")
    assert short in str(e.value)
    with open(short, "wb") as f:
        f.write(b"not an npz")
    with pytest.raises(InputError, match="not a readable .npz") as e:
        run(f"gt={gt_dir}")
    assert short in str(e.value)
    os.remove(short)
    with pytest.raises(InputError, match="no prediction for sequence test_000") as e:
        run(f"gt={gt_dir}")
    assert short in str(e.value)
    partial = nh_eval.save_predictions(str(tmp_path / "one.npz"), {"test_001": clips[1].gt_init()})
    with pytest.raises(InputError, match="no prediction for sequence test_000") as e:
        run(partial)
    assert partial in str(e.value)
    with pytest.raises(InputError, match="two methods named"):
        run(f"a={bundle}", f"a={bundle}")
    with pytest.raises(InputError, match="--gt_body is not used"):
        nh_eval.evaluate_command(dataset="synthetic", data=folder, predictions=[bundle],
                                 out=out, gt_body="default")
    assert not os.path.exists(out)  # every check runs before anything is written


# ------------------------------------------------------------------------------ EMDB
def test_emdb_through_the_command(body, tmp_path):
    root = str(tmp_path / "emdb")
    write_two_sequences(root)
    seqs = {s.name: s for s in emdb.find_sequences(root)}
    rng = np.random.default_rng(3)
    pred_dir = str(tmp_path / "pred")
    preds = {}
    for name, s in seqs.items():
        pose = camera_pose(s) + rng.normal(scale=0.1, size=(s.n_frames, 72))
        preds[name] = {"pose": pose, "betas": s.betas}
    a, b = seqs["P0_01_walk"], seqs["P1_05_run"]
    save_npz(Init(preds[a.name]["pose"].reshape(-1, 24, 3), a.betas, np.zeros((a.n_frames, 3))),
             os.path.join(pred_dir, "P0_01_walk.npz"))
    good = b.good_frames  # the evaluated frames only, stored under EMDB's folder layout
    save_npz(Init(preds[b.name]["pose"][good].reshape(-1, 24, 3), b.betas,
                  np.zeros((good.size, 3))), os.path.join(pred_dir, "P1", "05_run.npz"))
    out = str(tmp_path / "out")
    summary = nh_eval.evaluate_command(dataset="emdb", data=root, out=out, body="default-small",
                                       predictions=[f"hmr={pred_dir}"])
    want = evaluation.evaluate_emdb(root, preds, body)
    got = summary["methods"]["hmr"]["pooled"]
    assert sorted(got["per_sequence"]) == ["P0_01_walk", "P1_05_run"] and summary["split"] == \
        "emdb1"
    for k, v in want["metrics"].items():
        np.testing.assert_allclose(got["metrics"][k], v, rtol=1e-5, err_msg=k)
    for name in ("results.md", "results.json", "errors.png", "hmr/per_frame.json"):
        assert os.path.isfile(os.path.join(out, name)), name
    # The licensed SMPL files: a missing --body, a missing file, a gender without a body.
    kw = dict(dataset="emdb", data=root, out=out, predictions=[pred_dir])
    with pytest.raises(InputError, match="needs --body.*smpl.is.tue.mpg.de"):
        nh_eval.evaluate_command(**kw)
    missing = str(tmp_path / "SMPL_MALE.pkl")
    with pytest.raises(InputError, match="SMPL model file not found") as e:
        nh_eval.evaluate_command(body="default-small", gt_body=f"male={missing}", **kw)
    assert missing in str(e.value)
    with pytest.raises(InputError, match="no body for gender 'female'.*P1_05_run"):
        nh_eval.evaluate_command(body="default-small", gt_body="male=default-small", **kw)


def test_threedpw_through_the_command(body, tmp_path):
    root = str(tmp_path / "3dpw")
    write_threedpw(root, "test", threedpw_data(np.random.default_rng(4), "downtown_walk_00", 7))
    seq = threedpw.find_sequences(root)[0]
    rng = np.random.default_rng(5)
    preds = {seq.track_name(p): {"pose": who.poses + rng.normal(scale=0.1, size=who.poses.shape),
                                 "betas": who.betas} for p, who in enumerate(seq.people)}
    bundle = nh_eval.save_predictions(str(tmp_path / "hmr.npz"), {
        k: Init(v["pose"].reshape(-1, 24, 3), v["betas"], np.zeros((7, 3)))
        for k, v in preds.items()})
    summary = nh_eval.evaluate_command(
        dataset="3dpw", data=root, out=str(tmp_path / "out"), predictions=[bundle],
        body="default-small", gt_body="male=default-small,female=default-small",
        sequences=["downtown_walk_00_1"], figures=False)
    got = summary["methods"]["hmr"]["pooled"]
    want = evaluation.evaluate_threedpw(root, preds, body, {"male": body, "female": body})
    assert list(got["per_sequence"]) == ["downtown_walk_00_1"] and summary["split"] == "test"
    assert got["per_sequence"]["downtown_walk_00_1"]["gt_body"] == "female"
    for k in ("mpjpe", "pa_mpjpe", "pve"):
        np.testing.assert_allclose(got["metrics"][k],
                                   want["per_sequence"]["downtown_walk_00_1"][k], rtol=1e-5)
