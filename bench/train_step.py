"""Training-step throughput: steps/s and images/s of `imphmr_jax.train`'s jitted step, fp32 vs
bf16, with the share of the step spent rendering the ground-truth silhouettes.

    python bench/train_step.py                      # synthetic config, batch 64, fp32 and bf16
    python bench/train_step.py --config paper --iters 2   # ResNet-50 224² (slow on CPU)

For each dtype it times (median of --iters, compile excluded, same process, same batch):
  full step          the real train step (all views, L_reg + L_imag + L_cons, GT silhouettes)
  step w/o GT sil.   the same step without the silhouette term (no GT rendering)
  GT silhouettes     `losses.gt_silhouettes` alone for the batch
and prints the GT-silhouette share as (full - without) / full and as GT-alone / full.
Absolute times mean something only on an accelerator; on CPU compare the columns of one run.
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from imphmr_jax import config as config_lib
from imphmr_jax import losses
from imphmr_jax import experiment, train
from imphmr_jax.models.build import build_model
from imphmr_jax.training import sharding
from imphmr_jax.training.optim import make_optimizer


def random_batch(batch_size, res, seed=0):
    """A label-consistent batch: GT SMPL poses near SPIN's mean, keypoints projected from them."""
    r = np.random.default_rng(seed)
    pose = r.normal(0, 0.2, (batch_size, 72)).astype(np.float32)
    pose[:, :3] = [np.pi, 0, 0]
    kp = np.concatenate([r.uniform(-0.6, 0.6, (batch_size, 49, 2)),
                         np.ones((batch_size, 49, 1))], -1).astype(np.float32)
    return dict(image=r.normal(size=(batch_size, res, res, 3)).astype(np.float32),
                keypoints_2d=kp,
                joints_3d=np.concatenate([r.normal(0, .3, (batch_size, 24, 3)),
                                          np.ones((batch_size, 24, 1))], -1).astype(np.float32),
                pose=pose, betas=r.normal(size=(batch_size, 10)).astype(np.float32),
                has_smpl=np.ones(batch_size, np.float32),
                has_pose_3d=np.ones(batch_size, np.float32))


def timeit(fn, iters):
    out = fn()
    jax.block_until_ready(out)  # compile + first run
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def bench(config, batch_size, iters):
    config.train.batch_size = batch_size
    mesh = sharding.make_mesh()
    model = build_model(config.model)
    tx = make_optimizer(config.train)
    body = experiment.load_body(config)
    body_dev = jax.device_put(body, sharding.replicated(mesh))
    local = random_batch(batch_size, config.data.img_res)
    batch = sharding.global_batch(local, mesh, train.TRAIN_KEYS)
    tiles = train.silhouette_tile_budget(body, local, config)
    rows = {}
    state, sh = train.create_train_state(config, model, mesh, tx)
    for label, t in (("full step", tiles), ("step w/o GT sil.", 0)):
        step = train.make_train_step(config, model, tx, mesh, sh, silhouette_tiles=t)
        holder = {"s": state}

        def run():
            holder["s"], m = step(holder["s"], batch, body_dev)
            return m["loss"]
        rows[label] = timeit(run, iters)
        state = holder["s"]
    size = train.silhouette_size(config)
    sil = jax.jit(lambda p, b, c, phi: losses.gt_silhouettes(
        body_dev, p, b, c, phi, size, max_tiles=tiles))
    cam_t = losses.gt_camera_translation({k: jnp.asarray(v) for k, v in local.items()}, body)
    phi = jnp.full((batch_size,), 1.0)
    rows["GT silhouettes"] = timeit(lambda: sil(jnp.asarray(local["pose"]),
                                                jnp.asarray(local["betas"]), cam_t, phi),
                                    iters)
    return rows, tiles


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="synthetic", choices=["synthetic", "paper"])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    args = ap.parse_args()
    dev = jax.devices()[0]
    print(f"device: {dev.platform} {dev.device_kind} x{jax.device_count()}, jax {jax.__version__}")
    for dtype in args.dtypes.split(","):
        cfg = (config_lib.synthetic_config() if args.config == "synthetic"
               else config_lib.paper_config())
        cfg.model.dtype = dtype
        rows, tiles = bench(cfg, args.batch, args.iters)
        full = rows["full step"]
        print(f"\n{args.config} config, {dtype}, batch {args.batch}, crop {cfg.data.img_res}², "
              f"map {cfg.model.map_size}, {cfg.train.num_views} views, silhouettes "
              f"{train.silhouette_size(cfg)}² (tile budget {tiles}):")
        for name, t in rows.items():
            print(f"  {name:18s} {1e3 * t:9.1f} ms   {1 / t:7.2f} steps/s   "
                  f"{args.batch / t:8.1f} img/s")
        print(f"  GT-silhouette share of the step: {(full - rows['step w/o GT sil.']) / full:6.1%} "
              f"(difference), {rows['GT silhouettes'] / full:6.1%} (alone / full)")


if __name__ == "__main__":
    main()
