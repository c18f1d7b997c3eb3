"""Checkpoints with orbax-checkpoint's `CheckpointManager` (atomic saves, keep-N, resume).

Layout of a training workdir:
    checkpoints/<step>/state   the whole TrainState (params, batch_stats, optimizer, step, rng, ...)
    checkpoints/<step>/data    the data iterator's position (JSON) so a resumed run sees the same
                               batches as an uninterrupted one
    best/<step>/variables      params + batch_stats of the best evaluation so far (lowest PA-MPJPE)
                               and its metric; only one is kept

Orbax writes each checkpoint to a temporary directory and renames it when complete, so a run killed
while saving leaves the previous checkpoint intact; a half-written one is never restored.
"""
from __future__ import annotations

import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp


def _abstract(tree, shardings=None):
    if shardings is None:
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                           sharding=getattr(x, "sharding", None)),
                            tree)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        tree, shardings)


class CheckpointManager:
    """Keep the last `max_to_keep` training checkpoints (state + data-iterator JSON)."""

    def __init__(self, directory: str, max_to_keep: int = 3):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                               enable_async_checkpointing=False)
        self._mngr = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> Optional[int]:
        return self._mngr.latest_step()

    def all_steps(self):
        return list(self._mngr.all_steps())

    def save(self, step: int, state: Any, data_state: Optional[dict] = None) -> None:
        if step in self._mngr.all_steps():
            return
        items = {"state": ocp.args.StandardSave(state)}
        if data_state is not None:
            items["data"] = ocp.args.JsonSave(data_state)
        self._mngr.save(step, args=ocp.args.Composite(**items))

    def restore(self, step: int, target: Any, shardings=None):
        """(state shaped and sharded like `target`, data-iterator state dict or None)."""
        items = {"state": ocp.args.StandardRestore(_abstract(target, shardings))}
        have_data = os.path.isdir(os.path.join(self.directory, str(step), "data"))
        if have_data:
            items["data"] = ocp.args.JsonRestore()
        out = self._mngr.restore(step, args=ocp.args.Composite(**items))
        return out["state"], (out["data"] if have_data else None)

    def wait(self) -> None:
        self._mngr.wait_until_finished()

    def close(self) -> None:
        self._mngr.close()


class BestCheckpoint:
    """The model variables of the evaluation with the lowest `metric` so far (keeps one)."""

    def __init__(self, directory: str, metric: str = "pa_mpjpe"):
        self.directory = os.path.abspath(directory)
        self.metric = metric
        options = ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True, best_fn=lambda m: m[metric], best_mode="min",
            keep_checkpoints_without_metrics=False, enable_async_checkpointing=False)
        self._mngr = ocp.CheckpointManager(self.directory, options=options)

    def update(self, step: int, state: Any, value: float) -> None:
        if step in self._mngr.all_steps():
            return
        variables = state.variables()  # the moving average when training keeps one
        self._mngr.save(step, args=ocp.args.Composite(variables=ocp.args.StandardSave(variables)),
                        metrics={self.metric: float(value)})

    def wait(self) -> None:
        self._mngr.wait_until_finished()


def load_variables(workdir_or_dir: str, which: str = "best") -> dict:
    """Model variables {'params', 'batch_stats'} (numpy) from a training workdir: the evaluated
    ones (the moving average of a run with train.ema_decay > 0).

    which: 'best' (the best evaluation; falls back to the latest checkpoint when there is none),
    'latest', or a step number as a string.
    """
    root = os.path.abspath(os.path.expanduser(workdir_or_dir))
    best_dir, ckpt_dir = os.path.join(root, "best"), os.path.join(root, "checkpoints")
    if which == "best" and _steps(best_dir):
        step = max(_steps(best_dir))
        mngr = ocp.CheckpointManager(best_dir, options=ocp.CheckpointManagerOptions(read_only=True))
        out = mngr.restore(step, args=ocp.args.Composite(variables=ocp.args.StandardRestore()))
        return _to_numpy(out["variables"])
    steps = _steps(ckpt_dir)
    if not steps:
        raise FileNotFoundError(f"no checkpoint in {root} (looked in {best_dir} and {ckpt_dir})")
    step = max(steps) if which in ("best", "latest") else int(which)
    if step not in steps:
        raise FileNotFoundError(f"no checkpoint for step {step} in {ckpt_dir}; have {sorted(steps)}")
    mngr = ocp.CheckpointManager(ckpt_dir, options=ocp.CheckpointManagerOptions(read_only=True))
    out = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    state = out["state"]
    get = ((lambda k: state.get(k)) if isinstance(state, dict)
           else (lambda k: getattr(state, k, None)))
    ema = get("ema")
    if ema:  # a run with train.ema_decay > 0: its evaluated variables are the moving average
        return _to_numpy({"params": ema["params"], "batch_stats": ema["batch_stats"]})
    return _to_numpy({"params": get("params"), "batch_stats": get("batch_stats")})


def _steps(directory: str):
    if not os.path.isdir(directory):
        return []
    return [int(d) for d in os.listdir(directory) if d.isdigit()]


def _to_numpy(tree):
    import numpy as np
    return jax.tree.map(np.asarray, tree)
