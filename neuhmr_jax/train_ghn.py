"""Train Φ^GHN: `python -m neuhmr_jax.train_ghn --config configs/neuhmr/ghn_synthetic.py --workdir DIR`.

Each step takes `train.batch_size` targets, each a (person, frame, camera) image with n = 2
reference images of the same person in other frames (and cameras), draws `data.rays_per_image`
rays in and around the person's mask, renders them with the GHN in the target's pose and camera,
and minimises MSE on the radiance C plus the BCE of the occupancy W against the mask (and an
optional SSIM term on square patches). The step is one jit over the device mesh (targets sharded,
parameters replicated) on the project's training spine: orbax checkpoints with resume, the NaN
guard, spike reports, metrics.jsonl, loss curves and a progress bar. Periodic evaluation renders
held-out people in full (`neuhmr_jax.ghn.evaluation`). Method notes: docs/neuhmr.md.
"""
from __future__ import annotations

import json
import os
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import optax

from imphmr_jax.training import checkpoint as ckpt_lib
from imphmr_jax.training import sharding, startup
from imphmr_jax.training import state as state_lib
from imphmr_jax.training import writer as writer_lib
from imphmr_jax.training.loop import Periodic, train_loop
from imphmr_jax.training.optim import make_optimizer
from neuhmr_jax.ghn import data as ghn_data
from neuhmr_jax.ghn import evaluation as ghn_eval
from neuhmr_jax.ghn import rays as ray_lib
from neuhmr_jax.ghn.model import GHN, Camera, GHNConfig, References

BATCH_KEYS = ghn_data.BATCH_KEYS


def build_ghn(config) -> GHN:
    """The GHN of `config` (config.ghn sizes, config.body)."""
    import smpl_jax
    body = smpl_jax.load(config.body.model, num_betas=config.body.num_betas)
    return GHN(GHNConfig.from_config(config.ghn), body)


def split_variables(variables):
    """GHN variables -> (trainable params, fixed state: 𝓕's BatchNorm statistics, the
    skinning volume's log-prior and, with occupancy 'surface', the rest surface fields)."""
    params = {"features": variables["features"]["params"],
              "volume": variables["volume"]["params"], "psi": variables["psi"]["params"]}
    fixed = {"features": variables["features"].get("batch_stats", {}),
             "volume_prior": variables["volume"]["prior"]}
    if "surface" in variables:
        fixed["surface"] = variables["surface"]
    return params, fixed


def join_variables(params, batch_stats):
    """The inverse of `split_variables`."""
    out = {"features": {"params": params["features"], "batch_stats": batch_stats["features"]},
           "volume": {"params": params["volume"], "prior": batch_stats["volume_prior"]},
           "psi": {"params": params["psi"]}}
    if "surface" in batch_stats:
        out["surface"] = batch_stats["surface"]
    return out


def make_optimizer_ghn(t) -> optax.GradientTransformation:
    """`train` optimizer, with the skinning volume's updates scaled by train.volume_lr_scale
    (HumanNeRF trains the weight volume at a tenth of the rate)."""
    tx = make_optimizer(t)
    if t.volume_lr_scale == 1.0:
        return tx
    mask = lambda params: {k: jax.tree.map(lambda _: k == "volume", v)
                           for k, v in params.items()}
    return optax.chain(tx, optax.masked(optax.scale(t.volume_lr_scale), mask))


def ghn_losses(ghn: GHN, variables, batch, key, config, image_size):
    """(loss, terms) for a batch of targets: MSE on C, BCE of W vs the mask, optional SSIM."""
    d, lo = config.data, config.loss
    weights = ghn.skinning_weights(variables)
    b = batch["image"].shape[0]
    keys = jax.random.split(key, b)
    num_patch_px = lo.num_patches * lo.patch_size ** 2 if lo.ssim > 0 else 0

    def one(x, k):
        k_rays, k_patch, k_render = jax.random.split(k, 3)
        pixels = ray_lib.sample_pixels(k_rays, x["mask"] > 0.5, d.rays_per_image,
                                       fraction_inside=d.fraction_inside, box_dilation=d.dilation)
        if num_patch_px:
            pixels = jnp.concatenate(
                [pixels, ghn_data.patch_pixels(k_patch, x["mask"] > 0.5, lo.num_patches,
                                               lo.patch_size)], axis=0)
        refs = References(images=x["ref_image"],
                          cameras=Camera(x["ref_K"], x["ref_R"], x["ref_t"]),
                          pose=x["ref_pose"], transl=x["ref_transl"])
        out = ghn.render(variables, Camera(x["K"], x["R"], x["t"]), x["pose"], x["betas"],
                         refs, pixels, transl=x["transl"], key=k_render, weights=weights,
                         image_size=image_size)
        target = ghn_data.gather_pixels(x["image"], pixels)
        mask = ghn_data.gather_pixels(x["mask"][..., None], pixels)[:, 0]
        n = d.rays_per_image
        mse = jnp.mean((out.rgb[:n] - target[:n]) ** 2)
        w = jnp.clip(out.occupancy[:n], 1e-5, 1 - 1e-5)
        bce = -jnp.mean(mask[:n] * jnp.log(w) + (1 - mask[:n]) * jnp.log1p(-w))
        terms = {"mse": mse, "occupancy_bce": bce}
        if num_patch_px:
            import dm_pix
            p = lo.patch_size
            pred = out.rgb[n:].reshape(lo.num_patches, p, p, 3)
            gt = target[n:].reshape(lo.num_patches, p, p, 3)
            terms["ssim"] = jnp.mean(dm_pix.ssim(pred, gt, filter_size=min(7, p)))
        return terms

    terms = jax.tree.map(jnp.mean, jax.vmap(one)(batch, keys))
    loss = lo.mse * terms["mse"] + lo.occupancy_bce * terms["occupancy_bce"]
    if "ssim" in terms:
        loss = loss + lo.ssim * (1.0 - terms["ssim"])
    terms["psnr"] = -10.0 * jnp.log10(jnp.maximum(terms["mse"], 1e-10))
    return loss, terms


def make_train_step(ghn: GHN, config, tx, mesh, state_shardings, image_size):
    """The jitted step (state, batch) -> (state, metrics); state donated."""
    def step_fn(state, batch):
        def loss_fn(params):
            variables = join_variables(params, state.batch_stats)
            return ghn_losses(ghn, variables, batch, state.step_key(), config, image_size)

        (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        new_state, guard = state_lib.apply_gradients(state, tx, grads, loss, state.batch_stats)
        return new_state, dict(terms, loss=loss, **guard)

    rep = sharding.replicated(mesh)
    data = sharding.batch_sharding(mesh)
    return jax.jit(step_fn, in_shardings=(state_shardings, {k: data for k in BATCH_KEYS}),
                   out_shardings=(state_shardings, rep), donate_argnums=(0,))


def train_ghn(config: ml_collections.ConfigDict, workdir: str, *, people=None, test_people=None,
              step_hook: Optional[Callable[[int], None]] = None) -> dict:
    """Train in `workdir` (resuming from its latest checkpoint); returns dict(state, eval, step)
    (eval: the final evaluation on config.eval.max_targets held-out targets; None when 0).

    people / test_people: optional `ghn_data.People` instead of the config's dataset splits
    (tests, notebooks).
    """
    workdir = os.path.abspath(os.path.expanduser(workdir))
    if people is None:
        people = ghn_data.load_split(config, config.data.train_split)
    if test_people is None:
        test_people = ghn_data.load_split(config, config.data.test_split)
    os.makedirs(workdir, exist_ok=True)
    startup.check_shared_workdir(workdir)
    is_main = jax.process_index() == 0
    if is_main:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))
    mesh = sharding.make_mesh()
    sharding.check_batch_divisible(config.train.batch_size, mesh)
    ghn = build_ghn(config)
    image_size = tuple(people.images.shape[1:3])
    tx = make_optimizer_ghn(config.train)

    def init_variables(key):
        params, stats = split_variables(ghn.init(key, image_size))
        return {"params": params, "batch_stats": stats}

    state, state_sh = state_lib.create_train_state(init_variables, tx, mesh,
                                                   seed=config.train.seed)
    data_iter = ghn_data.TripletBatches(people, config.train.batch_size // jax.process_count(),
                                        n_refs=config.data.n_refs,
                                        same_camera=config.data.same_camera,
                                        seed=config.train.seed + 1000 * jax.process_index(),
                                        background=config.ghn.background)
    manager = ckpt_lib.CheckpointManager(os.path.join(workdir, "checkpoints"),
                                         max_to_keep=config.train.keep_checkpoints)
    restored = manager.restore_latest(state, state_sh)
    if restored is not None:
        state, data_state, at = restored
        data_iter.set_state(data_state)
        if is_main:
            print(f"resumed from step {at} in {workdir}/checkpoints")

    writer = writer_lib.MetricWriter(workdir, enabled=is_main)

    def evaluate(variables, **kw):
        return ghn_eval.evaluate(ghn, jax.device_get(variables), test_people, config, **kw)

    def periodic_eval(done, st):
        summary = evaluate(join_variables(st.params, st.batch_stats),
                           max_targets=config.eval.periodic_max_targets)
        writer.write(done, summary["metrics"], "eval/")

    state = train_loop(
        state, lambda _: make_train_step(ghn, config, tx, mesh, state_sh, image_size), data_iter,
        train_config=config.train, workdir=workdir, manager=manager, writer=writer,
        to_global=lambda local: sharding.global_batch(local, mesh, BATCH_KEYS),
        periodic=[Periodic(config.train.eval_every, periodic_eval)], step_hook=step_hook,
        is_main=is_main, desc="train GHN")
    variables = join_variables(state.params, state.batch_stats)
    final = None
    if config.eval.max_targets > 0:  # 0: no final evaluation (tests)
        final = evaluate(variables, max_targets=config.eval.max_targets,
                         out_dir=os.path.join(workdir, "eval") if is_main else None,
                         max_figures=config.eval.max_figures)
        writer.write(int(config.train.num_steps), final["metrics"], "final_eval/")
    writer.close()
    if is_main:
        writer_lib.write_loss_curves(writer.path, os.path.join(workdir, "loss_curves.png"))
    return {"state": state, "eval": final, "step": int(config.train.num_steps)}


def load_ghn(workdir: str, which: str = "latest"):
    """(ghn, variables, config) of a trained GHN run: its config.json and a checkpoint."""
    workdir = os.path.abspath(os.path.expanduser(workdir))
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{workdir} is not a GHN training run: no config.json")
    with open(path) as f:
        config = ml_collections.ConfigDict(json.load(f))
    ghn = build_ghn(config)
    stored = ckpt_lib.load_variables(workdir, which)
    return ghn, join_variables(stored["params"], stored["batch_stats"]), config


def main(argv):
    del argv
    startup.quiet_logs()
    from absl import flags
    f = flags.FLAGS
    startup.maybe_initialize_distributed(f.coordinator, f.num_processes, f.process_id)
    result = train_ghn(f.config, f.workdir)
    if jax.process_index() == 0 and result["eval"] is not None:
        print(json.dumps(result["eval"]["metrics"], indent=2))


if __name__ == "__main__":
    from absl import flags
    from ml_collections import config_flags
    config_flags.DEFINE_config_file("config", None, "GHN config file (configs/neuhmr/ghn_*.py)",
                                    lock_config=True)
    flags.DEFINE_string("workdir", None, "directory for checkpoints, metrics and figures")
    flags.DEFINE_string("coordinator", "", "jax.distributed coordinator host:port (multi-process)")
    flags.DEFINE_integer("num_processes", 0, "number of processes (with --coordinator)")
    flags.DEFINE_integer("process_id", -1, "this process's id (with --coordinator)")
    from imphmr_jax import cli
    cli.run_absl(main, required=("config", "workdir"))
