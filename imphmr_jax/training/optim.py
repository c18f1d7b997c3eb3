"""Optimizer and learning-rate schedules from a config's `train` section (both systems).

The fields read (all in `train`): learning_rate, schedule ('constant' | 'cosine' |
'warmup_cosine'), warmup_steps, num_steps, optimizer ('adam' | 'sgd'), momentum, weight_decay,
grad_clip (0 = off).
"""
from __future__ import annotations

import optax


def make_schedule(t) -> optax.Schedule:
    """The learning rate as a function of the step."""
    if t.schedule == "constant":
        lr = optax.constant_schedule(t.learning_rate)
        if t.warmup_steps:
            lr = optax.join_schedules([optax.linear_schedule(0.0, t.learning_rate, t.warmup_steps),
                                       optax.constant_schedule(t.learning_rate)],
                                      [t.warmup_steps])
        return lr
    if t.schedule == "cosine":
        return optax.cosine_decay_schedule(t.learning_rate, max(t.num_steps, 1))
    if t.schedule == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(0.0, t.learning_rate, max(t.warmup_steps, 1),
                                                  max(t.num_steps, t.warmup_steps + 1))
    raise ValueError(f"train.schedule must be constant | cosine | warmup_cosine, "
                     f"got {t.schedule!r}")


def make_optimizer(t) -> optax.GradientTransformation:
    """Global-norm clipping (when `grad_clip` > 0), then Adam(W) or SGD with momentum."""
    lr = make_schedule(t)
    parts = []
    if t.grad_clip:
        parts.append(optax.clip_by_global_norm(t.grad_clip))
    if t.optimizer == "adam":
        parts.append(optax.adamw(lr, weight_decay=t.weight_decay) if t.weight_decay
                     else optax.adam(lr))
    elif t.optimizer == "sgd":
        if t.weight_decay:
            parts.append(optax.add_decayed_weights(t.weight_decay))
        parts.append(optax.sgd(lr, momentum=t.momentum or None))
    else:
        raise ValueError(f"train.optimizer must be 'adam' or 'sgd', got {t.optimizer!r}")
    return optax.chain(*parts)
