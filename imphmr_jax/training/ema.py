"""An exponential moving average of model variables (parameters and BatchNorm statistics)."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def ema_start(variables):
    """The average's first value: a copy of `variables` with its own buffers (the train state is
    donated to the step, so the average must not alias the parameters)."""
    return jax.tree.map(jnp.copy, variables)


def ema_decay_at(step, decay: float):
    """The decay after `step` updates: min(decay, (1 + step) / (10 + step)), so that early
    averages are not dominated by the initial weights."""
    step = jnp.asarray(step, jnp.float32)
    return jnp.minimum(jnp.float32(decay), (1.0 + step) / (10.0 + step))


def ema_update(ema, new, step, decay: float):
    """One step of the average: d·ema + (1 - d)·new, d = ema_decay_at(step, decay)."""
    d = ema_decay_at(step, decay)
    return jax.tree.map(lambda a, b: (d * a + (1.0 - d) * b).astype(a.dtype), ema, new)
