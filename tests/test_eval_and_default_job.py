"""`python -m imphmr_jax.eval` on weights converted from a (random) PyTorch SPIN checkpoint, and the
default job's code path (build -> train -> evaluate -> baseline table) end to end at a tiny size."""
import json
import os

import chex
import jax
import numpy as np
import pytest

from imphmr_jax import convert, default_job
from imphmr_jax import eval as eval_lib
from imphmr_jax import experiment
from imphmr_jax.data import builders
from imphmr_jax.testing.torch_reference import random_spin_state
from train_fixtures import tiny_config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    builders.build("synthetic_humans", str(d), num_train=12, num_test=6, image_size=64,
                   body="default-small", progress=False,
                   synthetic_options=experiment.synthetic_options(tiny_config()))
    return str(d)


def test_eval_runs_on_converted_spin_weights(data_dir, tmp_path):
    sd = random_spin_state((3, 4, 6, 3), "bottleneck", width=8, hidden=64, seed=3)
    backbone, reg, mean = convert.spin_from_torch(sd)
    weights = str(tmp_path / "spin.npz")
    convert.save_npz(weights, {"backbone": backbone, "regressor": {"params": reg},
                               "mean_params": mean})
    config = tiny_config()
    config.model.variant = "baseline"
    config.model.backbone_depth = 50
    config.model.regressor_hidden = 64
    config.data.data_dir = data_dir
    model, variables = eval_lib.variables_from_converted(config, weights)
    chex.assert_trees_all_close(jax.device_get(variables["params"]["regressor"]), reg)
    chex.assert_trees_all_close(jax.device_get(variables["batch_stats"]["backbone"]),
                                backbone["batch_stats"])
    np.testing.assert_allclose(np.asarray(model.mean_params["cam"]), mean["cam"])
    results = eval_lib.evaluate_run(config, str(tmp_path / "run"), weights=weights,
                                    dataset="synthetic_humans:test", esv_samples=0)
    summary = json.load(open(tmp_path / "run" / "eval" / "synthetic" / "summary.json"))
    assert summary["count"] == 6 and summary["gt_body"] == "neutral"
    assert np.isfinite(summary["metrics"]["pa_mpjpe"]) and summary["metrics"]["pa_mpjpe"] > 0
    assert results["synthetic"]["metrics"] == summary["metrics"]
    rows = [json.loads(line) for line in open(tmp_path / "run" / "eval" / "synthetic" /
                                              "per_sample.jsonl")]
    assert [r["index"] for r in rows] == list(range(6))


def test_eval_without_a_checkpoint_names_the_directory(data_dir, tmp_path):
    config = tiny_config()
    config.data.data_dir = data_dir
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        eval_lib.evaluate_run(config, str(tmp_path / "empty"))


def test_default_job_end_to_end_tiny(data_dir, tmp_path):
    config = tiny_config(num_steps=2)
    config.data.data_dir = data_dir
    config.data.synthetic.num_train = 12
    config.data.synthetic.num_test = 6
    config.data.synthetic.image_size = 64
    summary = default_job.run(config, str(tmp_path / "job"))
    for key in ("mpjpe", "pa_mpjpe", "pve"):
        assert np.isfinite(summary["trained"][key]) and np.isfinite(summary["baseline"][key])
    assert summary["baseline"]["count"] == 6 == summary["trained"]["count"]
    assert isinstance(summary["passed"], bool)
    text = open(tmp_path / "job" / "results.md").read()
    assert "mean-pose baseline" in text and "PA-MPJPE" in text
    assert os.path.exists(tmp_path / "job" / "train" / "eval" / "synthetic" / "figures" /
                          "imagination_0.png")
    # The harder held-out splits: other people (another seed), their own options, in the table.
    assert set(summary["harder_splits"]) == set(default_job.HARDER_SPLITS)
    for name, h in summary["harder_splits"].items():
        assert h["trained"]["count"] == 6 == h["baseline"]["count"]
        assert np.isfinite(h["pa_mpjpe_reduction"])
        assert f"ImpHMR, {name}" in text
    busy = builders.build_metadata("synthetic_humans", str(tmp_path / "job" /
                                                           "data_busier_backgrounds"))
    assert busy["options"]["synthetic_options"]["background_clutter"] == 0.5
    assert "machine" in text


def test_mean_pose_is_a_proper_rotation_average():
    from scipy.spatial.transform import Rotation
    rng = np.random.default_rng(0)
    base = Rotation.random(24, random_state=1)
    recs = []
    for _ in range(50):
        noise = Rotation.from_rotvec(rng.normal(0, 0.05, (24, 3)))
        recs.append({"has_smpl": 1, "pose": (noise * base).as_rotvec().reshape(-1),
                     "betas": rng.normal(size=10)})
    recs.append({"has_smpl": 0, "pose": np.full(72, 9.0), "betas": np.full(10, 9.0)})
    mean_rot, mean_betas = default_job.mean_pose_and_shape(recs)
    np.testing.assert_allclose(np.einsum("jab,jcb->jac", mean_rot, mean_rot),
                               np.broadcast_to(np.eye(3), (24, 3, 3)), atol=1e-5)
    ang = (Rotation.from_matrix(mean_rot) * base.inv()).magnitude()
    assert ang.max() < 0.05
    assert np.abs(mean_betas).max() < 0.6


def test_synthetic_source_built_with_other_options_is_refused(data_dir):
    """A config asking for another synthetic set than the one built in data_dir gets an error
    naming both option sets, not the old data; the matching config reuses the build."""
    config = tiny_config()
    config.data.data_dir = data_dir
    config.data.synthetic.update(num_train=12, num_test=6, image_size=64)
    assert len(experiment.open_source(config, experiment.DatasetEntry("synthetic_humans", "train"))) == 12
    config.data.synthetic.num_train = 30
    with pytest.raises(ValueError, match="was built with options"):
        experiment.open_source(config, experiment.DatasetEntry("synthetic_humans", "train"))
