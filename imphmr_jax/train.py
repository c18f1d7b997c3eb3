"""Training ImpHMR: `python -m imphmr_jax.train --config configs/imphmr/<name>.py --workdir DIR`.

The readable spine:

    create_train_state(config, model, mesh, ...)   parameters initialised straight into their sharding
    make_train_step(...)  -> train_step(state, batch) -> (state, metrics)    one jitted, donated step
    make_predict_fn(...)  -> predict(state, images) -> view-0 outputs       evaluation forward
    train_and_evaluate(config, workdir)             data, loop, logging, checkpoints, evaluation

Parallelism: one `jax.jit` over a 1-D device mesh with axis 'data' (all devices of all processes):
the global batch is sharded along 'data', the state is replicated, and XLA inserts the gradient
and BatchNorm-statistics all-reduces, so any device count computes the same step as one device
(up to float summation order). Several processes: `jax.distributed.initialize()` runs first (when
the usual environment variables, or `--coordinator/--num_processes/--process_id`, say so); each
process reads its own rows of every global batch (`data.pipeline`), and the global array is
assembled with `jax.make_array_from_process_local_data`.

Randomness: every random draw of step s comes from fold_in(key(seed), s): the views φ, dropout,
ray jitter and density noise; the data pipeline's order and augmentation depend on the seed and
the global sample position only. A run killed at any moment resumes from its last checkpoint
(state + data-iterator position) and ends with the same parameters as an uninterrupted run.

Non-finite steps: a step whose loss or gradients are not finite leaves the state unchanged (the
parameter update, BatchNorm statistics and optimizer moments are all skipped) and is counted; after
`train.nan_max_consecutive` such steps in a row training stops with `NonFiniteError`.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from typing import Any, Callable, Mapping, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

import smpl_jax
from imphmr_jax import checkpoint as ckpt_lib
from imphmr_jax import losses
from imphmr_jax.geometry.views import ViewCameraConfig
from imphmr_jax.models.imphmr import BackboneConfig, ImpHMR

TRAIN_KEYS = ("image", "keypoints_2d", "joints_3d", "pose", "betas", "has_smpl", "has_pose_3d")


class NonFiniteError(RuntimeError):
    """Raised when too many consecutive training steps had a non-finite loss or gradient."""


# ------------------------------------------------------------------------------------- state
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


# ------------------------------------------------------------------------------------- model
def build_model(config: ml_collections.ConfigDict) -> ImpHMR:
    m = config.model
    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}.get(m.dtype)
    if dtype is None:
        raise ValueError(f"model.dtype must be 'float32' or 'bfloat16', got {m.dtype!r}")
    mean_params = None
    if m.mean_params:
        from imphmr_jax.models.regressor import load_mean_params
        mean_params = load_mean_params(os.path.expanduser(m.mean_params))
    camera = ViewCameraConfig(radius=m.camera_radius, fov_deg=m.camera_fov, near=m.camera_near,
                              far=m.camera_far, num_samples=m.num_samples)
    return ImpHMR(variant=m.variant,
                  backbone=BackboneConfig(depth=m.backbone_depth, width=m.backbone_width),
                  feature_size=m.feature_size, field_hidden=m.field_hidden,
                  point_octaves=m.point_octaves, dir_octaves=m.dir_octaves, map_size=m.map_size,
                  camera=camera, density_noise=m.density_noise,
                  density_bias_init=m.density_bias_init, z_pooling=m.z_pooling,
                  mean_params=mean_params, regressor_iterations=m.regressor_iterations,
                  dropout=m.dropout, regressor_hidden=m.regressor_hidden,
                  use_decoder=m.use_decoder, decoder_channels=tuple(m.decoder_channels),
                  ptn_hidden=m.ptn_hidden, dtype=dtype)


def load_body(config: ml_collections.ConfigDict, which: str = "model"):
    """The body model named by `config.body.<which>` with the configured extra regressors."""
    b = config.body
    path = getattr(b, which)
    kw = {}
    if b.j_regressor_extra:
        kw["j_regressor_extra"] = os.path.expanduser(b.j_regressor_extra)
    if b.j_regressor_h36m:
        kw["j_regressor_h36m"] = os.path.expanduser(b.j_regressor_h36m)
    return smpl_jax.load(os.path.expanduser(path) if os.sep in path else path, **kw)


def loss_weights(config) -> losses.LossWeights:
    lw = config.loss
    return losses.LossWeights(lambda_2d=lw.lambda_2d, lambda_3d=lw.lambda_3d,
                              lambda_pose=lw.lambda_pose, lambda_shape=lw.lambda_shape,
                              lambda_silh=lw.lambda_silh, lambda_cam=lw.lambda_cam,
                              use_cam_prior=lw.use_cam_prior)


# ------------------------------------------------------------------------------------- mesh
def make_mesh(devices=None) -> jax.sharding.Mesh:
    """1-D data-parallel mesh over all devices (of all processes) with axis 'data'."""
    devices = jax.devices() if devices is None else list(devices)
    return jax.sharding.Mesh(np.asarray(devices), ("data",),
                             axis_types=(jax.sharding.AxisType.Auto,))


def batch_sharding(mesh) -> NamedSharding:
    return NamedSharding(mesh, P("data"))


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def global_batch(local: Mapping[str, np.ndarray], mesh, keys=TRAIN_KEYS) -> dict:
    """Host-local numpy rows -> global jax arrays sharded over 'data' (every process calls this)."""
    sharding = batch_sharding(mesh)
    missing = [k for k in keys if k not in local]
    if missing:
        raise KeyError(f"batch is missing {missing}; it has {sorted(local)}")
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(local[k]))
            for k in keys}


# ------------------------------------------------------------------------------------- optimizer
def make_optimizer(config) -> optax.GradientTransformation:
    t = config.train
    if t.schedule == "constant":
        lr = optax.constant_schedule(t.learning_rate)
        if t.warmup_steps:
            lr = optax.linear_schedule(0.0, t.learning_rate, t.warmup_steps)
            lr = optax.join_schedules([lr, optax.constant_schedule(t.learning_rate)],
                                      [t.warmup_steps])
    elif t.schedule == "cosine":
        lr = optax.cosine_decay_schedule(t.learning_rate, max(t.num_steps, 1))
    elif t.schedule == "warmup_cosine":
        lr = optax.warmup_cosine_decay_schedule(0.0, t.learning_rate, max(t.warmup_steps, 1),
                                                max(t.num_steps, t.warmup_steps + 1))
    else:
        raise ValueError(f"train.schedule must be constant | cosine | warmup_cosine, "
                         f"got {t.schedule!r}")
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


# ------------------------------------------------------------------------------------- init
def _init_variables(model, rng, image_shape, num_views):
    b, h, w, _ = image_shape
    images = jnp.zeros((b, h, w, 3), jnp.float32)
    phis = jnp.zeros((b, num_views), jnp.float32)
    k1, k2, k3, k4 = jax.random.split(rng, 4)
    return model.init({"params": k1, "dropout": k2, "sampling": k3, "density_noise": k4},
                      images, phis, train=False)


def create_train_state(config, model, mesh, tx, *, img_res: Optional[int] = None,
                       init_batch: int = 2):
    """Parameters, BatchNorm statistics and optimizer state, created by a jit whose outputs are
    placed straight into their (replicated) sharding; no host copy of the parameters is made."""
    img_res = img_res or config.data.img_res
    seed = int(config.train.seed)

    def init():
        rng = jax.random.PRNGKey(seed)
        # Parameters are drawn with the 'rbg' generator: the same values as threefry would not
        # matter, and its init graph compiles ~10x faster on CPU. Step randomness stays threefry
        # (partitionable: the same numbers whatever the sharding).
        init_key = jax.random.key(seed, impl="rbg")
        variables = _init_variables(model, init_key,
                                    (init_batch, img_res, img_res, 3), config.train.num_views)
        params = variables["params"]
        stats = variables.get("batch_stats", {})
        ema = _ema_start(params, stats) if config.train.ema_decay > 0 else None
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=stats,
                          opt_state=tx.init(params), rng=jax.random.fold_in(rng, 2),
                          nonfinite_total=jnp.zeros((), jnp.int32),
                          nonfinite_streak=jnp.zeros((), jnp.int32), ema=ema)

    abstract = jax.eval_shape(init)
    shardings = jax.tree.map(lambda _: replicated(mesh), abstract)
    state = jax.jit(init, out_shardings=shardings)()
    if config.train.init:
        state = initialize_from(state, config.train.init, mesh, tx)
    return state, shardings


def _merge(dst, src, path=""):
    """Copy src's leaves into dst where dst has them; shape mismatches are errors."""
    if isinstance(src, Mapping):
        if not isinstance(dst, Mapping):
            raise ValueError(f"weights have a subtree at '{path}' where the model has a leaf")
        out = dict(dst)
        for k, v in src.items():
            if k not in dst:
                raise ValueError(f"weights have '{path}/{k}', which the model does not have")
            out[k] = _merge(dst[k], v, f"{path}/{k}")
        return out
    src = np.asarray(src)
    if tuple(src.shape) != tuple(dst.shape):
        raise ValueError(f"shape mismatch at '{path}': weights {src.shape}, model {dst.shape}")
    return jnp.asarray(src, dst.dtype)


def initialize_from(state: TrainState, spec: str, mesh, tx) -> TrainState:
    """Load initial weights: 'imagenet:FILE.npz' (a converted torchvision ResNet: backbone only),
    'spin:FILE.npz' (converted SPIN: backbone + regressor), or 'checkpoint:DIR' (another run's
    latest parameters). The optimizer state is re-initialised for the merged parameters."""
    kind, _, path = spec.partition(":")
    path = os.path.expanduser(path)
    params = flax.core.unfreeze(jax.device_get(state.params))
    stats = flax.core.unfreeze(jax.device_get(state.batch_stats))
    if kind in ("imagenet", "spin"):
        from imphmr_jax.convert import load_npz
        tree = load_npz(path)
        backbone = tree["backbone"] if kind == "spin" else tree
        params["backbone"] = _merge(params["backbone"], backbone["params"], "params/backbone")
        stats["backbone"] = _merge(stats["backbone"], backbone.get("batch_stats", {}),
                                   "batch_stats/backbone")
        if kind == "spin":
            params["regressor"] = _merge(params["regressor"], tree["regressor"]["params"],
                                         "params/regressor")
    elif kind == "checkpoint":
        restored = ckpt_lib.load_variables(path)
        params = _merge(params, restored["params"], "params")
        stats = _merge(stats, restored["batch_stats"], "batch_stats")
    else:
        raise ValueError(f"train.init must be 'imagenet:FILE', 'spin:FILE' or 'checkpoint:DIR', "
                         f"got {spec!r}")
    rep = replicated(mesh)
    params = jax.device_put(params, rep)
    stats = jax.device_put(stats, rep)
    opt_state = jax.jit(tx.init, out_shardings=rep)(params)
    ema = state.ema
    if ema is not None:  # the average starts again from the loaded weights
        ema = jax.jit(_ema_start, out_shardings=rep)(params, stats)
    return state.replace(params=params, batch_stats=stats, opt_state=opt_state, ema=ema)


# ------------------------------------------------------------------------------------- steps
def _ema_start(params, batch_stats):
    """The moving average's first value: a copy (own buffers; the state is donated) of both."""
    return jax.tree.map(jnp.copy, {"params": params, "batch_stats": batch_stats})


def ema_decay_at(step, decay: float):
    """The moving average's decay after `step` updates: min(decay, (1 + step) / (10 + step)), so
    that early averages are not dominated by the initial weights."""
    step = jnp.asarray(step, jnp.float32)
    return jnp.minimum(jnp.float32(decay), (1.0 + step) / (10.0 + step))


def ema_update(ema, new, step, decay: float):
    """One step of the exponential moving average: d·ema + (1 - d)·new, d = ema_decay_at(step)."""
    d = ema_decay_at(step, decay)
    return jax.tree.map(lambda a, b: (d * a + (1.0 - d) * b).astype(a.dtype), ema, new)


def silhouette_tile_budget(body, batch, config, num_probe_views: int = 8) -> int:
    """The GT-silhouette rasterizer's static tile budget from a concrete batch (outside jit):
    the largest `required_tiles` over evenly spaced views φ, times `train.silhouette_headroom`."""
    size = silhouette_size(config)
    pose, betas = jnp.asarray(batch["pose"]), jnp.asarray(batch["betas"])
    kp = {k: jnp.asarray(batch[k]) for k in ("pose", "betas", "keypoints_2d")}
    cam_t = losses.gt_camera_translation(kp, body)
    need = 1
    for phi in np.linspace(0, 2 * np.pi, num_probe_views, endpoint=False):
        phis = jnp.full((pose.shape[0],), phi, jnp.float32)
        need = max(need, losses.gt_silhouette_tiles(body, pose, betas, cam_t, phis, size))
    return int(math.ceil(need * config.train.silhouette_headroom / 64.0) * 64)


def silhouette_size(config) -> int:
    return int(config.train.silhouette_size or 32 * config.model.map_size)


def _uses_views(config) -> bool:
    return config.model.variant != "baseline"


def make_train_step(config, model, tx, mesh, state_shardings, *, silhouette_tiles: int = 0):
    """The jitted step: (state, batch, body) -> (state, metrics); state donated.

    silhouette_tiles: static tile budget for GT silhouettes (0 = no silhouette term).
    """
    weights = loss_weights(config)
    num_views = int(config.train.num_views) if _uses_views(config) else 1
    use_silhouettes = (_uses_views(config) and config.model.use_decoder and silhouette_tiles > 0)
    sil_size = silhouette_size(config)
    stop_target = bool(config.train.stop_gradient_target)
    if _uses_views(config) and num_views < 2:
        raise ValueError(f"train.num_views must be >= 2 for variant {config.model.variant!r}")

    def step_fn(state: TrainState, batch, body):
        rng = jax.random.fold_in(state.rng, state.step)
        k_phi, k_drop, k_samp, k_noise = jax.random.split(rng, 4)
        b = batch["image"].shape[0]
        if num_views > 1:
            phis = jax.random.uniform(k_phi, (b, num_views - 1), jnp.float32, 0.0, 2 * jnp.pi)
            phis = jnp.concatenate([jnp.zeros((b, 1), jnp.float32), phis], axis=1)
        else:
            phis = jnp.zeros((b, 1), jnp.float32)
        extra = {}
        if use_silhouettes:
            cam_t = losses.gt_camera_translation(batch, body)
            sil, overflow = losses.gt_silhouettes(body, batch["pose"], batch["betas"], cam_t,
                                                  phis[:, 1], sil_size,
                                                  max_tiles=silhouette_tiles, return_overflow=True)
            extra["silhouette_overflow"] = jnp.sum(overflow)
        else:
            sil = None

        def loss_fn(params):
            # D decodes the imagination view φ1 only: its silhouette is the only one a loss
            # reads (decoding all views would triple D's cost for nothing but BN statistics).
            outputs, new_vars = model.apply(
                {"params": params, "batch_stats": state.batch_stats}, batch["image"], phis,
                train=True, mutable=["batch_stats"],
                rngs={"dropout": k_drop, "sampling": k_samp, "density_noise": k_noise},
                **({"silhouette_views": (1,)} if num_views > 1 else {}))
            if num_views > 1:
                loss, terms = losses.total_loss(outputs, batch, phis, body, weights,
                                                gt_silhouette=sil,
                                                stop_gradient_target=stop_target)
            else:
                loss, terms = losses.L_reg(losses.view(outputs, 0), batch, body, weights)
                terms = dict(terms, L_reg=loss, L_all=loss)
            return loss, (terms, new_vars["batch_stats"])

        (loss, (terms, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params)
        updates, new_opt = tx.update(grads, state.opt_state, state.params)
        new_params = optax.apply_updates(state.params, updates)
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        keep = lambda new, old: jax.tree.map(lambda a, b_: jnp.where(finite, a, b_), new, old)
        streak = jnp.where(finite, 0, state.nonfinite_streak + 1).astype(jnp.int32)
        ema = state.ema
        if ema is not None:
            ema = keep(ema_update(ema, {"params": new_params, "batch_stats": new_stats},
                                  state.step, config.train.ema_decay), ema)
        new_state = state.replace(
            step=state.step + 1,
            params=keep(new_params, state.params),
            batch_stats=keep(new_stats, state.batch_stats),
            opt_state=keep(new_opt, state.opt_state),
            nonfinite_total=state.nonfinite_total + (~finite).astype(jnp.int32),
            nonfinite_streak=streak, ema=ema)
        metrics = dict(terms, loss=loss, grad_norm=grad_norm, finite=finite.astype(jnp.float32),
                       nonfinite_streak=streak, **extra)
        return new_state, metrics

    rep = replicated(mesh)
    data = batch_sharding(mesh)
    batch_sh = {k: data for k in TRAIN_KEYS}
    return jax.jit(step_fn, in_shardings=(state_shardings, batch_sh, rep),
                   out_shardings=(state_shardings, rep), donate_argnums=(0,))


def make_predict_fn(model, mesh, state_shardings=None):
    """(variables, images) -> view-0 predictions dict(rotmat, betas, cam): the evaluation forward
    (train=False, φ = 0), data-parallel over the mesh; the outputs are replicated (every process
    gets every row)."""
    data = batch_sharding(mesh)

    def predict(variables, images):
        out = model.apply(variables, images, None, train=False)
        return {k: out[k][:, 0] for k in ("rotmat", "betas", "cam")}

    return jax.jit(predict, in_shardings=(replicated(mesh), data),
                   out_shardings=replicated(mesh))


def make_view_predict_fn(model):
    """(variables, images (B,H,W,3), phis (B,V)) -> all outputs incl. silhouettes (figures)."""
    def predict(variables, images, phis):
        return model.apply(variables, images, phis, train=False, return_silhouette=True)
    return jax.jit(predict)


# ------------------------------------------------------------------------------------- logging
class MetricWriter:
    """JSON lines in workdir/metrics.jsonl (process 0), plus TensorBoard when tensorboardX is
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

    def close(self):
        if self._tb is not None:
            self._tb.close()


# ------------------------------------------------------------------------------------- data
def parse_entries(spec: str):
    """'name[/config]:x, ...' -> [(name, config or None, x-string)]."""
    out = []
    for item in [s.strip() for s in spec.split(",") if s.strip()]:
        name, _, x = item.partition(":")
        name, _, cfg = name.partition("/")
        out.append((name.strip(), cfg.strip() or None, x.strip()))
    return out


def _data_dir(config) -> str:
    return os.path.expanduser(config.data.data_dir)


def open_source(config, name, builder_config, split, *, build_if_missing=True):
    """A built dataset split. The synthetic default is built on first use from
    config.data.synthetic; an existing build is reused only when it was made with those options
    (else `builders.build` raises, naming both sets)."""
    from imphmr_jax.data import builders
    data_dir = _data_dir(config)
    if build_if_missing and name == "synthetic_humans":
        s = config.data.synthetic
        if jax.process_index() == 0:
            builders.build(name, data_dir, config=builder_config, num_train=s.num_train,
                           num_test=s.num_test, image_size=s.image_size, body=s.body,
                           synthetic_options=synthetic_options(config))
        _barrier("synthetic_build")
    return builders.load_source(name, split, data_dir, config=builder_config)


def synthetic_options(config) -> dict:
    """`SyntheticConfig` overrides from config.data.synthetic (negative / empty = default)."""
    s = config.data.synthetic
    out = {k: float(getattr(s, k)) for k in ("background_clutter", "occluder_prob",
                                              "truncation_prob", "facing_prob")
           if k in s and float(getattr(s, k)) >= 0}
    if s.get("pose_weights"):
        out["pose_weights"] = tuple((f.strip(), float(w)) for f, w in
                                    (item.split(":") for item in s.pose_weights.split(",")))
    return out


def _barrier(name):
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def check_shared_workdir(workdir: str) -> None:
    """With several processes, every process must see the same `workdir` (orbax coordinates the
    checkpoints of all processes inside one directory; with a private directory per process the
    first checkpoint waits forever). Process 0 writes a token there; every process must read it
    back, else a ValueError names the directory. One process: nothing to check."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils
    token = int(multihost_utils.broadcast_one_to_all(
        np.int32(np.random.default_rng().integers(1, 2**31 - 1))))
    path = os.path.join(workdir, ".shared_workdir_check")
    if jax.process_index() == 0:
        with open(path + ".tmp", "w") as f:
            f.write(str(token))
        os.replace(path + ".tmp", path)
    _barrier("shared_workdir_written")
    try:
        with open(path) as f:
            seen = int(f.read().strip() or 0)
    except (OSError, ValueError):
        seen = None
    ok = multihost_utils.process_allgather(np.int32(seen == token))  # also a barrier
    if not np.all(ok):
        bad = [int(i) for i in np.flatnonzero(np.asarray(ok) == 0)]
        raise ValueError(
            f"workdir {workdir} is not shared by all {jax.process_count()} processes (processes "
            f"{bad} do not see process 0's files there). Multi-process training needs one "
            "directory every process can read and write (a shared file system or bucket).")


def pipeline_config(config, *, train: bool = True, batch_size: Optional[int] = None):
    from imphmr_jax.data import augment, pipeline
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


def train_sources(config):
    """[(source, weight)] from data.train / data.mixture."""
    from imphmr_jax.data import pipeline
    entries = parse_entries(config.data.train)
    sources = [open_source(config, n, c, config.data.train_split) for n, c, _ in entries]
    if config.data.mixture:
        names = [MIXTURE_NAMES.get(n, n) for n, _, _ in entries]
        sizes = {n: len(s) for n, s in zip(names, sources)}
        resolved = pipeline.mixture_weights(config.data.mixture, sizes)
        weights = [resolved[n] for n in names]
    else:
        weights = [float(x or 1.0) for _, _, x in entries]
    return sources, weights


# Builder names -> the dataset names of SPIN's / PARE's mixtures (data.pipeline.MIXTURES).
MIXTURE_NAMES = {"mpi_inf_3dhp": "mpi-inf-3dhp", "mpii_eft": "mpii", "lspet_eft": "lspet",
                 "coco_eft": "coco", "lsp_orig": "lsp-orig"}


def make_train_iterator(config, sources, weights):
    from imphmr_jax.data import pipeline
    return pipeline.make_train_iterator(sources, weights, pipeline_config(config, train=True),
                                        process_index=jax.process_index(),
                                        process_count=jax.process_count())


# ------------------------------------------------------------------------------------- evaluation
def eval_iterator(config, source, *, max_examples: int = 0, batch_size: Optional[int] = None):
    """The first `max_examples` (0 = all) records of `source` in order, unaugmented, in padded
    batches with `valid`/`index`. Every process reads every row (evaluation is replicated)."""
    from imphmr_jax.data import pipeline
    if max_examples and max_examples < len(source):
        source = _Subset(source, max_examples)
    return pipeline.make_eval_iterator(
        source, pipeline_config(config, train=False,
                                batch_size=batch_size or config.eval.batch_size),
        process_index=0, process_count=1)


def evaluate(config, predict, variables, source, protocol_name, bodies, mesh, *, out_dir=None,
             max_examples=0, max_figures=0, progress=False):
    """Run one evaluation split through `evaluation.run_evaluation`; returns its summary.

    Every process reads the whole of each evaluation batch, contributes its rows to the sharded
    forward pass and receives all predictions back (replicated), so every process computes the
    same summary; only process 0 writes files.
    """
    from imphmr_jax import evaluation
    n_dev = mesh.devices.size
    batch_size = int(math.ceil(config.eval.batch_size / n_dev) * n_dev)
    it = eval_iterator(config, source, max_examples=max_examples, batch_size=batch_size)
    p, n_proc = jax.process_index(), jax.process_count()

    def predict_fn(images):
        rows = images.shape[0] // n_proc
        local = np.asarray(images[p * rows:(p + 1) * rows])
        g = global_batch({"image": local}, mesh, ("image",))["image"]
        return jax.device_get(predict(variables, g))

    protocol = evaluation.PROTOCOLS[protocol_name]
    return evaluation.run_evaluation(predict_fn, it, protocol, bodies,
                                     out_dir if p == 0 else None, max_figures=max_figures,
                                     gendered_gt=config.eval.gendered_gt,
                                     progress=progress and p == 0)


def imagination_panels(config, model, variables, source, out_dir, body, num: int = 2):
    """The paper's Fig. 7 for the first `num` samples of `source`: the input crop, then the mesh
    and silhouette predicted at φ = 0°, 90°, 180°, 270° (`figures.imagination_panel`)."""
    from imphmr_jax import figures
    if not _uses_views(config) or jax.process_index() != 0:
        return []
    # Process 0 only: work on a host copy, since a jitted call on the global (multi-process)
    # parameters would wait for the other processes.
    variables = jax.device_get(variables)
    it = eval_iterator(config, source, max_examples=num, batch_size=num)
    batch = next(iter(it))
    phis = np.deg2rad(np.array([0.0, 90.0, 180.0, 270.0], np.float32))
    images = np.asarray(batch["image"])
    out = jax.device_get(make_view_predict_fn(model)(
        variables, jnp.asarray(images), jnp.tile(phis[None], (images.shape[0], 1))))
    paths = []
    crops = figures.denormalize(images)
    if "silhouette_logits" not in out:
        return paths
    for i in range(min(num, int(np.sum(batch["valid"])))):
        view = figures.imagination_view_outputs(out, phis, body, i)
        path = os.path.join(out_dir, "figures", f"imagination_{i}.png")
        figures.imagination_panel(crops[i], view, np.asarray(body.faces), path)
        paths.append(path)
    return paths


def _max_over_processes(value: int) -> int:
    if jax.process_count() == 1:
        return int(value)
    from jax.experimental import multihost_utils
    return int(np.max(multihost_utils.process_allgather(np.asarray(value, np.int32))))


class _Subset:
    def __init__(self, source, n):
        self.source, self.n = source, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.source[i]


def eval_bodies(config):
    """{'neutral': body, ['male', 'female']} for evaluation."""
    bodies = {"neutral": load_body(config)}
    for g in ("male", "female"):
        if getattr(config.body, g):
            bodies[g] = load_body(config, g)
    return bodies


def default_protocol(name: str) -> str:
    from imphmr_jax import evaluation
    aliases = {"synthetic_humans": "synthetic", "h36m": "h36m_p1"}
    proto = aliases.get(name, name)
    if proto not in evaluation.PROTOCOLS:
        raise ValueError(f"no evaluation protocol for dataset {name!r}; known: "
                         f"{sorted(evaluation.PROTOCOLS)} (set eval.protocol)")
    return proto


# ------------------------------------------------------------------------------------- the loop
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       sources=None, eval_source=None,
                       step_hook: Optional[Callable[[int], None]] = None) -> dict:
    """Train `config` in `workdir` (resuming from its latest checkpoint), evaluate, return a dict
    with the final train metrics and the last evaluation summary.

    sources: optional [(source, weight)] instead of config.data.train (tests, notebooks);
    eval_source: optional (source, protocol_name) instead of the first of config.eval.datasets.
    step_hook: called with the step number after every step (tests use it to simulate a kill).
    """
    workdir = os.path.abspath(os.path.expanduser(workdir))
    os.makedirs(workdir, exist_ok=True)
    check_shared_workdir(workdir)
    is_main = jax.process_index() == 0
    if is_main:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))
    mesh = make_mesh()
    n_dev = mesh.devices.size
    if config.train.batch_size % n_dev:
        raise ValueError(f"train.batch_size {config.train.batch_size} must be divisible by the "
                         f"{n_dev} devices of the mesh")
    model = build_model(config)
    body = load_body(config)
    tx = make_optimizer(config)
    state, state_sh = create_train_state(config, model, mesh, tx)

    if sources is None:
        srcs, weights = train_sources(config)
    else:
        srcs, weights = [s for s, _ in sources], [w for _, w in sources]
    data_iter = make_train_iterator(config, srcs, weights)

    manager = ckpt_lib.CheckpointManager(os.path.join(workdir, "checkpoints"),
                                         max_to_keep=config.train.keep_checkpoints)
    best = ckpt_lib.BestCheckpoint(os.path.join(workdir, "best"), metric="pa_mpjpe")
    start = manager.latest_step()
    if start is not None:
        state, data_state = manager.restore(start, state, state_sh)
        data_iter.set_state(data_state)
        if is_main:
            print(f"resumed from step {start} in {workdir}/checkpoints")
    start = int(jax.device_get(state.step))

    if eval_source is None:
        name, cfg, split = parse_entries(config.eval.datasets)[0]
        eval_src = open_source(config, name, cfg, split or "test")
        proto = config.eval.protocol or default_protocol(name)
    else:
        eval_src, proto = eval_source
    bodies = eval_bodies(config)
    predict = make_predict_fn(model, mesh)

    rep = replicated(mesh)
    body_dev = jax.device_put(body, rep)
    writer = MetricWriter(workdir, enabled=is_main)
    train_step = None
    num_steps = int(config.train.num_steps)
    last_eval = None
    pbar = None
    if is_main and config.train.progress:
        from tqdm.auto import tqdm
        pbar = tqdm(total=num_steps, initial=start, desc="train", unit="step", dynamic_ncols=True)
    acc, acc_n, t0 = {}, 0, time.time()
    try:
        for step in range(start, num_steps):
            local = next(data_iter)
            batch = global_batch(local, mesh)
            if train_step is None:
                tiles = 0
                if _uses_views(config) and config.model.use_decoder:
                    # Static under jit, so every process must agree: the max over processes.
                    tiles = _max_over_processes(silhouette_tile_budget(body, local, config))
                train_step = make_train_step(config, model, tx, mesh, state_sh,
                                             silhouette_tiles=tiles)
            state, metrics = train_step(state, batch, body_dev)
            m = jax.device_get(metrics)
            if int(m["nonfinite_streak"]) >= config.train.nan_max_consecutive:
                writer.write(step + 1, {"nonfinite_streak": float(m["nonfinite_streak"]),
                                        "nonfinite_total": float(state.nonfinite_total)},
                             "train/")
                raise NonFiniteError(
                    f"{int(m['nonfinite_streak'])} consecutive training steps had a non-finite "
                    f"loss or gradient (step {step + 1}); the last finite state is in "
                    f"{workdir}/checkpoints. Lower train.learning_rate, set train.grad_clip, or "
                    f"check the data for NaNs.")
            if float(m["finite"]):
                for k, v in m.items():
                    acc[k] = acc.get(k, 0.0) + float(v)
                acc_n += 1
            done = step + 1
            if pbar is not None:
                pbar.update(1)
                pbar.set_postfix(loss=f"{float(m['loss']):.3g}")
            if done % config.train.log_every == 0 or done == num_steps:
                if acc_n:
                    scalars = {k: v / acc_n for k, v in acc.items()
                               if k not in ("finite", "nonfinite_streak")}
                    scalars["steps_per_s"] = acc_n / max(time.time() - t0, 1e-9)
                    scalars["nonfinite_total"] = float(jax.device_get(state.nonfinite_total))
                    writer.write(done, scalars, "train/")
                acc, acc_n, t0 = {}, 0, time.time()
            if done % config.train.checkpoint_every == 0 or done == num_steps:
                manager.save(done, state, data_iter.get_state())
            if config.train.eval_every and (done % config.train.eval_every == 0):
                last_eval = evaluate(config, predict, state.variables(), eval_src, proto, bodies,
                                     mesh,
                                     max_examples=config.eval.periodic_max_examples)
                writer.write(done, _scalar_summary(last_eval), "eval/")
                best.update(done, state, last_eval["metrics"]["pa_mpjpe"])
            if step_hook is not None:
                step_hook(done)
    finally:
        if pbar is not None:
            pbar.close()
        manager.wait()
    final = evaluate(config, predict, state.variables(), eval_src, proto, bodies, mesh,
                     out_dir=os.path.join(workdir, "eval", proto),
                     max_examples=config.eval.max_examples, max_figures=config.eval.max_figures,
                     progress=is_main and config.train.progress)
    imagination_panels(config, model, state.variables(), eval_src,
                       os.path.join(workdir, "eval", proto), body)
    writer.write(num_steps, _scalar_summary(final), "eval/")
    best.update(num_steps, state, final["metrics"]["pa_mpjpe"])
    best.wait()
    writer.close()
    if is_main:
        try:
            from imphmr_jax import figures
            figures.loss_curves(writer.path, os.path.join(workdir, "loss_curves.png"))
        except (ImportError, ValueError, KeyError) as e:  # figures are a convenience
            print(f"loss curves not written: {e}")
    return {"state": state, "eval": final, "step": num_steps}


def _scalar_summary(summary: Mapping) -> dict:
    """The numbers of an evaluation summary, flat: metrics (mm), count, and any extra scalars."""
    flat = dict(summary.get("metrics") or {})
    flat.update({k: v for k, v in summary.items() if k != "metrics"})
    return {k: float(v) for k, v in flat.items()
            if isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool)}


# ------------------------------------------------------------------------------------- CLI
def quiet_logs():
    """Keep the console to progress bars and results: absl INFO chatter (orbax's options, TFDS's
    'loading dataset info') is hidden unless --verbosity was raised on the command line."""
    from absl import flags, logging
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)


def maybe_initialize_distributed(coordinator: str = "", num_processes: int = 0,
                                 process_id: int = -1):
    """`jax.distributed.initialize` when flags or the environment ask for several processes."""
    if coordinator:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id)
    elif any(v in os.environ for v in ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS",
                                       "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES")):
        jax.distributed.initialize()


def main(argv):
    del argv
    quiet_logs()
    from absl import flags
    cfg = flags.FLAGS.config
    maybe_initialize_distributed(flags.FLAGS.coordinator, flags.FLAGS.num_processes,
                                 flags.FLAGS.process_id)
    result = train_and_evaluate(cfg, flags.FLAGS.workdir)
    if jax.process_index() == 0:
        summary = _scalar_summary(result["eval"])
        print(json.dumps(summary, indent=2))


def _define_flags():
    from absl import flags
    from ml_collections import config_flags
    config_flags.DEFINE_config_file("config", None, "experiment config file", lock_config=True)
    flags.DEFINE_string("workdir", None, "directory for checkpoints, metrics and figures")
    flags.DEFINE_string("coordinator", "", "jax.distributed coordinator host:port (multi-process)")
    flags.DEFINE_integer("num_processes", 0, "number of processes (with --coordinator)")
    flags.DEFINE_integer("process_id", -1, "this process's id (with --coordinator)")
    flags.mark_flags_as_required(["config", "workdir"])


if __name__ == "__main__":
    from absl import app
    _define_flags()
    app.run(main)
