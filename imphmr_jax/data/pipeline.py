"""The grain input pipeline: mixed, shuffled, augmented training batches and padded eval batches.

Sources are random-access record collections (`len(src)`, `src[i] -> record dict` in the
`schema.RECORD_FIELDS` layout): `tfds.data_source(...)` in production, plain lists in tests.
Batches are host-local numpy dicts in `schema`'s "Pipeline batch" layout.

Determinism across hosts. The GLOBAL sample sequence is a pure function of (seed, global sample
position g):
  1. source choice and index: grain's `MapDataset.mix` of per-source index streams, each
     `range(N_s).shuffle(seed_s).repeat()` (a fresh permutation every epoch of that source), then
     shuffled within windows of `PipelineConfig.mix_window` positions so that the deterministic
     interleave of `mix` does not put a source at the same batch rows every time;
  2. per-sample augmentation randomness: `np.random.default_rng([seed, AUG_STREAM, g])`.
Global batch b holds positions [b·B, (b+1)·B); process p of P takes rows [p·B/P, (p+1)·B/P).
Nothing depends on threads, workers or the process count, so the concatenation of all hosts'
batches equals the single-host batch, and restoring a step count restores the exact sequence.
"""
from __future__ import annotations

import dataclasses
import functools
import sys
from typing import Any, Mapping, Optional, Sequence

import grain
import numpy as np

from imphmr_jax.data import augment

STATE_VERSION = 1
_AUG_STREAM = 0x41554721  # separates the augmentation seeds from other uses of `seed`
_WINDOW_STREAM = 0x57494E44


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Input-pipeline settings.

    Fields:
      img_res: crop side in pixels.
      batch_size: GLOBAL batch size (all processes together); divisible by the process count.
      seed: seed of the sample order and of the augmentation (0 <= seed < 2**31).
      augment: SPIN augmentation parameters (used by the train iterator only).
      num_threads: grain reader threads decoding/warping samples (ReadOptions.num_threads).
      prefetch: grain per-thread prefetch buffer, in samples (ReadOptions.prefetch_buffer_size).
      num_workers: > 0 adds grain multiprocessing prefetch with this many worker processes
        (sources and records must then be picklable); 0 = threads only.
      mix_window: window (in global positions) within which the mixed order is shuffled.
    """
    img_res: int = 224
    batch_size: int = 64
    seed: int = 0
    augment: augment.AugmentConfig = augment.AugmentConfig()
    num_threads: int = 2
    prefetch: int = 64
    num_workers: int = 0
    mix_window: int = 4096


# ---------------------------------------------------------------------------------- mixtures
# SPIN (datasets/mixed_dataset.py): 30% H36M, 60% in-the-wild split by size, 10% MPI-INF-3DHP.
# PARE (DATASETS_AND_RATIOS 'h36m_mpii_lspet_coco_mpi-inf-3dhp_0.3_0.6_0.6_0.6_0.1'): the first
# ratio is H36M's share, the last 3DHP's, and the in-the-wild share is 1 - first - last = 0.6,
# split by size among the in-the-wild sets (their listed ratios are not used separately).
MIXTURES: dict[str, dict[str, Any]] = {
    "spin": {"fixed": {"h36m": 0.3, "mpi-inf-3dhp": 0.1},
             "itw": ("lsp-orig", "mpii", "lspet", "coco"), "itw_share": 0.6},
    "pare": {"fixed": {"h36m": 0.3, "mpi-inf-3dhp": 0.1},
             "itw": ("mpii", "lspet", "coco"), "itw_share": 0.6},
}


def mixture_weights(name: str, sizes: Mapping[str, int]) -> dict[str, float]:
    """Resolves a named mixture to per-dataset weights summing to 1.

    Args:
      name: a key of MIXTURES ('spin' or 'pare').
      sizes: dataset name -> number of records, for every dataset of the mixture (the fixed-share
        ones too, so that a missing dataset is noticed).
    Returns:
      name -> weight: the fixed shares as given, and the in-the-wild share divided among the
      in-the-wild datasets in proportion to their sizes.
    """
    if name not in MIXTURES:
        raise KeyError(f"unknown mixture {name!r}; known: {sorted(MIXTURES)}")
    mix = MIXTURES[name]
    needed = list(mix["fixed"]) + list(mix["itw"])
    missing = [n for n in needed if n not in sizes]
    if missing:
        raise KeyError(f"mixture {name!r} needs sizes for {missing}; got {sorted(sizes)}")
    empty = [n for n in needed if int(sizes[n]) <= 0]
    if empty:
        raise ValueError(f"mixture {name!r}: datasets {empty} have no records")
    itw_total = float(sum(int(sizes[n]) for n in mix["itw"]))
    out = dict(mix["fixed"])
    for n in mix["itw"]:
        out[n] = mix["itw_share"] * int(sizes[n]) / itw_total
    return out


# ------------------------------------------------------------------------------ global plan
class _WithSource:
    """Picklable map: record index -> (source id, record index)."""

    def __init__(self, source_id: int):
        self.source_id = source_id

    def __call__(self, index):
        return self.source_id, int(index)


class GlobalPlan:
    """Global position g -> (source id, record index, augmentation seed); pure in (seed, g)."""

    def __init__(self, sizes: Sequence[int], weights: Sequence[float], seed: int, window: int):
        self.sizes = [int(n) for n in sizes]
        self.weights = [float(w) for w in weights]
        self.seed = int(seed)
        self.window = int(window)
        streams = [grain.MapDataset.range(n).shuffle(seed=(self.seed * 7919 + 104729 * s) % 2**32)
                   .repeat().map(_WithSource(s)) for s, n in enumerate(self.sizes)]
        self._mixed = (grain.MapDataset.mix(streams, self.weights) if len(streams) > 1
                       else streams[0])

    @functools.lru_cache(maxsize=8)
    def _window_perm(self, w: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, _WINDOW_STREAM, w])
        return rng.permutation(self.window)

    def __getitem__(self, g: int) -> tuple[int, int, int]:
        w, o = divmod(int(g), self.window)
        src, idx = self._mixed[w * self.window + int(self._window_perm(w)[o])]
        return int(src), int(idx), int(g)


def _aug_rng(seed: int, g: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), _AUG_STREAM, int(g)])


def _split(batch_size: int, process_index: Optional[int], process_count: Optional[int]):
    if (process_index is None) != (process_count is None):
        raise ValueError("pass both process_index and process_count, or neither")
    if process_count is None:
        import jax  # only to ask for the process layout
        process_index, process_count = jax.process_index(), jax.process_count()
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"bad process_index={process_index} for process_count={process_count}")
    if batch_size % process_count:
        raise ValueError(f"global batch_size {batch_size} is not divisible by the process count "
                         f"{process_count}")
    return process_index, process_count, batch_size // process_count


def _ensure_absl_flags_parsed():
    from absl import flags
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()  # defaults; an absl app will have parsed them already


class _TrainSample:
    """Picklable map: host-local sample position -> processed sample (batch layout)."""

    def __init__(self, sources, plan: GlobalPlan, config: PipelineConfig, process_index: int,
                 local_batch: int):
        self.sources, self.plan, self.config = sources, plan, config
        self.process_index, self.local_batch = process_index, local_batch

    def global_position(self, i: int) -> int:
        step, row = divmod(int(i), self.local_batch)
        return step * self.config.batch_size + self.process_index * self.local_batch + row

    def __call__(self, i):
        src, idx, g = self.plan[self.global_position(i)]
        try:
            sample = augment.process_record(self.sources[src][idx], self.config.augment,
                                            _aug_rng(self.config.seed, g), train=True,
                                            res=self.config.img_res)
        except Exception as e:
            raise type(e)(f"source {src} record {idx}: {e}") from e
        sample["dataset"] = np.int32(src)
        return sample


class TrainIterator:
    """Infinite iterator over host-local training batches with a small JSON state.

    `get_state()` -> {'version', 'step', 'seed', 'batch_size', 'sizes', 'weights'}; `set_state`
    restarts the grain pipeline at that step, so the continuation is the exact same sequence
    (the other keys are checked against this iterator's configuration).
    """

    def __init__(self, sources, weights, config: PipelineConfig, process_index: int,
                 process_count: int, local_batch: int):
        self._sources = list(sources)
        self._config = config
        self._weights = [float(w) for w in weights]
        self._process_index, self._process_count = process_index, process_count
        self._local_batch = local_batch
        self._plan = GlobalPlan([len(s) for s in self._sources], self._weights, config.seed,
                                config.mix_window)
        self._step = 0
        self._it = None

    def _build(self):
        cfg = self._config
        start = self._step * self._local_batch
        ds = grain.MapDataset.range(start, sys.maxsize).map(
            _TrainSample(self._sources, self._plan, cfg, self._process_index, self._local_batch))
        it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=cfg.num_threads,
                                                     prefetch_buffer_size=cfg.prefetch))
        if cfg.num_workers > 0:
            _ensure_absl_flags_parsed()  # grain's worker processes read absl flags
            it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.num_workers))
        return iter(it_ds.batch(self._local_batch, drop_remainder=True))

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self._it is None:
            self._it = self._build()
        batch = next(self._it)
        self._step += 1
        return batch

    def close(self) -> None:
        """Stops grain's reader threads/processes (also done when the iterator is collected)."""
        it, self._it = self._it, None
        if it is not None and hasattr(it, "close"):
            it.close()

    def get_state(self) -> dict:
        return {"version": STATE_VERSION, "step": self._step, "seed": self._config.seed,
                "batch_size": self._config.batch_size,
                "sizes": [len(s) for s in self._sources], "weights": list(self._weights)}

    def set_state(self, state: Mapping[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"pipeline state version {state.get('version')!r} != {STATE_VERSION}")
        mine = self.get_state()
        for key in ("seed", "batch_size", "sizes"):
            if list(np.atleast_1d(state[key])) != list(np.atleast_1d(mine[key])):
                raise ValueError(f"pipeline state {key}={state[key]!r} does not match this "
                                 f"iterator's {mine[key]!r}")
        if not np.allclose(state["weights"], mine["weights"]):
            raise ValueError(f"pipeline state weights={state['weights']!r} do not match "
                             f"{mine['weights']!r}")
        step = int(state["step"])
        if step < 0:
            raise ValueError(f"pipeline state step must be >= 0, got {step}")
        self.close()
        self._step = step


def make_train_iterator(sources: Sequence, weights: Sequence[float], config: PipelineConfig, *,
                        process_index: Optional[int] = None,
                        process_count: Optional[int] = None) -> TrainIterator:
    """Infinite host-local training batches mixing `sources` by `weights` (normalised here).

    `sources` is a sequence of random-access sources with a matching sequence of weights, or a
    dict name -> source with a dict name -> weight (e.g. from `mixture_weights`); then `dataset`
    indexes the dict's key order.

    Batch dict: schema's "Pipeline batch" layout with B = batch_size / process_count rows, plus
    `dataset` (B,) i32 = index of the source in `sources`. process_index/count default to JAX's.
    """
    if isinstance(sources, Mapping):  # {name: source} with {name: weight}, e.g. mixture_weights
        if not isinstance(weights, Mapping) or set(weights) != set(sources):
            raise ValueError(f"with named sources {sorted(sources)} pass weights for exactly those "
                             f"names, got {sorted(weights) if isinstance(weights, Mapping) else weights}")
        names = list(sources)
        sources, weights = [sources[n] for n in names], [weights[n] for n in names]
    sources = list(sources)
    if not sources:
        raise ValueError("make_train_iterator needs at least one source")
    if len(weights) != len(sources):
        raise ValueError(f"{len(sources)} sources but {len(weights)} weights")
    w = np.asarray(weights, np.float64)
    if not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise ValueError(f"mixture weights must be finite and > 0, got {list(weights)}")
    for s, src in enumerate(sources):
        if len(src) == 0:
            raise ValueError(f"source {s} is empty")
    if not 0 <= config.seed < 2**31:
        raise ValueError(f"seed must be in [0, 2**31), got {config.seed}")
    p, n, local = _split(config.batch_size, process_index, process_count)
    return TrainIterator(sources, list(w / w.sum()), config, p, n, local)


# ------------------------------------------------------------------------------------- eval
class _EvalSample:
    """Picklable map: host-local position -> processed, unaugmented sample with valid/index."""

    def __init__(self, source, config: PipelineConfig, process_index: int, local_batch: int):
        self.source, self.config = source, config
        self.process_index, self.local_batch = process_index, local_batch
        self.size = len(source)

    def __call__(self, i):
        step, row = divmod(int(i), self.local_batch)
        g = step * self.config.batch_size + self.process_index * self.local_batch + row
        valid = g < self.size
        idx = g if valid else g % self.size  # padding rows repeat real records, valid = 0
        try:
            sample = augment.process_record(self.source[idx], train=False, res=self.config.img_res)
        except Exception as e:
            raise type(e)(f"eval record {idx}: {e}") from e
        sample["dataset"] = np.int32(0)
        sample["valid"] = np.float32(valid)
        sample["index"] = np.int32(g if valid else -1)
        return sample


class EvalIterable:
    """One in-order pass: len() global batches; each host batch has `valid` (B,) f32 and `index`
    (B,) i32 (the record index, -1 on padding rows, which repeat real records with valid = 0)."""

    def __init__(self, source, config: PipelineConfig, process_index: int, local_batch: int):
        self._source, self._config = source, config
        self._process_index, self._local_batch = process_index, local_batch
        self.num_batches = -(-len(source) // config.batch_size)

    def __len__(self):
        return self.num_batches

    def __iter__(self):
        cfg = self._config
        ds = grain.MapDataset.range(self.num_batches * self._local_batch).map(
            _EvalSample(self._source, cfg, self._process_index, self._local_batch))
        it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=cfg.num_threads,
                                                     prefetch_buffer_size=cfg.prefetch))
        return iter(it_ds.batch(self._local_batch, drop_remainder=True))


def make_eval_iterator(source, config: PipelineConfig, *, process_index: Optional[int] = None,
                       process_count: Optional[int] = None) -> EvalIterable:
    """A finite, in-order, unaugmented pass over `source` in host-local batches of
    batch_size / process_count rows; the last global batch is padded (see EvalIterable)."""
    if len(source) == 0:
        raise ValueError("make_eval_iterator: the source is empty")
    p, _, local = _split(config.batch_size, process_index, process_count)
    return EvalIterable(source, config, p, local)
