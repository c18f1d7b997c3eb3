"""The train state, its creation in its sharding, and the guarded update (both systems).

Non-finite steps: `apply_gradients` leaves the state unchanged when the loss or the gradient norm
is not finite (the parameter update, BatchNorm statistics, optimizer moments and moving average
are all skipped) and counts the step; the loop calls `check_nonfinite_streak` and stops with
`NonFiniteError` after `train.nan_max_consecutive` such steps in a row.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from imphmr_jax.training.ema import ema_start, ema_update
from imphmr_jax.training.sharding import replicated


class NonFiniteError(RuntimeError):
    """Raised when too many consecutive training steps had a non-finite loss or gradient."""


class TrainState(flax.struct.PyTreeNode):
    """Everything a step reads and writes; plain arrays, so orbax saves it as is."""

    step: jax.Array          # () int32, steps taken (= steps applied + steps skipped)
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array           # (2,) uint32 raw key; step s uses fold_in(rng, s)
    nonfinite_total: jax.Array   # () int32
    nonfinite_streak: jax.Array  # () int32, consecutive non-finite steps up to now
    # {'params', 'batch_stats'}: their exponential moving average (train.ema_decay > 0), or None
    ema: Any = None

    def variables(self):
        """The variables to evaluate: the moving average when kept, else the trained ones."""
        return self.ema if self.ema is not None else self.trained_variables()

    def trained_variables(self):
        return {"params": self.params, "batch_stats": self.batch_stats}

    def step_key(self) -> jax.Array:
        """The key of this step's random draws: fold_in(rng, step), so a resumed run draws the
        same numbers as an uninterrupted one."""
        return jax.random.fold_in(self.rng, self.step)


def create_train_state(init_variables: Callable[[jax.Array], Mapping], tx, mesh, *, seed: int,
                       ema: bool = False):
    """(state, state shardings): variables, optimizer state and step key created by one jit whose
    outputs are placed straight into their (replicated) sharding; no host copy is made.

    init_variables: key -> {'params': ..., ['batch_stats': ...]} (e.g. a linen `model.init` on
      dummy inputs). Its key uses the 'rbg' generator: the parameter values do not need
      threefry's guarantees and the init graph compiles ~10x faster on CPU. Step randomness stays
      threefry (partitionable: the same numbers whatever the sharding).
    ema: keep a moving average of the variables (`train.ema_decay > 0`).
    """
    def init():
        variables = init_variables(jax.random.key(seed, impl="rbg"))
        params = variables["params"]
        stats = variables.get("batch_stats", {})
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=stats,
                          opt_state=tx.init(params),
                          rng=jax.random.fold_in(jax.random.PRNGKey(seed), 2),
                          nonfinite_total=jnp.zeros((), jnp.int32),
                          nonfinite_streak=jnp.zeros((), jnp.int32),
                          ema=ema_start({"params": params, "batch_stats": stats}) if ema else None)

    shardings = jax.tree.map(lambda _: replicated(mesh), jax.eval_shape(init))
    return jax.jit(init, out_shardings=shardings)(), shardings


def replace_variables(state: TrainState, variables: Mapping, tx, mesh) -> TrainState:
    """The state with new (e.g. pre-trained) variables: the optimizer state is initialised again
    for them and the moving average, when kept, starts again from them."""
    rep = replicated(mesh)
    params = jax.device_put(variables["params"], rep)
    stats = jax.device_put(variables["batch_stats"], rep)
    opt_state = jax.jit(tx.init, out_shardings=rep)(params)
    ema = state.ema
    if ema is not None:
        ema = jax.jit(lambda p, s: ema_start({"params": p, "batch_stats": s}),
                      out_shardings=rep)(params, stats)
    return state.replace(params=params, batch_stats=stats, opt_state=opt_state, ema=ema)


def merge_tree(dst, src, path: str = ""):
    """Copy `src`'s leaves into `dst` where `dst` has them (a partial set of pre-trained weights
    into a model's variables). A key `dst` lacks, a subtree where `dst` has a leaf, or a shape
    mismatch is a ValueError naming the path."""
    if isinstance(src, Mapping):
        if not isinstance(dst, Mapping):
            raise ValueError(f"weights have a subtree at '{path}' where the model has a leaf")
        out = dict(dst)
        for k, v in src.items():
            if k not in dst:
                raise ValueError(f"weights have '{path}/{k}', which the model does not have")
            out[k] = merge_tree(dst[k], v, f"{path}/{k}")
        return out
    src = np.asarray(src)
    if tuple(src.shape) != tuple(dst.shape):
        raise ValueError(f"shape mismatch at '{path}': weights {src.shape}, model {dst.shape}")
    return jnp.asarray(src, dst.dtype)


def apply_gradients(state: TrainState, tx, grads, loss, new_batch_stats, *,
                    ema_decay: float = 0.0):
    """(new state, metrics): one optimizer update, skipped entirely when the loss or the gradient
    norm is not finite. Call inside the jitted step. metrics: grad_norm, finite (1.0 / 0.0) and
    nonfinite_streak."""
    updates, new_opt = tx.update(grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    streak = jnp.where(finite, 0, state.nonfinite_streak + 1).astype(jnp.int32)
    ema = state.ema
    if ema is not None:
        ema = keep(ema_update(ema, {"params": new_params, "batch_stats": new_batch_stats},
                              state.step, ema_decay), ema)
    new_state = state.replace(
        step=state.step + 1,
        params=keep(new_params, state.params),
        batch_stats=keep(new_batch_stats, state.batch_stats),
        opt_state=keep(new_opt, state.opt_state),
        nonfinite_total=state.nonfinite_total + (~finite).astype(jnp.int32),
        nonfinite_streak=streak, ema=ema)
    return new_state, {"grad_norm": grad_norm, "finite": finite.astype(jnp.float32),
                       "nonfinite_streak": streak}


def check_nonfinite_streak(metrics: Mapping, state: TrainState, step: int, max_consecutive: int,
                           workdir: str, writer: Optional[Any] = None) -> None:
    """Stop with NonFiniteError when `max_consecutive` steps in a row were non-finite (after
    writing the counters, so the metrics show where it happened)."""
    streak = int(metrics["nonfinite_streak"])
    if streak < max_consecutive:
        return
    if writer is not None:
        writer.write(step, {"nonfinite_streak": float(streak),
                            "nonfinite_total": float(jax.device_get(state.nonfinite_total))},
                     "train/")
    raise NonFiniteError(
        f"{streak} consecutive training steps had a non-finite loss or gradient (step {step}); "
        f"the last finite state is in {workdir}/checkpoints. Lower train.learning_rate, set "
        "train.grad_clip, or check the data for NaNs.")
