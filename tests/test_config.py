"""Configs are plain nested ConfigDicts (no string mini-languages, explicit None for "not set"),
every experiment file loads, and the command line can still set nested tables and None fields."""
import glob
import os
import subprocess
import sys

import pytest

from imphmr_jax import config as config_lib
from imphmr_jax import experiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "imphmr",
                                                                 "*.py"))))
def test_every_experiment_file_loads(path):
    import importlib.util
    spec = importlib.util.spec_from_file_location("cfg", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config()
    assert experiment.train_entries(c) and experiment.eval_entries(c)


def test_synthetic_job_options_are_the_job_data():
    c = config_lib.synthetic_config()
    assert experiment.synthetic_options(c) == {
        "background_clutter": 0.0, "occluder_prob": 0.0, "truncation_prob": 0.0,
        "facing_prob": 1.0,
        "pose_weights": (("standing", 0.2), ("walking", 0.25), ("reaching", 0.25),
                         ("crouching", 0.1), ("sitting", 0.1), ("lying", 0.0),
                         ("articulation", 0.1))}
    assert experiment.train_entries(c) == [experiment.DatasetEntry("synthetic_humans", "train")]
    assert experiment.eval_entries(c) == [experiment.DatasetEntry("synthetic_humans", "test")]
    assert experiment.protocol_name(c, "synthetic_humans") == "synthetic"


def test_defaults_are_explicit_none_and_the_paper_mixture_is_a_table():
    d = config_lib.default_config()
    assert d.train.init.kind is None and d.eval.protocol is None and d.train.silhouette_size is None
    assert "background_clutter" not in experiment.synthetic_options(d)  # SyntheticConfig's default
    p = config_lib.paper_config()
    assert p.data.mixture == "spin"
    assert sorted(e.name for e in experiment.train_entries(p)) == [
        "coco_eft", "h36m", "lspet_eft", "mpi_inf_3dhp", "mpii_eft"]
    bad = config_lib.synthetic_config()
    bad.data.synthetic.pose_weights.dancing = 1.0
    with pytest.raises(ValueError, match="unknown families"):
        experiment.synthetic_options(bad)


def test_parse_dataset_flag():
    assert experiment.parse_dataset("pw3d") == experiment.DatasetEntry("pw3d", "test")
    assert experiment.parse_dataset("synthetic_humans/multiview:train") == experiment.DatasetEntry(
        "synthetic_humans", "train", "multiview")


def test_command_line_sets_nested_tables_and_none_fields(tmp_path):
    """`--config.a.b.c=...` reaches dataset tables, pose weights and None placeholders."""
    script = tmp_path / "show.py"
    script.write_text(
        "from absl import app, flags\n"
        "from ml_collections import config_flags\n"
        "config_flags.DEFINE_config_file('config', None, 'c', lock_config=True)\n"
        "def main(_):\n"
        "    c = flags.FLAGS.config\n"
        "    print(c.data.train.synthetic_humans.weight, c.data.synthetic.pose_weights.lying,\n"
        "          c.train.init.kind, c.train.init.path, c.eval.max_examples,\n"
        "          c.data.synthetic.facing_prob)\n"
        "app.run(main)\n")
    out = subprocess.run(
        [sys.executable, str(script), "--config", os.path.join(ROOT, "configs", "imphmr",
                                                                "synthetic.py"),
         "--config.data.train.synthetic_humans.weight=0.5",
         "--config.data.synthetic.pose_weights.lying=0.3", "--config.train.init.kind=spin",
         "--config.train.init.path=w.npz", "--config.eval.max_examples=7",
         "--config.data.synthetic.facing_prob=0.25"],
        capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["0.5", "0.3", "spin", "w.npz", "7", "0.25"]


def test_a_misspelled_field_is_refused():
    """An experiment file that sets `c.train.learning_rat` fails instead of training with the
    default learning rate; dataset tables stay open to new datasets."""
    c = config_lib.synthetic_config()
    with pytest.raises(AttributeError, match='Did you mean "learning_rate"'):
        c.train.learning_rat = 0.5
    c.data.train.coco_eft = dict(weight=0.5)
    assert [e.name for e in experiment.train_entries(c)] == ["coco_eft", "synthetic_humans"]
