"""Checkpoints with orbax-checkpoint's `CheckpointManager` (atomic saves, keep-N, resume).

Layout of a training workdir:
    checkpoints/<step>/state   the whole TrainState (params, batch_stats, optimizer, step, rng, ...)
    checkpoints/<step>/data    the data iterator's position (JSON) so a resumed run sees the same
                               batches as an uninterrupted one
    best/<step>/variables      params + batch_stats of the best evaluation so far (lowest PA-MPJPE)
                               and its metric; only one is kept

Orbax writes each checkpoint to a temporary directory and renames it when complete, so a run killed
while saving leaves the previous checkpoint intact; a half-written one is never restored.

Resuming (`CheckpointManager.restore_latest`): a checkpoint whose parameters have other shapes than
the model's (the config changed) is an error naming the parameters and the directory; a damaged one
(a zeroed or truncated array file, a broken data-iterator JSON) is moved aside to
`checkpoints/damaged/<step>` with a message, and the previous one is tried, so a run is never
stuck on a bad file.
"""
from __future__ import annotations

import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

from imphmr_jax.training import startup

# The subtrees whose shapes say which model wrote a checkpoint.
_MODEL_TREES = ("params", "batch_stats")


class CheckpointMismatchError(ValueError):
    """A checkpoint was written by a model with other parameter shapes than the one restoring."""


def _flat_shapes(tree, prefix=()) -> dict:
    """{path tuple: shape} of a nested dict of arrays / ShapeDtypeStructs / orbax metadata."""
    if isinstance(tree, dict) or hasattr(tree, "items"):
        out = {}
        for k, v in tree.items():
            out.update(_flat_shapes(v, prefix + (str(k),)))
        return out
    return {prefix: tuple(getattr(tree, "shape", ()))}


def tree_differences(want: Any, have: Any, prefix=(), *, source: str = "checkpoint") -> list[str]:
    """Lines 'path: <source> (32,), model (16,)' / 'path: not in the <source>' / 'path: in the
    <source>, not in the model' for two nested dicts of arrays (or shape structs / metadata)."""
    w, h = _flat_shapes(want, tuple(prefix)), _flat_shapes(have, tuple(prefix))
    out = []
    for path in sorted(set(w) | set(h)):
        where = "/".join(path)
        if path not in h:
            out.append(f"{where}: not in the {source}")
        elif path not in w:
            out.append(f"{where}: in the {source}, not in the model")
        elif w[path] != h[path]:
            out.append(f"{where}: {source} {h[path]}, model {w[path]}")
    return out


def shape_mismatches(target: Any, stored: Any, limit: int = 5) -> list[str]:
    """Differences between the model trees (`params`, `batch_stats`) of a target state and a
    checkpoint's metadata: 'path: checkpoint (32,), model (16,)' / missing / unexpected lines."""
    out = []
    for name in _MODEL_TREES:
        want = getattr(target, name, None)
        have = stored.get(name) if hasattr(stored, "get") else None
        if want is None or have is None:
            continue
        out += tree_differences(want, have, (name,))
    return out[:limit] + ([f"... and {len(out) - limit} more"] if len(out) > limit else [])


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
        """(state shaped and sharded like `target`, data-iterator state dict or None).
        CheckpointMismatchError when the checkpoint's parameters have other shapes."""
        try:
            stored = self._mngr.item_metadata(step)["state"]
        except Exception:  # noqa: BLE001 - no readable metadata: the restore itself decides
            stored = None
        if stored is not None:
            stored = getattr(stored, "tree", stored)
            diff = shape_mismatches(target, stored)
            if diff:
                raise CheckpointMismatchError(
                    f"checkpoint {step} in {self.directory} was written by a model with other "
                    "parameter shapes than this config's:\n  " + "\n  ".join(diff) + "\nUse the "
                    "config that trained it, or a new workdir.")
        items = {"state": ocp.args.StandardRestore(_abstract(target, shardings))}
        have_data = os.path.isdir(os.path.join(self.directory, str(step), "data"))
        if have_data:
            items["data"] = ocp.args.JsonRestore()
        out = self._mngr.restore(step, args=ocp.args.Composite(**items))
        return out["state"], (out["data"] if have_data else None)

    def restore_latest(self, target: Any, shardings=None):
        """(state, data-iterator state, step) of the newest checkpoint that restores, or None when
        there is none. A damaged checkpoint is moved to `damaged/<step>` (process 0) with a
        message naming it and the error, and the one before it is tried; a shape mismatch is
        raised (the config changed: falling back would not help)."""
        for step in sorted(self.all_steps(), reverse=True):
            try:
                state, data = self.restore(step, target, shardings)
                return state, data, step
            except CheckpointMismatchError:
                raise
            except Exception as e:  # noqa: BLE001 - any storage/decoding failure means damaged
                self._set_aside(step, e)
        return None

    def _set_aside(self, step: int, error: Exception) -> None:
        src = os.path.join(self.directory, str(step))
        dst = os.path.join(self.directory, "damaged", str(step))
        reason = " ".join(str(error).split())[:300]
        if jax.process_index() == 0:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            if os.path.exists(dst):
                dst = f"{dst}.{len(os.listdir(os.path.dirname(dst)))}"
            os.replace(src, dst)
            print(f"checkpoint {step} in {self.directory} is damaged ({type(error).__name__}: "
                  f"{reason}); moved it to {dst} and trying the previous one", flush=True)
        startup.barrier(f"checkpoint_set_aside_{step}")
        self._mngr.reload()

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
