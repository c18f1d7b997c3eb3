"""Training ImpHMR: `python -m imphmr_jax.train --config configs/imphmr/<name>.py --workdir DIR`.

The readable spine (the shared helpers live in `imphmr_jax.training`, the config wiring in
`imphmr_jax.experiment`):

    create_train_state(config, model, mesh, tx)    parameters created straight in their sharding
    make_train_step(...)  -> train_step(state, batch, body) -> (state, metrics)   one jitted step
    make_predict_fn(...)  -> predict(variables, images) -> view-0 outputs        evaluation forward
    train_and_evaluate(config, workdir)             data, loop, logging, checkpoints, evaluation

Parallelism (`training.sharding`): one `jax.jit` over a 1-D device mesh with axis 'data' (all
devices of all processes), the global batch sharded along 'data', the state replicated; any device
count computes the same step as one device (up to float summation order). Several processes:
`jax.distributed.initialize()` runs first (when the usual environment variables, or
`--coordinator/--num_processes/--process_id`, say so); each process reads its own rows of every
global batch.

Randomness: every random draw of step s comes from fold_in(key(seed), s): the views φ, dropout,
ray jitter and density noise; the data pipeline's order and augmentation depend on the seed and
the global sample position only. A run killed at any moment resumes from its last checkpoint
(state + data-iterator position) and ends with the same parameters as an uninterrupted run.

Non-finite steps (`training.state.apply_gradients`): a step whose loss or gradients are not finite
leaves the state unchanged and is counted; after `train.nan_max_consecutive` such steps in a row
training stops with `NonFiniteError`.
"""
from __future__ import annotations

import json
import math
import os
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from imphmr_jax import experiment, figures, losses
from imphmr_jax.cli import ConfigError, expand_path
from imphmr_jax.models.build import build_model, init_variables
from imphmr_jax.pretrained import with_pretrained
from imphmr_jax.training import checkpoint as ckpt_lib
from imphmr_jax.training import sharding, startup, state as state_lib, writer as writer_lib
from imphmr_jax.training.optim import make_optimizer
from imphmr_jax.training.loop import Periodic, train_loop
from imphmr_jax.training.state import NonFiniteError, TrainState  # noqa: F401  (public names)

TRAIN_KEYS = ("image", "keypoints_2d", "joints_3d", "pose", "betas", "has_smpl", "has_pose_3d")


def loss_weights(config) -> losses.LossWeights:
    lw = config.loss
    return losses.LossWeights(lambda_2d=lw.lambda_2d, lambda_3d=lw.lambda_3d,
                              lambda_pose=lw.lambda_pose, lambda_shape=lw.lambda_shape,
                              lambda_silh=lw.lambda_silh, lambda_cam=lw.lambda_cam,
                              use_cam_prior=lw.use_cam_prior)


def uses_views(config) -> bool:
    """Whether the variant renders views φ (everything but SPIN's 'baseline')."""
    return config.model.variant != "baseline"


def create_train_state(config, model, mesh, tx, *, img_res: Optional[int] = None):
    """(state, shardings): ImpHMR's variables drawn from `train.seed`, optimizer state and moving
    average created in their sharding, then `train.init`'s pre-trained weights when set."""
    img_res = img_res or config.data.img_res
    state, shardings = state_lib.create_train_state(
        lambda key: init_variables(model, key, img_res, config.train.num_views), tx, mesh,
        seed=int(config.train.seed), ema=config.train.ema_decay > 0)
    init = config.train.init
    if init.kind:
        if not init.path:
            raise ConfigError(f"train.init.kind is {init.kind!r} but train.init.path is not set")
        state = state_lib.replace_variables(
            state, with_pretrained(state.trained_variables(), init.kind, init.path), tx, mesh)
    return state, shardings


# ------------------------------------------------------------------------------------- step
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
    """The GT silhouettes' side: `train.silhouette_size`, else the decoder's 32·map_size."""
    return int(config.train.silhouette_size or 32 * config.model.map_size)


def make_train_step(config, model, tx, mesh, state_shardings, *, silhouette_tiles: int = 0):
    """The jitted step: (state, batch, body) -> (state, metrics); state donated.

    silhouette_tiles: static tile budget for GT silhouettes (0 = no silhouette term).
    """
    weights = loss_weights(config)
    num_views = int(config.train.num_views) if uses_views(config) else 1
    use_silhouettes = (uses_views(config) and config.model.use_decoder and silhouette_tiles > 0)
    sil_size = silhouette_size(config)
    stop_target = bool(config.train.stop_gradient_target)
    if uses_views(config) and num_views < 2:
        raise ValueError(f"train.num_views must be >= 2 for variant {config.model.variant!r}")

    def step_fn(state: TrainState, batch, body):
        rng = state.step_key()
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
                loss, terms = losses.L_reg(losses.select_view(outputs, 0), batch, body, weights)
                terms = dict(terms, L_reg=loss, L_all=loss)
            if "aux_keypoints" in outputs:
                # The auxiliary head sees only the input view: the same 2D targets as L_reg.
                aux = losses.aux_keypoint_loss(outputs["aux_keypoints"], batch["keypoints_2d"])
                terms = dict(terms, L_aux_2d=aux)
                loss = loss + config.loss.lambda_aux_2d * aux
            return loss, (terms, new_vars["batch_stats"])

        (loss, (terms, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params)
        new_state, guard = state_lib.apply_gradients(state, tx, grads, loss, new_stats,
                                                     ema_decay=config.train.ema_decay)
        metrics = dict(terms, loss=loss, **guard, **extra)
        return new_state, metrics

    rep = sharding.replicated(mesh)
    data = sharding.batch_sharding(mesh)
    batch_sh = {k: data for k in TRAIN_KEYS}
    return jax.jit(step_fn, in_shardings=(state_shardings, batch_sh, rep),
                   out_shardings=(state_shardings, rep), donate_argnums=(0,))


def make_predict_fn(model, mesh):
    """(variables, images) -> view-0 predictions dict(rotmat, betas, cam): the evaluation forward
    (train=False, φ = 0), data-parallel over the mesh; the outputs are replicated (every process
    gets every row)."""
    data = sharding.batch_sharding(mesh)

    def predict(variables, images):
        out = model.apply(variables, images, None, train=False)
        return {k: out[k][:, 0] for k in ("rotmat", "betas", "cam")}

    return jax.jit(predict, in_shardings=(sharding.replicated(mesh), data),
                   out_shardings=sharding.replicated(mesh))


def make_view_predict_fn(model):
    """(variables, images (B,H,W,3), phis (B,V)) -> all outputs incl. silhouettes (figures)."""
    def predict(variables, images, phis):
        return model.apply(variables, images, phis, train=False, return_silhouette=True)
    return jax.jit(predict)


def imagination_panels(config, model, variables, source, out_dir, body, num: int = 2):
    """The paper's Fig. 7 for the first `num` samples of `source`: the input crop, then the mesh
    and silhouette predicted at φ = 0°, 90°, 180°, 270° (`figures.imagination_panel`)."""
    if not uses_views(config) or jax.process_index() != 0:
        return []
    # Process 0 only: work on a host copy, since a jitted call on the global (multi-process)
    # parameters would wait for the other processes.
    variables = jax.device_get(variables)
    it = experiment.eval_iterator(config, source, max_examples=num, batch_size=num)
    batch = next(iter(it))
    phis = np.deg2rad(np.asarray(figures.IMAGINATION_PHIS_DEG, np.float32))
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


# ------------------------------------------------------------------------------------- the loop
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       sources=None, eval_source=None,
                       step_hook: Optional[Callable[[int], None]] = None) -> dict:
    """Train `config` in `workdir` (resuming from its latest checkpoint), evaluate, return a dict
    with the final state, the last evaluation summary, the step and the step this run started
    from (`start_step`; equal to `step` when the run only resumed a finished training).

    sources: optional [(source, weight)] instead of config.data.train (tests, notebooks);
    eval_source: optional (source, protocol_name) instead of the first of config.eval.datasets.
    step_hook: called with the step number after every step (tests use it to simulate a kill).
    """
    workdir = os.path.abspath(expand_path(workdir))
    is_main = jax.process_index() == 0
    # The inputs (body, pre-trained weights, datasets) are opened before anything is written, so
    # that a mistake in them leaves no workdir behind.
    mesh = sharding.make_mesh()
    sharding.check_batch_divisible(config.train.batch_size, mesh)
    model = build_model(config.model)
    body = experiment.load_body(config)
    tx = make_optimizer(config.train)
    state, state_sh = create_train_state(config, model, mesh, tx)

    if sources is None:
        srcs, weights = experiment.train_sources(config)
    else:
        srcs, weights = [s for s, _ in sources], [w for _, w in sources]
    if eval_source is None:
        entry = experiment.eval_entries(config)[0]
        eval_src = experiment.open_source(config, entry)
        proto = experiment.protocol_name(config, entry.name)
    else:
        eval_src, proto = eval_source
    data_iter = experiment.make_train_iterator(config, srcs, weights)

    os.makedirs(workdir, exist_ok=True)
    startup.check_shared_workdir(workdir)
    if is_main:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))

    manager = ckpt_lib.CheckpointManager(os.path.join(workdir, "checkpoints"),
                                         max_to_keep=config.train.keep_checkpoints)
    best = ckpt_lib.BestCheckpoint(os.path.join(workdir, "best"), metric="pa_mpjpe")
    restored = manager.restore_latest(state, state_sh)
    if restored is not None:
        state, data_state, at = restored
        data_iter.set_state(data_state)
        if is_main:
            print(f"resumed from step {at} in {workdir}/checkpoints")
    start = int(jax.device_get(state.step))

    bodies = experiment.eval_bodies(config)
    predict = make_predict_fn(model, mesh)

    def evaluate(variables, **kw):
        return experiment.evaluate_split(config, predict, variables, eval_src, proto, bodies,
                                         mesh, **kw)

    body_dev = jax.device_put(body, sharding.replicated(mesh))
    writer = writer_lib.MetricWriter(workdir, enabled=is_main)
    num_steps = int(config.train.num_steps)
    evals = {"last": None, "step": None}

    def make_step(local):
        tiles = 0
        if uses_views(config) and config.model.use_decoder:
            # Static under jit, so every process must agree: the max over processes.
            tiles = startup.max_over_processes(silhouette_tile_budget(body, local, config))
        step_fn = make_train_step(config, model, tx, mesh, state_sh, silhouette_tiles=tiles)
        return lambda st, batch: step_fn(st, batch, body_dev)

    def periodic_eval(done, st):
        evals["last"] = evaluate(st.variables(), max_examples=config.eval.periodic_max_examples)
        evals["step"] = done
        writer.write(done, writer_lib.scalar_summary(evals["last"]), "eval/")
        best.update(done, st, evals["last"]["metrics"]["pa_mpjpe"])

    state = train_loop(
        state, make_step, data_iter, train_config=config.train, workdir=workdir,
        manager=manager, writer=writer,
        to_global=lambda local: sharding.global_batch(local, mesh, TRAIN_KEYS),
        periodic=[Periodic(config.train.eval_every, periodic_eval)], step_hook=step_hook,
        is_main=is_main)
    last_eval, last_eval_step = evals["last"], evals["step"]
    if last_eval_step != num_steps:
        # `best/` compares like with like: the periodic evaluation's samples at every candidate.
        last_eval = evaluate(state.variables(), max_examples=config.eval.periodic_max_examples)
        writer.write(num_steps, writer_lib.scalar_summary(last_eval), "eval/")
    best.update(num_steps, state, last_eval["metrics"]["pa_mpjpe"])
    best.wait()
    out_dir = os.path.join(workdir, "eval", proto)
    final = evaluate(state.variables(), out_dir=out_dir, max_examples=config.eval.max_examples,
                     max_figures=config.eval.max_figures,
                     progress=is_main and config.train.progress)
    imagination_panels(config, model, state.variables(), eval_src, out_dir, body)
    # Its own curve: the whole split, not the periodic subset (one curve would jump at the end).
    writer.write(num_steps, writer_lib.scalar_summary(final), "final_eval/")
    writer.close()
    if is_main:
        writer_lib.write_loss_curves(writer.path, os.path.join(workdir, "loss_curves.png"))
    return {"state": state, "eval": final, "step": num_steps, "start_step": start}


# ------------------------------------------------------------------------------------- CLI
def main(argv):
    del argv
    startup.quiet_logs()
    from absl import flags
    f = flags.FLAGS
    startup.maybe_initialize_distributed(f.coordinator, f.num_processes, f.process_id)
    result = train_and_evaluate(f.config, f.workdir)
    if jax.process_index() == 0:
        print(json.dumps(writer_lib.scalar_summary(result["eval"]), indent=2))


if __name__ == "__main__":
    from absl import flags
    from ml_collections import config_flags
    config_flags.DEFINE_config_file("config", None, "experiment config file", lock_config=True)
    flags.DEFINE_string("workdir", None, "directory for checkpoints, metrics and figures")
    flags.DEFINE_string("coordinator", "", "jax.distributed coordinator host:port (multi-process)")
    flags.DEFINE_integer("num_processes", 0, "number of processes (with --coordinator)")
    flags.DEFINE_integer("process_id", -1, "this process's id (with --coordinator)")
    from imphmr_jax import cli
    cli.run_absl(main, required=("config", "workdir"))
