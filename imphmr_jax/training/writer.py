"""Metrics of a run: JSON lines in the workdir (TensorBoard too when tensorboardX is installed),
running means between log steps, a progress bar and the loss-curve figure (both systems)."""
from __future__ import annotations

import json
import os
import time
from typing import Mapping, Optional

import numpy as np

from imphmr_jax import figures


class MetricWriter:
    """Rows {'step': s, '<prefix><name>': value, ...} appended to workdir/metrics.jsonl (only where
    `enabled`, i.e. on process 0), and the same scalars to TensorBoard when tensorboardX is
    installed."""

    def __init__(self, workdir: str, enabled: bool = True):
        self.enabled = enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if enabled:
            try:
                from tensorboardX import SummaryWriter  # optional
                self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
            except ImportError:
                self._tb = None

    def write(self, step: int, scalars: Mapping[str, float], prefix: str = ""):
        if not self.enabled:
            return
        row = {"step": int(step)}
        row.update({prefix + k: float(v) for k, v in scalars.items()})
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in row.items():
                if k != "step":
                    self._tb.add_scalar(k, v, step)

    def truncate_after(self, step: int) -> int:
        """Drop the rows of steps after `step` (a run resumed from the checkpoint of `step`
        computes them again; keeping both would plot them twice). Returns how many were
        dropped."""
        if not self.enabled or not os.path.exists(self.path):
            return 0
        with open(self.path) as f:
            lines = [line for line in f if line.strip()]
        keep = [line for line in lines if json.loads(line).get("step", 0) <= step]
        if len(keep) < len(lines):
            with open(self.path + ".tmp", "w") as f:
                f.writelines(keep)
            os.replace(self.path + ".tmp", self.path)
        return len(lines) - len(keep)

    def close(self):
        if self._tb is not None:
            self._tb.close()


class RunningMeans:
    """Means of the per-step metrics of finite steps since the last `flush`, and steps/s."""

    def __init__(self, skip=("finite", "nonfinite_streak")):
        self._skip = frozenset(skip)
        self._reset()

    def _reset(self):
        self._sums, self._n, self._t0 = {}, 0, time.time()

    def add(self, metrics: Mapping[str, float]) -> None:
        """Accumulate one step's host metrics (a step whose 'finite' is 0 is not averaged)."""
        if not float(metrics.get("finite", 1.0)):
            return
        for k, v in metrics.items():
            self._sums[k] = self._sums.get(k, 0.0) + float(v)
        self._n += 1

    def flush(self) -> dict:
        """{name: mean, ..., 'steps_per_s'} since the last flush ({} when no finite step), and
        start again."""
        out = {}
        if self._n:
            out = {k: v / self._n for k, v in self._sums.items() if k not in self._skip}
            out["steps_per_s"] = self._n / max(time.time() - self._t0, 1e-9)
        self._reset()
        return out


def progress_bar(total: int, initial: int = 0, *, enabled: bool = True, desc: str = "train"):
    """A tqdm bar over steps, or None when disabled (other processes, tests)."""
    if not enabled:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True)


def console(message: str, pbar=None, *, enabled: bool = True) -> None:
    """A line for the person watching: above the progress bar when there is one."""
    if not enabled:
        return
    if pbar is not None:
        pbar.write(message)
    else:
        print(message, flush=True)


def write_loss_curves(metrics_path: str, out_path: str) -> Optional[str]:
    """The loss-curve figure of a run's metrics.jsonl; a figure is a convenience, so a failure is
    printed, not raised. Returns the path written or None."""
    try:
        figures.loss_curves(metrics_path, out_path)
        return out_path
    except (ImportError, ValueError, KeyError) as e:
        print(f"loss curves not written: {e}")
        return None


def scalar_summary(summary: Mapping) -> dict:
    """The numbers of an evaluation summary, flat: metrics (mm), count and any other scalars."""
    flat = dict(summary.get("metrics") or {})
    flat.update({k: v for k, v in summary.items() if k != "metrics"})
    return {k: float(v) for k, v in flat.items()
            if isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool)}
