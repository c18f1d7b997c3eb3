"""Experiment wiring: the config sections both systems share, turned into the objects a job runs
on — the body model, dataset entries and built sources, the input pipeline, evaluation iterators,
the evaluation protocol, and one evaluation pass over a split with a sharded predictor.

Config sections read here (see `imphmr_jax.config.default_config` for every field's source):
`body`, `data` (data_dir, train, mixture, train_split, img_res, augmentation, synthetic) and
`eval` (datasets, protocol, batch_size, gendered_gt). Method-specific wiring (the model, its
losses) stays in each method's train module.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Callable, Mapping, Optional

import jax
import numpy as np

import smpl_jax
from imphmr_jax import evaluation
from imphmr_jax.cli import ConfigError, InputError, expand_path
from imphmr_jax.data import augment, builders, pipeline, pose_sampler
from imphmr_jax.training import sharding as sharding_lib
from imphmr_jax.training import startup

# Builder names -> the dataset names of SPIN's / PARE's mixtures (`data.pipeline.MIXTURES`).
MIXTURE_NAMES = {"mpi_inf_3dhp": "mpi-inf-3dhp", "mpii_eft": "mpii", "lspet_eft": "lspet",
                 "coco_eft": "coco", "lsp_orig": "lsp-orig"}
# Dataset names whose evaluation protocol has another name.
_PROTOCOL_ALIASES = {"synthetic_humans": "synthetic", "h36m": "h36m_p1"}


# ------------------------------------------------------------------------------------ datasets
@dataclasses.dataclass(frozen=True)
class DatasetEntry:
    """One dataset of `data.train` or `eval.datasets`: a built TFDS dataset's split."""
    name: str
    split: str
    builder_config: Optional[str] = None
    weight: float = 1.0


def train_entries(config) -> list[DatasetEntry]:
    """`data.train` ({name: {weight, builder_config}}) as entries of split `data.train_split`."""
    return [DatasetEntry(name, config.data.train_split, e.get("builder_config"),
                         float(e.get("weight", 1.0)))
            for name, e in config.data.train.items()]


def eval_entries(config) -> list[DatasetEntry]:
    """`eval.datasets` ({name: {split, builder_config}}) as entries."""
    return [DatasetEntry(name, e.get("split") or "test", e.get("builder_config"))
            for name, e in config.eval.datasets.items()]


def parse_dataset(spec: str) -> DatasetEntry:
    """A command-line dataset 'NAME[/builder_config][:split]' (split defaults to 'test')."""
    name, _, split = spec.strip().partition(":")
    name, _, builder_config = name.partition("/")
    if not name.strip():
        raise InputError(f"dataset must be NAME[/builder_config][:split], got {spec!r}")
    return DatasetEntry(name.strip(), split.strip() or "test", builder_config.strip() or None)


def data_dir(config) -> str:
    """`data.data_dir` with `~` and $VARS expanded."""
    return expand_path(config.data.data_dir)


def synthetic_options(config) -> dict:
    """`SyntheticConfig` fields from `data.synthetic` (None = keep SyntheticConfig's default);
    pose-family weights as ((family, weight), ...) in `pose_sampler.FAMILIES` order."""
    s = config.data.synthetic
    out = {k: float(s[k]) for k in ("background_clutter", "occluder_prob", "truncation_prob",
                                     "facing_prob") if s.get(k) is not None}
    if s.get("seed") is not None:
        out["seed"] = int(s.seed)
    if s.get("pose_weights") is not None:
        weights = dict(s.pose_weights)
        unknown = sorted(set(weights) - set(pose_sampler.FAMILIES))
        if unknown:
            raise ConfigError(f"data.synthetic.pose_weights has unknown families {unknown}; "
                             f"known: {list(pose_sampler.FAMILIES)}")
        out["pose_weights"] = tuple((f, float(weights[f])) for f in pose_sampler.FAMILIES
                                    if f in weights)
    return out


def open_source(config, entry: DatasetEntry, *, build_if_missing: bool = True):
    """A built dataset split (random access). The synthetic default is built on first use from
    `data.synthetic`; an existing build is reused only when it was made with those options (else
    `builders.build` raises, naming both sets)."""
    if build_if_missing and entry.name == "synthetic_humans":
        s = config.data.synthetic
        if jax.process_index() == 0:
            builders.build(entry.name, data_dir(config), config=entry.builder_config,
                           num_train=s.num_train, num_test=s.num_test, image_size=s.image_size,
                           body=s.body, synthetic_options=synthetic_options(config))
        startup.barrier("synthetic_build")
    return builders.load_source(entry.name, entry.split, data_dir(config),
                                config=entry.builder_config)


def train_sources(config):
    """(sources, weights) of `data.train`; with `data.mixture` ('spin' | 'pare') the weights come
    from the named mixture and the built datasets' sizes."""
    entries = train_entries(config)
    sources = [open_source(config, e) for e in entries]
    if config.data.mixture:
        names = [MIXTURE_NAMES.get(e.name, e.name) for e in entries]
        resolved = pipeline.mixture_weights(config.data.mixture,
                                            {n: len(s) for n, s in zip(names, sources)})
        return sources, [resolved[n] for n in names]
    return sources, [e.weight for e in entries]


# ------------------------------------------------------------------------------------ pipeline
def pipeline_config(config, *, batch_size: Optional[int] = None) -> pipeline.PipelineConfig:
    """The input pipeline of `data` (augmentation only when `data.augment`)."""
    d = config.data
    if d.augment:
        aug = augment.AugmentConfig(flip_prob=d.flip_prob, noise_factor=d.noise_factor,
                                    rot_factor=d.rot_factor, rot_zero_prob=d.rot_zero_prob,
                                    scale_factor=d.scale_factor, occlusion_prob=d.occlusion_prob,
                                    motion_blur_prob=d.motion_blur_prob)
    else:
        aug = augment.AugmentConfig(flip_prob=0.0, noise_factor=0.0, rot_factor=0.0,
                                    scale_factor=0.0)
    return pipeline.PipelineConfig(
        img_res=d.img_res, batch_size=batch_size or config.train.batch_size,
        seed=config.train.seed, augment=aug, num_threads=d.num_threads)


def make_train_iterator(config, sources, weights):
    """This process's rows of the mixed, augmented global training batches (resumable state)."""
    return pipeline.make_train_iterator(sources, weights, pipeline_config(config),
                                        process_index=jax.process_index(),
                                        process_count=jax.process_count())


class Subset:
    """The first `n` records of a source."""

    def __init__(self, source, n: int):
        self.source, self.n = source, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.source[i]


def eval_iterator(config, source, *, max_examples: Optional[int] = None,
                  batch_size: Optional[int] = None):
    """The first `max_examples` (None or 0 = all) records of `source` in order, unaugmented, in
    padded batches with `valid`/`index`. Every process reads every row (evaluation is
    replicated)."""
    if max_examples and max_examples < len(source):
        source = Subset(source, max_examples)
    return pipeline.make_eval_iterator(
        source, pipeline_config(config, batch_size=batch_size or config.eval.batch_size),
        process_index=0, process_count=1)


# ------------------------------------------------------------------------------------ evaluation
def load_body(config, which: str = "model"):
    """The body model named by `body.<which>` ('model', 'male', 'female') with the configured
    extra regressors."""
    b = config.body
    path = b[which]
    kw = {}
    if b.j_regressor_extra:
        kw["j_regressor_extra"] = os.path.expanduser(b.j_regressor_extra)
    if b.j_regressor_h36m:
        kw["j_regressor_h36m"] = os.path.expanduser(b.j_regressor_h36m)
    return smpl_jax.load(os.path.expanduser(path) if os.sep in path else path, **kw)


def eval_bodies(config) -> dict:
    """{'neutral': body, ['male', 'female']} for evaluation."""
    bodies = {"neutral": load_body(config)}
    for g in ("male", "female"):
        if config.body.get(g):
            bodies[g] = load_body(config, g)
    return bodies


def protocol_name(config, dataset: str) -> str:
    """`eval.protocol` when set, else the dataset's own protocol."""
    if config.eval.protocol:
        if config.eval.protocol not in evaluation.PROTOCOLS:
            raise ConfigError(f"eval.protocol {config.eval.protocol!r} is not a protocol; known: "
                              f"{sorted(evaluation.PROTOCOLS)}")
        return config.eval.protocol
    proto = _PROTOCOL_ALIASES.get(dataset, dataset)
    if proto not in evaluation.PROTOCOLS:
        raise ConfigError(f"no evaluation protocol for dataset {dataset!r}; known: "
                         f"{sorted(evaluation.PROTOCOLS)} (set eval.protocol)")
    return proto


def evaluate_split(config, predict: Callable, variables: Any, source, protocol: str,
                   bodies: Mapping, mesh, *, out_dir: Optional[str] = None,
                   max_examples: Optional[int] = None, max_figures: int = 0,
                   progress: bool = False) -> dict:
    """One split through `evaluation.run_evaluation` with `predict(variables, images)` (a jitted,
    data-parallel forward returning {'rotmat', 'betas', 'cam'}); returns its summary.

    Every process reads the whole of each evaluation batch, contributes its rows to the sharded
    forward pass and receives all predictions back (replicated), so every process computes the
    same summary; only process 0 writes files.
    """
    n_dev = mesh.devices.size
    batch_size = int(math.ceil(config.eval.batch_size / n_dev) * n_dev)
    it = eval_iterator(config, source, max_examples=max_examples, batch_size=batch_size)
    p, n_proc = jax.process_index(), jax.process_count()

    def predict_fn(images):
        rows = images.shape[0] // n_proc
        local = np.asarray(images[p * rows:(p + 1) * rows])
        g = sharding_lib.global_batch({"image": local}, mesh, ("image",))["image"]
        return jax.device_get(predict(variables, g))

    return evaluation.run_evaluation(predict_fn, it, evaluation.PROTOCOLS[protocol], bodies,
                                     out_dir if p == 0 else None, max_figures=max_figures,
                                     gendered_gt=config.eval.gendered_gt,
                                     progress=progress and p == 0)
