"""The training loop shared by both systems: steps, logging, spikes, NaN guard, checkpoints.

`train_loop` runs a jitted step function from the state's current step to `num_steps` and does
what every run needs around it: running means of the step metrics written every `log_every`
steps to metrics.jsonl (rows of steps re-run after a resume are dropped first), the loss-spike
monitor (`spikes.SpikeMonitor`), the non-finite streak check, orbax checkpoints (with the data
iterator's state) every `checkpoint_every` steps and at the end, periodic callbacks (evaluation,
figures), and a progress bar. What a step computes is the caller's: ImpHMR's regression step and
the GHN's render-and-compare step both plug in here.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import jax

from imphmr_jax.training import state as state_lib
from imphmr_jax.training import writer as writer_lib
from imphmr_jax.training.spikes import SpikeMonitor


class Periodic:
    """Call fn(done_step, state) every `every` steps (0 = never)."""

    def __init__(self, every: int, fn: Callable[[int, Any], None]):
        self.every, self.fn = int(every or 0), fn

    def __call__(self, done: int, state) -> None:
        if self.every and done % self.every == 0:
            self.fn(done, state)


def train_loop(state, make_step: Callable[[Mapping], Callable], data_iter: Iterator, *,
               train_config, workdir: str, manager, writer: writer_lib.MetricWriter,
               to_global: Callable[[Mapping], Mapping], periodic: Sequence[Periodic] = (),
               step_hook: Optional[Callable[[int], None]] = None, is_main: bool = True,
               desc: str = "train"):
    """Run steps state.step .. train_config.num_steps; returns the final state.

    make_step: called once with the first host batch, returns the jitted step
      (state, global_batch) -> (state, metrics) (metrics: 'loss' and 'grad_norm' at least, plus
      the 'nonfinite_streak' of `state.apply_gradients`).
    data_iter: yields host batches and has get_state() for checkpoints.
    to_global: host batch -> global (sharded) batch.
    train_config: the config's `train` section (num_steps, log_every, checkpoint_every,
      nan_max_consecutive, spike_factor, spike_window, progress).
    """
    t = train_config
    start = int(jax.device_get(state.step))
    num_steps = int(t.num_steps)
    writer.truncate_after(start)  # rows of steps this run computes again after a resume
    means = writer_lib.RunningMeans()
    spikes = SpikeMonitor(factor=t.spike_factor, window=t.spike_window)
    step_fn = None
    pbar = writer_lib.progress_bar(num_steps, start, enabled=is_main and t.progress, desc=desc)
    try:
        for step in range(start, num_steps):
            local = next(data_iter)
            if step_fn is None:
                step_fn = make_step(local)
            state, metrics = step_fn(state, to_global(local))
            m = jax.device_get(metrics)
            done = step + 1
            state_lib.check_nonfinite_streak(m, state, done, t.nan_max_consecutive, workdir,
                                             writer)
            means.add(m)
            for line in spikes.check(done, m):
                writer_lib.console(f"spike: {line}", pbar, enabled=is_main)
            if pbar is not None:
                pbar.update(1)
                pbar.set_postfix(loss=f"{float(m['loss']):.3g}")
            if done % t.log_every == 0 or done == num_steps:
                scalars = means.flush()
                if scalars:
                    scalars["nonfinite_total"] = float(jax.device_get(state.nonfinite_total))
                    scalars["spikes_total"] = float(spikes.total)
                    writer.write(done, scalars, "train/")
            if done % t.checkpoint_every == 0 or done == num_steps:
                manager.save(done, state, data_iter.get_state())
            for p in periodic:
                p(done, state)
            if step_hook is not None:
                step_hook(done)
    finally:
        if pbar is not None:
            pbar.close()
        manager.wait()
    return state
