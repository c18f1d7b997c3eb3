"""The method-agnostic training helpers on their own: spike reports, running means, weight
merging, schedules, the moving average and the guarded update (no model needed)."""
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from imphmr_jax.training import checkpoint, ema, optim, sharding, state as state_lib, writer
from imphmr_jax.training.spikes import SpikeMonitor


def test_spike_monitor_reports_jumps_of_orders_of_magnitude():
    mon = SpikeMonitor(factor=100.0, window=10, warmup=5)
    rng = np.random.default_rng(0)
    for s in range(20):
        assert mon.check(s, {"loss": 20 + rng.normal(), "grad_norm": 50 + rng.normal()}) == []
    msgs = mon.check(20, {"loss": 1.07e10, "grad_norm": 60.0})
    assert len(msgs) == 1 and "loss" in msgs[0] and "step 20" in msgs[0] and mon.total == 1
    # A sustained blow-up stays a spike (it does not become the new normal) ...
    for s in range(21, 40):
        assert mon.check(s, {"loss": 5e10, "grad_norm": 2e13})
    assert mon.total == 20
    # ... a factor-of-10 change, a non-finite value and an absent key are not spikes.
    assert mon.check(40, {"loss": 200.0, "grad_norm": float("nan")}) == []
    assert mon.check(41, {}) == []


def test_spike_monitor_waits_for_warmup_and_can_be_off():
    mon = SpikeMonitor(factor=10.0, window=10, warmup=5)
    assert mon.check(0, {"loss": 1.0}) == [] and mon.check(1, {"loss": 1e6}) == []
    off = SpikeMonitor(factor=0.0, warmup=0)
    for s in range(10):
        off.check(s, {"loss": 1.0})
    assert off.check(10, {"loss": 1e9}) == [] and off.total == 0


def test_running_means_skip_nonfinite_steps():
    means = writer.RunningMeans()
    means.add({"loss": 1.0, "finite": 1.0, "nonfinite_streak": 0})
    means.add({"loss": float("nan"), "finite": 0.0, "nonfinite_streak": 1})
    means.add({"loss": 3.0, "finite": 1.0, "nonfinite_streak": 0})
    out = means.flush()
    assert out["loss"] == 2.0 and "finite" not in out and out["steps_per_s"] > 0
    assert means.flush() == {}


def test_merge_tree_names_the_mismatch():
    dst = {"a": {"w": jnp.zeros((2, 3))}, "b": jnp.ones(4)}
    out = state_lib.merge_tree(dst, {"a": {"w": np.full((2, 3), 7.0)}})
    np.testing.assert_array_equal(out["a"]["w"], 7.0)
    np.testing.assert_array_equal(out["b"], 1.0)
    with pytest.raises(ValueError, match="shape mismatch at '/a/w'"):
        state_lib.merge_tree(dst, {"a": {"w": np.zeros((3, 2))}})
    with pytest.raises(ValueError, match="'/c', which the model does not have"):
        state_lib.merge_tree(dst, {"c": np.zeros(1)})


def _train_section(**kw):
    t = ml_collections.ConfigDict(dict(learning_rate=1.0, schedule="constant", warmup_steps=0,
                                       num_steps=100, optimizer="sgd", momentum=0.0,
                                       weight_decay=0.0, grad_clip=0.0))
    t.update(kw)
    return t


def test_schedules():
    np.testing.assert_allclose(optim.make_schedule(_train_section(warmup_steps=10))(5), 0.5)
    np.testing.assert_allclose(optim.make_schedule(_train_section(schedule="cosine"))(50), 0.5,
                               atol=1e-6)
    wc = optim.make_schedule(_train_section(schedule="warmup_cosine", warmup_steps=10))
    np.testing.assert_allclose([wc(0), wc(10), wc(100)], [0.0, 1.0, 0.0], atol=1e-6)
    with pytest.raises(ValueError, match="train.schedule"):
        optim.make_schedule(_train_section(schedule="linear"))
    with pytest.raises(ValueError, match="train.optimizer"):
        optim.make_optimizer(_train_section(optimizer="lamb"))


def test_ema_decay_ramp_and_update():
    np.testing.assert_allclose(ema.ema_decay_at(0, 0.999), 0.1)
    np.testing.assert_allclose(ema.ema_decay_at(10_000, 0.999), 0.999)
    out = ema.ema_update({"w": jnp.ones(2)}, {"w": jnp.zeros(2)}, 0, 0.999)
    np.testing.assert_allclose(out["w"], 0.1)


def test_guarded_update_skips_a_nonfinite_step_and_counts_it():
    tx = optim.make_optimizer(_train_section(learning_rate=0.1))
    mesh = sharding.make_mesh(jax.devices()[:1])
    st, _ = state_lib.create_train_state(lambda k: {"params": {"w": jnp.ones(3)}}, tx, mesh,
                                         seed=0, ema=True)
    good, m = state_lib.apply_gradients(st, tx, {"w": jnp.ones(3)}, jnp.float32(1.0), {},
                                        ema_decay=0.5)
    np.testing.assert_allclose(good.params["w"], 0.9)
    assert int(good.step) == 1 and float(m["finite"]) == 1.0
    bad, m = state_lib.apply_gradients(good, tx, {"w": jnp.full(3, jnp.nan)}, jnp.float32(1.0),
                                       {}, ema_decay=0.5)
    np.testing.assert_allclose(bad.params["w"], 0.9)
    np.testing.assert_allclose(bad.ema["params"]["w"], good.ema["params"]["w"])
    assert int(bad.step) == 2 and int(bad.nonfinite_total) == 1 and int(m["nonfinite_streak"]) == 1
    with pytest.raises(state_lib.NonFiniteError, match="1 consecutive"):
        state_lib.check_nonfinite_streak(m, bad, 2, 1, "/tmp/run")


def test_metric_writer_drops_rows_a_resumed_run_computes_again(tmp_path):
    w = writer.MetricWriter(str(tmp_path))
    for s in (1, 2, 3):
        w.write(s, {"loss": float(s)}, "train/")
    w.write(3, {"pa_mpjpe": 80.0}, "eval/")
    assert w.truncate_after(2) == 2
    w.write(3, {"loss": 3.5}, "train/")
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[-1] == {"step": 3, "train/loss": 3.5}
    assert writer.MetricWriter(str(tmp_path / "new")).truncate_after(0) == 0


def _saved_states(tmp_path, steps=(1, 2)):
    tx = optim.make_optimizer(_train_section())
    mesh = sharding.make_mesh(jax.devices()[:1])
    init = lambda k: {"params": {"dense": {"kernel": jax.random.normal(k, (4, 8))}},
                      "batch_stats": {"bn": {"mean": jnp.zeros(8)}}}
    st, sh = state_lib.create_train_state(init, tx, mesh, seed=0)
    mngr = checkpoint.CheckpointManager(str(tmp_path / "checkpoints"))
    for s in steps:
        mngr.save(s, st.replace(step=jnp.int32(s)), {"position": s})
    return mngr, st, sh, tx, mesh


def test_a_damaged_latest_checkpoint_is_set_aside_and_the_previous_one_restored(tmp_path, capsys):
    mngr, st, sh, _, _ = _saved_states(tmp_path)
    with open(tmp_path / "checkpoints" / "2" / "data" / "metadata", "w") as f:
        f.write('{"position": ')  # a truncated data-iterator JSON
    restored, data, step = mngr.restore_latest(st, sh)
    assert step == 1 and data == {"position": 1} and int(restored.step) == 1
    assert (tmp_path / "checkpoints" / "damaged" / "2").is_dir()
    assert mngr.all_steps() == [1]
    assert "checkpoint 2" in capsys.readouterr().out
    # Zeroed array files: the last good checkpoint is gone too, so there is nothing to resume.
    for root, _, files in os.walk(tmp_path / "checkpoints" / "1" / "state"):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "r+b") as f:
                f.write(b"\0" * os.path.getsize(path))
    assert mngr.restore_latest(st, sh) is None
    assert sorted(os.listdir(tmp_path / "checkpoints" / "damaged")) == ["1", "2"]


def test_a_checkpoint_of_another_model_size_names_the_parameters_and_directory(tmp_path):
    mngr, _, _, tx, mesh = _saved_states(tmp_path, steps=(1,))
    other, sh = state_lib.create_train_state(
        lambda k: {"params": {"dense": {"kernel": jnp.zeros((4, 16))}},
                   "batch_stats": {"bn": {"mean": jnp.zeros(8)}}}, tx, mesh, seed=0)
    with pytest.raises(checkpoint.CheckpointMismatchError,
                       match=r"(?s)checkpoint 1 in .*checkpoints.*params/dense/kernel: "
                             r"checkpoint \(4, 8\), model \(4, 16\)"):
        mngr.restore_latest(other, sh)
    assert mngr.all_steps() == [1]  # a mismatch is not damage: nothing is moved
