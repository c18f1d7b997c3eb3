"""Φ^GHN throughput: rendering (forward; forward + backward w.r.t. the target pose), peak memory
per 1k rays, and training steps per second.

    python bench/ghn.py [--config synthetic|full] [--rays 1024] [--iters 5]

`synthetic` is configs/neuhmr/ghn_synthetic.py's GHN (the NeuHMR default job's renderer: 64-px
images, 32 samples per ray); `full` is the default GHNConfig (ActorsNeRF/HumanNeRF sizes: 256-ch
𝓕, 25×32³ volume, 64 samples). A person at 3 m is rendered from a camera that sees it whole; the
rays are random pixels of its mask's box, so every ray crosses the person's box. Each row is
jit-compiled once, warmed up, then timed --iters times (median). Peak memory comes from the
device's memory statistics where the backend reports them (GPU), otherwise from XLA's compiled
memory analysis (temporaries + outputs of the program).
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np


def timeit(fn, *args, iters):
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def compiled_bytes(fn, *args):
    try:
        m = fn.lower(*args).compile().memory_analysis()
        return int(m.temp_size_in_bytes + m.output_size_in_bytes)
    except Exception:  # noqa: BLE001 - not every backend reports it
        return None


def scene(config, image_size, seed=0):
    """A posed person, a target camera and two reference cameras around it (world y up)."""
    from neuhmr_jax.ghn.model import Camera, References
    rng = np.random.default_rng(seed)
    h = w = image_size

    def cam(azimuth):
        c, s = np.cos(azimuth), np.sin(azimuth)
        # Camera looking at the origin from distance 3 m at this azimuth (y down in the image).
        rot_y = np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])
        R = np.diag([1.0, -1.0, -1.0]) @ rot_y
        K = np.array([[1.2 * h, 0, w / 2], [0, 1.2 * h, h / 2], [0, 0, 1]])
        return Camera(jnp.asarray(K, jnp.float32), jnp.asarray(R, jnp.float32),
                      jnp.asarray([0.0, 0.0, 3.0], jnp.float32))

    pose = jnp.asarray(rng.normal(0, 0.15, (24, 3)), jnp.float32).at[0].set(0.0)
    target = cam(0.0)
    refs_cams = [cam(a) for a in (2.0, -2.0)]
    refs = References(images=jnp.asarray(rng.uniform(0, 1, (2, h, w, 3)), jnp.float32),
                      cameras=jax.tree.map(lambda *a: jnp.stack(a), *refs_cams),
                      pose=jnp.stack([pose, pose]), transl=jnp.zeros((2, 3)))
    return target, pose, refs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", choices=("synthetic", "full"), default="synthetic")
    ap.add_argument("--rays", type=int, default=1024)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--train-steps", type=int, default=3, help="timed train steps (0: skip)")
    args = ap.parse_args()

    import smpl_jax
    from neuhmr_jax.config import ghn_config, ghn_synthetic_config
    from neuhmr_jax.ghn.model import GHN, GHNConfig

    config = ghn_synthetic_config() if args.config == "synthetic" else ghn_config()
    image_size = int(config.data.image_size)
    body = smpl_jax.load(config.body.model)
    ghn = GHN(GHNConfig.from_config(config.ghn), body)
    variables = ghn.init(jax.random.PRNGKey(0), (image_size, image_size))
    target, pose, refs = scene(config, image_size)
    refs = refs._replace(features=ghn.encode(variables, refs.images))
    betas = jnp.zeros((10,), jnp.float32)
    rng = np.random.default_rng(1)
    lo, hi = 0.2 * image_size, 0.8 * image_size
    pixels = jnp.asarray(rng.uniform(lo, hi, (args.rays, 2)), jnp.float32)
    samples = ghn.config.num_samples

    weights = ghn.skinning_weights(variables)
    fwd = jax.jit(lambda v, p: ghn.render(v, target, p, betas, refs, pixels, weights=weights,
                                          image_size=(image_size, image_size)).rgb)
    grad = jax.jit(jax.grad(lambda p, v: jnp.sum(ghn.render(
        v, target, p, betas, refs, pixels, weights=weights,
        image_size=(image_size, image_size)).rgb ** 2)))

    print(f"# bench/ghn.py --config {args.config}: jax {jax.__version__}, "
          f"{jax.devices()[0].platform} ({jax.devices()[0].device_kind}), {platform.machine()}, "
          f"{args.rays} rays × {samples} samples, chunk {ghn.config.chunk}, image {image_size}²")
    rows = []
    t_f = timeit(fwd, variables, pose, iters=args.iters)
    rows.append(("render forward", t_f, args.rays * samples / t_f, compiled_bytes(fwd, variables,
                                                                                 pose)))
    t_b = timeit(grad, pose, variables, iters=args.iters)
    rows.append(("render forward+backward (pose)", t_b, args.rays * samples / t_b,
                 compiled_bytes(grad, pose, variables)))
    print("| what | ms | rays·samples/s | MB per 1k rays |")
    print("|---|---:|---:|---:|")
    for name, t, rate, mem in rows:
        mb = "-" if mem is None else f"{mem / 2**20 / (args.rays / 1000):.1f}"
        print(f"| {name} | {1000 * t:.1f} | {rate:,.0f} | {mb} |")
    stats = getattr(jax.devices()[0], "memory_stats", lambda: None)()
    if stats and "peak_bytes_in_use" in stats:
        print(f"device peak memory: {stats['peak_bytes_in_use'] / 2**20:.0f} MB")

    if args.train_steps:
        from imphmr_jax.training import sharding
        from imphmr_jax.training import state as state_lib
        from neuhmr_jax import train_ghn as T
        mesh = sharding.make_mesh()
        tx = T.make_optimizer_ghn(config.train)

        def init(key):
            p, s = T.split_variables(ghn.init(key, (image_size, image_size)))
            return {"params": p, "batch_stats": s}

        state, sh = state_lib.create_train_state(init, tx, mesh, seed=0)
        step = T.make_train_step(ghn, config, tx, mesh, sh, (image_size, image_size))
        b, h = int(config.train.batch_size), image_size
        mask = np.zeros((b, h, h), np.float32)
        mask[:, h // 5:4 * h // 5, 2 * h // 5:3 * h // 5] = 1
        n = int(config.data.n_refs)
        batch = {"image": rng.uniform(0, 1, (b, h, h, 3)).astype(np.float32), "mask": mask,
                 "K": np.tile(np.asarray(target.K), (b, 1, 1)),
                 "R": np.tile(np.asarray(target.R), (b, 1, 1)),
                 "t": np.tile(np.asarray(target.t), (b, 1)),
                 "pose": np.tile(np.asarray(pose), (b, 1, 1)),
                 "betas": np.zeros((b, 10), np.float32), "transl": np.zeros((b, 3), np.float32),
                 "ref_image": rng.uniform(0, 1, (b, n, h, h, 3)).astype(np.float32),
                 "ref_K": np.tile(np.asarray(refs.cameras.K), (b, 1, 1, 1)),
                 "ref_R": np.tile(np.asarray(refs.cameras.R), (b, 1, 1, 1)),
                 "ref_t": np.tile(np.asarray(refs.cameras.t), (b, 1, 1)),
                 "ref_pose": np.tile(np.asarray(refs.pose), (b, 1, 1, 1)),
                 "ref_transl": np.zeros((b, n, 3), np.float32)}
        batch = sharding.global_batch(batch, mesh, T.BATCH_KEYS)
        state, _ = step(state, batch)
        jax.block_until_ready(state.params)
        t0 = time.perf_counter()
        for _ in range(args.train_steps):
            state, m = step(state, batch)
        jax.block_until_ready(m["loss"])
        dt = (time.perf_counter() - t0) / args.train_steps
        print(f"train step (batch {b}, {config.data.rays_per_image} rays/target, {n} references):"
              f" {1 / dt:.2f} steps/s ({1000 * dt:.0f} ms)")


if __name__ == "__main__":
    main()
