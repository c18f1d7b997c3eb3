"""Loss and gradient-norm spikes: steps whose value jumps by orders of magnitude over its recent
level. Gradient clipping keeps such a step from wrecking the parameters, and a finite spike is not
a non-finite step, so without this a blow-up (a loss of 1e10 for a few dozen steps) passes
unreported; here every such step is counted and logged (host side, after the step: no effect on
the computation)."""
from __future__ import annotations

import collections
import math
from typing import Mapping, Sequence


class SpikeMonitor:
    """Flags a step when a watched metric exceeds `factor` × the median of its last `window`
    non-spike values (after `warmup` values have been seen).

    A spike is not added to the history, so a sustained blow-up keeps being reported instead of
    becoming the new normal. `factor` <= 0 turns the monitor off.
    """

    def __init__(self, keys: Sequence[str] = ("loss", "grad_norm"), *, factor: float = 100.0,
                 window: int = 50, warmup: int = 20):
        self.keys, self.factor, self.warmup = tuple(keys), float(factor), int(warmup)
        self._history = {k: collections.deque(maxlen=int(window)) for k in self.keys}
        self.total = 0

    def check(self, step: int, metrics: Mapping[str, float]) -> list[str]:
        """Messages for the spikes of this step's host metrics ([] when none); counts them."""
        if self.factor <= 0:
            return []
        found = []
        for k in self.keys:
            if k not in metrics:
                continue
            v = float(metrics[k])
            if not math.isfinite(v):
                continue  # non-finite steps are the state's guard's business
            hist = self._history[k]
            if len(hist) >= self.warmup:
                ref = sorted(hist)[len(hist) // 2]
                if abs(v) > self.factor * max(abs(ref), 1e-12):
                    found.append(f"step {step}: {k} {v:.4g} is {abs(v) / max(abs(ref), 1e-12):.3g}x "
                                 f"its recent median {ref:.4g}")
                    continue
            hist.append(v)
        if found:
            self.total += 1
        return found
