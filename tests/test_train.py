"""Training: resume after a kill == uninterrupted, non-finite steps skipped and stopped, 8 fake CPU
devices == 1 device, a 2-process jax.distributed run == 1 process, eval CLI on converted weights,
and the default job end to end at a tiny size."""
import json
import os
import socket
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

from imphmr_jax import experiment, train
from imphmr_jax.models.build import build_model
from imphmr_jax.training import checkpoint as ckpt_lib
from imphmr_jax.training import sharding
from imphmr_jax.training.optim import make_optimizer
from imphmr_jax.training.state import NonFiniteError
from train_fixtures import tiny_config, tiny_sources

HERE = os.path.dirname(os.path.abspath(__file__))


def _run(config, workdir, **kw):
    train_src, test_src = tiny_sources()
    return train.train_and_evaluate(config, str(workdir), sources=[(train_src, 1.0)],
                                    eval_source=(test_src, "synthetic"), **kw)


class _Killed(Exception):
    pass


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    return workdir, _run(tiny_config(num_steps=4), workdir)


def test_run_writes_metrics_checkpoints_and_figures(uninterrupted):
    workdir, result = uninterrupted
    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    train_rows = [r for r in rows if "train/loss" in r]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4]
    assert all(np.isfinite(r["train/loss"]) for r in train_rows)
    assert all(r["train/silhouette_overflow"] == 0 for r in train_rows)
    assert all(r["train/spikes_total"] == 0 for r in train_rows)
    # The periodic-size evaluation (which picks best/) and the whole split: separate curves.
    assert [r["step"] for r in rows if "eval/pa_mpjpe" in r] == [4]
    assert [r["step"] for r in rows if "final_eval/pa_mpjpe" in r] == [4]
    assert sorted(ckpt_lib._steps(workdir / "checkpoints")) == [2, 4]
    assert ckpt_lib._steps(workdir / "best") == [4]
    summary = json.load(open(workdir / "eval" / "synthetic" / "summary.json"))
    assert summary["count"] == 8 and summary["gt_body"] == "neutral"
    for name in ("overlays.png", "imagination_0.png"):
        assert (workdir / "eval" / "synthetic" / "figures" / name).stat().st_size > 1000
    assert (workdir / "loss_curves.png").exists()
    assert int(jax.device_get(result["state"].step)) == 4


def test_resume_after_kill_matches_uninterrupted(uninterrupted, tmp_path):
    _, reference = uninterrupted

    def kill_at_3(step):
        if step == 3:
            raise _Killed()

    with pytest.raises(_Killed):
        _run(tiny_config(num_steps=4), tmp_path, step_hook=kill_at_3)
    assert ckpt_lib.CheckpointManager(str(tmp_path / "checkpoints")).latest_step() == 2
    resumed = _run(tiny_config(num_steps=4), tmp_path)
    steps = [json.loads(line)["step"] for line in open(tmp_path / "metrics.jsonl")
             if "train/loss" in line]
    assert steps == [1, 2, 3, 4]  # step 3, run twice, is logged once
    chex.assert_trees_all_close(jax.device_get(resumed["state"].params),
                                jax.device_get(reference["state"].params), rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(jax.device_get(resumed["state"].opt_state),
                                jax.device_get(reference["state"].opt_state), rtol=1e-6,
                                atol=1e-7)


def test_load_variables_best_and_latest(uninterrupted):
    workdir, result = uninterrupted
    best = ckpt_lib.load_variables(str(workdir), "best")
    latest = ckpt_lib.load_variables(str(workdir), "latest")
    evaluated = jax.device_get(result["state"].variables())
    chex.assert_trees_all_close(best["params"], evaluated["params"])
    chex.assert_trees_all_close(latest["batch_stats"], evaluated["batch_stats"])
    with pytest.raises(FileNotFoundError, match="no checkpoint for step 3"):
        ckpt_lib.load_variables(str(workdir), "3")


def test_nonfinite_steps_are_skipped_then_stop(tmp_path):
    config = tiny_config(num_steps=4, nan_max_consecutive=2)
    train_src, test_src = tiny_sources()
    bad = []
    for r in train_src:
        r = dict(r)
        r["keypoints_2d"] = np.full_like(r["keypoints_2d"], np.nan)
        bad.append(r)
    with pytest.raises(NonFiniteError, match="2 consecutive"):
        train.train_and_evaluate(config, str(tmp_path), sources=[(bad, 1.0)],
                                 eval_source=(test_src, "synthetic"))
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert rows[-1]["step"] == 2 and rows[-1]["train/nonfinite_total"] == 2
    assert not any("train/loss" in r for r in rows)  # no finite step was averaged


def test_nonfinite_step_leaves_state_unchanged():
    config = tiny_config()
    mesh = sharding.make_mesh()
    model, tx = build_model(config.model), make_optimizer(config.train)
    body = experiment.load_body(config)
    state, sh = train.create_train_state(config, model, mesh, tx)
    from imphmr_jax.data import pipeline
    it = pipeline.make_train_iterator([tiny_sources()[0]], [1.0], experiment.pipeline_config(config))
    local = next(it)
    step = train.make_train_step(config, model, tx, mesh, sh, silhouette_tiles=0)
    before = jax.device_get(state.params)
    bad = dict(local, joints_3d=np.full_like(local["joints_3d"], np.nan))
    bad["has_pose_3d"] = np.ones_like(local["has_pose_3d"])
    body_dev = jax.device_put(body, sharding.replicated(mesh))
    state, m = step(state, sharding.global_batch(bad, mesh, train.TRAIN_KEYS), body_dev)
    assert float(m["finite"]) == 0.0 and int(state.nonfinite_total) == 1
    assert int(state.nonfinite_streak) == 1 and int(state.step) == 1
    chex.assert_trees_all_equal(jax.device_get(state.params), before)
    state, m = step(state, sharding.global_batch(local, mesh, train.TRAIN_KEYS), body_dev)
    assert float(m["finite"]) == 1.0 and int(state.nonfinite_streak) == 0
    assert int(state.nonfinite_total) == 1
    delta = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), jax.device_get(state.params),
                         before)
    assert max(jax.tree.leaves(delta)) > 0


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _worker(out_dir, devices, *dist, **extra_env):
    env = dict(os.environ, WORKER_STEPS="3", **extra_env, PYTHONPATH=os.pathsep.join(
        [HERE, os.path.dirname(HERE), os.environ.get("PYTHONPATH", "")]))
    env.pop("XLA_FLAGS", None)
    return subprocess.Popen([sys.executable, os.path.join(HERE, "train_worker.py"), str(out_dir),
                             str(devices), *map(str, dist)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _finish(proc, timeout=600):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


def _load(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def worker_runs(tmp_path_factory):
    """Three runs of the same tiny job: 1 device; 8 fake CPU devices; 2 processes x 1 device."""
    root = tmp_path_factory.mktemp("workers")
    one, eight, dist = root / "one", root / "eight", root / "dist"
    for d in (one, eight, dist):
        d.mkdir()
    port = _free_port()
    p_one = _worker(one, 1)
    assert "devices 1 processes 1" in _finish(p_one)
    p_eight = _worker(eight, 8)
    assert "devices 8 processes 1" in _finish(p_eight)
    procs = [_worker(dist, 1, f"localhost:{port}", 2, i) for i in range(2)]
    outs = [_finish(p) for p in procs]
    assert all("devices 2 processes 2" in o for o in outs)
    return {"one": _load(one / "params0.npz"), "eight": _load(eight / "params0.npz"),
            "dist0": _load(dist / "params0.npz"), "dist1": _load(dist / "params1.npz")}


def _assert_close(a, b):
    """Same per-step losses and parameters up to float summation order (SGD, 3 steps)."""
    np.testing.assert_allclose(a["train_losses"], b["train_losses"], rtol=1e-5)
    assert len(a["train_losses"]) == 3
    params = sorted(k for k in a if k not in ("train_losses", "eval_pa_mpjpe"))
    assert params == sorted(k for k in b if k not in ("train_losses", "eval_pa_mpjpe"))
    for k in params:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-6, err_msg=k)
    np.testing.assert_allclose(a["eval_pa_mpjpe"], b["eval_pa_mpjpe"], rtol=1e-4)


@pytest.mark.parametrize("kind", ["private", "shared"])
def test_multi_process_workdir_must_be_shared(tmp_path, kind):
    """A per-process workdir would deadlock in orbax's first checkpoint: it is refused up front
    with a message naming the directory; a shared one passes."""
    port = _free_port()
    procs = [_worker(tmp_path, 1, f"localhost:{port}", 2, i, WORKER_CHECK_WORKDIR=kind)
             for i in range(2)]
    outs = [_finish(p, timeout=180) for p in procs]
    for out in outs:
        if kind == "shared":
            assert "workdir check: ok" in out, out[-2000:]
        else:
            assert "workdir check: error" in out and "is not shared by all 2 processes" in out, \
                out[-2000:]


def test_eight_devices_match_one_device(worker_runs):
    _assert_close(worker_runs["eight"], worker_runs["one"])


def test_two_processes_match_one_process(worker_runs):
    shared = [k for k in worker_runs["dist1"]]
    chex.assert_trees_all_equal({k: worker_runs["dist0"][k] for k in shared}, worker_runs["dist1"])
    _assert_close(worker_runs["dist0"], worker_runs["one"])


def test_ema_of_parameters_and_statistics(tmp_path):
    """train.ema_decay: the state keeps d·ema + (1-d)·new after every step (d ramped up as
    min(d, (1+t)/(10+t))), evaluation and the best checkpoint use it, and load_variables returns
    it from a checkpoint."""
    config = tiny_config(num_steps=2, ema_decay=0.5)
    mesh = sharding.make_mesh()
    model, tx = build_model(config.model), make_optimizer(config.train)
    body = experiment.load_body(config)
    state, sh = train.create_train_state(config, model, mesh, tx)
    from imphmr_jax.data import pipeline
    it = pipeline.make_train_iterator([tiny_sources()[0]], [1.0], experiment.pipeline_config(config))
    step = train.make_train_step(config, model, tx, mesh, sh, silhouette_tiles=0)
    body_dev = jax.device_put(body, sharding.replicated(mesh))
    expected = jax.device_get(state.trained_variables())
    chex.assert_trees_all_equal(jax.device_get(state.ema), expected)
    for t in range(3):
        state, _ = step(state, sharding.global_batch(next(it), mesh, train.TRAIN_KEYS), body_dev)
        d = min(0.5, (1 + t) / (10 + t))
        expected = jax.tree.map(lambda e, v: d * e + (1 - d) * v, expected,
                                jax.device_get(state.trained_variables()))
    chex.assert_trees_all_close(jax.device_get(state.ema), expected, rtol=1e-5, atol=1e-7)
    assert state.variables() is state.ema
    assert not np.allclose(jax.tree.leaves(expected["params"])[0],
                           jax.tree.leaves(jax.device_get(state.params))[0])
    result = _run(config, tmp_path)
    ema = jax.device_get(result["state"].ema)
    for which in ("best", "latest"):
        chex.assert_trees_all_close(ckpt_lib.load_variables(str(tmp_path), which), ema)
