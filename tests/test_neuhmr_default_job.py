"""NeuHMR's default job: the whole pipeline (ImpHMR job -> GHN -> held-out clips -> ImpHMR init ->
keypoint fitting and NeuHMR -> evaluation) at a tiny size, and re-running it reuses every
finished stage."""
import json
import os

import numpy as np
import pytest

from neuhmr_jax import default_job
from neuhmr_jax.config import default_job_config


def tiny_job_config():
    import ghn_fixtures
    import train_fixtures
    from optimize_worker import tiny_optimize_config
    c = default_job_config()
    c.unlock()
    imp = train_fixtures.tiny_config(num_steps=2)
    imp.data.synthetic.num_train = 12
    imp.data.synthetic.num_test = 4
    imp.data.synthetic.image_size = 64
    imp.eval.harder_splits = False
    c.imphmr = imp
    g = ghn_fixtures.tiny_config(num_steps=2, checkpoint_every=1)
    g.data.builder_options.update({"num_train": 2, "num_test": 1, "num_frames": 3,
                                   "num_views": 2, "image_size": 32})
    g.eval.max_targets = 1
    c.ghn = g
    c.clips.num_clips = 2
    c.clips.num_frames = 6
    c.clips.image_size = 48
    c.fitting.steps = 3
    o = tiny_optimize_config(steps=2)
    o.ghn_workdir = ""
    o.anchors.every = 2
    c.optimize = o
    c.overlay_clips = 1
    return c


@pytest.mark.slow  # ~3 min on 2 cores (three models compiled); the stages have their own tests
def test_default_job_end_to_end_tiny(tmp_path):
    wd = str(tmp_path / "job")
    summary = default_job.run(tiny_job_config(), wd)
    for method in default_job.METHODS:
        m = summary["pooled"][method]
        assert all(np.isfinite(m[k]) for k in ("mpjpe", "pa_mpjpe", "pve"))
        assert len(summary["joint_mpjpe"][method]) == 24
    assert set(summary["clips"]) == {"test_000", "test_001"}
    for name in ("results.md", "results.json", "errors.png", "clips/clips.json",
                 "init/test_000.npz", "neuhmr/test_000/refined.npz", "neuhmr/test_000/sheet.png"):
        assert os.path.exists(os.path.join(wd, name)), name
    assert any(f.startswith("overlay") for f in os.listdir(os.path.join(wd, "neuhmr", "test_000")))
    text = open(os.path.join(wd, "results.md")).read()
    assert "keypoint fitting" in text and "NeuHMR" in text and "Per joint" in text
    # Re-running reuses the ImpHMR run, the GHN, the clips and the inits: same init errors.
    again = default_job.run(tiny_job_config(), wd)
    assert again["pooled"]["init"] == pytest.approx(summary["pooled"]["init"])
    assert again["seconds"]["GHN training"] < summary["seconds"]["GHN training"]
    with open(os.path.join(wd, "results.json")) as f:
        assert json.load(f)["pooled"]["init"]["mpjpe"] == pytest.approx(
            summary["pooled"]["init"]["mpjpe"])


def test_report_compares_methods_per_family_and_joint(tmp_path):
    """The job's report on hand-made predictions: relative changes, helped / hurt joints."""
    import smpl_jax
    from neuhmr_jax import evaluation
    from neuhmr_jax.data import inits
    from neuhmr_jax.data.synthetic_clips import SyntheticClip
    rng = np.random.default_rng(0)
    body = smpl_jax.load("default-small")
    clips = []
    for i, fam in enumerate(("walking", "reaching")):
        T = 4
        poses = rng.normal(0, 0.2, (T, 24, 3)).astype(np.float32)
        clips.append(SyntheticClip(f"c{i}", np.zeros((T, 8, 8, 3), np.uint8),
                                   np.zeros((T, 8, 8), bool), np.eye(3, dtype=np.float32), poses,
                                   np.zeros((T, 10), np.float32),
                                   np.tile([0, 0, 3.0], (T, 1)).astype(np.float32), fam, 10.0))
    gt = {c.name: c.gt_init() for c in clips}

    def moved(joint, angle):
        out = {}
        for c in clips:
            p = c.poses.copy()
            p[:, joint, 0] += angle
            out[c.name] = inits.Init(p, c.betas, c.transl)
        return out

    preds = {"init": moved(18, 0.4), "keypoint fitting": moved(18, 0.2), "NeuHMR": moved(4, 0.2)}
    results = {k: evaluation.evaluate_synthetic(clips, v, body) for k, v in preds.items()}
    summary = default_job.report(clips, results, str(tmp_path), {"total": 1.0},
                                 default_job_config())
    assert summary["relative_to_init"]["keypoint fitting"]["mpjpe"] < 0
    joints = summary["joint_names"]
    text = open(tmp_path / "results.md").read()
    # NeuHMR moved the left knee's children instead of the left elbow's: it helps the left
    # wrist (error gone) and hurts the left ankle
    assert joints[7] in text.split("hurts most:")[1].split(".")[0]
    assert joints[20] in text.split("helps most:")[1].split(";")[0]
    assert (tmp_path / "errors.png").exists()
    assert gt  # the ground truth itself is a valid prediction mapping
