"""Rendering throughput: hard / soft silhouettes of the default bodies, and volume integration.

    python bench/render.py [--batch 64] [--iters 10] [--tile 4]

Bodies are posed with small random poses and seen from 3 m (focal 1.5·H px, so the body fills
about 85% of the image height). Each row is jit-compiled once, run once to warm up (excluded) and
then timed --iters times with block_until_ready; the median is reported. The tile budget is the
exact need of the benchmark batch plus 25% (what a training loop would fix in advance); the
`overflow` column confirms no face was cut. The volume rows need
imphmr_jax.render.volume.integrate and are skipped with a note if it is missing.
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
    jax.block_until_ready(fn(*args))  # compile + warm-up
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bodies(name, batch, seed=0):
    import smpl_jax
    model = smpl_jax.load(name)
    rng = np.random.default_rng(seed)
    pose = jnp.asarray(rng.normal(0, 0.15, (batch, 24, 3)), jnp.float32)
    pose = pose.at[:, 0].set(0.0)
    betas = jnp.asarray(rng.normal(0, 1, (batch, 10)), jnp.float32)
    verts = smpl_jax.forward(model, pose, betas).vertices
    # World y up, facing +z -> SPIN camera (y down, z forward) looking at the body's front from 3 m.
    cam = verts * jnp.array([1.0, -1.0, -1.0]) + jnp.array([0.0, 0.0, 3.0])
    return cam, jnp.asarray(model.faces, jnp.int32)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--tile", type=int, default=4)
    ap.add_argument("--skip-volume", action="store_true")
    ap.add_argument("--train-step", action="store_true",
                    help="also time one ImpHMR-sized train step (ResNet-50, 224², 4×4 map, 2 views, "
                         "forward+backward) at the same batch, to put the GT silhouettes in proportion")
    ap.add_argument("--train-iters", type=int, default=2)
    args = ap.parse_args()

    from imphmr_jax.render import rasterize as R
    from imphmr_jax.render import soft as S

    print(f"jax {jax.__version__}, device {jax.devices()[0].device_kind} "
          f"({jax.default_backend()}, {len(jax.devices())} device(s)), {platform.processor() or ''}")
    print(f"batch {args.batch}, median of {args.iters}, compile and warm-up excluded\n")
    rows = []
    B, tile = args.batch, args.tile
    for name, h in [("default-small", 128), ("default", 128), ("default", 224)]:
        v, f = bodies(name, B)
        k = jnp.array([1.5 * h, 1.5 * h, h / 2, h / 2])
        budget = int(R.required_tiles(v, f, k, h, h, tile=tile) * 1.25)
        fn = jax.jit(lambda x: R.rasterize(x, f, k, h, h, max_tiles=budget, tile=tile))
        over = int(fn(v).overflow.max())
        t = timeit(lambda x: fn(x).mask, v, iters=args.iters)
        rows.append((f"hard silhouette {name} ({f.shape[0]} faces) {h}²", t, B / t, "sil/s",
                     f"tiles {budget}, overflow {over}"))
        if name == "default-small":
            sigma = 1e-4
            margin = 3 * sigma**0.5 * h / 2
            sbudget = int(R.required_tiles(v, f, k, h, h, tile=tile, margin=margin) * 1.25)
            soft = jax.jit(lambda x: S.soft_silhouette(x, f, k, h, h, sigma=sigma, tile=tile,
                                                       max_tiles=sbudget, return_overflow=True))
            over = int(soft(v)[1].max())
            t = timeit(lambda x: soft(x)[0], v, iters=args.iters)
            rows.append((f"soft silhouette {name} {h}² σ={sigma:g}", t, B / t, "sil/s",
                         f"tiles {sbudget}, overflow {over}"))
            target = (S.soft_silhouette(v, f, k, h, h, sigma=sigma, max_tiles=sbudget) > 0.5)
            loss = lambda x: jnp.mean((S.soft_silhouette(x, f, k, h, h, sigma=sigma, tile=tile,
                                                         max_tiles=sbudget) - target) ** 2)
            grad = jax.jit(jax.grad(loss))
            t = timeit(grad, v + 0.01, iters=args.iters)
            rows.append((f"soft silhouette fwd+bwd {name} {h}²", t, B / t, "sil/s", ""))

    if args.skip_volume:
        notes = ["volume: skipped (--skip-volume)"]
    else:
        notes = []
        try:
            from imphmr_jax.render.volume import integrate
        except (ImportError, AttributeError) as e:
            integrate = None
            notes.append(f"volume: skipped, imphmr_jax.render.volume.integrate missing ({e})")
        if integrate is not None:
            for (n_img, n_rays, n_samp, ch) in [(B, 16, 32, 2048), (B, 4096, 64, 3)]:
                key = jax.random.split(jax.random.PRNGKey(0), 2)
                sig = jax.random.uniform(key[0], (n_img, n_rays, n_samp))
                feat = jax.random.normal(key[1], (n_img, n_rays, n_samp, ch))
                depth = jnp.broadcast_to(jnp.linspace(1.0, 5.0, n_samp), sig.shape)
                fn = jax.jit(lambda s, c, d: integrate(s, c, d).features)
                t = timeit(fn, sig, feat, depth, iters=args.iters)
                n = n_img * n_rays * n_samp
                rows.append((f"volume integrate {n_img}×{n_rays} rays×{n_samp} samples×{ch} ch", t,
                             n / t, "ray·samples/s", ""))

    if args.train_step:
        rows.append(train_step_row(B, args.train_iters))
        sil = next(r for r in rows if r[0].startswith("hard silhouette default (") and "128²" in r[0])
        notes.append(f"GT silhouettes (default body, 128², batch {B}) take {sil[1] / rows[-1][1]:.1%} "
                     "of one ImpHMR train step on this device")

    w = max(len(r[0]) for r in rows)
    print(f"{'case':<{w}}  {'ms/batch':>9}  {'throughput':>12}  unit            note")
    for case, t, thr, unit, note in rows:
        print(f"{case:<{w}}  {t * 1e3:9.1f}  {thr:12.4g}  {unit:<14}  {note}")
    for n in notes:
        print(n)


def train_step_row(batch, iters):
    """One ImpHMR forward+backward (ResNet-50 at 224², 4×4 map, 32 samples, views 0 and φ) with a
    stand-in loss over every output: the cost the GT silhouettes are compared against."""
    from imphmr_jax.models import ImpHMR

    model = ImpHMR()
    images = jnp.zeros((batch, 224, 224, 3), jnp.float32)
    phis = jnp.stack([jnp.zeros(batch), jnp.full((batch,), 1.0)], 1)
    key = jax.random.key(0, impl="rbg")
    variables = jax.jit(lambda k: model.init({"params": k, "dropout": k, "sampling": k,
                                              "density_noise": k}, images[:1], phis[:1], train=False))(key)

    def loss(params, batch_stats, k):
        out, _ = model.apply({"params": params, "batch_stats": batch_stats}, images, phis, train=True,
                             rngs={"dropout": k, "sampling": k, "density_noise": k},
                             mutable=["batch_stats"])
        return sum(jnp.mean(jnp.square(out[n].astype(jnp.float32)))
                   for n in ("rotmat", "betas", "cam", "silhouette_logits"))

    step = jax.jit(jax.value_and_grad(loss))
    t = timeit(lambda p: step(p, variables["batch_stats"], key)[0], variables["params"], iters=iters)
    return (f"ImpHMR train step (R50 224², 4×4 map, 2 views, fwd+bwd)", t, batch / t, "img/s", "")


if __name__ == "__main__":
    main()
